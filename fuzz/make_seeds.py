"""Write the seed inputs in fuzz/seeds/<target>/ (committed; rerun after changing a target's input layout).

atheris.FuzzedDataProvider takes bytes/strings from the front of the input and integers
from the end: ``ConsumeIntInRange(lo, hi)`` reads as many bytes as ``hi - lo`` needs, the
last byte of the input first and most significant, and returns ``lo + raw % (hi - lo + 1)``.
So a seed is ``payload + trailer``, where the trailer holds the integers in reverse order
of consumption. Each seed is decoded again with the real FuzzedDataProvider to prove it
means what it says.

Usage: ``python fuzz/make_seeds.py``
"""

from __future__ import annotations

import hashlib
import pathlib
import sys

import atheris

ROOT = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(ROOT.parent)]  # the targets, and aegiskv from this checkout

# The targets import aegiskv under atheris instrumentation; import them first so that
# they do, and so that every seed can be run through its target below.
import fuzz_config  # noqa: E402
import fuzz_native  # noqa: E402
import fuzz_resp  # noqa: E402

from aegiskv.protocols.resp.encoder import encode_command  # noqa: E402

config = fuzz_config.config
native = fuzz_native.native
resp = fuzz_resp.resp

Field = tuple[int, int, int]  # value, lo, hi


def _width(span: int) -> int:
    width = 0
    while span >> (8 * width):
        width += 1
    return width


def build(fields: list[Field], payload: bytes) -> bytes:
    trailer = bytearray()
    for value, lo, hi in fields:
        assert lo <= value <= hi, (value, lo, hi)
        width = _width(hi - lo)
        # Consumed from the end, most significant byte first: prepend in that order.
        trailer[:0] = (value - lo).to_bytes(width, "big")[::-1] if width else b""
    data = payload + bytes(trailer)
    fdp = atheris.FuzzedDataProvider(data)
    decoded = [fdp.ConsumeIntInRange(lo, hi) for _, lo, hi in fields]
    assert decoded == [value for value, _, _ in fields], (decoded, fields)
    assert fdp.ConsumeBytes(fdp.remaining_bytes()) == payload
    return data


# -- native ---------------------------------------------------------------------------------


def native_fields(sizes: list[int], opcodes: int = 0, small: tuple[int, int, int, int] | None = None) -> list[Field]:
    fields: list[Field] = []
    if small is None:
        fields.append((0, 0, 3))  # default limits
    else:
        fields += [(1, 0, 3), (small[0], 0, 300), (small[1], 0, 2000), (small[2], 0, 40), (small[3], 0, 4096)]
    fields += [(opcodes, 0, 1), (0, 0, 8), (len(sizes), 0, 8)]  # request/response opcodes, no limits switch
    fields += [(size, 1, 1024) for size in sizes]
    return fields


def native_seeds() -> dict[str, bytes]:
    frame = native.encode_frame
    get = frame(native.Opcode.GET, 7, items=((b"key", b""),))
    set_ = frame(native.Opcode.SET, 8, flags=native.SET_CAS, ttl_ms=1500, version=3, items=((b"k", b"value"),))
    mget = frame(native.Opcode.MGET, 9, items=((b"a", b""), (b"b", b""), (b"c", b"")))
    ping = frame(native.Opcode.PING, 1)
    reply = frame(native.Opcode.MGET, 9, items=((b"", b"v"), (b"", None)))
    error = native.encode_error(native.Opcode.GET, 5, native.Status.ERROR, "BAD_ARG", "wrong")
    return {
        "ping": build(native_fields([]), ping),
        "get-set-pipelined": build(native_fields([5, 40]), get + set_ + ping),
        "mget-small-limits": build(native_fields([1], small=(4, 8, 2, 128)), mget),
        "reply-null-value": build(native_fields([3], opcodes=1), reply + error),
        "truncated-frame": build(native_fields([7]), set_[:-2]),
    }


