"""Hub outages against the running module: nothing lost, nothing the sink would count twice.

Counting uses the sink's real code: the hub's event log goes through ``from_event_log``,
``normalise`` and the exactly-once ``fold`` (cloud/sink/enviromon_sink), so "counted once" and
"Missing" mean what the cloud sink would store.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from enviromon_sim.iothub.hub import HubThread
from enviromon_sim.iothub.topics import Identity
from enviromon_sink.adapters import from_event_log
from enviromon_sink.counting import DeviceState, fold
from enviromon_sink.normalise import normalise

from tests.support.hub import HubDevice, wait_until

from .module import device_env, events_of, readings_of, reported, run_module, wait_readings

OUTAGE_S = 30.0  # the figure, kept honest: the whole test stays at a few CPU seconds


def sink_state(hub: HubThread, identity: Identity) -> DeviceState:
    """The stream's state as the sink would count it from everything the hub stored."""
    readings = [r for e in from_event_log(events_of(hub, identity)) for r in normalise(e)]
    state, _ = fold(None, readings)
    return state


def keys(hub: HubThread, identity: Identity) -> list[tuple[str, int]]:
    return [(r["boot"], r["seq"]) for r in readings_of(hub, identity)]


def complete(pairs: list[tuple[str, int]]) -> dict[str, int]:
    """Per boot, the seqs seen must be exactly 1..max: return {boot: max seq}."""
    boots: dict[str, set[int]] = {}
    for boot, seq in pairs:
        boots.setdefault(boot, set()).add(seq)
    for boot, seqs in boots.items():
        assert seqs == set(range(1, max(seqs) + 1)), f"boot {boot} has gaps"
    return {boot: max(seqs) for boot, seqs in boots.items()}


@pytest.mark.timeout(180)
def test_hub_down_30s_every_reading_once_in_order_memory_flat(
    tmp_path: Path, hub: HubThread, hub_device: Any
) -> None:
    """The hub stops for 30 s: the module keeps reading into its buffer; when the hub is back
    every reading arrives exactly once, in seq order, and the module's memory has not grown."""
    dev: HubDevice = hub_device("pi-outage")
    with run_module(device_env(tmp_path, dev, tmp_path / "state"), tmp_path / "m.log") as module:
        wait_readings(hub, dev.identity, 4)
        rss_before = module.rss_mb()
        before = len(readings_of(hub, dev.identity))
        down_at = time.monotonic()
        hub.restart(down_seconds=OUTAGE_S)
        outage = time.monotonic() - down_at
        assert module.proc.poll() is None, module.log()
        taken = int(outage / 0.5) - 2  # readings taken while the hub was down (0.5 s apart)
        wait_readings(hub, dev.identity, before + taken, timeout=30)
        time.sleep(2)  # a few more, sent live again
        rss_after = module.rss_mb()
        code, _ = module.stop()
    assert code == 0, module.log()
    pairs = keys(hub, dev.identity)
    assert len(pairs) == len(set(pairs)), "a reading arrived twice"
    assert [seq for _, seq in pairs] == list(range(1, len(pairs) + 1))  # one boot, in order
    state = sink_state(hub, dev.identity)
    assert (state.count, state.missing, state.duplicates) == (len(pairs), 0, 0)
    assert rss_after - rss_before < 5.0, (rss_before, rss_after)


@pytest.mark.timeout(180)
def test_sigterm_mid_outage_then_sigkill_mid_drain_nothing_lost(
    tmp_path: Path, hub: HubThread, hub_device: Any
) -> None:
    """SIGTERM while the hub is down (readings stay in the buffer), a second start that reads
    on while the hub is still down, SIGKILL while its drain waits for the hub's acknowledgement,
    and a third start: every (boot, seq) of every start reaches the hub, and the sink counts
    each reading once (re-sends are duplicates it discards, never a second count)."""
    dev: HubDevice = hub_device("pi-kill")
    state_dir = tmp_path / "state"
    env = device_env(tmp_path, dev, state_dir)
    outage = threading.Thread(target=hub.restart, kwargs={"down_seconds": 12.0})

    with run_module(env, tmp_path / "m1.log") as first:
        wait_readings(hub, dev.identity, 3)
        outage.start()
        time.sleep(4)  # readings pile up in the buffer
        code, took = first.stop(signal.SIGTERM)
        assert code == 0, first.log()
        assert took < 10, took

    with run_module(env, tmp_path / "m2.log") as second:
        outage.join()  # the hub is back; hold every acknowledgement from now on
        hub.hold_pubacks(True)
        wait_until(lambda: len(keys(hub, dev.identity)) > 3, timeout=30)  # stored, not acked
        time.sleep(1)
        second.proc.kill()  # SIGKILL mid-drain
        second.wait()
        hub.hold_pubacks(False)

    with run_module(env, tmp_path / "m3.log") as third:
        wait_until(lambda: len(complete(keys(hub, dev.identity))) == 3, timeout=30)
        time.sleep(2)
        code, _ = third.stop()
        assert code == 0, third.log()

    pairs = keys(hub, dev.identity)
    last = complete(pairs)  # no boot has a gap: nothing lost
    assert len(last) == 3
    state = sink_state(hub, dev.identity)
    assert state.count == sum(last.values()) == len(set(pairs))
    assert state.missing == 0
    assert state.duplicates == len(pairs) - len(set(pairs))


@pytest.mark.timeout(180)
def test_buffer_full_during_long_outage_dropped_equals_missing(
    tmp_path: Path, hub: HubThread, hub_device: Any
) -> None:
    """A buffer of 10 readings and a 15 s outage (about 30 readings): the oldest go; the
    dropped count the module reports equals the gap the sink's Missing shows."""
    dev: HubDevice = hub_device("pi-full")
    env = device_env(tmp_path, dev, tmp_path / "state", ENVIRO_BUFFER_MAX_READINGS="10")
    with run_module(env, tmp_path / "m.log") as module:
        wait_readings(hub, dev.identity, 3)
        hub.restart(down_seconds=15.0)

        def dropped() -> int:
            return int(reported(hub, dev.identity).get("buffer", {}).get("dropped", 0))

        wait_until(lambda: dropped() > 0, timeout=30)
        n = len(readings_of(hub, dev.identity))
        wait_readings(hub, dev.identity, n + 3)  # live again
        time.sleep(2)  # the reported patch after the drain
        code, _ = module.stop()
    assert code == 0, module.log()
    state = sink_state(hub, dev.identity)
    assert state.missing == dropped() > 0
    assert state.duplicates == 0
