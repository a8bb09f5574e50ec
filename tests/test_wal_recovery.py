"""Recovery from damaged files: torn WAL tails, flipped bits, broken snapshots.

In-process and fast: a log is written once through WalBackend, its bytes are
kept, and every case writes a damaged copy into a fresh data dir and opens a
backend on it. What recovery must do (aegiskv.backends.wal_format docstring):

* a torn tail (the file ends inside the last record, or the last record's
  checksum fails) is cut off: the backend opens holding exactly the complete
  records before it;
* damage anywhere before the tail is refused with WalCorruption naming the
  file and offset (or, with ``wal_salvage``, the records before it are kept);
* a damaged snapshot is refused with SnapshotError naming the file.

The expected state is always computed from the decoded records by a model of
replay (:func:`model_of`), never read back from the backend under test.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aegiskv.backends import wal_format
from aegiskv.backends.base import NO_EXPIRY
from aegiskv.backends.options import BuiltinBackendOptions
from aegiskv.backends.snapshot import SnapshotBackend, list_snapshots
from aegiskv.backends.snapshot_format import SnapshotError
from aegiskv.backends.wal import WalBackend
from aegiskv.backends.wal_format import Record, RecordType, ScanEnd
from aegiskv.backends.wal_log import WalCorruption, list_segments
from aegiskv.testing.localnode import LocalNode
from tests.backend_state import State, state_of
from tests.fake_clock import FakeClock

BIG = 1 << 30
# Files of a data dir, by path relative to it: what one pristine log looks like on disk.
Files = dict[str, bytes]


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync is skipped in-process: no power is lost here, the tests check what recovery
    does with the bytes, and a few thousand opens would otherwise spend most of their time syncing."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


# -- building logs and reading them back -------------------------------------------------


def options(data_dir: Path, **overrides) -> BuiltinBackendOptions:
    fields: dict[str, Any] = {"max_memory_bytes": BIG, "data_dir": str(data_dir), "wal_mode": "write"}
    fields.update(overrides)
    return BuiltinBackendOptions(**fields)


def model_of(records: list[Record], now: int) -> State:
    """What replaying ``records`` at wall-clock ``now`` must leave (expired deadlines are never revived)."""
    state: State = {}
    for record in records:
        expired = record.expires_at_ms != NO_EXPIRY and record.expires_at_ms <= now
        if record.type is RecordType.PUT:
            if expired:
                state.pop(record.key, None)
            else:
                state[record.key] = (record.value, record.version, record.expires_at_ms)
        elif record.type is RecordType.DELETE:
            state.pop(record.key, None)
        elif record.type is RecordType.EXPIRE:
            if record.key in state:
                if expired:
                    del state[record.key]
                else:
                    value, version, _ = state[record.key]
                    state[record.key] = (value, version, record.expires_at_ms)
        elif record.type is RecordType.FLUSH:
            state.clear()
    return state


def read_files(data_dir: Path) -> Files:
    return {
        str(path.relative_to(data_dir)): path.read_bytes()
        for path in sorted(data_dir.rglob("*"))
        if path.is_file() and path.name != "LOCK"
    }


def materialize(files: Files, data_dir: Path) -> Path:
    for name, data in files.items():
        target = data_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return data_dir


def segment_names(files: Files) -> list[str]:
    return sorted(name for name in files if name.startswith("wal" + os.sep) and name.endswith(".log"))


def decode(data: bytes) -> tuple[list[Record], list[tuple[int, int]]]:
    """Records of a clean segment and the (start, end) byte span of each."""
    records = list(wal_format.iter_records(data))
    spans = []
    position = 0
    for _ in records:
        (rest,) = struct.unpack_from("!I", data, position)  # the length field (wal_format docstring)
        spans.append((position, position + 4 + rest))
        position += 4 + rest
    assert position == len(data)
    return records, spans


def write_mixed_log(data_dir: Path, clock: FakeClock, count: int, segment_bytes: int = 64 << 20) -> None:
    """Every record type, values of several sizes, TTLs far in the future (the clock stands still here)."""
    rng = random.Random(7)
    backend = WalBackend(options(data_dir, wal_segment_bytes=segment_bytes), clock)
    for i in range(count):
        key = b"key%d" % rng.randrange(12)
        roll = rng.random()
        if roll < 0.55:
            deadline = clock() + 60_000 + i if rng.random() < 0.3 else NO_EXPIRY
            backend.put(key, rng.randbytes(rng.choice((0, 1, 9, 40, 200))), deadline)
        elif roll < 0.7:
            backend.delete(key)
        elif roll < 0.85:
            backend.set_expiry(key, rng.choice((NO_EXPIRY, clock() + 90_000 + i)))
        elif roll < 0.88:
            backend.flush()
        else:
            backend.put(key, b"v%d" % i)
        # What the server's reactor does before each reply; segments rotate here.
        assert backend.log is not None
        backend.log.write_out()
    # The tail the truncation test cuts through: a PUT, an EXPIRE and a DELETE,
    # each changing the state, so every prefix of the three is a different state.
    backend.put(b"tail-put", b"the last value written" * 3)
    backend.put(b"tail-ttl", b"x")
    backend.put(b"tail-del", b"y")
    backend.put(b"tail-put", b"overwritten at the end" * 2)
    assert backend.set_expiry(b"tail-ttl", clock() + 5_000)
    assert backend.delete(b"tail-del")
    backend.close()


@pytest.fixture(scope="module")
def single_segment(tmp_path_factory) -> tuple[Files, list[Record], list[tuple[int, int]]]:
    data_dir = tmp_path_factory.mktemp("pristine-single")
    write_mixed_log(data_dir, FakeClock(), 60)
    files = read_files(data_dir)
    [segment] = segment_names(files)
    records, spans = decode(files[segment])
    assert [record.type for record in records[-3:]] == [RecordType.PUT, RecordType.EXPIRE, RecordType.DELETE]
    return files, records, spans


@pytest.fixture(scope="module")
def multi_segment(tmp_path_factory) -> tuple[Files, list[list[Record]], list[list[tuple[int, int]]]]:
    data_dir = tmp_path_factory.mktemp("pristine-multi")
    write_mixed_log(data_dir, FakeClock(), 120, segment_bytes=1100)
    files = read_files(data_dir)
    names = segment_names(files)
    assert len(names) >= 4, names  # the point: damage in segments before the last one
    decoded = [decode(files[name]) for name in names]
    assert decoded[-1][0], "the last segment is empty: pick a segment size that ends mid-segment"
    return files, [records for records, _ in decoded], [spans for _, spans in decoded]


class Cases:
    """Fresh data dirs under one tmp_path, one per case."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def fresh(self, files: Files) -> Path:
        self.count += 1
        return materialize(files, self.root / f"case{self.count}")


