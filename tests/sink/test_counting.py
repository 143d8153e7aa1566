"""The exactly-once fold: duplicates, new boots, gaps, late readings, replays."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta

from enviromon_sink.counting import (
    INT64_MAX,
    MAX_BOOTS,
    MAX_GAPS,
    MAX_SEQ_JUMP,
    SEQ_JUMP_FLAG,
    DeviceState,
    Outcome,
    fold,
    fold_stream,
)
from enviromon_sink.normalise import BOOT_HUB, Reading
from enviromon_sink.streams import from_entity, to_entity
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sink.helpers import T0

DEV = "pi-kitchen"


def r(seq: int, boot: str = "aaaaaaaa", temperature: float = 20.0) -> Reading:
    """A reading of DEV."""
    return Reading(
        device_id=DEV,
        module_id=None,
        label=None,
        boot=boot,
        seq=seq,
        ts=T0 + timedelta(seconds=seq),
        source="simulated",
        values={"temperature": temperature},
    )


def run(batches: list[list[Reading]], state: DeviceState | None = None) -> DeviceState:
    for batch in batches:
        state, _ = fold(state, batch, device_id=DEV)
    assert state is not None
    return state


def test_in_order_counts_each_once() -> None:
    """Readings 1..5 count 5, no duplicates, nothing missing, latest values from seq 5."""
    state, outcomes = fold(None, [r(s, temperature=float(s)) for s in range(1, 6)])
    assert (state.count, state.duplicates, state.missing) == (5, 0, 0)
    assert (state.boot, state.last_seq, state.values["temperature"]) == ("aaaaaaaa", 5, 5.0)
    assert outcomes == [Outcome.NEW_BOOT] + [Outcome.NEW] * 4


def test_replayed_batch_counts_zero() -> None:
    """A batch folded twice counts once; the second time every reading is a duplicate."""
    batch = [r(s) for s in range(1, 4)]
    once, _ = fold(None, batch)
    twice, outcomes = fold(once, batch)
    assert twice.count == 3 and twice.duplicates == 3
    assert outcomes == [Outcome.DUPLICATE] * 3


def test_replay_of_earlier_batch_after_later_batch() -> None:
    """Batch k replayed after batch k+1 was applied counts zero."""
    k, k1 = [r(1), r(2)], [r(3), r(4)]
    state = run([k, k1, k])
    assert (state.count, state.duplicates, state.last_seq) == (4, 2, 4)


def test_gap_counts_missing_and_late_reading_fills_it() -> None:
    """Skipping seq 2..3 adds 2 to Missing; seq 2 arriving late counts and Missing goes down."""
    state = run([[r(1), r(4)]])
    assert (state.count, state.missing) == (2, 2)
    state, outcomes = fold(state, [r(2), r(2)])
    assert outcomes == [Outcome.LATE, Outcome.DUPLICATE]
    assert (state.count, state.missing, state.duplicates, state.last_seq) == (3, 1, 1, 4)


def test_new_boot_starts_new_run_and_old_boot_replay_is_duplicate() -> None:
    """A new boot becomes current; the old boot's readings replayed afterwards are duplicates."""
    old = [r(1, "aaaaaaaa"), r(2, "aaaaaaaa")]
    new = [r(1, "bbbbbbbb")]
    state = run([old, new, old])
    assert (state.count, state.duplicates) == (3, 2)
    assert (state.boot, state.last_seq) == ("bbbbbbbb", 1)


def test_old_boot_new_seq_counts_but_does_not_become_current() -> None:
    """A late reading of the previous boot counts, and the current boot stays current."""
    state = run([[r(1, "aaaaaaaa")], [r(1, "bbbbbbbb")]])
    state, outcomes = fold(state, [r(2, "aaaaaaaa", temperature=99.0)])
    assert outcomes == [Outcome.OLD_BOOT]
    assert state.boot == "bbbbbbbb" and state.count == 3
    assert state.values["temperature"] == 20.0


def test_synthetic_boot_gaps_are_not_missing() -> None:
    """Hub sequence numbers jump (other devices share the partition): no Missing."""
    state = run([[r(10, BOOT_HUB), r(57, BOOT_HUB), r(200, BOOT_HUB)]])
    assert (state.count, state.missing) == (3, 0)


def test_rejected_counted_once_per_hub_sequence_number() -> None:
    """A rejected event replayed is not counted again; unknown sequence numbers always count."""
    state, _ = fold(None, [], device_id=DEV, rejected=[5, 7])
    state, _ = fold(state, [], rejected=[5, 7, 9, None])
    assert state.rejected == 4


