"""Durable backends against a dict model, across restarts, on a fake clock.

Hypothesis drives random histories -- writes with and without TTLs, deletes,
TTL changes, flushes, snapshots, the clock moving, the active expiry sampler,
clean restarts (close + reopen) and crash restarts (the log written out the way
the server does before each reply, then the backend abandoned without close)
-- and after every restart the whole keyspace must equal the model: same keys,
values, versions and deadlines. Deadlines are absolute, so a restart must
never extend a TTL nor bring back a key that expired (also while the backend
was closed).

A few plain tests below pin down restart behaviour the model leaves out:
memory pressure (eviction) and versions.
"""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from aegiskv.backends.base import NO_EXPIRY, Backend
from aegiskv.backends.options import BuiltinBackendOptions
from aegiskv.backends.snapshot import SnapshotBackend
from aegiskv.backends.wal import WalBackend
from aegiskv.node.operations import first_version
from tests.backend_state import state_of
from tests.effort import examples
from tests.fake_clock import FakeClock

BIG = 1 << 30
KEYS = st.sampled_from([b"a", b"b", b"\x00k"])
VALUES = st.binary(max_size=24)
TTLS = st.one_of(st.none(), st.integers(1, 2_000))
# None: the node stays down until every deadline ever written has passed.
DOWNTIMES = st.sampled_from([0, 1, 1_000, None])

# (backend class, wal_mode, changes made through the backend's in-memory store) per id.
# Through the store is how the node's fast path makes them (WalBackend.memory): the
# log hears of each as the store's listener, and must replay them the same.
KINDS = {
    "wal-write": (WalBackend, "write", False),
    "wal-fsync": (WalBackend, "fsync", False),
    "snapshot": (SnapshotBackend, "fsync", False),
    "wal-write-memory": (WalBackend, "write", True),
    "snapshot-memory": (SnapshotBackend, "fsync", True),
}


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync skipped in-process: no power is lost here, and hundreds of reopens would mostly wait on the disk."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def abandon(backend: Backend) -> None:
    """A crash: the process is gone, nothing more is written (the fd is closed only to not leak it)."""
    log = backend.log
    if log is not None:
        for fd in (log._fd, *log._to_sync):  # type: ignore[attr-defined]
            os.close(fd)


def snapshot_now(backend: Backend) -> str:
    """Freeze a snapshot and write it out at once; its path. Only for backends that take snapshots."""
    job = backend.begin_snapshot()
    assert job is not None, "this backend takes no snapshots"
    return job()