@pytest.fixture
def cases(tmp_path: Path) -> Cases:
    return Cases(tmp_path)


def open_wal(data_dir: Path, clock: FakeClock, **overrides) -> WalBackend:
    return WalBackend(options(data_dir, **overrides), clock)


# -- torn tails ----------------------------------------------------------------------------


def test_pristine_log_replays_to_the_model(single_segment, cases: Cases) -> None:
    files, records, _spans = single_segment
    clock = FakeClock()
    backend = open_wal(cases.fresh(files), clock)
    assert state_of(backend) == model_of(records, clock())
    assert backend.recovery.records == len(records)
    assert backend.recovery.torn_bytes == 0
    backend.close()


def test_truncation_anywhere_in_the_last_three_records_keeps_the_complete_prefix(single_segment, cases) -> None:
    files, records, spans = single_segment
    [segment] = segment_names(files)
    data = files[segment]
    clock = FakeClock()
    first = spans[-3][0]
    checked = 0
    for cut in range(first, len(data)):
        complete = sum(1 for _start, end in spans if end <= cut)
        boundary = spans[complete - 1][1] if complete else 0
        data_dir = cases.fresh({**files, segment: data[:cut]})
        backend = open_wal(data_dir, clock)  # must not raise: a torn tail is not corruption
        expected = model_of(records[:complete], clock())
        assert state_of(backend) == expected, f"cut at {cut}"
        assert backend.recovery.torn_bytes == cut - boundary, f"cut at {cut}"
        assert (data_dir / segment).stat().st_size == boundary, f"cut at {cut}: torn bytes left in the file"
        # Writing after the cut must extend the clean prefix: a torn fragment
        # left in the middle of the log would be corruption at the next start.
        backend.put(b"after-restart", b"%d" % cut)
        backend.close()
        reopened = open_wal(data_dir, clock)
        state = state_of(reopened)
        assert bytes(state.pop(b"after-restart")[0]) == b"%d" % cut
        assert state == expected, f"cut at {cut}: second restart"
        reopened.close()
        checked += 1
    assert checked == len(data) - first > 100


