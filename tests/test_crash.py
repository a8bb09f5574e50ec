"""Crash tests with real processes: count the acknowledged writes a ``kill -9`` loses.

Each test starts an ``aegis`` node, lets a few writer threads pipeline a stream
of commands at it over RESP (each writer owns its keys, so its stream alone
decides them), records every reply as it arrives, SIGKILLs the node in the
middle of the stream, restarts it on the same data dir and reads every key back.

A write is *acknowledged* once its reply has been read. The node applies a
connection's commands in order, so after a crash each writer's keys must look
like the state after some prefix of its stream that contains every
acknowledged command (commands sent but not acknowledged may or may not have
survived). Two numbers come out of the check:

* ``lost``: keys whose value is not explained by any prefix that contains the
  acknowledged commands (an acknowledged write lost, or a wrong value);
* ``consistent``: whether one prefix per writer explains all of its keys at once
  (a log replayed out of order or with holes would not be).

Every test prints a one-line report (run with ``-s`` to see them).
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aegiskv.testing.localnode import LocalNode
from tests.conftest import StartNode
from tests.wire import resp_address_of

WRITE_SECONDS = 1.0  # of streaming before the kill
WRITERS = 3
BATCH = 40  # commands per pipelined write; up to this many are in flight per writer at the kill
KEYS_PER_WRITER = 250
LONG_TTL_MS = 600_000  # never expires during a test
SHORT_TTL_MS = 1  # always expired by the time the node is back


# -- a minimal pipelining RESP client ---------------------------------------------------------


class ServerError(str):
    """A RESP error reply (kept as a value: the writer checks what it expected)."""


class Resp:
    def __init__(self, address: tuple[str, int], timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()

    @staticmethod
    def encode(*parts: bytes) -> bytes:
        return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)

    def send(self, commands: list[tuple[bytes, ...]]) -> None:
        self.sock.sendall(b"".join(self.encode(*command) for command in commands))

    def _fill(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            raise EOFError("connection closed by the node")
        self.buffer += data

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def reply(self) -> object:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return ServerError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            length = int(rest)
            if length < 0:
                return None
            while len(self.buffer) < length + 2:
                self._fill()
            value = bytes(self.buffer[:length])
            del self.buffer[: length + 2]
            return value
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise AssertionError(f"unexpected RESP reply {line!r}")

    def call(self, *parts: bytes) -> object:
        self.send([parts])
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def now_ms() -> float:
    return time.time() * 1000


# -- the stream and its model -----------------------------------------------------------------


@dataclass
class Op:
    key: bytes
    kind: str  # set, set-long, set-short, del, expire-long, expire-short, persist
    value: bytes | None
    sent_ms: float  # before the write that carried it: the node received it later
    expect: object = None  # the reply the model predicts, when it can (None: either is fine)


# What a key holds in the model: None (absent) or (value, deadline bounds in wall-clock ms, or None).
KeyState = tuple[bytes, tuple[float, float] | None] | None


@dataclass
class Writer:
    """One connection streaming commands for its own keys; records what was acknowledged."""

    number: int
    address: tuple[str, int]
    mixed: bool  # deletes, TTLs and TTL changes in the stream, or only plain SETs
    ops: list[Op] = field(default_factory=list)
    ack_ms: list[float] = field(default_factory=list)  # when each reply arrived, in stream order
    wrong_replies: list[str] = field(default_factory=list)
    ended_by: str = ""

    def __post_init__(self) -> None:
        self.rng = random.Random(f"writer-{self.number}")
        # The kind of each key as the stream leaves it (at generation time; the node
        # applies the stream in order, so this is what it holds once it got there).
        self.kinds: dict[bytes, str] = {}
        self.thread = threading.Thread(target=self.run, name=f"writer-{self.number}", daemon=True)

    @property
    def acked(self) -> int:
        return len(self.ack_ms)

    def key(self, index: int) -> bytes:
        return b"w%d:k%d" % (self.number, index)

    def next_op(self, sent_ms: float) -> tuple[Op, tuple[bytes, ...]]:
        key = self.key(self.rng.randrange(KEYS_PER_WRITER))
        value = b"w%d-op%d" % (self.number, len(self.ops))
        kind = self.kinds.get(key, "absent")
        if not self.mixed:
            choice = "set"
        elif kind == "short":
            # Whether it expired yet when the next command reaches it is a race:
            # only commands whose effect does not depend on that follow.
            choice = self.rng.choice(["set", "set-long", "del"])
        else:
            choice = self.rng.choices(
                ["set", "set-long", "set-short", "del", "expire-long", "expire-short", "persist"],
                [35, 15, 5, 15, 12, 5, 13],
            )[0]
        present = kind in ("plain", "long")
        command: tuple[bytes, ...]
        expect: object
        if choice == "set":
            command, expect, kind = (b"SET", key, value), "OK", "plain"
        elif choice == "set-long":
            command, expect, kind = (b"SET", key, value, b"PX", b"%d" % LONG_TTL_MS), "OK", "long"
        elif choice == "set-short":
            command, expect, kind = (b"SET", key, value, b"PX", b"%d" % SHORT_TTL_MS), "OK", "short"
        elif choice == "del":
            command, expect = (b"DEL", key), (None if kind == "short" else int(present))
            kind = "absent"
        elif choice == "expire-long":
            command, expect = (b"PEXPIRE", key, b"%d" % LONG_TTL_MS), int(present)
            kind = "long" if present else "absent"
        elif choice == "expire-short":
            command, expect = (b"PEXPIRE", key, b"%d" % SHORT_TTL_MS), int(present)
            kind = "short" if present else "absent"
        else:
            command, expect = (b"PERSIST", key), int(kind == "long")
            kind = "plain" if present else "absent"
        self.kinds[key] = kind
        stores_value = choice.startswith("set")
        return Op(key, choice, value if stores_value else None, sent_ms, expect), command

    def run(self) -> None:
        try:
            connection = Resp(self.address)
            while True:
                sent_ms = now_ms()
                batch = [self.next_op(sent_ms) for _ in range(BATCH)]
                self.ops.extend(op for op, _ in batch)  # before sending: a command may be applied unacknowledged
                connection.send([command for _, command in batch])
                for op, _ in batch:
                    reply = connection.reply()
                    self.ack_ms.append(now_ms())
                    if op.expect is not None and reply != op.expect:
                        self.wrong_replies.append(f"{op.kind} {op.key!r}: {reply!r}, expected {op.expect!r}")
        except (OSError, EOFError) as error:  # the node was killed under us
            self.ended_by = type(error).__name__


def apply(state: KeyState, op: Op, ack_bound_ms: float) -> KeyState:
    """The key's state after ``op``; TTL deadlines as bounds (sent + ttl .. acknowledged + ttl)."""
    if op.kind == "set":
        assert op.value is not None  # a SET always carries its value (Writer.next_op)
        return (op.value, None)
    if op.kind == "set-long":
        assert op.value is not None
        return (op.value, (op.sent_ms + LONG_TTL_MS, ack_bound_ms + LONG_TTL_MS))
    if op.kind in ("set-short", "del"):
        return None  # a 1 ms TTL has long passed by the time anyone looks
    if state is None:
        return None  # PEXPIRE and PERSIST do nothing to an absent key
    if op.kind == "expire-long":
        return (state[0], (op.sent_ms + LONG_TTL_MS, ack_bound_ms + LONG_TTL_MS))
    if op.kind == "expire-short":
        return None
    assert op.kind == "persist", op.kind
    return (state[0], None)


