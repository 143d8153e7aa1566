"""Device state in Azurite: conditional writes, the cached ETag, 412 handling, key escaping."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from azure.data.tables import TableServiceClient
from enviromon_sink.counting import DeviceState, fold
from enviromon_sink.errors import CorruptStateError, StoreContentionError
from enviromon_sink.keys import escape_key, table_name, unescape_key
from enviromon_sink.normalise import Reading
from enviromon_sink.store import DeviceStateStore, from_entity, to_entity
from hypothesis import given
from hypothesis import strategies as st

from tests.sink.helpers import T0


def reading(device: str, seq: int, boot: str = "aaaaaaaa") -> Reading:
    return Reading(
        device_id=device,
        module_id="enviro",
        label="lbl",
        boot=boot,
        seq=seq,
        ts=T0,
        source="bme680",
        values={"temperature": 20.5, "iaq": None},
        calibration=3,
        flags=("gas_unstable",),
        alert=True,
    )


def make_store(conn: str, prefix: str, **kw: object) -> DeviceStateStore:
    service = TableServiceClient.from_connection_string(conn)
    name = table_name(prefix, "devices")
    service.create_table_if_not_exists(name)
    return DeviceStateStore(table=service.get_table_client(name), **kw)  # type: ignore[arg-type]


def folding(readings: list[Reading]) -> Callable[[DeviceState | None], tuple[DeviceState, int]]:
    def change(state: DeviceState | None) -> tuple[DeviceState, int]:
        new, outcomes = fold(state, readings, device_id=readings[0].device_id)
        return new, sum(o.counted for o in outcomes)

    return change


def beaten_by(
    other: DeviceStateStore, dev: str
) -> tuple[Callable[[DeviceState | None], tuple[DeviceState, int]], list[int]]:
    """A change during which ``other`` always writes the device first (and its last seq)."""
    other.commit(dev, folding([reading(dev, 1)]))
    seq = [1]

    def always_beaten(state: DeviceState | None) -> tuple[DeviceState, int]:
        seq[0] += 1
        other.commit(dev, folding([reading(dev, seq[0])]))
        return folding([reading(dev, 1000)])(state)

    return always_beaten, seq


@given(st.text(max_size=60))
def test_key_escaping_round_trips_and_is_safe(text: str) -> None:
    """escape_key is reversible and its output never holds a forbidden key character."""
    key = escape_key(text)
    assert unescape_key(key) == text
    assert not any(c in key for c in "/\\#?") and all(0x20 < ord(c) < 0x7F for c in key)


def test_entity_round_trip() -> None:
    """to_entity/from_entity keep every field, including big Int64 seqs."""
    state, _ = fold(None, [reading("d", 2**40)])
    assert from_entity(to_entity(state)) == state


def test_create_then_update_with_cached_etag(azurite: str, table_prefix: str) -> None:
    """First commit creates, later commits update with the cached ETag; state reads back."""
    store = make_store(azurite, table_prefix)
    dev = "pi#1?/x"  # characters a PartitionKey may not hold raw
    _, counted = store.commit(dev, folding([reading(dev, 1), reading(dev, 2)]))
    _, counted2 = store.commit(dev, folding([reading(dev, 2), reading(dev, 3)]))
    assert (counted, counted2) == (2, 1)
    back = store.get(dev)
    assert back is not None and (back.count, back.duplicates, back.last_seq) == (3, 1, 3)
    assert back.values == {"temperature": 20.5, "iaq": None} and back.alert
    assert store.conflicts == 0
    assert [s.device_id for s in store.list()] == [dev]


def test_stale_cache_412_rereads_and_reapplies(azurite: str, table_prefix: str) -> None:
    """Another worker wrote since our cached ETag: 412, re-read, re-fold, nothing double."""
    a = make_store(azurite, table_prefix)
    b = make_store(azurite, table_prefix)
    dev = "pi-1"
    a.commit(dev, folding([reading(dev, 1)]))
    b.commit(dev, folding([reading(dev, 1), reading(dev, 2)]))  # b reads fresh: dup + new
    a.commit(dev, folding([reading(dev, 2), reading(dev, 3)]))  # a's ETag is stale
    assert a.conflicts == 1
    back = a.get(dev)
    assert back is not None and (back.count, back.duplicates) == (3, 2)


def test_concurrent_create_409_is_retried(azurite: str, table_prefix: str) -> None:
    """Two workers creating the same device: the loser's 409 is re-read and re-applied."""
    a = make_store(azurite, table_prefix)
    b = make_store(azurite, table_prefix)
    dev = "pi-2"
    calls: list[DeviceState | None] = []

    def racing(state: DeviceState | None) -> tuple[DeviceState, int]:
        if not calls:  # b sneaks its create in between a's read and a's create
            b.commit(dev, folding([reading(dev, 1)]))
        calls.append(state)
        return folding([reading(dev, 1), reading(dev, 2)])(state)

    _, counted = a.commit(dev, racing)
    assert calls[0] is None and calls[1] is not None and counted == 1
    back = a.get(dev)
    assert back is not None and back.count == 2 and back.duplicates == 1