def test_damaged_last_record_is_a_torn_tail(single_segment, cases) -> None:
    # Its bytes may have been only partly written when the process died: the
    # record is dropped (never served), the rest kept, and the node starts.
    files, records, spans = single_segment
    [segment] = segment_names(files)
    start, end = spans[-1]
    clock = FakeClock()
    expected = model_of(records[:-1], clock())
    wrong: list[tuple[str, str]] = []
    flips = 0
    for position in range(start + 4, end):  # past the length field: the record still ends at the end of the file
        for bit in (0x01, 0x10, 0x80):
            damaged = bytearray(files[segment])
            damaged[position] ^= bit
            flips += 1
            try:
                backend = open_wal(cases.fresh({**files, segment: bytes(damaged)}), clock)
            except WalCorruption as error:
                problem = str(error).split(": ", 1)[1].split(" (", 1)[0]
                wrong.append((f"byte +{position - start} ^ {bit:#x}", f"refused with WalCorruption: {problem}"))
                continue
            assert state_of(backend) == expected, f"byte {position} ^ {bit:#x}: wrong state"  # never a wrong value
            backend.close()
    assert not wrong, summary(wrong, flips)


def test_torn_tail_of_the_last_segment_with_many_segments(multi_segment, cases) -> None:
    files, records, spans = multi_segment
    names = segment_names(files)
    last = names[-1]
    start, end = spans[-1][-1]
    clock = FakeClock()
    cut = (start + end) // 2
    backend = open_wal(cases.fresh({**files, last: files[last][:cut]}), clock)
    everything = [record for segment in records for record in segment]
    assert state_of(backend) == model_of(everything[:-1], clock())
    backend.close()


def test_truncated_segment_before_the_last_is_corruption(multi_segment, cases) -> None:
    # A segment was complete when the log moved on to the next one: a short
    # one lost acknowledged records, which must not pass as a torn tail.
    files, _records, spans = multi_segment
    names = segment_names(files)
    victim = names[1]
    start, end = spans[1][-1]
    data_dir = cases.fresh({**files, victim: files[victim][: end - 3]})
    with pytest.raises(WalCorruption) as raised:
        open_wal(data_dir, FakeClock())
    assert str(data_dir / victim) in str(raised.value)
    assert f"offset {start}" in str(raised.value)


# -- flipped bits before the tail -----------------------------------------------------------

# Which bytes of a record a flip lands in (offsets inside the record; negative from its end).
REGIONS: dict[str, Callable[[int], tuple[int, int]]] = {
    "length": lambda size: (0, 4),
    "header": lambda size: (4, wal_format.HEADER_SIZE),
    "key-value": lambda size: (wal_format.HEADER_SIZE, size - 4),
    "checksum": lambda size: (size - 4, size),
}
FLIPS_PER_REGION = 80


def summary(failures: list[tuple[str, str]], total: int) -> str:
    """``failures`` as (case, what happened) grouped by what happened, with a few cases of each."""
    groups: dict[str, list[str]] = {}
    for case, outcome in failures:
        groups.setdefault(outcome, []).append(case)
    lines = [f"{len(failures)} of {total} damaged files were not refused properly:"]
    for outcome, examples in sorted(groups.items(), key=lambda item: -len(item[1])):
        lines.append(f"  {len(examples)} x {outcome}; e.g. " + "; ".join(examples[:3]))
    return "\n".join(lines)


def classify(state: State, prefixes: list[State], damaged: int) -> str:
    """What a damaged log that opened holds: the prefix before the damage, another prefix, or wrong values."""
    if state == prefixes[damaged]:
        return "opened: the damaged record and every one after it silently dropped"
    if state in prefixes:
        return "opened with some other prefix of the log"
    return "opened with a state that is no prefix of the log: WRONG VALUES SERVED"


