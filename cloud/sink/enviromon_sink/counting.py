"""Exactly-once counting per device: a pure fold over readings in delivery order.

``fold(state, readings)`` gives the new state and one :class:`Outcome` per reading. The rules
(docs/sink.md has the why):

* a reading is identified by (boot, seq); the device keeps, for each of its last
  :data:`MAX_BOOTS` boots, the highest seq seen (``last_seq``) and the seq ranges it skipped;
* a seq above its boot's ``last_seq`` is new; seqs it skipped are added to ``Missing`` and
  remembered as gaps (at most :data:`MAX_GAPS` per boot);
* a seq at or below ``last_seq`` is a duplicate, unless it fills a remembered gap (a late
  reading): then it counts, and ``Missing`` goes down by one;
* a boot the device has not had (within memory) starts a new run and becomes current; a boot it
  had before stays where it was, so an old boot replayed after a new one started is recognised;
* synthetic boots (``~hub``...) number events, not readings, so their gaps are not ``Missing``;
* a rejected event counts once per hub sequence number (``rejected_seq`` remembers the highest);
* a boot pushed out of memory leaves a watermark, its newest hub enqueued time: a reading of a
  boot not in memory, enqueued at or before the watermark, is a replay of a forgotten boot
  (first deliveries of a stream arrive in hub order, so a genuinely new boot is always later);
* counters saturate at Int64's maximum; a seq jump beyond :data:`MAX_SEQ_JUMP` adds nothing to
  ``Missing``, is not remembered as a gap, and flags the reading ``seq_jump``.

Because the fold only ever moves ``last_seq`` up and keeps every seq it has counted out of the
gaps, folding the same readings again, in any later batch, changes nothing but ``Duplicates``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from enviromon_sink.keys import stream_key
from enviromon_sink.normalise import SYNTHETIC_PREFIX, Reading

#: Boots remembered per device: a replay of a boot older than this would count again.
MAX_BOOTS: Final = 16
#: Gap ranges remembered per boot: a reading late by more gaps than this counts as duplicate
#: (it stays in ``Missing``).
MAX_GAPS: Final = 16
#: Table storage's Int64: every counter saturates here instead of overflowing.
INT64_MAX: Final = 2**63 - 1
#: A seq jump larger than this (about 194 days at one reading a second) is not believed:
#: it adds nothing to ``Missing`` and the reading is flagged :data:`SEQ_JUMP_FLAG`.
MAX_SEQ_JUMP: Final = 2**24
SEQ_JUMP_FLAG: Final = "seq_jump"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class Outcome(enum.StrEnum):
    """What the fold did with one reading."""

    NEW = "new"
    NEW_BOOT = "new_boot"
    LATE = "late"
    OLD_BOOT = "old_boot"
    DUPLICATE = "duplicate"

    @property
    def counted(self) -> bool:
        """Whether the reading was counted (anything but a duplicate)."""
        return self is not Outcome.DUPLICATE


@dataclass(frozen=True, slots=True)
class BootMark:
    """What a device remembers about one boot: the highest seq and the seqs it skipped."""

    boot: str
    last_seq: int
    gaps: tuple[tuple[int, int], ...] = ()
    #: The newest hub enqueued time of the boot's readings, in µs since 1970 (None: unknown).
    enqueued_us: int | None = None

    def to_json(self) -> list[Any]:
        """Compact JSON form ``[boot, last_seq, [[lo, hi], ...], enqueued_us]`` (in the entity)."""
        return [self.boot, self.last_seq, [list(g) for g in self.gaps], self.enqueued_us]

    @classmethod
    def from_json(cls, raw: Any) -> BootMark:
        """Inverse of :meth:`to_json` (a 3-item mark of an older layout too); ValueError else."""
        if not (isinstance(raw, list) and len(raw) in (3, 4)):
            raise ValueError("boot mark must be [boot, last_seq, gaps, enqueued_us]")
        boot, last_seq, gaps = raw[:3]
        enqueued = raw[3] if len(raw) == 4 else None
        if not isinstance(boot, str) or type(last_seq) is not int or not isinstance(gaps, list):
            raise ValueError("boot mark has wrong types")
        if enqueued is not None and type(enqueued) is not int:
            raise ValueError("boot mark enqueued time must be an integer")
        pairs = []
        for gap in gaps:
            if not (isinstance(gap, list) and len(gap) == 2 and all(type(x) is int for x in gap)):
                raise ValueError("gap must be [lo, hi]")
            pairs.append((gap[0], gap[1]))
        return cls(boot=boot, last_seq=last_seq, gaps=tuple(pairs), enqueued_us=enqueued)


@dataclass(frozen=True, slots=True)
class DeviceState:
    """The counted state of one stream, a (device, module) pair (one Table entity).

    Attributes:
        device_id: the hub's device id.
        module_id: the hub's module id (None for a device without modules): part of the
            stream's identity, so two modules on one device are counted apart.
        count: distinct readings counted.
        duplicates: readings seen again (replays, redeliveries).
        missing: seqs skipped within a boot and not (yet) arrived.
        rejected: dead-lettered events from this device.
        rejected_seq: highest hub sequence number of a counted rejected event.
        boots: recent boots, the current one first.
        forgotten_us: the newest enqueued time (µs since 1970) of any boot pushed out of
            memory: an unknown boot enqueued no later than this is a replay.
        last_seen: the newest counted reading's time.
        values, source, calibration, alert, flags, label: from the newest reading of the current
            boot.
    """

    device_id: str
    module_id: str | None = None
    count: int = 0
    duplicates: int = 0
    missing: int = 0
    rejected: int = 0
    rejected_seq: int | None = None
    boots: tuple[BootMark, ...] = ()
    last_seen: datetime | None = None
    values: Mapping[str, float | None] = field(default_factory=dict)
    source: str | None = None
    calibration: int = 0
    alert: bool = False
    flags: tuple[str, ...] = ()
    label: str | None = None
    forgotten_us: int | None = None

    @property
    def stream_id(self) -> str:
        """The stream's stable id (see :func:`keys.stream_key`)."""
        return stream_key(self.device_id, self.module_id)

    @property
    def boot(self) -> str | None:
        """The current boot."""
        return self.boots[0].boot if self.boots else None

    @property
    def last_seq(self) -> int | None:
        """The highest seq of the current boot."""
        return self.boots[0].last_seq if self.boots else None

    def to_json(self) -> dict[str, Any]:
        """The state as the dashboard and the REST API see it (JSON-ready)."""
        return {
            "streamId": self.stream_id,
            "deviceId": self.device_id,
            "moduleId": self.module_id,
            "label": self.label,
            "count": self.count,
            "duplicates": self.duplicates,
            "missing": self.missing,
            "rejected": self.rejected,
            "boot": self.boot,
            "lastSeq": self.last_seq,
            "lastSeen": _iso(self.last_seen) if self.last_seen else None,
            "values": dict(self.values),
            "source": self.source,
            "calibration": self.calibration,
            "alert": self.alert,
            "flags": list(self.flags),
        }