@dataclass
class Observed:
    value: bytes | None
    pttl: int  # -2 absent, -1 no TTL, else ms left
    started_ms: float  # the read's window: the node's clock was between these
    ended_ms: float


def matches(expected: KeyState, seen: Observed) -> bool:
    if expected is None:
        return seen.value is None
    value, bounds = expected
    if seen.value != value:
        return False
    if bounds is None:
        return seen.pttl == -1
    low, high = bounds
    # A restart never extends a TTL (pttl <= latest possible deadline - now) nor
    # shortens it; 2 ms of slack for millisecond rounding on both sides.
    return low - seen.ended_ms - 2 <= seen.pttl <= high - seen.started_ms + 2


def read_back(address: tuple[str, int], keys: list[bytes]) -> tuple[dict[bytes, Observed], int]:
    """GET and PTTL of every key (pipelined), and DBSIZE."""
    connection = Resp(address)
    try:
        started = now_ms()
        connection.send([command for key in keys for command in ((b"GET", key), (b"PTTL", key))])
        replies = [(connection.reply(), connection.reply()) for _ in keys]
        ended = now_ms()
        size = connection.call(b"DBSIZE")
    finally:
        connection.close()
    observed = {}
    for key, (value, pttl) in zip(keys, replies):
        assert value is None or isinstance(value, bytes), (key, value)
        assert isinstance(pttl, int), (key, pttl)
        observed[key] = Observed(value, pttl, started, ended)
    assert isinstance(size, int)
    return observed, size