@pytest.mark.parametrize("region", list(REGIONS))
def test_flipped_bit_before_the_tail_is_refused_and_salvage_keeps_the_prefix(
    region: str, single_segment, cases: Cases
) -> None:
    files, records, spans = single_segment
    [segment] = segment_names(files)
    data = files[segment]
    clock = FakeClock()
    prefixes = [model_of(records[:count], clock()) for count in range(len(records) + 1)]
    rng = random.Random(f"flip-{region}")
    undetected: list[tuple[str, str]] = []
    for _ in range(FLIPS_PER_REGION):
        index = rng.randrange(len(records) - 1)  # any record but the last one
        start, end = spans[index]
        low, high = REGIONS[region](end - start)
        if low >= high:  # an empty key and value: nothing to flip in that region
            continue
        position = start + rng.randrange(low, high)
        bit = 1 << rng.randrange(8)
        damaged = bytearray(data)
        damaged[position] ^= bit
        case = f"record {index} at {start}, byte {position} ^ {bit:#x}"

        data_dir = cases.fresh({**files, segment: bytes(damaged)})
        try:
            backend = open_wal(data_dir, clock)
        except WalCorruption as error:
            message = str(error)
            assert str(data_dir / segment) in message, message
            assert f"offset {start}" in message, f"{case}: {message}"
        else:
            undetected.append((case, classify(state_of(backend), prefixes, index)))
            backend.close()

        # Salvage keeps exactly the records before the damaged one, and the
        # log is clean afterwards (a normal start works).
        data_dir = cases.fresh({**files, segment: bytes(damaged)})
        salvaged = open_wal(data_dir, clock, wal_salvage=True)
        assert state_of(salvaged) == prefixes[index], case
        salvaged.close()
        again = open_wal(data_dir, clock)
        assert state_of(again) == prefixes[index], case
        again.close()
    assert not undetected, summary(undetected, FLIPS_PER_REGION)


def test_flipped_bit_anywhere_in_a_multi_segment_log(multi_segment, cases: Cases) -> None:
    files, records, spans = multi_segment
    names = segment_names(files)
    everything = [record for segment in records for record in segment]
    clock = FakeClock()
    prefixes = [model_of(everything[:count], clock()) for count in range(len(everything) + 1)]
    rng = random.Random("multi")
    undetected: list[tuple[str, str]] = []
    cases_run = 0
    for _ in range(120):
        which = rng.randrange(len(names))
        if which == len(names) - 1 and len(records[which]) < 2:
            continue
        # In the last segment, not its last record (that one is a torn tail);
        # in earlier segments any record, their last ones included.
        limit = len(records[which]) - (1 if which == len(names) - 1 else 0)
        index = rng.randrange(limit)
        start, end = spans[which][index]
        position = rng.randrange(start, end)
        bit = 1 << rng.randrange(8)
        damaged = bytearray(files[names[which]])
        damaged[position] ^= bit
        before = sum(len(segment) for segment in records[:which]) + index
        case = f"segment {which} record {index} at {start}, byte {position} ^ {bit:#x}"
        damaged_files = {**files, names[which]: bytes(damaged)}

        data_dir = cases.fresh(damaged_files)
        try:
            backend = open_wal(data_dir, clock)
        except WalCorruption as error:
            assert str(data_dir / names[which]) in str(error), str(error)
            assert f"offset {start}" in str(error), f"{case}: {error}"
        else:
            undetected.append((case, classify(state_of(backend), prefixes, before)))
            backend.close()

        data_dir = cases.fresh(damaged_files)
        salvaged = open_wal(data_dir, clock, wal_salvage=True)
        assert state_of(salvaged) == prefixes[before], case
        # Salvage dropped the segments after the damage: nothing of the lost suffix comes back later.
        assert [name for name in segment_names(read_files(data_dir))] == names[: which + 1], case
        salvaged.put(b"after-salvage", b"1")
        salvaged.close()
        again = open_wal(data_dir, clock)
        state = state_of(again)
        assert state.pop(b"after-salvage")[0] == b"1"
        assert state == prefixes[before], case
        again.close()
        cases_run += 1
    assert cases_run > 80
    assert not undetected, summary(undetected, cases_run)


