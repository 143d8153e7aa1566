"""No reading lost or counted twice, end to end: a hub outage, and a sink worker SIGKILLed.

The demo stack runs three simulated Pis (the module's real entry point, the real SDK) through
the local hub into the sink on Azurite. The counts are checked against the hub's own event log
(``ledger.py``): for a stopped device with an empty buffer, the distinct (boot, seq) pairs the
hub accepted are the readings it took.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from enviromon_sim.demo.stack import DemoStack
from enviromon_sink.processor import Sink
from playwright.sync_api import Page

from tests.e2e.ledger import (
    buffered_readings,
    checkpoint,
    last_sequence_number,
    read_ledger,
    sink_caught_up,
)
from tests.e2e.page import open_dashboard, shown_counts
from tests.support.hub import wait_until

pytestmark = pytest.mark.timeout(240)


def _counts(stack: DemoStack) -> dict[str, dict[str, Any]]:
    return {d["deviceId"]: d for d in stack.devices_state()}


def _counts_from_tables(stack: DemoStack) -> dict[str, dict[str, Any]]:
    """The committed counts read straight from Tables by the sink's own code (API down)."""
    sink = Sink.from_connection_string(
        stack.tables_connection_string, table_prefix=stack.table_prefix
    )
    return {d["deviceId"]: d for d in sink.list_devices()}


def _all_counted(stack: DemoStack, at_least: int) -> bool:
    counts = _counts(stack)
    return all(counts.get(d, {}).get("count", 0) >= at_least for d in stack.device_ids)


def _stop_devices_and_drain(stack: DemoStack) -> None:
    for device_id in stack.device_ids:
        stack.stop_device(device_id)
    event_log = stack.hub_state_dir / "events.sqlite"
    wait_until(lambda: sink_caught_up(event_log), timeout=60, interval=0.5)


def _assert_exact(
    stack: DemoStack, page: Page, *, duplicates_at_least_repeats: bool = False
) -> None:
    """API and page agree with the hub's ledger: Count exact, Missing 0, Duplicates as replayed."""
    ledger = read_ledger(stack.hub_state_dir / "events.sqlite")
    counts = _counts(stack)
    for device_id in stack.device_ids:
        assert buffered_readings(stack.state_dir / "devices" / device_id) == 0, device_id
        got = ledger[device_id]
        assert got.gaps() == 0, f"{device_id}: the hub never got some readings"
        state = counts[device_id]
        assert state["count"] == got.distinct, (device_id, state)
        assert state["missing"] == 0, (device_id, state)
        if duplicates_at_least_repeats:
            assert state["duplicates"] >= got.repeats, (device_id, state)
        else:
            assert state["duplicates"] == got.repeats, (device_id, state)
        # The page, open through all of it, ends on the same counts (live updates only).
        expected = (state["count"], 0, state["duplicates"])
        wait_until(lambda: shown_counts(page, device_id) == expected, timeout=15)  # noqa: B023


def test_hub_down_30_s_mid_run_loses_nothing(demo_stack: DemoStack, demo_page: Page) -> None:
    """The hub stops for 30 s and comes back: every reading the Pis took is counted once, and
    the page that stayed open shows it."""
    stack = demo_stack
    wait_until(lambda: _all_counted(stack, 3), timeout=60, interval=0.5)
    open_dashboard(demo_page, stack.dashboard_url)
    event_log = stack.hub_state_dir / "events.sqlite"
    before = {d: s["count"] for d, s in _counts(stack).items()}
    stack.hub_admin("POST", "/faults/restart", {"down_seconds": 30})
    time.sleep(2)
    accepted = last_sequence_number(event_log)
    time.sleep(26)
    assert last_sequence_number(event_log) == accepted, "the hub accepted messages while down"
    time.sleep(2)
    # Back up: the Pis drain their buffers; each must pass what it had plus the outage's share.
    wait_until(
        lambda: all(_counts(stack)[d]["count"] >= before[d] + 30 for d in stack.device_ids),
        timeout=90,
        interval=0.5,
    )
    _stop_devices_and_drain(stack)
    _assert_exact(stack, demo_page)


def test_sink_worker_killed_mid_batch_and_restarted_counts_exact(
    demo_stack: DemoStack, demo_page: Page
) -> None:
    """SIGKILL the sink after it committed a batch but before its checkpoint; after a restart
    that batch is delivered again and counted zero times: counts exact, the replay shows as
    duplicates."""
    stack = demo_stack
    event_log = stack.hub_state_dir / "events.sqlite"
    wait_until(lambda: _all_counted(stack, 3), timeout=60, interval=0.5)
    open_dashboard(demo_page, stack.dashboard_url)
    stack.kill_sink()
    time.sleep(5)  # a backlog builds up in the hub
    start = checkpoint(event_log)
    committed = sum(s["count"] for s in _counts_from_tables(stack).values())
    # Web PubSub frozen: the sink's publish (after the commit, before the checkpoint) waits for
    # its timeout, which holds the sink in the middle of its first batch.
    stack.children["pubsub"].signal_group(signal.SIGSTOP)
    try:
        stack.restart_sink(batch_size=2)
        wait_until(
            lambda: sum(s["count"] for s in _counts(stack).values()) > committed,
            timeout=30,
            interval=0.05,
        )
        assert checkpoint(event_log) == start, "the batch was checkpointed before the kill"
        stack.kill_sink()
    finally:
        stack.children["pubsub"].signal_group(signal.SIGCONT)
    stack.restart_sink()
    _stop_devices_and_drain(stack)
    ledger = read_ledger(event_log)
    replayed = sum(s["duplicates"] for s in _counts(stack).values()) - sum(
        ledger[d].repeats for d in stack.device_ids
    )
    assert replayed >= 1, "the committed batch was not delivered again"
    _assert_exact(stack, demo_page, duplicates_at_least_repeats=True)
