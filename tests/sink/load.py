"""A replayed, concurrent workload shaped like IoT Hub's built-in endpoint (tests and bench).

Devices hash to partitions (:func:`hub_partition`); each partition is an ordered stream of
events, cut into batches.
Like Event Hubs consumers, a partition's batch k is handed out only after batch k-1 finished;
unlike a well-behaved host, every batch is also delivered a second time, at a random later
moment, to a random worker — possibly while a later batch of the same devices is running on
another worker. So each device's readings stay in order on first delivery, replays arrive late
and out of order, and workers race on the same device entities.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import random
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from enviromon_sink.events import InboundEvent

T0 = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Workload:
    """Batches per partition, and what the totals must be."""

    partitions: list[list[list[InboundEvent]]]
    devices: list[str]
    readings_per_device: int
    bad_per_device: int = 0

    @property
    def readings(self) -> int:
        return len(self.devices) * self.readings_per_device

    @property
    def batches(self) -> int:
        return sum(len(p) for p in self.partitions)


def device_name(i: int) -> str:
    return f"pi-{i:04d}"


def hub_partition(name: str, partitions: int) -> int:
    """The hub partition of device ``name``: a hash independent of the sink's buckets.

    Not CRC-32: CRC is affine over GF(2), so for ids of one length ``crc32(salt + id)`` is
    ``crc32(id)`` XOR a constant, and ``keys.bucket_of`` (a salted CRC mod 8) would map each
    partition's devices to a single storage bucket. A real IoT Hub partitions by its own hash,
    so a batch spans several buckets; SHA-256 models that.
    """
    digest = hashlib.sha256(b"hub-partition/" + name.encode()).digest()
    return int.from_bytes(digest[:8], "big") % partitions


def build(
    *,
    devices: int,
    readings: int,
    partitions: int = 8,
    batch_size: int = 100,
    boots_per_device: int = 2,
    bad_every: int = 0,
) -> Workload:
    """``readings`` schema-1 readings spread evenly over ``devices`` (one event each).

    Each device reboots ``boots_per_device - 1`` times along the way, so replays also cross
    boot changes. With ``bad_every`` = n, each device also sends a refused (truncated) body
    after every n-th reading (``Workload.bad_per_device`` of them).
    """
    per_device = readings // devices
    names = [device_name(i) for i in range(devices)]
    streams: list[list[InboundEvent]] = [[] for _ in range(partitions)]
    seq_no = [0] * partitions
    partition_of = {name: hub_partition(name, partitions) for name in names}
    for step in range(per_device):
        for d, name in enumerate(names):
            boot_index = step * boots_per_device // per_device
            boot = f"{zlib.crc32(f'{name}/{boot_index}'.encode()):08x}"
            first_step = (boot_index * per_device + boots_per_device - 1) // boots_per_device
            seq = step - first_step + 1
            ts = T0 + timedelta(seconds=step, microseconds=d)
            body = {
                "schema": 1,
                "deviceId": name,
                "boot": boot,
                "seq": seq,
                "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "source": "simulated",
                "temperature": round(15 + (step % 100) / 10, 2),
                "humidity": 45.0,
                "pressure": 1000.0,
                "gasResistance": None,
                "iaq": None,
                "calibration": 0,
                "flags": [],
            }
            p = partition_of[name]
            if bad_every and step % bad_every == bad_every - 1:
                seq_no[p] += 1
                streams[p].append(
                    InboundEvent(
                        body=json.dumps(body).encode()[:-7],
                        device_id=name,
                        enqueued_time=ts,
                        sequence_number=seq_no[p],
                    )
                )
            seq_no[p] += 1
            streams[p].append(
                InboundEvent(
                    body=json.dumps(body).encode(),
                    device_id=name,
                    properties={"temperatureAlert": "false", "source": "simulated"},
                    enqueued_time=ts,
                    sequence_number=seq_no[p],
                    message_id=f"{boot}:{seq}",
                )
            )
    cut = [
        [stream[i : i + batch_size] for i in range(0, len(stream), batch_size)]
        for stream in streams
    ]
    return Workload(
        partitions=[c for c in cut if c],
        devices=names,
        readings_per_device=per_device,
        bad_per_device=per_device // bad_every if bad_every else 0,
    )


def run(
    workload: Workload,
    *,
    workers: int,
    work: Callable[[list[InboundEvent]], Any],
    initializer: Callable[..., None],
    initargs: Sequence[Any],
    seed: int = 1,
    replay: bool = True,
    in_order: bool = True,
    timeout_s: float = 300.0,
) -> list[Any]:
    """Deliver every batch (twice when ``replay``) to a pool of worker processes.

    ``in_order=False``: first deliveries of a partition's batches come in any order too (all
    are ready at once), so a stream's readings arrive out of order the first time.

    Returns the results of ``work`` for every delivery, in completion order.
    """
    rng = random.Random(seed)
    ready: list[tuple[int, int, bool]] = [
        (p, k, True)
        for p in range(len(workload.partitions))
        for k in range(1 if in_order else len(workload.partitions[p]))
    ]
    results: list[Any] = []
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=initializer, initargs=tuple(initargs)
    ) as pool:
        in_flight: dict[Future[Any], tuple[int, int, bool]] = {}
        while ready or in_flight:
            while ready and len(in_flight) < workers:
                task = ready.pop(rng.randrange(len(ready)))
                p, k, _ = task
                in_flight[pool.submit(work, workload.partitions[p][k])] = task
            done, _ = wait(in_flight, timeout=timeout_s, return_when=FIRST_COMPLETED)
            if not done:
                raise TimeoutError(f"no batch finished within {timeout_s}s")
            for future in done:
                p, k, first = in_flight.pop(future)
                results.append(future.result())
                if first:
                    if in_order and k + 1 < len(workload.partitions[p]):
                        ready.append((p, k + 1, True))
                    if replay:
                        ready.append((p, k, False))
    return results