@dataclass
class Verdict:
    lost: list[str]  # keys no allowed prefix explains
    consistent: bool  # one prefix of the stream explains every key
    live_acknowledged: int  # keys whose last acknowledged command left a value


def judge(writer: Writer, observed: dict[bytes, Observed], kill_ms: float) -> Verdict:
    acked, sent = writer.acked, len(writer.ops)
    by_key: dict[bytes, list[int]] = {}
    for index, op in enumerate(writer.ops):
        by_key.setdefault(op.key, []).append(index)
    lost = []
    live = 0
    # Stream prefixes (counted in commands applied) that explain every key seen so far.
    allowed: list[tuple[int, int]] = [(acked, sent)]
    for key, indexes in by_key.items():
        seen = observed[key]
        state: KeyState = None
        valid: list[tuple[int, int]] = []  # prefix lengths for which this key's state is right
        bounds = [0, *(index + 1 for index in indexes), sent + 1]
        last_acked_state: KeyState = None
        for position in range(len(indexes) + 1):
            if position:
                index = indexes[position - 1]
                ack_bound = writer.ack_ms[index] if index < acked else kill_ms
                state = apply(state, writer.ops[index], ack_bound)
                if index < acked:
                    last_acked_state = state
            # After ``position`` of the key's commands: prefixes [bounds[position], bounds[position+1] - 1].
            low, high = bounds[position], bounds[position + 1] - 1
            if high >= acked and matches(state, seen):
                valid.append((max(low, acked), high))
        if last_acked_state is not None:
            live += 1
        if not valid:
            lost.append(f"{key!r}: holds {seen.value!r} (pttl {seen.pttl}), last acknowledged {last_acked_state!r}")
            continue  # counted as lost; the others are still checked against one prefix
        allowed = [(max(a, c), min(b, d)) for a, b in allowed for c, d in valid if max(a, c) <= min(b, d)]
    consistent = not lost and bool(allowed)
    return Verdict(lost, consistent, live)


# -- running a crash ----------------------------------------------------------------------------


@dataclass
class CrashRound:
    writers: list[Writer]
    kill_ms: float
    snapshots_started: int = 0