class Harness:
    """One backend on one data dir, the dict model next to it, and every operation on both.

    The hypothesis machine and the seeded random walk below drive the same operations.
    """

    def __init__(self, kind: str, data_dir: Path) -> None:
        self.backend_class, self.wal_mode, self.via_memory = KINDS[kind]
        self.data_dir = data_dir
        data_dir.mkdir()
        self.clock = FakeClock()
        # key -> (value, version, deadline); a key whose deadline passed is dead.
        self.model: dict[bytes, tuple[bytes, int, int]] = {}
        self.latest_deadline = 0  # the furthest deadline ever written, even if changed later
        self.history: list[str] = []  # what was done, for failure messages
        self.open()

    def open(self) -> None:
        # Tiny segments: histories rotate the log and snapshots drop covered segments.
        options = BuiltinBackendOptions(
            max_memory_bytes=BIG, data_dir=str(self.data_dir), wal_mode=self.wal_mode, wal_segment_bytes=300
        )
        self.backend = self.backend_class(options, self.clock)
        memory = self.backend.memory
        assert memory is not None
        # Where the keyspace calls go; the log, snapshots and close stay on the backend.
        self.keyspace: Backend = memory if self.via_memory else self.backend

    def live(self) -> dict[bytes, tuple[bytes, int, int]]:
        now = self.clock()
        return {key: item for key, item in self.model.items() if item[2] == NO_EXPIRY or item[2] > now}

    def is_live(self, key: bytes) -> bool:
        return key in self.live()

    def written(self) -> None:
        # What the server does before every reply: hand the records to the OS.
        if self.backend.log is not None:
            self.backend.log.write_out()

    # -- operations -------------------------------------------------------------------

    def put(self, key: bytes, value: bytes, ttl: int | None) -> None:
        self.history.append(f"put({key!r}, {value!r}, ttl={ttl})")
        deadline = NO_EXPIRY if ttl is None else self.clock() + ttl
        self.latest_deadline = max(self.latest_deadline, deadline)
        version = self.keyspace.put(key, value, deadline)
        self.model[key] = (value, version, deadline)
        self.written()

    def delete(self, key: bytes) -> None:
        self.history.append(f"delete({key!r})")
        assert self.keyspace.delete(key) is self.is_live(key)
        self.model.pop(key, None)
        self.written()

    def expire(self, key: bytes, ttl: int) -> None:
        # ttl <= 0: a deadline already past (what EXPIRE with a past time leaves behind).
        self.history.append(f"expire({key!r}, ttl={ttl})")
        deadline = self.clock() + ttl
        self.latest_deadline = max(self.latest_deadline, deadline)
        live = self.is_live(key)
        assert self.keyspace.set_expiry(key, deadline) is live
        if live:
            value, version, _ = self.model[key]
            self.model[key] = (value, version, deadline)
        self.written()

    def persist(self, key: bytes) -> None:
        self.history.append(f"persist({key!r})")
        live = self.is_live(key)
        assert self.keyspace.set_expiry(key, NO_EXPIRY) is live
        if live:
            value, version, _ = self.model[key]
            self.model[key] = (value, version, NO_EXPIRY)
        self.written()

    def get(self, key: bytes) -> None:
        # Reads expire keys lazily, and the log records those drops.
        self.history.append(f"get({key!r})")
        entry = self.keyspace.get_entry(key)
        expected = self.live().get(key)
        if expected is None:
            assert entry is None
        else:
            assert entry is not None and (bytes(entry.value), entry.version, entry.expires_at_ms) == expected
        self.written()

    def flush(self) -> None:
        self.history.append("flush()")
        self.keyspace.flush()
        self.model.clear()
        self.written()

    def advance_clock(self, ms: int) -> None:
        self.history.append(f"advance_clock({ms})")
        self.clock.advance(ms)

    def expire_step(self) -> None:
        self.history.append("expire_step()")
        self.keyspace.expire_step(20, 0.0)
        self.written()

    def snapshot(self) -> None:
        self.history.append("snapshot()")
        job = self.backend.begin_snapshot()
        assert job is not None
        assert os.path.exists(job())

    def down_for(self, downtime: int | None) -> None:
        # None: past every deadline ever written (the log keeps them even where a later record changed them).
        if downtime is None:
            downtime = max(0, self.latest_deadline - self.clock() + 1)
        self.clock.advance(downtime)

    def restart(self, downtime: int | None) -> None:
        self.history.append(f"restart(downtime={downtime})")
        self.backend.close()
        self.down_for(downtime)  # keys may expire while the node is down
        self.open()
        self.check_everything()

    def crash(self, downtime: int | None) -> None:
        self.history.append(f"crash(downtime={downtime})")
        abandon(self.backend)
        self.down_for(downtime)
        self.open()
        self.check_everything()

    # -- checks -------------------------------------------------------------------------

    def check_everything(self) -> None:
        expected = self.live()
        assert state_of(self.backend) == expected
        for key in set(self.model) - set(expected):
            assert self.backend.get_entry(key, touch=False) is None, f"{key!r} revived by a restart"

    def check_keys(self) -> None:
        # keys() hides expired keys without removing them: cheap enough after every step.
        assert sorted(self.backend.keys()) == sorted(self.live())

    def close(self) -> None:
        self.backend.close()


def make_machine(kind: str, root: Path) -> type[RuleBasedStateMachine]:
    histories = itertools.count()

    class DurableModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.harness = Harness(kind, root / f"history{next(histories)}")

        def pick(self, data: st.DataObject) -> bytes:
            # Mostly a key that holds a value (a TTL change on a missing key tests little).
            live = sorted(self.harness.live())
            if len(live) > 0 and data.draw(st.booleans(), label="a live key"):
                return data.draw(st.sampled_from(live), label="key")
            return data.draw(KEYS, label="key")

        @rule(key=KEYS, value=VALUES, ttl=TTLS)
        def put(self, key: bytes, value: bytes, ttl: int | None) -> None:
            self.harness.put(key, value, ttl)

        @rule(data=st.data())
        def delete(self, data: st.DataObject) -> None:
            self.harness.delete(self.pick(data))

        @rule(data=st.data(), ttl=st.one_of(st.integers(1, 5_000), st.integers(-100, 0)))
        def expire(self, data: st.DataObject, ttl: int) -> None:
            self.harness.expire(self.pick(data), ttl)

        @rule(data=st.data())
        def persist(self, data: st.DataObject) -> None:
            self.harness.persist(self.pick(data))

        @rule(key=KEYS)
        def get(self, key: bytes) -> None:
            self.harness.get(key)

        @rule()
        def flush(self) -> None:
            self.harness.flush()

        @rule(ms=st.integers(0, 3_000))
        def advance_clock(self, ms: int) -> None:
            self.harness.advance_clock(ms)

        @rule()
        def expire_step(self) -> None:
            self.harness.expire_step()

        @precondition(lambda self: KINDS[kind][0] is SnapshotBackend)
        @rule()
        def snapshot(self) -> None:
            self.harness.snapshot()

        @rule(downtime=DOWNTIMES)
        def restart(self, downtime: int | None) -> None:
            self.harness.restart(downtime)

        @rule(downtime=DOWNTIMES)
        def crash(self, downtime: int | None) -> None:
            self.harness.crash(downtime)

        @invariant()
        def same_keys(self) -> None:
            self.harness.check_keys()

        def teardown(self) -> None:
            self.harness.close()

    return DurableModel


