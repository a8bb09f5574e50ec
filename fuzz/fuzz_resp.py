"""Coverage-guided fuzz target for the RESP request parser (aegiskv.protocols.resp.reader).

Run: ``python fuzz/fuzz_resp.py [libFuzzer flags] [corpus dirs]``; ``tox -e fuzz`` runs all targets.

Input layout (FuzzedDataProvider takes integers from the end, bytes from the front; see
fuzz/make_seeds.py): limits, a read after which the connection authenticates, the hiredis
path's size thresholds, chunk sizes, then the byte stream.

The hiredis path claims a command boundary once it keeps 4 KiB (resp._CLAIM_AT) and
validates what it keeps at 16 KiB (resp._TAIL_CHECK). Inputs that large cost a hundred
times more to run (the inline splitter walks bytes in Python), so most inputs scale both
thresholds down to a few bytes or hundreds of bytes, set on the module for that input only:
the claim/verify/validate logic must be right for any threshold, and small ones exercise it
many times per input. The rest run with the real values.

Every input goes through the parser up to six times: starting unauthenticated and
authenticated, each with the exact pure-Python parser fed the whole stream in one read, the
exact parser fed it in chunks, and the hiredis path fed the same chunks (skipped when it
would never start: unauthenticated throughout). Only ``RespProtocolError`` may
escape. Checks:

* every command is a non-empty ``list`` of ``bytes``;
* the exact parser gives the same commands and error whether fed in one read or in chunks;
* the hiredis path gives the same commands and error as the exact parser on the same chunks,
  except while it still waits inside a command the exact parser already refused (the hiredis
  path judges a command once hiredis has all of it, or once 16 KiB are kept): then it must
  have returned the same commands and hold a bounded number of bytes;
* no command parsed ahead of a protocol error is withheld.

Bugs this target found (commands withheld before an error; hiredis reading RESP3 reply types
where Redis reads inline commands or refuses; a TypeError escaping from hiredis) are fixed,
each with a regression test in tests/test_resp_codec.py.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import atheris
import streams  # fuzz/streams.py: the script's directory is on sys.path

with atheris.instrument_imports():
    from aegiskv.protocols.resp import reader as resp

_MAX_CHUNKS = 8
# Just past the 16 KiB at which the hiredis path validates what it keeps (resp._TAIL_CHECK):
# larger streams reach no new code and cost executions.
_MAX_CHUNK = 4096
_THRESHOLDS = (resp._CLAIM_AT, resp._TAIL_CHECK)  # the real values


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


def _parse(
    chunks: list[bytes], limits: resp.RespLimits, authenticated: bool, use_hiredis: bool, auth_after: int
) -> Outcome:
    """All commands the parser returns for the chunks, and the error that ended them (or None)."""
    parser = resp.RequestParser(limits, authenticated=authenticated, use_hiredis=use_hiredis)
    commands: list[list[bytes]] = []
    try:
        for index, chunk in enumerate(chunks):
            parser.receive_data(chunk)
            while (command := parser.next_command()) is not None:
                commands.append(command)
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
    stranded: list[list[bytes]] = []
    # Bounded: each call pops one queued command; once the queue is empty the parser
    # meets the same bad bytes again and raises, or (hiredis path) returns None.
    for _ in range(len(parser._ready) + 2):
        try:
            command = parser.next_command()
        except resp.RespProtocolError:
            break
        if command is None:
            break
        stranded.append(command)
    return stranded


def _check_types(outcome: Outcome) -> None:
    for command in outcome.commands:
        assert type(command) is list and command, command
        assert all(type(argument) is bytes for argument in command), command


def _compare_hiredis(exact: Outcome, hiredis: Outcome) -> None:
    if exact.error is not None and hiredis.error is None and hiredis.pending:
        # The stream ends inside a command that the exact parser refuses from its first bad
        # byte, while the hiredis path judges a command once hiredis has all of it, or once
        # 16 KiB are kept (resp.py's docstring): it is still waiting, which is by design as
        # long as what it holds stays bounded.
        assert hiredis.commands == exact.commands, (exact, hiredis)
        # Most it may hold: the kept bytes are validated once they pass the tail check,
        # possibly after a claimed boundary was joined back (another tail check's worth),
        # plus the read that carried them past.
        assert hiredis.pending <= 2 * resp._TAIL_CHECK + _MAX_CHUNK, (hiredis.pending, exact)
        return
    assert (hiredis.commands, hiredis.error) == (exact.commands, exact.error), (exact, hiredis)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    limits = _limits(fdp)
    auth_after = fdp.ConsumeIntInRange(0, _MAX_CHUNKS) - 1  # -1: never authenticates mid-stream
    if fdp.ConsumeIntInRange(0, 3):
        resp._CLAIM_AT = fdp.ConsumeIntInRange(1, 512)
        resp._TAIL_CHECK = fdp.ConsumeIntInRange(1, 2048)
    else:
        resp._CLAIM_AT, resp._TAIL_CHECK = _THRESHOLDS
    sizes = [fdp.ConsumeIntInRange(1, _MAX_CHUNK) for _ in range(fdp.ConsumeIntInRange(0, _MAX_CHUNKS))]
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    chunks = streams.chunks(stream, sizes)

    for authenticated in (False, True):
        flip = auth_after if not authenticated else -1
        exact = _parse(chunks, limits, authenticated, False, flip)
        _check_types(exact)
        if flip < 0:
            # A read boundary must not change what is parsed (with a flip it legitimately
            # does: which limits apply depends on where the flip falls).
            whole = _parse([stream], limits, authenticated, False, -1)
            # After an error the rest of the stream is never fed, so what is left pending
            # depends on where the read that carried the error ended.
            assert whole.commands == exact.commands and whole.error == exact.error, (whole, exact)
            assert exact.error is not None or whole.pending == exact.pending, (whole, exact)
        # Unauthenticated throughout, the hiredis path never starts (the pre-auth limits
        # need the exact parser), so it would only repeat the run above.
        if resp.HIREDIS_AVAILABLE and (authenticated or flip >= 0):
            hiredis = _parse(chunks, limits, authenticated, True, flip)
            _check_types(hiredis)
            _compare_hiredis(exact, hiredis)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