def test_first_seq_above_one_counts_earlier_as_missing() -> None:
    """A boot first seen at seq 4 is missing 1..3."""
    state = run([[r(4)]])
    assert state.missing == 3


# -- properties ----------------------------------------------------------------------------

_boots = st.sampled_from(["aaaaaaaa", "bbbbbbbb", "cccccccc", BOOT_HUB])
_readings = st.lists(st.builds(r, st.integers(1, 40), _boots), max_size=60)


def _batches(draw: st.DrawFn, readings: list[Reading]) -> list[list[Reading]]:
    cuts = sorted(draw(st.lists(st.integers(0, len(readings)), max_size=6)))
    bounds = [0, *cuts, len(readings)]
    return [readings[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def _split(draw: st.DrawFn) -> tuple[list[Reading], list[list[Reading]]]:
    readings = draw(_readings)
    return readings, _batches(draw, readings)


def _core(state: DeviceState) -> tuple[object, ...]:
    return (state.count, state.missing, state.boots, state.last_seen, state.values)


@given(_split())
def test_applying_twice_equals_once(case: tuple[list[Reading], list[list[Reading]]]) -> None:
    """Folding a sequence again changes nothing but Duplicates (+ its length)."""
    readings, batches = case
    once = run(batches)
    twice = run(batches, once)
    assert _core(twice) == _core(once)
    assert twice.duplicates == once.duplicates + len(readings)


@given(_split())
def test_batching_does_not_matter(case: tuple[list[Reading], list[list[Reading]]]) -> None:
    """Folding in any split into batches equals folding all at once."""
    readings, batches = case
    whole, _ = fold(None, readings, device_id=DEV)
    assert run(batches) == whole


@given(_split(), st.data())
def test_replays_interleaved_later_count_zero(
    case: tuple[list[Reading], list[list[Reading]]], data: st.DataObject
) -> None:
    """Each batch replayed at any later point (after later batches) changes only Duplicates."""
    readings, batches = case
    once = run(batches)
    schedule: list[list[Reading]] = []
    pending: list[list[Reading]] = []
    for batch in batches:
        schedule.append(batch)
        pending.append(batch)
        while pending:
            if not data.draw(st.booleans()):
                break
            schedule.append(pending.pop(data.draw(st.integers(0, len(pending) - 1))))
    schedule.extend(pending)
    replayed = run(schedule)
    assert _core(replayed) == _core(once)
    assert replayed.duplicates == once.duplicates + len(readings)


_real_boots = st.sampled_from(["aaaaaaaa", "bbbbbbbb", "cccccccc"])


@given(st.lists(st.builds(r, st.integers(1, 16), _real_boots), max_size=60))
def test_counts_add_up(readings: list[Reading]) -> None:
    """Real boots, any arrival order: Count + Duplicates = seen; Count = distinct (boot, seq)."""
    state, outcomes = fold(None, readings, device_id=DEV)
    assert state.count + state.duplicates == len(readings)
    assert state.count == len({(x.boot, x.seq) for x in readings})
    assert min(state.count, state.duplicates, state.missing, state.rejected) >= 0
    assert sum(o.counted for o in outcomes) == state.count


@given(st.lists(st.integers(0, 10**9), max_size=40))
def test_hub_sequence_in_hub_order_counts_distinct(numbers: list[int]) -> None:
    """Synthetic-boot readings, delivered in the hub's order (non-decreasing): Count = distinct."""
    state, _ = fold(None, [r(x, BOOT_HUB) for x in sorted(numbers)], device_id=DEV)
    assert state.count == len(set(numbers))
    assert state.count + state.duplicates == len(numbers) and state.missing == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=MAX_BOOTS))
def test_boot_memory_recognises_every_remembered_boot(lengths: list[int]) -> None:
    """Up to MAX_BOOTS boots in a row, all replayed afterwards: zero counted again."""
    batches = [[r(s, f"{i:08x}") for s in range(1, n + 1)] for i, n in enumerate(lengths)]
    once = run(batches)
    again = run(batches, once)
    assert again.count == once.count == sum(lengths)
    assert again.missing == 0


# -- past the memory limits: crash loops, many gaps, seqs near 2**63 --------------------------


def hub_r(seq: int, boot: str, at: int) -> Reading:
    """A reading of DEV the hub enqueued ``at`` s after T0 (first deliveries in hub order)."""
    when = T0 + timedelta(seconds=at)
    return replace(r(1, boot), seq=seq, ts=when, enqueued=when)


