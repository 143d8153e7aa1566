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
* a rejected event counts once per hub sequence number (``rejected_seq`` remembers the highest).

Because the fold only ever moves ``last_seq`` up and keeps every seq it has counted out of the
gaps, folding the same readings again, in any later batch, changes nothing but ``Duplicates``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

from enviromon_sink.normalise import SYNTHETIC_PREFIX, Reading

#: Boots remembered per device: a replay of a boot older than this would count again.
MAX_BOOTS: Final = 16
#: Gap ranges remembered per boot: a reading late by more gaps than this counts as duplicate
#: (it stays in ``Missing``).
MAX_GAPS: Final = 16


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

    def to_json(self) -> list[Any]:
        """Compact JSON form ``[boot, last_seq, [[lo, hi], ...]]`` (kept in the entity)."""
        return [self.boot, self.last_seq, [list(g) for g in self.gaps]]

    @classmethod
    def from_json(cls, raw: Any) -> BootMark:
        """Inverse of :meth:`to_json`; raises ValueError on anything else."""
        if not (isinstance(raw, list) and len(raw) == 3):
            raise ValueError("boot mark must be [boot, last_seq, gaps]")
        boot, last_seq, gaps = raw
        if not isinstance(boot, str) or type(last_seq) is not int or not isinstance(gaps, list):
            raise ValueError("boot mark has wrong types")
        pairs = []
        for gap in gaps:
            if not (isinstance(gap, list) and len(gap) == 2 and all(type(x) is int for x in gap)):
                raise ValueError("gap must be [lo, hi]")
            pairs.append((gap[0], gap[1]))
        return cls(boot=boot, last_seq=last_seq, gaps=tuple(pairs))


@dataclass(frozen=True, slots=True)
class DeviceState:
    """The counted state of one device (one Table entity).

    Attributes:
        device_id: the hub's device id.
        count: distinct readings counted.
        duplicates: readings seen again (replays, redeliveries).
        missing: seqs skipped within a boot and not (yet) arrived.
        rejected: dead-lettered events from this device.
        rejected_seq: highest hub sequence number of a counted rejected event.
        boots: recent boots, the current one first.
        last_seen: the newest counted reading's time.
        values, source, calibration, alert, flags, module_id, label: from the newest reading of
            the current boot.
    """

    device_id: str
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
    module_id: str | None = None
    label: str | None = None

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


def fold(
    state: DeviceState | None,
    readings: Sequence[Reading],
    *,
    device_id: str | None = None,
    rejected: Iterable[int | None] = (),
) -> tuple[DeviceState, list[Outcome]]:
    """Apply one batch of a device's readings, in delivery order.

    Args:
        state: the device's state before the batch, or None for a device never seen.
        readings: this device's readings from the batch, in the order the hub delivered them.
        device_id: the device, when ``state`` is None and there are no readings.
        rejected: hub sequence numbers (None when unknown) of this device's dead-lettered events.

    Returns:
        The new state and the outcome of each reading, in order.

    Raises:
        ValueError: a reading belongs to another device, or no device id can be found.
    """
    if state is None:
        ident = device_id or (readings[0].device_id if readings else None)
        if ident is None:
            raise ValueError("fold needs a state, a device_id or a reading")
        state = DeviceState(device_id=ident)
    folder = _Folder(state)
    outcomes = [folder.apply(r) for r in readings]
    for seq in rejected:
        folder.reject(seq)
    return folder.result(), outcomes


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
        self.latest: Reading | None = None

    def apply(self, reading: Reading) -> Outcome:
        if reading.device_id != self.state.device_id:
            raise ValueError(
                f"reading of {reading.device_id!r} folded into {self.state.device_id!r}"
            )
        if reading.seq is None:
            # Nothing to recognise a replay by: count it (normalise never produces this).
            return self._counted(reading, Outcome.NEW, current=True)
        index = next((i for i, m in enumerate(self.boots) if m.boot == reading.boot), None)
        synthetic = reading.boot.startswith(SYNTHETIC_PREFIX)
        if index is None:
            gaps: tuple[tuple[int, int], ...] = ()
            if not synthetic and reading.seq > 1:
                self.missing += reading.seq - 1
                gaps = ((1, reading.seq - 1),)
            self.boots.insert(0, BootMark(reading.boot, reading.seq, gaps))
            del self.boots[MAX_BOOTS:]
            return self._counted(reading, Outcome.NEW_BOOT, current=True)
        mark = self.boots[index]
        if reading.seq > mark.last_seq:
            gaps = mark.gaps
            skipped = reading.seq - mark.last_seq - 1
            if skipped and not synthetic:
                self.missing += skipped
                gaps = (*gaps, (mark.last_seq + 1, reading.seq - 1))[-MAX_GAPS:]
            self.boots[index] = BootMark(mark.boot, reading.seq, gaps)
            current = index == 0
            return self._counted(reading, Outcome.NEW if current else Outcome.OLD_BOOT, current)
        filled = _fill(mark.gaps, reading.seq)
        if filled is None:
            self.duplicates += 1
            return Outcome.DUPLICATE
        self.boots[index] = BootMark(mark.boot, mark.last_seq, filled[-MAX_GAPS:])
        self.missing -= 1
        return self._counted(reading, Outcome.LATE, current=False)

    def reject(self, seq: int | None) -> None:
        if seq is not None:
            if self.rejected_seq is not None and seq <= self.rejected_seq:
                return  # this rejected event was counted before: a replay
            self.rejected_seq = seq
        self.rejected += 1

    def _counted(self, reading: Reading, outcome: Outcome, current: bool) -> Outcome:
        self.count += 1
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
        )
        if latest is None:
            return base
        return replace(
            base,
            values=dict(latest.values),
            source=latest.source,
            calibration=latest.calibration,
            alert=latest.alert,
            flags=latest.flags,
            module_id=latest.module_id,
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
