"""Local IoT Hub benchmark: telemetry from 50 concurrent real azure-iot-device clients.

Figures:
- hub.msgs_per_s   telemetry messages accepted (PUBACKed, i.e. committed to the event log) per
                   second, from 50 async SDK clients spread over client processes.
- hub.p99_ms       99th percentile of publish → event log: from just before ``send_message``
                   to the hub's enqueued time of that event (same host clock).
Baseline: Azure IoT Hub S1 allows 100 device-to-cloud sends/s per unit
(hub.baseline_s1_sends_per_s); ``hub.vs_s1_unit`` is msgs_per_s over that.

The hub runs as `enviromon hub serve` in its own process; clients reach it through the hub's
HTTP CONNECT tunnel (the SDK always dials 8883; see docs/local-hub.md).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import hub_clients

CLIENTS = 50
PROCESSES = 2
MESSAGES_PER_CLIENT = 200
GOAL_MSGS_PER_S = 2000
GOAL_P99_MS = 50
S1_SENDS_PER_S = 100  # IoT Hub S1: 100 device-to-cloud sends per second per unit


def main() -> None:
    from enviromon_sim.iothub.eventlog import EventLog
    from enviromon_sim.iothub.hub import read_state
    from enviromon_sim.iothub.registry import Registry, connection_string

    state_dir = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    registry = Registry(state_dir / "registry.json")
    conn_strs = [
        connection_string("localhost", registry.add_device(f"bench-{i}")) for i in range(CLIENTS)
    ]
    cmd = [
        sys.executable,
        "-m",
        "enviromon_sim.cli",
        "hub",
        "--state-dir",
        str(state_dir),
        "serve",
        "--port",
        "0",
        "--proxy-port",
        "0",
    ]
    hub = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        state = None
        while time.monotonic() < deadline:
            state = read_state(state_dir)
            if state and state.get("proxy_port"):
                break
            time.sleep(0.1)
        if not state or not state.get("proxy_port"):
            raise RuntimeError("hub did not start")
        ca = Path(state["ca"]).read_text("ascii")
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        start_at = time.time() + 8  # after every client has connected
        per = CLIENTS // PROCESSES
        procs = [
            ctx.Process(
                target=hub_clients.client_proc,
                args=(
                    conn_strs[p * per : (p + 1) * per],
                    ca,
                    state["proxy_port"],
                    start_at,
                    MESSAGES_PER_CLIENT,
                    out,
                ),
            )
            for p in range(PROCESSES)
        ]
        for p in procs:
            p.start()
        results = [out.get(timeout=180) for _ in procs]
        for p in procs:
            p.join(30)
        sent = sum(r[0] for r in results)
        t0 = min(r[1] for r in results)
        t1 = max(r[2] for r in results)
        log = EventLog(state_dir / "events.sqlite")
        latencies: list[float] = []
        after = 0
        while batch := log.read_after(after, max_events=5000):
            for ev in batch:
                sent_at = json.loads(ev.body)["t"]
                latencies.append((ev.enqueued_time.timestamp() - sent_at) * 1000)
            after = batch[-1].sequence_number
        log.close()
        if len(latencies) < sent:
            raise RuntimeError(f"only {len(latencies)} of {sent} messages reached the event log")
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        p50 = latencies[len(latencies) // 2]
        rate = sent / (t1 - t0)
        print(f"hub.clients={CLIENTS}")
        print(f"hub.client_processes={PROCESSES}")
        print(f"hub.messages={sent}")
        print(f"hub.msgs_per_s={rate:.0f}")
        print(f"hub.msgs_per_s.goal={GOAL_MSGS_PER_S}")
        print(f"hub.p50_ms={p50:.1f}")
        print(f"hub.p99_ms={p99:.1f}")
        print(f"hub.p99_ms.goal={GOAL_P99_MS}")
        print(f"hub.baseline_s1_sends_per_s={S1_SENDS_PER_S}")
        print(f"hub.vs_s1_unit={rate / S1_SENDS_PER_S:.1f}")
        print(f"hub.cpus={os.cpu_count()}")
    finally:
        hub.terminate()
        try:
            hub.wait(15)
        except subprocess.TimeoutExpired:
            hub.kill()
        shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