@dataclass(frozen=True, slots=True)
class Folded:
    """A fold's result: the new state, each reading's outcome, and flags the fold added.

    ``flags[i]`` are extra flags for reading ``i`` (``seq_jump``), empty for most.
    """

    state: DeviceState
    outcomes: list[Outcome]
    flags: list[tuple[str, ...]]


def fold(
    state: DeviceState | None,
    readings: Sequence[Reading],
    *,
    device_id: str | None = None,
    module_id: str | None = None,
    rejected: Iterable[int | None] = (),
) -> tuple[DeviceState, list[Outcome]]:
    """Apply one batch of a stream's readings, in delivery order; see :func:`fold_stream`."""
    done = fold_stream(state, readings, device_id=device_id, module_id=module_id, rejected=rejected)
    return done.state, done.outcomes


def fold_stream(
    state: DeviceState | None,
    readings: Sequence[Reading],
    *,
    device_id: str | None = None,
    module_id: str | None = None,
    rejected: Iterable[int | None] = (),
) -> Folded:
    """Apply one batch of a stream's readings, in delivery order.

    Args:
        state: the stream's state before the batch, or None for a stream never seen.
        readings: this stream's readings from the batch, in the order the hub delivered them.
        device_id: the device, when ``state`` is None and there are no readings.
        module_id: the module, likewise (None: a plain device).
        rejected: hub sequence numbers (None when unknown) of this stream's dead-lettered events.

    Raises:
        ValueError: a reading belongs to another stream, or no device id can be found.
    """
    if state is None:
        if readings:
            state = DeviceState(device_id=readings[0].device_id, module_id=readings[0].module_id)
        elif device_id is not None:
            state = DeviceState(device_id=device_id, module_id=module_id)
        else:
            raise ValueError("fold needs a state, a device_id or a reading")
    folder = _Folder(state)
    outcomes = [folder.apply(r) for r in readings]
    for seq in rejected:
        folder.reject(seq)
    return Folded(folder.result(), outcomes, folder.extra_flags)


def _us(ts: datetime | None) -> int | None:
    return None if ts is None else (ts - _EPOCH) // timedelta(microseconds=1)


def _sat(value: int) -> int:
    return min(value, INT64_MAX)


