"""The exactly-once fold: duplicates, new boots, gaps, late readings, replays."""

from __future__ import annotations

import itertools
from datetime import timedelta

from enviromon_sink.counting import MAX_BOOTS, DeviceState, Outcome, fold
from enviromon_sink.normalise import BOOT_HUB, Reading
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


@settings(max_examples=50)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=MAX_BOOTS))
def test_boot_memory_recognises_every_remembered_boot(lengths: list[int]) -> None:
    """Up to MAX_BOOTS boots in a row, all replayed afterwards: zero counted again."""
    batches = [[r(s, f"{i:08x}") for s in range(1, n + 1)] for i, n in enumerate(lengths)]
    once = run(batches)
    again = run(batches, once)
    assert again.count == once.count == sum(lengths)
    assert again.missing == 0