@st.composite
def _crash_loop(draw: st.DrawFn) -> tuple[list[Reading], list[list[Reading]]]:
    """Up to 60 boots of 1-5 readings each (a boot a minute), in hub order, cut into batches."""
    boots = draw(st.integers(MAX_BOOTS + 1, 60))
    readings = []
    at = 0
    for b in range(boots):
        for seq in range(1, draw(st.integers(1, 5)) + 1):
            at += 1
            readings.append(hub_r(seq, f"{b:016x}", at))
    return readings, _batches(draw, readings)


def _replayed(batches: list[list[Reading]], data: st.DataObject) -> list[list[Reading]]:
    """Every batch first in order, and again at any later point (after any later batches)."""
    schedule: list[list[Reading]] = []
    pending: list[list[Reading]] = []
    for batch in batches:
        schedule.append(batch)
        pending.append(batch)
        while pending:
            replay_now: bool = data.draw(st.booleans())
            if not replay_now:
                break
            index: int = data.draw(st.integers(0, len(pending) - 1))
            schedule.append(pending.pop(index))
    return schedule + pending


@settings(max_examples=60, deadline=None)
@given(_crash_loop(), st.data())
def test_crash_loop_replays_never_double_count(
    case: tuple[list[Reading], list[list[Reading]]], data: st.DataObject
) -> None:
    """More than MAX_BOOTS boots, replays interleaved anywhere later: Count = distinct, once."""
    readings, batches = case
    once = run(batches)
    assert once.count == len(readings) and once.missing == 0
    replayed = run(_replayed(batches, data))
    assert replayed.count == len(readings)
    assert replayed.duplicates == len(readings)
    assert len(replayed.boots) == MAX_BOOTS and replayed.forgotten_us is not None


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(1, 200), min_size=1), st.data())
def test_more_gaps_than_remembered_never_double_count(seqs: set[int], data: st.DataObject) -> None:
    """Any subset of 1..200 (up to 100 gaps > MAX_GAPS), then replays: nothing counted twice."""
    ordered = [hub_r(s, "aaaaaaaa", s) for s in sorted(seqs)]
    cuts: list[int] = sorted(data.draw(st.lists(st.integers(0, len(ordered)), max_size=6)))
    batches = [ordered[a:b] for a, b in itertools.pairwise([0, *cuts, len(ordered)])]
    once = run(batches)
    assert once.count == len(seqs) and once.missing == max(seqs) - len(seqs)
    assert all(len(m.gaps) <= MAX_GAPS for m in once.boots)
    replayed = run(_replayed(batches, data), None)
    assert replayed.count == len(seqs) and replayed.duplicates == len(seqs)


_near_top = st.integers(INT64_MAX - 50, INT64_MAX) | st.integers(1, 50)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(_near_top, st.sampled_from(["aaaaaaaa", "bbbbbbbb"])), max_size=30))
def test_seqs_near_int64_max_saturate_flag_and_store(pairs: list[tuple[int, str]]) -> None:
    """Seqs near 2**63 - 1, and jumps to it: counters stay in Int64, jumps flagged, storable."""
    readings = [hub_r(seq, boot, i) for i, (seq, boot) in enumerate(pairs)]
    done = fold_stream(None, readings, device_id=DEV)
    state = done.state
    for value in (state.count, state.duplicates, state.missing, state.rejected):
        assert 0 <= value <= INT64_MAX
    for reading, outcome, flags in zip(readings, done.outcomes, done.flags, strict=True):
        if SEQ_JUMP_FLAG in flags:
            assert outcome.counted and reading.seq is not None and reading.seq > MAX_SEQ_JUMP
    assert from_entity(to_entity(state)) == state  # the row the store would write reads back
    again = fold_stream(state, readings).state
    assert again.count == state.count  # and a replay counts nothing


def test_poison_sequence_saturates_instead_of_overflowing() -> None:
    """seq 1, then 2**63 - 1, then a new boot at 2**63 - 1: no overflow, jumps flagged."""
    readings = [
        hub_r(1, "aaaaaaaa", 1),
        hub_r(INT64_MAX, "aaaaaaaa", 2),
        hub_r(INT64_MAX, "bbbbbbbb", 3),
        hub_r(INT64_MAX - 1, "bbbbbbbb", 4),
    ]
    done = fold_stream(None, readings, device_id=DEV)
    assert done.state.count == 3 and done.state.missing == 0
    assert done.flags[1] == (SEQ_JUMP_FLAG,) and done.flags[2] == (SEQ_JUMP_FLAG,)
    assert SEQ_JUMP_FLAG in done.state.flags
    assert done.outcomes[3] is Outcome.DUPLICATE  # below the boot's last seq, in no gap