@pytest.mark.parametrize("kind", list(KINDS))
def test_random_histories_survive_restarts(kind: str, tmp_path: Path) -> None:
    # No shrinking phase: it alone would take a minute per failure, over the
    # time budget of the suite. A failure prints the whole history; the
    # minimal cases found so far are pinned as plain tests below.
    run_state_machine_as_test(
        make_machine(kind, tmp_path),
        settings=settings(
            max_examples=examples(40),
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
        ),
    )


def random_walk(harness: Harness, rng: random.Random, steps: int) -> None:
    """The same operations as the machine, chosen by a seeded RNG: many more histories per second
    than hypothesis, and the same ones on every run."""
    keys = [b"a", b"b", b"\x00k"]
    for _ in range(steps):
        live = sorted(harness.live())
        key = rng.choice(live) if live and rng.random() < 0.7 else rng.choice(keys)
        operation = rng.randrange(11)
        if operation == 0:
            harness.put(key, rng.randbytes(rng.randrange(12)), rng.choice([None, rng.randint(1, 2_000)]))
        elif operation == 1:
            harness.delete(key)
        elif operation == 2:
            harness.expire(key, rng.choice([rng.randint(1, 5_000), rng.randint(-100, 0)]))
        elif operation == 3:
            harness.persist(key)
        elif operation == 4:
            harness.get(key)
        elif operation == 5 and rng.random() < 0.2:
            harness.flush()
        elif operation == 6:
            harness.advance_clock(rng.randint(0, 3_000))
        elif operation == 7:
            harness.expire_step()
        elif operation == 8:
            harness.restart(rng.choice([0, 1, 1_000, None]))
        elif operation == 9:
            harness.crash(rng.choice([0, None]))
        elif operation == 10 and harness.backend_class is SnapshotBackend:
            harness.snapshot()
        harness.check_keys()


@pytest.mark.parametrize("kind", list(KINDS))
def test_seeded_random_walks_survive_restarts(kind: str, tmp_path: Path) -> None:
    failures: list[str] = []
    for seed in range(examples(100)):
        harness = Harness(kind, tmp_path / f"walk{seed}")
        try:
            random_walk(harness, random.Random(seed), steps=40)
        except AssertionError as error:
            steps = "; ".join(harness.history)
            failures.append(f"seed {seed}: {str(error).splitlines()[0][:200]}\n    after: {steps}")
        finally:
            harness.close()
    # The shortest failing history first: the easiest to read.
    failures.sort(key=len)
    assert not failures, f"{len(failures)} histories failed; shortest:\n" + "\n".join(failures[:3])