def stream_and_kill(
    node: LocalNode, first_writer: int, mixed: bool, snapshots: bool = False, seconds: float = WRITE_SECONDS
) -> CrashRound:
    writers = [Writer(first_writer + number, resp_address_of(node), mixed) for number in range(WRITERS)]
    for writer in writers:
        writer.thread.start()
    started = 0
    deadline = time.monotonic() + seconds
    if snapshots:
        # BGSAVE over and over while the stream runs: the kill may land before,
        # during or after one, with the log rotated and covered segments dropped.
        admin = Resp(resp_address_of(node))
        while time.monotonic() < deadline:
            reply = admin.call(b"BGSAVE")
            if reply == "Background saving started":
                started += 1
            else:
                assert isinstance(reply, ServerError) and "in progress" in reply, reply
            time.sleep(0.15)
        admin.close()
    else:
        time.sleep(seconds)
    kill_ms = now_ms()
    node.kill()  # SIGKILL, mid-stream: writers are blocked on replies or sending
    for writer in writers:
        writer.thread.join(15)
        assert not writer.thread.is_alive()
        assert writer.ended_by, f"writer {writer.number} stopped on its own"
        assert not writer.wrong_replies, writer.wrong_replies[:5]
    return CrashRound(writers, kill_ms, started)


def all_keys(writers: list[Writer]) -> list[bytes]:
    return sorted({op.key for writer in writers for op in writer.ops})


def report(name: str, crash: CrashRound, verdicts: list[Verdict]) -> str:
    sent = sum(len(writer.ops) for writer in crash.writers)
    acked = sum(writer.acked for writer in crash.writers)
    lost = sum(len(verdict.lost) for verdict in verdicts)
    line = (
        f"[crash {name}] sent {sent}, acknowledged {acked}, in flight at the kill {sent - acked}, "
        f"keys {sum(verdict.live_acknowledged for verdict in verdicts)} live, acknowledged writes lost: {lost}"
    )
    if crash.snapshots_started:
        line += f", snapshots started {crash.snapshots_started}"
    print(line)
    return line


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    return str(tmp_path / "node")


def restart(start_node: StartNode, data_dir: str, wal: str, **kwargs) -> LocalNode:
    return start_node("--wal", wal, data_dir=data_dir, **kwargs)


# -- the tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("wal", ["fsync", "write"])
def test_kill_9_loses_no_acknowledged_set(wal: str, start_node: StartNode, data_dir: str) -> None:
    """``--wal fsync`` and ``--wal write``: a process crash loses no acknowledged write.

    (``write`` hands records to the OS before replying, which survives a
    process crash but not a power cut; this test only kills the process.)
    """
    node = restart(start_node, data_dir, wal)
    crash = stream_and_kill(node, 0, mixed=False)
    assert sum(writer.acked for writer in crash.writers) > 500, "too few writes to say anything"

    node = restart(start_node, data_dir, wal)
    keys = all_keys(crash.writers)
    observed, size = read_back(resp_address_of(node), keys)
    verdicts = [judge(writer, observed, crash.kill_ms) for writer in crash.writers]
    report(f"--wal {wal}", crash, verdicts)
    lost = [line for verdict in verdicts for line in verdict.lost]
    assert not lost, f"{len(lost)} acknowledged writes lost:\n" + "\n".join(lost[:10])
    assert all(verdict.consistent for verdict in verdicts), "no single prefix of a writer's stream explains its keys"
    assert size == sum(1 for seen in observed.values() if seen.value is not None)  # nothing else came back


def test_kill_9_with_wal_off_loses_everything(start_node: StartNode, data_dir: str) -> None:
    """``--wal off`` keeps the keyspace in memory only: a crash loses every write.

    That is the documented trade (a cache without durability), so the test
    asserts it: after the restart the node is empty, and every key whose last
    acknowledged write left a value counts as lost.
    """
    node = restart(start_node, data_dir, "off")
    crash = stream_and_kill(node, 0, mixed=False)
    node = restart(start_node, data_dir, "off")
    keys = all_keys(crash.writers)
    observed, size = read_back(resp_address_of(node), keys)
    verdicts = [judge(writer, observed, crash.kill_ms) for writer in crash.writers]
    report("--wal off", crash, verdicts)
    live = sum(verdict.live_acknowledged for verdict in verdicts)
    assert live > 100
    assert size == 0
    assert sum(len(verdict.lost) for verdict in verdicts) == live  # every acknowledged value is gone
    assert not os.path.exists(os.path.join(data_dir, "wal")) or not os.listdir(os.path.join(data_dir, "wal"))


