"""What the hub accepted, read from its event log: the independent side of every count check.

The local hub appends each message it acknowledged to its event log, byte for byte, and the
module deletes a reading from its durable buffer only after that acknowledgement. So for a
device whose buffer is empty, the distinct (boot, seq) pairs in the log are exactly the readings
it took, and every repeat of a pair is a delivery the sink must count as a duplicate.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DeviceLedger:
    """One device's readings as the hub accepted them."""

    deliveries: Counter[tuple[str, int]] = field(default_factory=Counter)

    @property
    def distinct(self) -> int:
        return len(self.deliveries)

    @property
    def repeats(self) -> int:
        return sum(self.deliveries.values()) - len(self.deliveries)

    def gaps(self) -> int:
        """Seqs missing below each boot's highest (readings taken but never accepted)."""
        highest: dict[str, int] = {}
        for boot, seq in self.deliveries:
            highest[boot] = max(seq, highest.get(boot, 0))
        return sum(highest.values()) - self.distinct


def read_ledger(event_log: Path) -> dict[str, DeviceLedger]:
    """Every schema-1 reading in the hub's event log, per hub device id."""
    ledgers: dict[str, DeviceLedger] = {}
    db = sqlite3.connect(f"file:{event_log}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT system_properties, body FROM events ORDER BY seq").fetchall()
    finally:
        db.close()
    for props_text, body in rows:
        device = json.loads(props_text)["iothub-connection-device-id"]
        parsed = json.loads(body)
        readings = parsed if isinstance(parsed, list) else [parsed]
        ledger = ledgers.setdefault(device, DeviceLedger())
        for r in readings:
            ledger.deliveries[(r["boot"], r["seq"])] += 1
    return ledgers


def buffered_readings(device_state_dir: Path) -> int:
    """Readings still waiting in a stopped device's durable buffer (0: all acknowledged)."""
    path = device_state_dir / "buffer.sqlite3"
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute("SELECT COUNT(*) FROM readings").fetchone()[0])
    finally:
        db.close()


def sink_caught_up(event_log: Path, consumer_group: str = "$Default") -> bool:
    """Whether the sink's consumer group has checkpointed the last event in the log."""
    return checkpoint(event_log, consumer_group) >= last_sequence_number(event_log)


def checkpoint(event_log: Path, consumer_group: str = "$Default") -> int:
    """The consumer group's checkpoint (0 before its first)."""
    db = sqlite3.connect(f"file:{event_log}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute(
            "SELECT seq FROM checkpoints WHERE consumer_group = ?", (consumer_group,)
        ).fetchone()
    finally:
        db.close()
    return int(row[0]) if row else 0


def last_sequence_number(event_log: Path) -> int:
    """The sequence number of the newest event (0 when empty)."""
    db = sqlite3.connect(f"file:{event_log}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute("SELECT MAX(seq) FROM events").fetchone()
    finally:
        db.close()
    return int(row[0] or 0)