# -- resp -----------------------------------------------------------------------------------


def resp_fields(sizes: list[int]) -> list[Field]:
    fields: list[Field] = [(0, 0, 3), (0, 0, 8)]  # default limits, no authentication mid-stream
    fields.append((len(sizes), 0, 8))
    return fields + [(size, 1, 4096) for size in sizes]


def resp_seeds() -> dict[str, bytes]:
    command = encode_command
    pipeline = command(b"SET", b"key", b"value") + command(b"GET", b"key") + command(b"PING")
    return {
        "set-get-ping": build(resp_fields([]), pipeline),
        "pipeline-chunked": build(resp_fields([3, 11]), pipeline),
        "value-with-crlf": build(resp_fields([5]), command(b"SET", b"k", b"a\r\nb") + command(b"DEL", b"k")),
        "inline": build(resp_fields([2]), b'SET k "a b\\x41"\r\nGET k\nPING\r\n'),
        "auth-then-commands": build(resp_fields([]), command(b"AUTH", b"token") + command(b"MGET", b"a", b"b")),
        "empty-and-null-arrays": build(resp_fields([]), b"*0\r\n*-1\r\n" + command(b"PING")),
        "pipeline-small-reads": build(resp_fields([7, 30]), pipeline * 3),
        "big-value-in-reads": build(resp_fields([50]), command(b"SET", b"k", b"v" * 300)),
    }


# -- config ---------------------------------------------------------------------------------


def config_seeds() -> dict[str, bytes]:
    documented = config.documented_config().encode()
    # path kind 1 (our file), raw content, no variables, no flags.
    raw = [(1, 0, 4), (0, 0, 1), (0, 0, 6), (0, 0, 4)]
    small_file = b'bind = "127.0.0.1:7700"\nmax_memory = 64\nexpiry_interval = "500ms"\nmax_value_bytes = "1MiB"\n'
    # No file; one variable and one flag built from the "interesting" strings (string kind 3).
    wal_env = config.SETTINGS_BY_NAME["wal"]
    settings = config.SETTINGS
    flag_settings = config.flag_settings()
    index = settings.index(wal_env)
    flag_index = flag_settings.index(config.SETTINGS_BY_NAME["log_level"])
    interesting = fuzz_config._INTERESTING
    env_and_flag = [
        (0, 0, 4),  # no file path
        (0, 0, 1),  # raw content (empty)
        (1, 0, 6),  # one variable...
        (0, 0, 7),  # ...named after a setting
        (index, 0, len(settings) - 1),
        (3, 0, 3),  # ...valued with an interesting string
        (interesting.index("off"), 0, len(interesting) - 1),
        (1, 0, 4),  # one flag
        (flag_index, 0, len(flag_settings) - 1),
        (2, 0, 3),  # valued with a setting's default
        (settings.index(config.SETTINGS_BY_NAME["log_level"]), 0, len(settings) - 1),
    ]
    return {
        "documented-config": build(raw, documented),
        "small-file": build(raw, small_file),
        "bad-toml": build(raw, b"bind = \n[[x]\n"),
        "env-and-flag": build(env_and_flag, b""),
        "generated-empty": build([(1, 0, 4), (1, 0, 1), (0, 0, 6), (0, 0, 4), (0, 0, 6)], b""),
    }


def main() -> None:
    targets = (
        ("native", native_seeds(), fuzz_native.test_one_input),
        ("resp", resp_seeds(), fuzz_resp.test_one_input),
        ("config", config_seeds(), fuzz_config.test_one_input),
    )
    for target, seeds, test_one_input in targets:
        directory = ROOT / "seeds" / target
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            test_one_input(data)  # a seed that fails its own target is no seed
            # The name says what the seed is; the hash keeps an edited seed from reusing a name silently.
            (directory / f"{name}-{hashlib.sha1(data).hexdigest()[:8]}").write_bytes(data)
        print(f"{directory}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