def test_kill_9_with_deletes_and_ttls_in_the_stream(start_node: StartNode, data_dir: str) -> None:
    """SET with and without TTLs, DEL, PEXPIRE (long, and 1 ms), PERSIST, with --wal fsync.

    After the restart: no acknowledged write lost, nothing deleted comes back,
    keys that expired stay expired, and no TTL is extended (PTTL is bounded by
    the deadline the acknowledgement implies).
    """
    node = restart(start_node, data_dir, "fsync")
    crash = stream_and_kill(node, 0, mixed=True)
    kinds = {op.kind for writer in crash.writers for op in writer.ops[: writer.acked]}
    assert kinds == {"set", "set-long", "set-short", "del", "expire-long", "expire-short", "persist"}

    node = restart(start_node, data_dir, "fsync")
    observed, size = read_back(resp_address_of(node), all_keys(crash.writers))
    verdicts = [judge(writer, observed, crash.kill_ms) for writer in crash.writers]
    report("--wal fsync, mixed", crash, verdicts)
    lost = [line for verdict in verdicts for line in verdict.lost]
    assert not lost, f"{len(lost)} keys wrong after the restart:\n" + "\n".join(lost[:10])
    assert all(verdict.consistent for verdict in verdicts)
    assert size == sum(1 for seen in observed.values() if seen.value is not None)


def test_kill_9_during_background_snapshots_twice(start_node: StartNode, data_dir: str) -> None:
    """BGSAVE every 150 ms during the stream (small WAL segments, so covered ones are dropped),
    then a crash, a restart from snapshot + log, more writes and snapshots, and a second crash.
    """
    env = {**os.environ, "AEGIS_WAL_SEGMENT_BYTES": "65536"}
    node = restart(start_node, data_dir, "fsync", env=env)
    first = stream_and_kill(node, 0, mixed=True, snapshots=True)
    assert first.snapshots_started >= 2
    assert os.listdir(os.path.join(data_dir, "snapshots")), "no snapshot was written"

    node = restart(start_node, data_dir, "fsync", env=env)
    node.wait_for_log("loaded snapshot")
    first_keys = all_keys(first.writers)
    observed, _size = read_back(resp_address_of(node), first_keys)
    verdicts = [judge(writer, observed, first.kill_ms) for writer in first.writers]
    report("--wal fsync, BGSAVE, first crash", first, verdicts)
    lost = [line for verdict in verdicts for line in verdict.lost]
    assert not lost, f"{len(lost)} keys wrong after the first restart:\n" + "\n".join(lost[:10])
    assert all(verdict.consistent for verdict in verdicts)

    # Round two on the recovered node: new writers, new keys; round one's keys must not move.
    second = stream_and_kill(node, WRITERS, mixed=True, snapshots=True)
    node = restart(start_node, data_dir, "fsync", env=env)
    second_keys = all_keys(second.writers)
    again, size = read_back(resp_address_of(node), first_keys + second_keys)
    verdicts = [judge(writer, again, second.kill_ms) for writer in second.writers]
    report("--wal fsync, BGSAVE, second crash", second, verdicts)
    lost = [line for verdict in verdicts for line in verdict.lost]
    assert not lost, f"{len(lost)} keys wrong after the second restart:\n" + "\n".join(lost[:10])
    assert all(verdict.consistent for verdict in verdicts)
    moved = [key for key in first_keys if again[key].value != observed[key].value]
    assert not moved, f"round one's keys changed across the second crash: {moved[:10]}"
    assert size == sum(1 for seen in again.values() if seen.value is not None)


