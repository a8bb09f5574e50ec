"""What a fault run proved: lost writes, stale acknowledgements, unavailability, stray errors.

Pure functions over what the workload recorded (:class:`~tests.faults.workload.Write`,
``Read``), the final read-back, and the nemesis's :class:`Timeline`. All times
are ``time.monotonic()`` seconds; the summary gives them relative to the
timeline's start.

Definitions (the summary's field names in brackets):

* **Lost** [``lost``]: a write whose SET was acknowledged (the client read an
  OK) but whose key, read back after the faults were healed and the cluster
  settled, is missing or holds another value. Keys are written once, so the
  value is exact. Keys the read-back could not read are ``unreadable``, never
  counted as lost or kept. Writes that failed or timed out but are present
  anyway are ``indeterminate_applied`` (allowed: the request may have been
  applied before the reply was lost).

* **Stale acknowledgement** [``stale_acks``]: a :class:`Cut` says node X
  could not have held a lease from ``start`` to ``end`` (SIGSTOPped, or cut
  off from a majority of the nodes). Its last lease was granted before
  ``start``, so it ran out by ``start + lease`` at the latest; ``expired =
  start + lease + tolerance`` (``tolerance`` absorbs a client that notices a
  reply late on a busy machine). An acknowledgement from X received at A is
  stale when

  - ``during``: ``expired <= A <= end``: X acknowledged while it was still
    cut off (or, for a pause, "while stopped", which only a wrong
    attribution could produce); or
  - ``queued``: ``end < A <= end + grace`` for a request sent before ``end``
    -- after a pause, any such request (DESIGN: a node resumed with an
    expired lease must refuse what it had queued, whatever it wins later);
    after an isolation, one sent after ``start + lease``, when X could hold
    no lease to accept it with.

  Requests sent after the cut ended are never flagged: X may have won a new
  lease by then (a split brain there shows as lost writes instead). A request
  is dated by the attempt that was answered (``Write.attempt_sent``) where the
  workload knows it: a client that retried after the cut ended (the request X
  held was refused when it woke) sent a new request, which X may accept under
  a lease won since.
  ``sent_after_expiry`` marks the requests sent after ``start + lease``:
  handled after the lease ended whatever the client's delays.

* **Unavailability window** [``events[].impacts[].window_s``]: for an
  :class:`Event` at time F and each :class:`Impact` (the slots expected to be
  unwritable, and from which client sides), each written slot is writable
  again at the first acknowledgement of a write to it sent at or after F
  (per slot: ``unit_windows_s``); the impact's window is the longest of them.
  The workload writes every unit at a steady rate, so this is accurate to
  about ``units / rate`` seconds. A slot never written successfully again is
  ``never`` (the window then lasts to the end of the run).

* **Errors** [``errors``]: each failed write is ``in_window`` (its slot and
  side are in an impact of an event that began before it failed, and it was
  sent before that impact's window ended), ``collateral`` (inside an event's
  time window but on a slot the event should not touch), or ``outside``
  (no event explains it: the "errors after the window" that a client must not
  see once failover is done).
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.faults.workload import Read, Write


@dataclass(frozen=True)
class Impact:
    """Writes from ``sides`` (None: every side) to ``slots`` may fail for a while after the event."""

    slots: frozenset[int]
    sides: frozenset[str] | None = None
    label: str = ""
    # Writes may fail at least until this moment (a partition that cut these sides
    # off lasts until its heal): only writes sent after it can end the window.
    lasts_until: float | None = None


@dataclass(frozen=True)
class Event:
    at: float
    kind: str  # kill, restart, pause, resume, partition, heal, ...
    nodes: tuple[str, ...]
    impacts: tuple[Impact, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class Cut:
    """``node`` could not hold a lease from ``start`` to ``end``: ``kind`` is "pause" or "isolated"."""

    node: str
    kind: str
    start: float
    end: float


@dataclass
class Timeline:
    """What the nemeses did, in order, with monotonic timestamps."""

    start: float = field(default_factory=time.monotonic)
    events: list[Event] = field(default_factory=list)
    cuts: list[Cut] = field(default_factory=list)

    def add(self, event: Event) -> Event:
        self.events.append(event)
        return event


@dataclass(frozen=True)
class CheckSettings:
    lease: float = 2.0  # seconds a grant binds its voters (the daemon's default lease)
    tolerance: float = 0.25  # late noticing allowed after start + lease
    grace: float = 0.5  # after a cut ends: how long replies to requests held through it are watched
    examples: int = 20  # listed per finding (counts are always complete)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, math.ceil(fraction * len(ordered)) - 1)
    return ordered[rank]


def _finite(value: float) -> float | None:
    return None if math.isinf(value) or math.isnan(value) else round(value, 3)


class _SlotIndex:
    """Writes per slot, by send time, for "first ack after F" questions."""

    def __init__(self, writes: Iterable[Write]) -> None:
        self.by_slot: dict[int, list[Write]] = {}
        for write in writes:
            self.by_slot.setdefault(write.slot, []).append(write)
        self.sent: dict[int, list[float]] = {}
        for slot, entries in self.by_slot.items():
            entries.sort(key=lambda write: write.sent)
            self.sent[slot] = [write.sent for write in entries]

    def first_ack(self, slot: int, after: float, sides: frozenset[str] | None) -> float:
        """Earliest completion of an acknowledged write to ``slot`` sent at or after ``after``."""
        entries = self.by_slot.get(slot, [])
        best = math.inf
        for position in range(bisect.bisect_left(self.sent.get(slot, []), after), len(entries)):
            write = entries[position]
            if write.sent > best:
                break  # sent after the best one finished: cannot finish earlier
            if write.ok and (sides is None or write.side in sides) and write.done < best:
                best = write.done
        return best


def _window_of(
    index: _SlotIndex, event: Event, impact: Impact, end: float
) -> tuple[float, dict[int, float], list[int]]:
    """(the moment every impacted slot was writable again, per-slot windows, slots never written again)."""
    per_slot: dict[int, float] = {}
    never: list[int] = []
    opens = max(event.at, impact.lasts_until if impact.lasts_until is not None else event.at)
    for slot in sorted(impact.slots & index.by_slot.keys()):
        first = index.first_ack(slot, opens, impact.sides)
        if math.isinf(first):
            never.append(slot)
        else:
            per_slot[slot] = first - event.at
    if never:
        return end, per_slot, never
    return event.at + max(per_slot.values(), default=0.0), per_slot, never


def check(
    writes: Sequence[Write],
    final: Mapping[bytes, bytes | None],
    timeline: Timeline,
    *,
    unreadable: Mapping[bytes, str] | None = None,
    reads: Sequence[Read] = (),
    end: float | None = None,
    settings: CheckSettings = CheckSettings(),
) -> dict[str, Any]:
    """The summary of one run (JSON-ready); :func:`render` prints it for people."""
    unreadable = unreadable or {}
    t0 = timeline.start
    end = end if end is not None else max((write.done for write in writes), default=t0)
    limit = settings.examples

    def rel(moment: float) -> float | None:
        return _finite(moment - t0)

    acked = [write for write in writes if write.ok]
    failed = [write for write in writes if not write.ok]

    # -- lost and indeterminate writes --------------------------------------------------------
    events = sorted(timeline.events, key=lambda event: event.at)

    def phase(moment: float) -> str:
        # The last fault before: a "settled" mark names no fault.
        before = [event for event in events if event.at <= moment and event.kind != "settled"]
        return f"after {before[-1].kind} {','.join(before[-1].nodes)}" if before else "before any fault"

    lost: list[dict[str, Any]] = []
    unknown = 0
    for write in acked:
        if write.key in unreadable:
            unknown += 1
            continue
        seen = final.get(write.key)
        if seen != write.value:
            lost.append(
                {
                    "key": write.key.decode(errors="replace"),
                    "found": None if seen is None else seen.decode(errors="replace"),
                    "acked_by": write.node,
                    "side": write.side,
                    "slot": write.slot,
                    "sent": rel(write.sent),
                    "acked": rel(write.done),
                    "phase": phase(write.done),
                }
            )
    indeterminate = sum(1 for write in failed if final.get(write.key) == write.value)

    # -- stale acknowledgements ---------------------------------------------------------------------
    stale: list[dict[str, Any]] = []
    for cut in timeline.cuts:
        expired = cut.start + settings.lease + settings.tolerance
        lease_end = cut.start + settings.lease
        for write in acked:
            if write.node != cut.node or write.done < expired:
                continue
            sent = write.sent if write.attempt_sent is None else write.attempt_sent
            if write.done <= cut.end:
                how = "during"
            elif write.done <= cut.end + settings.grace and sent < cut.end:
                if cut.kind != "pause" and sent < lease_end:
                    continue  # arrived while the isolated node may still have held its lease
                how = "queued"
            else:
                continue
            stale.append(
                {
                    "key": write.key.decode(errors="replace"),
                    "node": cut.node,
                    "cut": cut.kind,
                    "how": how,
                    "cut_start": rel(cut.start),
                    "cut_end": rel(cut.end),
                    "sent": rel(write.sent),
                    "acked": rel(write.done),
                    "attempt_sent": rel(sent),
                    "sent_after_expiry": sent >= lease_end,
                }
            )

    # -- windows per event --------------------------------------------------------------------------
    index = _SlotIndex(writes)
    event_reports: list[dict[str, Any]] = []
    windows: list[tuple[Event, Impact, float]] = []  # (event, impact, writable-again moment)
    for event in events:
        impact_reports = []
        event_end = event.at
        for impact in event.impacts:
            recovered, per_slot, never = _window_of(index, event, impact, end)
            windows.append((event, impact, recovered))
            event_end = max(event_end, recovered)
            values = list(per_slot.values())
            impact_reports.append(
                {
                    "label": impact.label,
                    "sides": sorted(impact.sides) if impact.sides is not None else "all",
                    "slots_written": len(per_slot) + len(never),
                    "window_s": None if never else _finite(recovered - event.at),
                    "never_writable_again": len(never),
                    "unit_windows_s": [_finite(value) for value in sorted(values)],
                    "unit_p50_s": _finite(percentile(values, 0.5)),
                    "unit_p99_s": _finite(percentile(values, 0.99)),
                }
            )
        event_reports.append(
            {
                "kind": event.kind,
                "nodes": list(event.nodes),
                "at": rel(event.at),
                "detail": event.detail,
                "impacts": impact_reports,
                "_end": event_end,
            }
        )

    # -- errors: explained by a window, collateral, or outside every window ------------------------
    in_window = collateral = 0
    outside: list[Write] = []
    for write in failed:
        explained = False
        nearby = False
        for event, impact, recovered in windows:
            if write.done < event.at:
                continue
            if write.sent <= recovered:
                nearby = True
                if write.slot in impact.slots and (impact.sides is None or write.side in impact.sides):
                    explained = True
                    break
        if explained:
            in_window += 1
        elif nearby:
            collateral += 1
        else:
            outside.append(write)
    for report, event in zip(event_reports, events):
        finished = report.pop("_end")
        report["errors_in_window"] = sum(1 for write in failed if write.done >= event.at and write.sent <= finished)

    # -- the longest run of consecutive failures (all writers, by send time) ------------------
    longest: dict[str, Any] = {"writes": 0, "seconds": 0.0, "from": None, "to": None}
    streak: list[Write] = []
    for write in sorted(writes, key=lambda write: write.sent):
        if write.ok:
            streak = []
            continue
        streak.append(write)
        if len(streak) > longest["writes"]:
            longest = {
                "writes": len(streak),
                "seconds": round(streak[-1].done - streak[0].sent, 3),
                "from": rel(streak[0].sent),
                "to": rel(streak[-1].done),
            }

    # -- reads --------------------------------------------------------------------------------------
    lost_keys = {entry["key"].encode() for entry in lost}
    not_found_existing = [
        read for read in reads if read.error is None and read.value is None and read.key not in lost_keys
    ]
    read_summary = {
        "reads": len(reads),
        "errors": sum(1 for read in reads if read.error is not None),
        "not_found_but_exists": len(not_found_existing),
        # Distinct acknowledged keys some read could not find although they exist (unreachable for
        # a while: a move that switched before copying, a drain that left before handing over).
        "unreachable_keys": len({read.key for read in not_found_existing}),
        "not_found_lost_key": sum(
            1 for read in reads if read.error is None and read.value is None and read.key in lost_keys
        ),
        "wrong_value": sum(
            1 for read in reads if read.error is None and read.value is not None and read.value != read.expected
        ),
        "examples_not_found_but_exists": [
            {"key": read.key.decode(errors="replace"), "sent": rel(read.sent), "acked": rel(read.acked_at)}
            for read in not_found_existing[:limit]
        ],
    }

    latencies = [write.done - write.sent for write in acked]
    span = (max(write.done for write in writes) - min(write.sent for write in writes)) if writes else 0.0
    error_kinds = Counter(_error_kind(write.error or "") for write in failed)
    return {
        "writes": len(writes),
        "acked": len(acked),
        "failed": len(failed),
        "writes_per_s": round(len(writes) / span, 1) if span > 0 else 0.0,
        "ack_latency_p50_ms": _finite(percentile(latencies, 0.5) * 1000),
        "ack_latency_p99_ms": _finite(percentile(latencies, 0.99) * 1000),
        "lost": len(lost),
        "lost_fraction_of_acked": round(len(lost) / len(acked), 5) if acked else 0.0,
        "lost_by_acking_node": dict(Counter(str(entry["acked_by"]) for entry in lost)),
        "lost_by_phase": dict(Counter(entry["phase"] for entry in lost)),
        "lost_examples": lost[:limit],
        "unreadable": unknown,
        "indeterminate_applied": indeterminate,
        "stale_acks": len(stale),
        "stale_acks_sent_after_expiry": sum(1 for entry in stale if entry["sent_after_expiry"]),
        "stale_ack_examples": stale[:limit],
        "events": event_reports,
        "errors": {
            "in_window": in_window,
            "collateral": collateral,
            "outside": len(outside),
            "outside_examples": [
                {"key": w.key.decode(errors="replace"), "side": w.side, "sent": rel(w.sent), "error": w.error}
                for w in outside[:limit]
            ],
            "kinds": dict(error_kinds.most_common(10)),
        },
        "longest_failure_run": longest,
        "reads": read_summary,
        "lease_s": settings.lease,
    }


def _error_kind(text: str) -> str:
    """An error's type and the start of its text, without the numbers that differ each time."""
    kind, _, message = text.partition(": ")
    words = [word for word in message.split()[:6] if not any(ch.isdigit() for ch in word)]
    return f"{kind}: {' '.join(words)}".strip()