class _Folder:
    """Mutable working copy of a DeviceState for one fold."""

    def __init__(self, state: DeviceState) -> None:
        self.state = state
        self.boots: list[BootMark] = list(state.boots)
        self.count = state.count
        self.duplicates = state.duplicates
        self.missing = state.missing
        self.rejected = state.rejected
        self.rejected_seq = state.rejected_seq
        self.last_seen = state.last_seen
        self.forgotten_us = state.forgotten_us
        self.latest: Reading | None = None
        self.latest_flags: tuple[str, ...] = ()
        self.extra_flags: list[tuple[str, ...]] = []

    def apply(self, reading: Reading) -> Outcome:
        extra: tuple[str, ...] = ()
        outcome = self._apply(reading)
        if isinstance(outcome, tuple):
            outcome, extra = outcome
        self.extra_flags.append(extra)
        if outcome.counted and self.latest is reading:
            self.latest_flags = extra
        return outcome

    def _apply(self, reading: Reading) -> Outcome | tuple[Outcome, tuple[str, ...]]:
        if (reading.device_id, reading.module_id) != (self.state.device_id, self.state.module_id):
            raise ValueError(
                f"reading of {reading.device_id!r}/{reading.module_id!r} folded into"
                f" {self.state.device_id!r}/{self.state.module_id!r}"
            )
        if reading.seq is None:
            # Nothing to recognise a replay by: count it (normalise never produces this).
            return self._counted(reading, Outcome.NEW, current=True)
        enqueued = _us(reading.enqueued)
        index = next((i for i, m in enumerate(self.boots) if m.boot == reading.boot), None)
        synthetic = reading.boot.startswith(SYNTHETIC_PREFIX)
        if index is None:
            if (
                enqueued is not None
                and self.forgotten_us is not None
                and enqueued <= self.forgotten_us
            ):
                # A boot pushed out of memory, replayed: the hub enqueued it before the boots
                # that pushed it out, so it is old, never a new run.
                self.duplicates = _sat(self.duplicates + 1)
                return Outcome.DUPLICATE
            gaps: tuple[tuple[int, int], ...] = ()
            extra: tuple[str, ...] = ()
            if not synthetic and reading.seq > 1:
                if reading.seq - 1 > MAX_SEQ_JUMP:
                    extra = (SEQ_JUMP_FLAG,)
                else:
                    self.missing = _sat(self.missing + reading.seq - 1)
                    gaps = ((1, reading.seq - 1),)
            self.boots.insert(0, BootMark(reading.boot, reading.seq, gaps, enqueued))
            for gone in self.boots[MAX_BOOTS:]:
                if gone.enqueued_us is not None:
                    self.forgotten_us = max(self.forgotten_us or gone.enqueued_us, gone.enqueued_us)
            del self.boots[MAX_BOOTS:]
            return self._counted(reading, Outcome.NEW_BOOT, current=True), extra
        mark = self.boots[index]
        newest = mark.enqueued_us
        if enqueued is not None:
            newest = enqueued if newest is None else max(newest, enqueued)
        if reading.seq > mark.last_seq:
            gaps = mark.gaps
            skipped = reading.seq - mark.last_seq - 1
            extra = ()
            if skipped and not synthetic:
                if skipped > MAX_SEQ_JUMP:
                    extra = (SEQ_JUMP_FLAG,)
                else:
                    self.missing = _sat(self.missing + skipped)
                    gaps = (*gaps, (mark.last_seq + 1, reading.seq - 1))[-MAX_GAPS:]
            self.boots[index] = BootMark(mark.boot, reading.seq, gaps, newest)
            current = index == 0
            outcome = Outcome.NEW if current else Outcome.OLD_BOOT
            return self._counted(reading, outcome, current), extra
        filled = _fill(mark.gaps, reading.seq)
        if filled is None:
            self.duplicates = _sat(self.duplicates + 1)
            return Outcome.DUPLICATE
        self.boots[index] = BootMark(mark.boot, mark.last_seq, filled[-MAX_GAPS:], newest)
        self.missing = max(0, self.missing - 1)
        return self._counted(reading, Outcome.LATE, current=False)

    def reject(self, seq: int | None) -> None:
        if seq is not None:
            if self.rejected_seq is not None and seq <= self.rejected_seq:
                return  # this rejected event was counted before: a replay
            self.rejected_seq = seq
        self.rejected = _sat(self.rejected + 1)

    def _counted(self, reading: Reading, outcome: Outcome, current: bool) -> Outcome:
        self.count = _sat(self.count + 1)
        if self.last_seen is None or reading.ts > self.last_seen:
            self.last_seen = reading.ts
        if current:
            self.latest = reading
        return outcome

    def result(self) -> DeviceState:
        latest = self.latest
        base = replace(
            self.state,
            count=self.count,
            duplicates=self.duplicates,
            missing=self.missing,
            rejected=self.rejected,
            rejected_seq=self.rejected_seq,
            boots=tuple(self.boots),
            last_seen=self.last_seen,
            forgotten_us=self.forgotten_us,
        )
        if latest is None:
            return base
        flags = latest.flags + tuple(f for f in self.latest_flags if f not in latest.flags)
        return replace(
            base,
            values=dict(latest.values),
            source=latest.source,
            calibration=latest.calibration,
            alert=latest.alert,
            flags=flags,
            label=latest.label,
        )


def _fill(gaps: tuple[tuple[int, int], ...], seq: int) -> tuple[tuple[int, int], ...] | None:
    """The gaps with ``seq`` taken out, or None when ``seq`` is in none of them."""
    for i, (lo, hi) in enumerate(gaps):
        if lo <= seq <= hi:
            pieces = tuple(p for p in ((lo, seq - 1), (seq + 1, hi)) if p[0] <= p[1])
            return gaps[:i] + pieces + gaps[i + 1 :]
    return None


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="microseconds").replace("+00:00", "Z")