def test_the_checker_catches_lost_resurrected_extended_and_out_of_order_states() -> None:
    # judge() decides every test above; here it is fed histories with known faults.
    writer = Writer(99, ("127.0.0.1", 0), mixed=True)
    t = 1_000_000.0

    def op(key: bytes, kind: str, value: bytes | None = None) -> Op:
        return Op(key, kind, value, t)

    writer.ops = [
        op(b"a", "set", b"a1"),
        op(b"b", "set", b"b1"),
        op(b"c", "set-long", b"c1"),
        op(b"d", "set", b"d1"),
        op(b"d", "del"),
        op(b"a", "set", b"a2"),  # acknowledged up to here
        op(b"b", "set", b"b2"),  # sent, never acknowledged
    ]
    writer.ack_ms = [t + 10] * 6
    kill = t + 50

    def seen(value: bytes | None, pttl: int = -1) -> Observed:
        return Observed(value, pttl if value is not None else -2, t + 100, t + 101)

    good = {b"a": seen(b"a2"), b"b": seen(b"b1"), b"c": seen(b"c1", LONG_TTL_MS - 95), b"d": seen(None)}
    verdict = judge(writer, good, kill)
    assert (verdict.lost, verdict.consistent, verdict.live_acknowledged) == ([], True, 3)
    assert judge(writer, {**good, b"b": seen(b"b2")}, kill).consistent  # the unacknowledged write survived

    for fault in (
        {b"a": seen(b"a1")},  # an acknowledged overwrite lost
        {b"a": seen(None)},  # an acknowledged key lost
        {b"d": seen(b"d1")},  # an acknowledged delete undone
        {b"c": seen(b"c1", LONG_TTL_MS + 1_000)},  # a TTL extended by the restart
        {b"c": seen(b"c1", -1)},  # a TTL dropped
        {b"a": seen(b"a-wrong")},  # a value nobody wrote
    ):
        assert judge(writer, {**good, **fault}, kill).lost, fault
    # Each key explained on its own, but by different prefixes: a hole in the log.
    writer.ack_ms = writer.ack_ms[:5]
    out_of_order = {**good, b"a": seen(b"a1"), b"b": seen(b"b2")}
    verdict = judge(writer, out_of_order, kill)
    assert not verdict.lost and not verdict.consistent


def test_kill_9_keeps_ttl_changes_made_after_the_write(start_node: StartNode, data_dir: str) -> None:
    """SET with a short TTL, then PERSIST or PEXPIRE (longer), all acknowledged; kill -9; the
    restart comes after the first TTL would have run out. Every key must be there, with the TTL
    the later command gave it (none, or at most the acknowledged deadline)."""
    node = restart(start_node, data_dir, "fsync")
    connection = Resp(resp_address_of(node))
    keys = [b"ttl-change:%d" % i for i in range(200)]
    commands: list[tuple[bytes, ...]] = []
    for i, key in enumerate(keys):
        commands.append((b"SET", key, b"value %d" % i, b"PX", b"400"))
        commands.append((b"PERSIST", key) if i % 2 else (b"PEXPIRE", key, b"%d" % LONG_TTL_MS))
    sent = now_ms()
    connection.send(commands)
    replies = [connection.reply() for _ in commands]
    acknowledged = now_ms()
    assert replies == ["OK", 1] * len(keys)  # every change applied to a live key, and acknowledged
    node.kill()
    connection.close()
    time.sleep(max(0.0, (sent + 600 - now_ms()) / 1000))  # the 400 ms TTLs have run out by now

    node = restart(start_node, data_dir, "fsync")
    observed, size = read_back(resp_address_of(node), keys)
    lost = []
    for i, key in enumerate(keys):
        seen = observed[key]
        expected: KeyState = (b"value %d" % i, None if i % 2 else (sent + LONG_TTL_MS, acknowledged + LONG_TTL_MS))
        if not matches(expected, seen):
            lost.append(f"{key!r}: {seen.value!r} pttl {seen.pttl}")
    print(f"[crash --wal fsync, TTL changed after the write] acknowledged {len(keys)} keys, lost: {len(lost)}")
    assert not lost, f"{len(lost)} of {len(keys)} acknowledged keys lost:\n" + "\n".join(lost[:5])
    assert size == len(keys)