def lost_keys(summary: Mapping[str, Any]) -> list[str]:
    return [entry["key"] for entry in summary["lost_examples"]]


def render(summary: Mapping[str, Any], title: str = "") -> str:
    """The summary as a few lines and a table of events, for people."""
    lines = [title] if title else []
    lines.append(
        f"writes {summary['writes']} ({summary['writes_per_s']}/s), acked {summary['acked']}, "
        f"failed {summary['failed']}; ack latency p50 {summary['ack_latency_p50_ms']} ms, "
        f"p99 {summary['ack_latency_p99_ms']} ms"
    )
    lines.append(
        f"LOST {summary['lost']} acknowledged ({summary['lost_fraction_of_acked']:.2%}) "
        f"by node {summary['lost_by_acking_node']}; unreadable {summary['unreadable']}; "
        f"failed-but-applied {summary['indeterminate_applied']}"
    )
    lines.append(
        f"STALE ACKS {summary['stale_acks']} ({summary['stale_acks_sent_after_expiry']} sent after the lease "
        f"ran out; lease {summary['lease_s']} s)"
    )
    errors = summary["errors"]
    run = summary["longest_failure_run"]
    lines.append(
        f"errors: {errors['in_window']} in a window, {errors['collateral']} collateral, "
        f"{errors['outside']} outside every window; longest failure run {run['writes']} writes "
        f"over {run['seconds']} s"
    )
    if errors["kinds"]:
        lines.append("error kinds: " + "; ".join(f"{count} x {kind}" for kind, count in errors["kinds"].items()))
    reads = summary["reads"]
    if reads["reads"]:
        lines.append(
            f"reads {reads['reads']}: not found but exists {reads['not_found_but_exists']} "
            f"({reads['unreachable_keys']} keys), "
            f"not found (lost key) {reads['not_found_lost_key']}, errors {reads['errors']}"
        )
    header = (
        f"{'t (s)':>8}  {'event':<10} {'nodes':<10} {'impact':<22} {'slots':>5} {'window s':>9} {'p50':>6} {'p99':>6}"
    )
    lines.append(header)
    for event in summary["events"]:
        impacts = event["impacts"] or [None]
        for impact in impacts:
            if impact is None:
                lines.append(f"{event['at']:>8}  {event['kind']:<10} {','.join(event['nodes']):<10}")
                continue
            window = impact["window_s"]
            shown = f"{window:.2f}" if window is not None else f"never:{impact['never_writable_again']}"
            lines.append(
                f"{event['at']:>8}  {event['kind']:<10} {','.join(event['nodes']):<10} "
                f"{(impact['label'] or '-')[:22]:<22} {impact['slots_written']:>5} {shown:>9} "
                f"{_show(impact['unit_p50_s']):>6} {_show(impact['unit_p99_s']):>6}"
            )
    return "\n".join(lines)


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