def test_deadline_raises_contention(azurite: str, table_prefix: str) -> None:
    """A device that always changes under us ends in StoreContentionError, nothing written."""
    a = make_store(azurite, table_prefix, deadline_s=0.3, rng=random.Random(1))
    b = make_store(azurite, table_prefix)
    dev = "pi-3"
    always_beaten, seq = beaten_by(b, dev)
    with pytest.raises(StoreContentionError):
        a.commit(dev, always_beaten)
    back = b.get(dev)
    assert back is not None and back.last_seq == seq[0]


def test_lost_races_back_off_with_growing_jittered_delays(azurite: str, table_prefix: str) -> None:
    """Each 412 waits a random delay under a doubling cap, never past the deadline, then raises."""
    now = [0.0]
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        now[0] += seconds

    a = make_store(
        azurite,
        table_prefix,
        deadline_s=3.0,
        backoff_base_s=0.02,
        backoff_max_s=0.5,
        rng=random.Random(7),
        sleep=sleep,
        monotonic=lambda: now[0],
    )
    b = make_store(azurite, table_prefix)
    dev = "pi-backoff"
    always_beaten, seq = beaten_by(b, dev)
    with pytest.raises(StoreContentionError):
        a.commit(dev, always_beaten)
    assert len(delays) >= 5 and a.conflicts == len(delays) + 1  # the last race is not waited
    for attempt, delay in enumerate(delays, start=1):
        assert 0 <= delay <= min(0.5, 0.02 * 2**attempt)
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule
    assert max(delays) > 0.02 * 2  # and growing past the first cap
    assert sum(delays) <= 3.0  # never asleep past the deadline
    back = b.get(dev)
    assert back is not None and back.last_seq == seq[0]  # a's write never landed


def test_sequence_numbers_beyond_int32_are_stored(azurite: str, table_prefix: str) -> None:
    """Hub sequence numbers and seqs past 2**31 are written as Int64 and read back."""
    store = make_store(azurite, table_prefix)
    dev = "pi-big"
    big = [reading(dev, 2**40), reading(dev, 2**62)]
    store.commit(dev, folding(big))
    store.forget()
    _, counted = store.commit(dev, folding(big))
    back = store.get(dev)
    assert counted == 0 and back is not None and back.last_seq == 2**62 and back.count == 2


def test_stale_cache_is_abandoned_when_it_stops_paying(azurite: str, table_prefix: str) -> None:
    """Workers taking turns on a device: after a few stale ETags, a store reads first instead."""
    a = make_store(azurite, table_prefix)
    b = make_store(azurite, table_prefix)
    dev = "pi-turns"
    for seq in range(1, 61, 2):
        a.commit(dev, folding([reading(dev, seq)]))
        b.commit(dev, folding([reading(dev, seq + 1)]))
    assert a.conflicts < 15 and b.conflicts < 15  # 30 stale ETags each without adapting
    back = a.get(dev)
    assert back is not None and (back.count, back.duplicates, back.last_seq) == (60, 0, 60)


def test_corrupt_state_entity_is_refused_not_overwritten(azurite: str, table_prefix: str) -> None:
    """A state entity edited into nonsense raises CorruptStateError and is left as it was."""
    store = make_store(azurite, table_prefix)
    dev = "pi-corrupt"
    store.commit(dev, folding([reading(dev, 1)]))
    service = TableServiceClient.from_connection_string(azurite)
    table = service.get_table_client(table_name(table_prefix, "devices"))
    table.upsert_entity({"PartitionKey": dev, "RowKey": "state", "Boots": "not json"})
    store.forget()
    with pytest.raises(CorruptStateError):
        store.commit(dev, folding([reading(dev, 2)]))
    assert table.get_entity(dev, "state")["Boots"] == "not json"