def test_scan_classifies_what_it_finds() -> None:
    # The pure scanner, on hand-made data: the three endings recovery relies on.
    first = wal_format.encode(RecordType.PUT, 1, b"k", b"v", version=5)
    second = wal_format.encode(RecordType.DELETE, 2, b"k")
    records: list[Record] = []
    assert wal_format.scan(first + second, records) == (ScanEnd.CLEAN, len(first + second), "")
    assert [record.seq for record in records] == [1, 2]
    records.clear()
    assert wal_format.scan(first + second[:-1], records).end is ScanEnd.TORN
    assert [record.seq for record in records] == [1]
    damaged = bytearray(first + second)
    damaged[10] ^= 1  # inside the first record's sequence number
    records.clear()
    result = wal_format.scan(bytes(damaged), records)
    assert (result.end, result.good_bytes, records) == (ScanEnd.CORRUPT, 0, [])


def test_the_fallback_checksum_continues_as_the_fast_one() -> None:
    # Without google-crc32c's C extension the log checksums pieces with crcmod: continuing a
    # CRC over the next piece must give the CRC of the whole, as google-crc32c's extend does.
    head, tail = os.urandom(1000), os.urandom(3000)
    whole = wal_format._crc32c(head + tail)
    assert wal_format._crcmod_extend(wal_format._crc32c(head), tail) == whole
    assert wal_format._fast_crc32c_extend(wal_format._fast_crc32c(head), tail) == whole


def test_records_are_checksummed_by_the_cpu_crc_instruction() -> None:
    # A record's checksum runs over its whole value on the reactor: with crcmod's table walk
    # an 8 MiB SET held every client for 25-30 ms (issue 28). google-crc32c falls back to pure
    # Python, slower still, where its C extension is missing: an install without it must fail here.
    import google_crc32c

    assert google_crc32c.implementation == "c"
    value = os.urandom(1 << 20)
    record = wal_format.encode(RecordType.PUT, 7, b"key", value, version=3, expires_at_ms=9)
    # The same CRC-32C crcmod computed, as the scanner (crcmod) reads every record back.
    *_fields, header_crc = wal_format._HEADER.unpack_from(record)
    assert header_crc == wal_format._crc32c(record[: wal_format._CHECKED_SIZE])
    (crc,) = struct.unpack_from("!I", record, len(record) - 4)
    assert crc == wal_format._crc32c(record[4:-4])
    records: list[Record] = []
    assert wal_format.scan(record, records).end is ScanEnd.CLEAN
    assert records == [Record(RecordType.PUT, 7, 3, 9, b"key", value)]


def test_a_value_handed_over_as_a_view_is_logged_as_its_bytes() -> None:
    # The checksum function takes bytes objects only; a value may come as a view or a bytearray.
    value = b"abc" * 1000
    expected = wal_format.encode(RecordType.PUT, 1, b"k", value)
    assert wal_format.encode(RecordType.PUT, 1, b"k", memoryview(value)) == expected
    assert wal_format.encode(RecordType.PUT, 1, bytearray(b"k"), bytearray(value)) == expected


# -- snapshots ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def snapshot_dir(tmp_path_factory) -> tuple[Files, str, State, FakeClock]:
    """A data dir with one two-block snapshot and log records after it."""
    data_dir = tmp_path_factory.mktemp("pristine-snapshot")
    clock = FakeClock()
    backend = SnapshotBackend(options(data_dir, wal_mode="fsync"), clock)
    rng = random.Random(3)
    # About 1.3 MiB of raw entries: two blocks (a block closes at 1 MiB raw).
    for i in range(22):
        value = bytes([i]) * 60_000 + rng.randbytes(64)  # compressible: the file stays small
        backend.put(b"big%d" % i, value, clock() + 600_000 if i % 3 == 0 else NO_EXPIRY)
    for i in range(50):
        backend.put(b"small%d" % i, rng.randbytes(20))
    path = backend.begin_snapshot()()
    backend.put(b"after-snapshot", b"from the log")
    backend.delete(b"small0")
    expected = state_of(backend)
    backend.close()
    files = read_files(data_dir)
    name = str(Path(path).relative_to(data_dir))
    assert name in files
    return files, name, expected, clock