# -- what the model leaves out -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["wal-write", "snapshot"])
def test_restart_under_memory_pressure_keeps_the_live_keys(kind: str, tmp_path: Path) -> None:
    """Eviction is logged (as deletes); a restart with the same budget must bring back exactly the
    keys that were live, however reads reordered the SLRU before the restart."""
    backend_class, wal_mode, _through_memory = KINDS[kind]
    lost_per_history = {}
    for seed in range(1, 7):
        clock = FakeClock()
        data_dir = tmp_path / f"seed{seed}"
        data_dir.mkdir()
        options = BuiltinBackendOptions(max_memory_bytes=20_000, data_dir=str(data_dir), wal_mode=wal_mode)
        backend = backend_class(options, clock)
        rng = random.Random(seed)
        for step in range(300):
            backend.put(b"k%d" % rng.randrange(60), b"v" * rng.randrange(50, 400))
            if rng.random() < 0.5:
                backend.get(b"k%d" % rng.randrange(60))  # a second hit promotes the key: never logged
            if kind == "snapshot" and step == 100:
                snapshot_now(backend)  # the rest comes from the log after it
        assert backend.stats().evictions > 0
        before = state_of(backend)
        backend.close()
        reopened = backend_class(options, clock)
        after = state_of(reopened)
        reopened.close()
        assert set(after) <= set(before), "a restart brought back a key that was not live"
        assert all(after[key] == before[key] for key in after)
        if set(before) - set(after):
            lost_per_history[seed] = f"{len(set(before) - set(after))} of {len(before)}"
    assert not lost_per_history, f"live keys lost by a restart, per seeded history: {lost_per_history}"


@pytest.mark.parametrize("kind", ["wal-write", "snapshot"])
@pytest.mark.parametrize("change", ["persist", "extend"])
def test_ttl_changed_after_the_write_survives_a_restart_past_the_original_deadline(
    kind: str, change: str, tmp_path: Path
) -> None:
    # The write's own deadline has passed by the restart, but a later EXPIRE
    # record removed or moved it: the key is live and must stay so.
    backend_class, wal_mode, _through_memory = KINDS[kind]
    clock = FakeClock()
    options = BuiltinBackendOptions(max_memory_bytes=BIG, data_dir=str(tmp_path), wal_mode=wal_mode)
    backend = backend_class(options, clock)
    if kind == "snapshot":
        backend.put(b"other", b"x")
        snapshot_now(backend)  # the key below lives in the log after the snapshot
    version = backend.put(b"k", b"v", clock() + 1_000)
    deadline = NO_EXPIRY if change == "persist" else clock() + 3_600_000
    assert backend.set_expiry(b"k", deadline)
    backend.close()
    clock.advance(2_000)
    reopened = backend_class(options, clock)
    entry = reopened.get_entry(b"k", touch=False)
    reopened.close()
    assert entry is not None, "the key was dropped by its first deadline, though a later record changed it"
    assert (bytes(entry.value), entry.version, entry.expires_at_ms) == (b"v", version, deadline)


@pytest.mark.parametrize("kind", ["wal-write", "snapshot"])
def test_restart_never_hands_out_a_version_again(kind: str, tmp_path: Path) -> None:
    # Versions only grow across the whole backend (aegiskv.backends.base): a
    # key written after a restart must not reuse the version of a write from
    # before it, even one that has since expired.
    backend_class, wal_mode, _through_memory = KINDS[kind]
    clock = FakeClock()
    options = BuiltinBackendOptions(max_memory_bytes=BIG, data_dir=str(tmp_path), wal_mode=wal_mode)
    backend = backend_class(options, clock)
    backend.put(b"plain", b"1")
    if kind == "snapshot":
        snapshot_now(backend)
    last = backend.put(b"short-lived", b"2", clock() + 10)
    backend.close()
    clock.advance(100)  # the last write expires while the node is down
    reopened = backend_class(options, clock)
    assert reopened.last_version >= last
    assert reopened.put(b"new", b"3") > last
    reopened.close()


@pytest.mark.parametrize("kind", ["wal-write", "snapshot"])
def test_restart_keeps_each_keys_version(kind: str, tmp_path: Path) -> None:
    """A key's version is its compare-and-set token: an unchanged key keeps it across a restart.

    Built the way the daemon builds backends: versions start from the wall clock
    (aegiskv.node.operations.first_version), so the restarted process starts above every
    version it wrote before.
    """
    backend_class, wal_mode, _through_memory = KINDS[kind]
    clock = FakeClock()

    def open_backend() -> Backend:
        options = BuiltinBackendOptions(
            max_memory_bytes=BIG,
            data_dir=str(tmp_path),
            wal_mode=wal_mode,
            first_version=first_version(clock()),
        )
        return backend_class(options, clock)

    backend = open_backend()
    backend.put(b"in-snapshot", b"1")
    if kind == "snapshot":
        snapshot_now(backend)
    backend.put(b"in-log", b"2", clock() + 600_000)
    before = state_of(backend)
    backend.close()
    clock.advance(1_000)
    reopened = open_backend()
    after = state_of(reopened)
    reopened.close()
    assert {key: version for key, (_, version, _) in after.items()} == {
        key: version for key, (_, version, _) in before.items()
    }
