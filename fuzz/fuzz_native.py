"""Coverage-guided fuzz target for the native frame decoder (aegiskv.protocols.native.codec).

Run: ``python fuzz/fuzz_native.py [libFuzzer flags] [corpus dirs]``; ``tox -e fuzz`` runs all targets.

Input layout (atheris.FuzzedDataProvider takes integers from the *end* of the input and bytes
from the front, so a seed is ``stream + header`` with the header bytes reversed; see
fuzz/make_seeds.py): limits, opcode set, an optional switch to other limits between two
chunks (the server raises the limits after AUTH), chunk sizes, then the byte stream.

Only ``native.ProtocolError`` may escape the decoder. Invariants checked on every input:

* the frames decoded so far re-encode (``encode_frame``) to exactly the bytes consumed;
* every frame respects the limits and the opcode set in force when it was decoded;
* ``buffered`` never exceeds ``max_frame_bytes`` + the chunk just received, and after
  draining it is below one frame (an incomplete frame has passed the length check);
* without a limits switch, feeding the stream in one piece gives the same frames and
  the same error as feeding it in chunks.
"""

from __future__ import annotations

import sys

import atheris
import streams  # fuzz/streams.py: the script's directory is on sys.path

with atheris.instrument_imports():
    from aegiskv.protocols.native import codec as native

# Small limits make every limit error reachable with inputs of a few hundred bytes; the
# defaults (64 MiB frames) are still picked now and then so they are fuzzed as deployed.
_MAX_SMALL_FRAME = 4096
_MAX_CHUNKS = 8


def _limits(fdp: atheris.FuzzedDataProvider) -> native.FrameLimits:
    if fdp.ConsumeIntInRange(0, 3) == 0:
        return native.DEFAULT_LIMITS
    return native.FrameLimits(
        max_key_bytes=fdp.ConsumeIntInRange(0, 300),
        max_value_bytes=fdp.ConsumeIntInRange(0, 2000),
        max_items=fdp.ConsumeIntInRange(0, 40),
        max_frame_bytes=fdp.ConsumeIntInRange(0, _MAX_SMALL_FRAME),
    )


class _Outcome:
    __slots__ = ("frames", "error", "consumed")

    def __init__(self) -> None:
        self.frames: list[native.Frame] = []
        self.error: native.ProtocolError | None = None
        self.consumed = 0


def _check_frame(frame: native.Frame, limits: native.FrameLimits, opcodes: frozenset[int]) -> None:
    assert frame.opcode in opcodes, frame
    assert len(frame.items) <= limits.max_items, frame
    for key, value in frame.items:
        assert type(key) is bytes and len(key) <= limits.max_key_bytes, frame
        assert value is None or (type(value) is bytes and len(value) <= limits.max_value_bytes), frame


def _decode(
    chunks: list[bytes],
    limits: native.FrameLimits,
    opcodes: frozenset[int],
    switch_after: int,
    switch_to: native.FrameLimits,
) -> _Outcome:
    outcome = _Outcome()
    decoder = native.FrameDecoder(limits, opcodes)
    fed = 0
    # The limit the leftover of the previous read was checked against: a switch to smaller
    # limits applies to the next frame check, not retroactively to bytes already buffered.
    checked_against = limits.max_frame_bytes
    try:
        for index, chunk in enumerate(chunks):
            decoder.receive_data(chunk)
            fed += len(chunk)
            # Nothing bigger than one frame may wait in the buffer when a read arrives. (Up to
            # 3 bytes of a length prefix can wait whatever the limit, hence max(4, ...).)
            assert decoder.buffered <= max(4, checked_against) + len(chunk), (decoder.buffered, len(chunk))
            while (frame := decoder.next_frame()) is not None:
                _check_frame(frame, decoder.limits, opcodes)
                outcome.frames.append(frame)
            # Drained: what is left is an incomplete frame whose length prefix passed the
            # limit (or fewer than the 4 bytes of that prefix).
            checked_against = decoder.limits.max_frame_bytes
            assert decoder.buffered < max(4, checked_against), decoder.buffered
            if index == switch_after:
                decoder.limits = switch_to
    except native.ProtocolError as error:
        outcome.error = error
    outcome.consumed = fed - decoder.buffered
    return outcome


def _reencode(frames: list[native.Frame]) -> bytes:
    return b"".join(
        native.encode_frame(
            frame.opcode,
            frame.request_id,
            flags=frame.flags,
            status=frame.status,
            ttl_ms=frame.ttl_ms,
            version=frame.version,
            items=frame.items,
        )
        for frame in frames
    )


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    limits = _limits(fdp)
    opcodes = native.REQUEST_OPCODES if fdp.ConsumeIntInRange(0, 1) == 0 else native.RESPONSE_OPCODES
    # 0 = no switch; k = new limits after chunk k - 1 (a read boundary, as in the server).
    switch_after = fdp.ConsumeIntInRange(0, _MAX_CHUNKS) - 1
    switch_to = _limits(fdp) if switch_after >= 0 else limits
    sizes = [fdp.ConsumeIntInRange(1, 1024) for _ in range(fdp.ConsumeIntInRange(0, _MAX_CHUNKS))]
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    chunked = _decode(streams.chunks(stream, sizes), limits, opcodes, switch_after, switch_to)

    # The frames are exactly the consumed prefix of the stream, in order, with nothing lost.
    assert _reencode(chunked.frames) == stream[: chunked.consumed], (chunked.frames, chunked.consumed)
    if chunked.error is not None:
        assert isinstance(chunked.error.code, str) and chunked.error.code, chunked.error

    if switch_after < 0 and sizes:
        whole = _decode([stream], limits, opcodes, -1, limits)
        assert whole.frames == chunked.frames, (whole.frames, chunked.frames)
        # Errors carry the code of the first rule broken, wherever the read boundaries fall.
        whole_error = None if whole.error is None else (whole.error.code, whole.error.request_id)
        chunked_error = None if chunked.error is None else (chunked.error.code, chunked.error.request_id)
        assert whole_error == chunked_error, (whole_error, chunked_error)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