def snapshot_layout(data: bytes) -> dict[str, tuple[int, int]]:
    """Byte ranges of the parts of a snapshot file, read from its footer."""
    from aegiskv.backends import snapshot_format as fmt

    index_offset, block_count, _crc, _magic = fmt._FOOTER.unpack_from(data, len(data) - fmt._FOOTER.size)
    blocks = [
        fmt._INDEX_ENTRY.unpack_from(data, index_offset + i * fmt._INDEX_ENTRY.size)[0] for i in range(block_count)
    ]
    layout = {"header": (0, fmt._HEADER.size)}
    for number, offset in enumerate(blocks):
        (compressed,) = struct.unpack_from("!I", data, offset)
        layout[f"block{number}-header"] = (offset, offset + fmt._BLOCK_HEADER.size)
        layout[f"block{number}-data"] = (offset + fmt._BLOCK_HEADER.size, offset + fmt._BLOCK_HEADER.size + compressed)
    layout["index"] = (index_offset, len(data) - fmt._FOOTER.size)
    layout["footer"] = (len(data) - fmt._FOOTER.size, len(data))
    return layout


def test_pristine_snapshot_and_log_after_it_load(snapshot_dir, cases: Cases) -> None:
    files, name, expected, clock = snapshot_dir
    assert set(snapshot_layout(files[name])) >= {"block0-data", "block1-data"}
    backend = SnapshotBackend(options(cases.fresh(files), wal_mode="fsync"), clock)
    assert state_of(backend) == expected
    assert backend.recovery.records == 2  # the put and the delete after the snapshot came from the log
    backend.close()


def _open_damaged_snapshot(
    files: Files, name: str, data: bytes, cases: Cases, clock: FakeClock, expected: State
) -> str | None:
    """None when the damaged snapshot was refused properly, else what happened instead."""
    data_dir = cases.fresh({**files, name: data})
    try:
        backend = SnapshotBackend(options(data_dir, wal_mode="fsync"), clock)
    except SnapshotError as error:
        if str(data_dir / name) not in str(error):
            return f"SnapshotError without the file name: {error}"
        return None
    except Exception as error:  # the daemon only turns SnapshotError into a clean refusal
        return f"raised {type(error).__name__} instead of SnapshotError ({error})"
    state = state_of(backend)
    backend.close()
    return f"opened ({'same' if state == expected else 'DIFFERENT'} state as before the damage)"


@pytest.mark.parametrize(
    "part", ["header", "block0-header", "block0-data", "block1-header", "block1-data", "index", "footer"]
)
def test_flipped_bit_in_a_snapshot_is_refused(part: str, snapshot_dir, cases: Cases) -> None:
    files, name, expected, clock = snapshot_dir
    data = files[name]
    low, high = snapshot_layout(data)[part]
    rng = random.Random(f"snapshot-{part}")
    # Every bit of the small parts; a sample of the compressed data.
    if high - low <= 64:
        flips = [(position, 1 << bit) for position in range(low, high) for bit in range(8)]
    else:
        flips = [(rng.randrange(low, high), 1 << rng.randrange(8)) for _ in range(60)]
    undetected = []
    for position, bit in flips:
        damaged = bytearray(data)
        damaged[position] ^= bit
        outcome = _open_damaged_snapshot(files, name, bytes(damaged), cases, clock, expected)
        if outcome is not None:
            undetected.append((f"byte +{position - low} ^ {bit:#x}", outcome))
    assert not undetected, summary(undetected, len(flips))


