"""The replication stream's sans-IO parts: backlog, sync plans, change codec, quorum counting, lag."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegiskv.cluster.replication import (
    LAG_BUCKET_BOUNDS,
    RANGE_HEADER,
    Backlog,
    Change,
    Copy,
    LagHistogram,
    LagMarks,
    Op,
    QuorumTracker,
    ReadRound,
    decode_changes,
    encode_changes,
    quantile_of,
    writer_tag,
)
from tests.effort import examples

A, B = writer_tag("a"), writer_tag("b")


def primary_backlog(epochs: list[tuple[int, int]], max_bytes: int = 1 << 20, writer: int = A) -> Backlog:
    """A backlog that wrote ``count`` changes in each ``(epoch, count)``, in order, as ``writer``."""
    backlog = Backlog(max_bytes)
    for epoch, count in epochs:
        backlog.start_epoch(epoch, writer)
        for index in range(count):
            backlog.append(Op.PUT, b"k%d" % index, b"v", index + 1, 0)
    return backlog


def test_sequence_numbers_continue_across_epochs_and_history_places_them() -> None:
    backlog = primary_backlog([(1, 5), (3, 4)])
    assert backlog.last_seq == 9
    assert backlog.history == [(1, 1, A), (3, 6, A)]
    assert [backlog.epoch_of(seq) for seq in (0, 1, 5, 6, 9)] == [0, 1, 1, 3, 3]
    assert backlog.position == (3, 9)


def test_epochs_must_grow() -> None:
    backlog = primary_backlog([(4, 1)])
    with pytest.raises(ValueError, match="does not grow"):
        backlog.start_epoch(4, A)


def test_a_follower_on_the_primarys_log_continues_incrementally() -> None:
    backlog = primary_backlog([(1, 5), (3, 4)])
    assert backlog.plan_sync((1, 5), A) == (False, 6, False)
    assert backlog.plan_sync((3, 7), A) == (False, 8, False)
    assert backlog.plan_sync((3, 9), A) == (False, 10, False)  # up to date: nothing to send yet
    assert backlog.plan_sync((0, 0), 0) == (False, 1, False)  # empty, and the backlog holds everything


def test_a_follower_with_changes_the_primary_never_had_is_resynced_and_discards_them() -> None:
    backlog = primary_backlog([(1, 5), (3, 4)])
    # An old primary of epoch 2 wrote seq 6 and 7, which reached no majority: not on this history.
    assert backlog.plan_sync((2, 7), A) == (True, 10, True)
    # Further than the primary got at all.
    assert backlog.plan_sync((3, 12), A) == (True, 10, True)


def test_the_same_epoch_written_by_another_primary_is_another_log() -> None:
    # Each node starts alone and elects itself for epoch 1 before it joins: b's "epoch 1, seq 4"
    # holds other changes than a's, and must be resynced, not continued.
    backlog = primary_backlog([(1, 5), (3, 4)])
    assert backlog.plan_sync((1, 4), B) == (True, 10, True)
    assert backlog.plan_sync((1, 4), A) == (False, 5, False)


def test_a_follower_behind_the_backlog_is_resynced_without_discarding() -> None:
    backlog = primary_backlog([(1, 50)], max_bytes=300)
    assert backlog.first_seq > 2
    assert backlog.plan_sync((1, 1), A) == (True, 51, False)
    held_from = backlog.first_seq - 1
    assert backlog.plan_sync((1, held_from), A) == (False, held_from + 1, False)


def test_changes_after_respect_the_byte_budget_and_refuse_what_is_gone() -> None:
    backlog = primary_backlog([(1, 20)])
    first = backlog.changes_after(0, max_bytes=1)
    assert [change.seq for change in first] == [1]  # always at least one
    some = backlog.changes_after(4, max_bytes=3 * first[0].size())
    assert [change.seq for change in some] == [5, 6, 7]
    assert backlog.changes_after(20, max_bytes=1 << 20) == []
    small = primary_backlog([(1, 50)], max_bytes=300)
    with pytest.raises(LookupError, match="gone"):
        small.changes_after(0, 1 << 20)


def test_a_follower_backlog_records_in_order_and_learns_the_history() -> None:
    primary = primary_backlog([(1, 3), (2, 3)])
    follower = Backlog(1 << 20)
    follower.restart_at(0, primary.history_since(0))
    for change in primary.changes_after(0, 1 << 20):
        follower.record(change)
    assert follower.position == primary.position == (2, 6)
    with pytest.raises(ValueError, match="after"):
        follower.record(Change(9, Op.PUT, b"k", b"v", 1, 0))
    # The primary moves on to epoch 5; the follower learns it with the next changes.
    primary.start_epoch(5, B)
    primary.append(Op.DELETE, b"k0", b"", 99, 0)
    follower.merge_history(primary.history_since(follower.last_seq))
    follower.record(primary.changes_after(6, 1 << 20)[0])
    assert follower.position == (5, 7)


def test_history_from_a_new_primary_replaces_what_it_contradicts() -> None:
    follower = Backlog(1 << 20)
    follower.merge_history([(1, 1, A), (2, 10, A)])
    follower.merge_history([(2, 10, A), (4, 12, B)])
    assert follower.history == [(1, 1, A), (2, 10, A), (4, 12, B)]
    assert follower.writer == 0  # it holds no change yet
    with pytest.raises(ValueError, match="does not grow"):
        follower.merge_history([(3, 20, B)])


changes_strategy = st.lists(
    st.builds(
        Change,
        st.integers(1, 2**63),
        st.sampled_from([int(op) for op in Op]),
        st.binary(max_size=40),
        st.binary(max_size=200),
        st.integers(0, 2**63),
        st.integers(-(2**63), 2**63 - 1),
    ).filter(lambda change: change.op != Op.RANGE or len(change.value) >= RANGE_HEADER.size),
    max_size=20,
)


@given(changes_strategy)
@settings(max_examples=examples(200))
def test_the_change_codec_round_trips(changes: list[Change]) -> None:
    assert decode_changes(encode_changes(changes)) == changes


@given(changes_strategy.filter(bool), st.data())
@settings(max_examples=examples(200))
def test_truncated_or_damaged_batches_raise_value_error(changes: list[Change], data: st.DataObject) -> None:
    encoded = encode_changes(changes)
    cut = data.draw(st.integers(1, len(encoded) - 1)) if len(encoded) > 1 else 0
    try:
        decoded = decode_changes(encoded[:cut])
    except ValueError:
        return
    # A cut exactly between two changes is a shorter, valid batch.
    assert decoded == changes[: len(decoded)]


def test_a_range_change_shorter_than_its_header_is_refused() -> None:
    # It would fail later, unpacked under the node lock on the follower.
    with pytest.raises(ValueError, match="shorter than its header"):
        decode_changes(encode_changes([Change(1, Op.RANGE, b"k", b"short", 1, 0)]))


def test_unknown_ops_and_too_many_items_are_refused() -> None:
    bad = bytearray(encode_changes([Change(1, Op.PUT, b"k", b"v", 1, 0)]))
    bad[8] = 77
    with pytest.raises(ValueError, match="unknown change op"):
        decode_changes(bytes(bad))
    many = encode_changes([Change(seq, Op.DELETE, b"k", b"", 1, 0) for seq in range(1, 6)])
    with pytest.raises(ValueError, match="more than 4"):
        decode_changes(many, max_items=4)


def test_quorum_counts_the_primary_and_each_follower_once() -> None:
    tracker = QuorumTracker()
    tracker.set_followers(["b", "c"])
    assert tracker.replicas() == 3
    assert tracker.copies(1) == 1
    assert tracker.acknowledge("b", 5)
    assert not tracker.acknowledge("b", 4)  # acknowledgements only move forward
    assert not tracker.acknowledge("stranger", 9)
    assert tracker.copies(5) == 2 and tracker.copies(6) == 1
    tracker.acknowledge("c", 9)
    assert tracker.copies(5) == 3
    tracker.set_followers(["c", "d"])  # b left the replica set
    assert tracker.copies(5) == 2 and tracker.replicas() == 3


def test_a_round_completes_at_the_quorum_counting_the_primary() -> None:
    round_ = ReadRound(3, Copy("p", 5, b"mine"), ["f1", "f2"])
    assert not round_.complete
    assert round_.answer(Copy("f1", 5, b"mine", behind=True))
    assert not round_.complete
    assert not round_.answer(Copy("f1", 5, b"mine", behind=True))  # once per copy
    assert not round_.answer(Copy("stranger", 9, b"x"))  # never asked
    assert round_.answer(Copy("f2", 4, b"old", behind=True))
    assert round_.complete
    assert round_.newest().holder == "p"
    assert round_.stale() == ["f2"]


def test_a_diverged_copy_with_a_newer_version_wins() -> None:
    round_ = ReadRound(2, Copy("p", 5, b"mine"), ["f1"])
    round_.answer(Copy("f1", 8, b"theirs"))
    assert round_.newest() == Copy("f1", 8, b"theirs")
    assert round_.stale() == ["p"]


def test_a_copy_behind_the_primarys_log_never_wins_even_where_the_key_was_deleted() -> None:
    # The primary deleted the key (version 0: no tombstone); a lagging follower still holds it.
    round_ = ReadRound(2, Copy("p", 0), ["f1"])
    round_.answer(Copy("f1", 8, b"deleted since", behind=True))
    assert round_.newest().holder == "p"
    assert round_.stale() == ["f1"]


def test_ties_go_to_the_primary() -> None:
    round_ = ReadRound(2, Copy("p", 5, b"mine"), ["f1"])
    round_.answer(Copy("f1", 5, b"mine"))
    assert round_.newest().holder == "p"
    assert round_.stale() == []


# -- replication lag ------------------------------------------------------------------------------


@given(st.lists(st.floats(min_value=1e-6, max_value=30.0), min_size=1, max_size=200), st.sampled_from([0.5, 0.99]))
@settings(max_examples=examples(200))
def test_lag_quantiles_are_bucket_bounds_at_most_a_bucket_above_the_true_value(
    samples: list[float], fraction: float
) -> None:
    histogram = LagHistogram()
    for sample in samples:
        histogram.record(sample)
    exact = sorted(samples)[max(1, math.ceil(len(samples) * fraction)) - 1]
    found = histogram.quantile(fraction)
    assert found in LAG_BUCKET_BOUNDS
    assert exact <= found <= exact * 2 ** (1 / 4) * (1 + 1e-9)
    assert histogram.samples == len(samples) and histogram.max == max(samples)


def test_lag_beyond_the_last_bound_reads_as_the_maximum() -> None:
    histogram = LagHistogram()
    assert histogram.quantile(0.99) == 0.0  # no samples
    histogram.record(500.0)
    assert histogram.counts[-1] == 1
    assert histogram.quantile(0.5) == 500.0
    assert quantile_of(histogram.counts, 0.5) == float("inf")  # a difference of scrapes has no max


def test_each_mark_is_sampled_once_per_follower_when_its_ack_covers_it() -> None:
    marks, histogram = LagMarks(), RawLag()
    marks.mark(1, 10.0)
    marks.mark(1, 10.5)  # the same change again: ignored
    marks.mark(4, 11.0)
    marks.mark(9, 12.0)
    marks.acknowledged(0, 4, 12.002, histogram)  # follower a: covers seqs 1 and 4
    assert sorted(round(value, 3) for value in histogram.values) == [1.002, 2.002]
    marks.acknowledged(4, 8, 12.003, histogram)  # a again: nothing marked in 5..8
    assert histogram.samples == 2
    marks.acknowledged(0, 9, 12.004, histogram)  # follower b: all three
    assert histogram.samples == 5
    marks.trim(8)  # a is at 8, b at 9: only seq 9 is still needed
    assert len(marks) == 1
    marks.acknowledged(8, 9, 12.010, histogram)  # a reaches 9
    assert histogram.samples == 6 and round(histogram.max, 3) == 2.004


def test_marks_stay_bounded_while_a_follower_is_away() -> None:
    marks, histogram = LagMarks(), LagHistogram()
    for seq in range(1, 3 * LagMarks.MAX_MARKS):
        marks.mark(seq, float(seq))
        marks.trim(0)  # the away follower acknowledged nothing
    assert len(marks) == LagMarks.MAX_MARKS
    marks.acknowledged(0, 3 * LagMarks.MAX_MARKS, 1e6, histogram)  # it came back: the marks still held
    assert histogram.samples == LagMarks.MAX_MARKS
    marks.trim(3 * LagMarks.MAX_MARKS)
    assert len(marks) == 0
    marks.mark(1, 0.0)  # after clear() or a full trim, marking starts afresh
    assert len(marks) == 1


class RawLag(LagHistogram):
    """A histogram that also keeps each sample (to check the exact values LagMarks records)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[float] = []

    def record(self, seconds: float) -> None:
        super().record(seconds)
        self.values.append(seconds)
