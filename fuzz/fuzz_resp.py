"""Coverage-guided fuzz target for the RESP request parser (aegiskv.protocols.resp.reader).

Run: ``python fuzz/fuzz_resp.py [libFuzzer flags] [corpus dirs]``; ``tox -e fuzz`` runs all targets.

Input layout (FuzzedDataProvider takes integers from the end, bytes from the front; see
fuzz/make_seeds.py): limits, a read after which the connection authenticates, chunk sizes,
then the byte stream.

Every input goes through the parser four times: starting unauthenticated and authenticated,
each fed the stream in chunks and in one read. Only ``RespProtocolError`` may escape. Checks:

* every command is a non-empty ``list`` of ``bytes``;
* the parser gives the same commands and error whether fed in one read or in chunks;
* no command parsed ahead of a protocol error is withheld;
* the parser's work (``examined``) stays within a few bytes per byte received.

Bugs this target found (commands withheld before an error; the former hiredis mode reading
RESP3 reply types where Redis reads inline commands or refuses, and letting a TypeError
escape) are fixed, each with a regression test in tests/test_resp_codec.py.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import atheris
import streams  # fuzz/streams.py: the script's directory is on sys.path

with atheris.instrument_imports():
    from aegiskv.protocols.resp import reader as resp

_MAX_CHUNKS = 8
# Reads of up to 4 KiB, cycled: a stream up to eight times that is cut in many places.
_MAX_CHUNK = 4096
# Most work (RequestParser.examined) per byte received and per read: see _parse.
_WORK_PER_BYTE = 8
_WORK_PER_READ = 8


def _limits(fdp: atheris.FuzzedDataProvider) -> resp.RespLimits:
    if fdp.ConsumeIntInRange(0, 3) == 0:
        return resp.DEFAULT_LIMITS
    return resp.RespLimits(
        max_bulk=fdp.ConsumeIntInRange(0, 20_000),
        max_multibulk=fdp.ConsumeIntInRange(0, 64),
        unauthenticated_max_bulk=fdp.ConsumeIntInRange(0, 300),
        unauthenticated_max_multibulk=fdp.ConsumeIntInRange(0, 16),
    )


class Outcome(NamedTuple):
    commands: list[list[bytes]]
    error: str | None  # the RespProtocolError that ended the stream, if one did
    pending: int  # bytes the parser still holds (an incomplete command)


def _parse(chunks: list[bytes], limits: resp.RespLimits, authenticated: bool, auth_after: int) -> Outcome:
    """All commands the parser returns for the chunks, and the error that ended them (or None)."""
    parser = resp.RequestParser(limits, authenticated=authenticated)
    commands: list[list[bytes]] = []
    received = 0
    try:
        for index, chunk in enumerate(chunks):
            parser.receive_data(chunk)
            while taken := parser.take_commands():  # before AUTH, one command a take
                commands += taken
            received += len(chunk)
            # Linear work: each byte is copied, searched and taken apart a bounded number of times.
            assert parser.examined <= _WORK_PER_BYTE * received + _WORK_PER_READ * (index + 1), (
                parser.examined,
                received,
            )
            if index == auth_after:
                # As the server does once AUTH succeeds: at a read boundary, possibly with
                # part of the next command already buffered.
                parser.authenticated = True
    except resp.RespProtocolError as error:
        message = str(error)
        assert message.startswith("Protocol error: "), message
        # Commands parsed ahead of the error come first: none may be left queued.
        stranded = _drain_after_error(parser)
        assert not stranded, ("commands withheld before a protocol error", stranded, message)
        return Outcome(commands, message, parser.buffered)
    return Outcome(commands, None, parser.buffered)


def _drain_after_error(parser: resp.RequestParser) -> list[list[bytes]]:
    # Once it raised, every take raises again: nothing was kept back.
    try:
        return parser.take_commands()
    except resp.RespProtocolError:
        return []


def _check_types(outcome: Outcome) -> None:
    for command in outcome.commands:
        assert type(command) is list and command, command
        assert all(type(argument) is bytes for argument in command), command


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    limits = _limits(fdp)
    auth_after = fdp.ConsumeIntInRange(0, _MAX_CHUNKS) - 1  # -1: never authenticates mid-stream
    sizes = [fdp.ConsumeIntInRange(1, _MAX_CHUNK) for _ in range(fdp.ConsumeIntInRange(0, _MAX_CHUNKS))]
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    chunks = streams.chunks(stream, sizes)

    for authenticated in (False, True):
        flip = auth_after if not authenticated else -1
        chunked = _parse(chunks, limits, authenticated, flip)
        _check_types(chunked)
        if flip < 0:
            # A read boundary must not change what is parsed (with a flip it legitimately
            # does: which limits apply depends on where the flip falls).
            whole = _parse([stream], limits, authenticated, -1)
            # After an error the rest of the stream is never fed, so what is left pending
            # depends on where the read that carried the error ended.
            assert whole.commands == chunked.commands and whole.error == chunked.error, (whole, chunked)
            assert chunked.error is not None or whole.pending == chunked.pending, (whole, chunked)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