def test_truncated_snapshot_is_refused(snapshot_dir, cases: Cases) -> None:
    files, name, expected, clock = snapshot_dir
    data = files[name]
    layout = snapshot_layout(data)
    cuts = {0, 1, 47, 48, 49, len(data) - 1, len(data) - 24, len(data) - 25}
    cuts |= {start for start, _ in layout.values()} | {end - 1 for _, end in layout.values()}
    cuts |= set(range(0, len(data), max(1, len(data) // 40)))
    wrong = []
    for cut in sorted(cut for cut in cuts if cut < len(data)):
        outcome = _open_damaged_snapshot(files, name, data[:cut], cases, clock, expected)
        if outcome is not None:
            wrong.append((f"cut at {cut}", outcome))
    assert not wrong, summary(wrong, len(cuts))


def test_leftover_snapshot_tmp_file_is_ignored_and_removed(snapshot_dir, cases: Cases) -> None:
    # A crash while writing a snapshot leaves <name>.tmp: never renamed, never used.
    files, name, expected, clock = snapshot_dir
    newer = f"snapshots{os.sep}snapshot-{clock() + 10**9:020d}.snap.tmp"
    data_dir = cases.fresh({**files, newer: files[name][: len(files[name]) // 2], name + ".tmp": b"junk"})
    backend = SnapshotBackend(options(data_dir, wal_mode="fsync"), clock)
    assert state_of(backend) == expected
    assert sorted(os.listdir(data_dir / "snapshots")) == [os.path.basename(name)]
    backend.close()


def test_newest_snapshot_damaged_is_refused_even_with_an_older_one(snapshot_dir, cases: Cases) -> None:
    # The log the newest snapshot covered is gone: falling back to an older
    # snapshot would silently serve old values.
    files, name, _expected, clock = snapshot_dir
    older = f"snapshots{os.sep}snapshot-{1:020d}.snap"
    damaged = bytearray(files[name])
    damaged[len(damaged) // 2] ^= 0x01
    data_dir = cases.fresh({**files, older: files[name], name: bytes(damaged)})
    assert [path for _, path in list_snapshots(str(data_dir / "snapshots"))][-1] == str(data_dir / name)
    with pytest.raises(SnapshotError, match=re.escape(str(data_dir / name))):
        SnapshotBackend(options(data_dir, wal_mode="fsync"), clock)


# -- a real process on a corrupt log ---------------------------------------------------------------


def write_twenty_keys(data_dir: Path, crash: bool) -> None:
    """A real node writes 20 keys with --wal write, then is killed (records stay in the log)
    or stopped gracefully (which writes a snapshot)."""
    from aegiskv.client import Client, Config

    node = LocalNode(str(data_dir), ["--wal", "write"])
    try:
        with Client(Config(seeds=[node.address_text])) as client:
            for i in range(20):
                client.set(b"k%d" % i, b"value %d" % i)
    finally:
        if crash:
            node.kill()
        else:
            assert node.stop() == 0


def refused_start(data_dir: Path) -> str:
    """Start a node on ``data_dir``; it must refuse with exit code 2 and one line, returned."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "aegiskv", "--data-dir", str(data_dir), "--wal", "write"),
            *("--bind", "127.0.0.1:0", "--resp-bind", "127.0.0.1:0", "--health-addr", "127.0.0.1:0"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "AEGIS_LOG_FORMAT": "text"},
    )
    assert result.returncode == 2, result
    assert "aegis ready" not in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_daemon_refuses_a_corrupt_log_with_exit_2_and_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    write_twenty_keys(data_dir, crash=True)  # no shutdown snapshot: the records stay in the log
    [(_first, segment)] = list_segments(str(data_dir / "wal"))
    data = bytearray(Path(segment).read_bytes())
    _records, spans = decode(bytes(data))
    assert len(spans) >= 20
    start, end = spans[5]
    data[end - 6] ^= 0x40  # in the value of the sixth record: its checksum fails
    Path(segment).write_bytes(bytes(data))
    line = refused_start(data_dir)
    assert segment in line and f"offset {start}" in line, line
    shutil.rmtree(data_dir)


def test_daemon_refuses_a_corrupt_snapshot_with_exit_2_and_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    write_twenty_keys(data_dir, crash=False)  # a graceful stop writes a snapshot
    [(_created, snapshot)] = list_snapshots(str(data_dir / "snapshots"))
    data = bytearray(Path(snapshot).read_bytes())
    data[len(data) // 2] ^= 0x08  # inside the (only) block
    Path(snapshot).write_bytes(bytes(data))
    line = refused_start(data_dir)
    assert snapshot in line, line
