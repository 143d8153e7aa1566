"""The durable reading buffer: FIFO, bounds, the dropped count, restarts, SIGKILL, bad files."""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from enviro_sensor.buffer import BufferLimits, ReadingBuffer
from enviro_sensor.errors import BufferStoreError, ConfigError
from hypothesis import given, settings
from hypothesis import strategies as st

BOOT = "0123456789abcdef"


def body(seq: int, size: int = 40) -> bytes:
    """A body of exactly ``size`` bytes naming its seq."""
    head = f'{{"seq":{seq},"pad":"'.encode()
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


def add(buf: ReadingBuffer, seq: int, size: int = 40) -> int:
    return buf.append(body(seq, size), boot=BOOT, seq=seq, source="simulated", alert=False)


def seqs(buf: ReadingBuffer) -> list[int]:
    return [e.seq for e in buf.peek(10**6, hold=False)]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(min_value=20, max_value=300)),
        st.tuples(st.just("peek"), st.integers(min_value=1, max_value=6)),
        st.tuples(st.just("ack"), st.integers(min_value=1, max_value=6)),
        st.tuples(st.just("release"), st.just(0)),
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(
    ops=ops,
    max_readings=st.integers(min_value=1, max_value=12),
    max_bytes=st.integers(min_value=100, max_value=2000),
)
def test_fifo_bounds_and_dropped_count(
    ops: list[tuple[str, int]], max_readings: int, max_bytes: int
) -> None:
    """Any mix of appends, peeks, acks: FIFO order, bounds kept, held rows never dropped, and
    every reading is exactly one of delivered, waiting, dropped (the counter says how many)."""
    buf = ReadingBuffer(path=None, max_readings=max_readings, max_bytes=max_bytes)
    sizes: dict[int, int] = {}
    delivered: list[int] = []
    held: list[int] = []  # seqs the last peek returned, not acked yet
    next_seq = 1
    for op, n in ops:
        if op == "append":
            before = set(seqs(buf))
            dropped_now = add(buf, next_seq, n)
            sizes[next_seq] = n
            after = seqs(buf)
            gone = before - set(after)
            assert len(gone) == dropped_now
            assert not gone & set(held), "a row being sent was dropped"
            unheld = [s for s in after if s not in held]
            assert all(g < min(unheld) for g in gone), "dropped a reading newer than one kept"
            assert after[-1] == next_seq, "the newest reading is always kept"
            droppable = [x for x in after if x not in held and x != next_seq]
            kept_bytes = sum(sizes[x] for x in after)
            within = len(after) <= max_readings and kept_bytes <= max_bytes
            assert within or not droppable, "over a bound with droppable rows left"
            if gone:  # no more than needed: keeping the last one dropped would break a bound
                last = max(gone)
                assert len(after) + 1 > max_readings or kept_bytes + sizes[last] > max_bytes
            next_seq += 1
        elif op == "peek":
            peeked = [e.seq for e in buf.peek(n)]
            held = peeked if len(peeked) > len(held) else held  # the hold only grows
        elif op == "ack" and held:
            j = min(n, len(held))
            entries = buf.peek(j)
            assert [e.seq for e in entries] == held[:j]
            assert buf.ack(entries[-1].id) == j
            delivered.extend(held[:j])
            held = []
        elif op == "release":
            buf.release()
            held = []
        waiting = seqs(buf)
        assert waiting == sorted(waiting)
        stats = buf.stats()
        assert stats.depth == len(waiting)
        assert stats.bytes == sum(sizes[s] for s in waiting)
    appended = list(range(1, next_seq))
    assert delivered == sorted(delivered), "delivered out of order"
    lost = set(appended) - set(delivered) - set(seqs(buf))
    assert len(delivered) + len(seqs(buf)) + len(lost) == len(appended)
    assert buf.stats().dropped == len(lost)


def test_restart_keeps_order_and_dropped(tmp_path: Path) -> None:
    """Close and reopen: the same readings in the same order, the same dropped count."""
    path = tmp_path / "state" / "buffer.sqlite3"
    with ReadingBuffer(path=path, max_readings=30, max_bytes=10**6) as buf:
        for seq in range(1, 51):
            add(buf, seq)
        entries = buf.peek(5)
        buf.ack(entries[-1].id)
        assert buf.stats().dropped == 20
    with ReadingBuffer(path=path, max_readings=30, max_bytes=10**6) as again:
        assert seqs(again) == list(range(26, 51))
        stats = again.stats()
        assert (stats.depth, stats.dropped) == (25, 20)
        assert stats.bytes == 25 * 40
        add(again, 51)
        assert seqs(again)[-1] == 51


def test_tighter_bound_at_restart_drops_at_next_append(tmp_path: Path) -> None:
    """A smaller bound after a restart drops the excess, oldest first, at the next append."""
    path = tmp_path / "buffer.sqlite3"
    with ReadingBuffer(path=path, max_readings=100, max_bytes=10**6) as buf:
        for seq in range(1, 21):
            add(buf, seq)
    with ReadingBuffer(path=path, max_readings=5, max_bytes=10**6) as buf:
        assert add(buf, 21) == 16
        assert seqs(buf) == [17, 18, 19, 20, 21]
        assert buf.stats().dropped == 16


def test_oversized_reading_is_kept_alone() -> None:
    """A reading over the byte bound by itself is kept (the others go)."""
    buf = ReadingBuffer(path=None, max_readings=10, max_bytes=100)
    add(buf, 1, 60)
    assert add(buf, 2, 500) == 1
    assert seqs(buf) == [2]


CHILD = textwrap.dedent(
    """
    import sys
    from enviro_sensor.buffer import ReadingBuffer

    buf = ReadingBuffer(path=sys.argv[1], max_readings=10**6, max_bytes=10**9)
    entries = buf.peek(10**6, hold=False)
    seq = entries[-1].seq if entries else int(sys.argv[2])
    print("ready", flush=True)
    while True:
        seq += 1
        buf.append(b'{"seq":%d}' % seq, boot="0123456789abcdef", seq=seq, source="simulated",
                   alert=False)
        # One write per line: print("a", seq) writes "a", " ", seq, "\\n" apart when
        # unbuffered, and a kill between them left a line the parent could not read.
        sys.stdout.write(f"a {seq}\\n")
        if seq % 7 == 0:
            head = buf.peek(5)
            buf.ack(head[-1].id)
            sys.stdout.write(f"k {head[-1].seq}\\n")
    """
)


def test_sigkill_at_random_moments_loses_no_returned_append(tmp_path: Path) -> None:
    """A writer SIGKILLed at random moments, five times: every append that returned is there
    after reopening, every ack that returned is gone, and no seq is missing or doubled."""
    path = tmp_path / "buffer.sqlite3"
    rng = random.Random(7)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    acked = 0
    appended = 0
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(appended)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.4))
        proc.kill()
        out, _ = proc.communicate(timeout=30)
        for line in out.split("\n")[:-1]:  # complete lines only
            kind, _, value = line.partition(" ")
            if kind == "a":
                appended = int(value)
            elif kind == "k":
                acked = int(value)
        with ReadingBuffer(path=path, max_readings=10**6, max_bytes=10**9) as buf:
            waiting = seqs(buf)
        assert waiting, "the writer appended nothing before the kill"
        assert waiting == list(range(waiting[0], waiting[-1] + 1)), "a gap or a repeat"
        assert waiting[-1] in (appended, appended + 1), (waiting[-1], appended)
        # The ack after the last printed one may have committed just before the kill.
        assert waiting[0] - 1 in (acked, *range(acked + 1, acked + 6)), (waiting[0], acked)
        appended = waiting[-1]
        acked = waiting[0] - 1
    assert appended > 30, "the writer was killed too early to prove anything"


def test_corrupt_file_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A file that is not a database is moved aside with an error line; a new buffer works."""
    path = tmp_path / "buffer.sqlite3"
    junk = b"this is not sqlite" * 500
    path.write_bytes(junk)
    with caplog.at_level(logging.ERROR, logger="enviro_sensor.buffer"):
        buf = ReadingBuffer(path=path, max_readings=10, max_bytes=10**6)
    moved = buf.moved_aside
    assert moved is not None and moved.read_bytes() == junk
    assert moved.name.startswith("buffer.sqlite3.corrupt-")
    assert any("moved it to" in r.getMessage() for r in caplog.records)
    add(buf, 1)
    assert seqs(buf) == [1]
    buf.close()


def test_damaged_pages_are_moved_aside(tmp_path: Path) -> None:
    """A real buffer with overwritten pages fails the integrity check and is moved aside."""
    path = tmp_path / "buffer.sqlite3"
    with ReadingBuffer(path=path, max_readings=10**6, max_bytes=10**9) as buf:
        for seq in range(1, 400):
            add(buf, seq, 200)
    data = bytearray(path.read_bytes())
    assert len(data) > 8192
    data[4096:8192] = b"\xff" * 4096  # the second page and on: b-tree pages, not the header
    path.write_bytes(bytes(data))
    with ReadingBuffer(path=path, max_readings=10, max_bytes=10**6) as again:
        assert again.moved_aside is not None
        assert again.stats().depth == 0


def test_foreign_database_is_moved_aside(tmp_path: Path) -> None:
    """Some other SQLite file at the path is not mistaken for a buffer."""
    path = tmp_path / "buffer.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE other (x)")
    db.close()
    with ReadingBuffer(path=path, max_readings=10, max_bytes=10**6) as buf:
        assert buf.moved_aside is not None
        add(buf, 1)
        assert seqs(buf) == [1]


def test_unopenable_path_is_a_clear_error(tmp_path: Path) -> None:
    """A folder where the file should be: BufferStoreError naming the path, nothing moved."""
    path = tmp_path / "buffer.sqlite3"
    path.mkdir()
    with pytest.raises(BufferStoreError, match=r"buffer\.sqlite3"):
        ReadingBuffer(path=path, max_readings=10, max_bytes=10**6)
    assert path.is_dir()


def test_closed_buffer_refuses() -> None:
    """After close, an append is a BufferStoreError, not a crash in SQLite."""
    buf = ReadingBuffer(path=None, max_readings=10, max_bytes=1000)
    buf.close()
    buf.close()
    with pytest.raises(BufferStoreError, match="closed"):
        add(buf, 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"path": None, "max_readings": 0, "max_bytes": 10},
        {"path": None, "max_readings": True, "max_bytes": 10},
        {"path": None, "max_readings": 10, "max_bytes": "5"},
        {"path": 12, "max_readings": 10, "max_bytes": 10},
        {"path": ":memory:", "max_readings": 10, "max_bytes": 10},
    ],
)
def test_constructor_checks_arguments(kwargs: dict[str, object]) -> None:
    """Bad bounds or a non-path are refused with ValueError."""
    with pytest.raises(ValueError):
        ReadingBuffer(**kwargs)  # type: ignore[arg-type]


def test_append_checks_body() -> None:
    """An empty or non-bytes body is refused."""
    buf = ReadingBuffer(path=None)
    with pytest.raises(ValueError):
        buf.append(b"", boot=BOOT, seq=1, source="simulated", alert=False)
    with pytest.raises(ValueError):
        buf.append("{}", boot=BOOT, seq=1, source="simulated", alert=False)  # type: ignore[arg-type]


def test_limits_from_env() -> None:
    """Defaults when unset; values in range are used; MB means MiB."""
    assert BufferLimits.from_env({}) == BufferLimits()
    limits = BufferLimits.from_env(
        {"ENVIRO_BUFFER_MAX_READINGS": "5000", "ENVIRO_BUFFER_MAX_MB": " 2 "}
    )
    assert (limits.max_readings, limits.max_bytes) == (5000, 2 * 1024 * 1024)


def test_bad_env_names_every_variable() -> None:
    """Every bad variable is named at once, with its valid range."""
    with pytest.raises(ConfigError) as info:
        BufferLimits.from_env({"ENVIRO_BUFFER_MAX_READINGS": "lots", "ENVIRO_BUFFER_MAX_MB": "0"})
    text = str(info.value)
    assert "ENVIRO_BUFFER_MAX_READINGS: 'lots' is not a whole number" in text
    assert "ENVIRO_BUFFER_MAX_MB: must be 1..10000, got 0" in text


def test_append_many_is_one_bulk_append() -> None:
    """append_many: the same rows as one append each, and past the bound the oldest go (even
    from the same batch), counted; an empty batch is refused."""
    from enviro_sensor.buffer import Entry

    buf = ReadingBuffer(path=None, max_readings=5, max_bytes=10**6)
    add(buf, 1)
    batch = [
        Entry(id=0, boot=BOOT, seq=s, source="simulated", alert=False, body=body(s))
        for s in range(2, 9)
    ]
    assert buf.append_many(batch) == 3
    assert seqs(buf) == [4, 5, 6, 7, 8]
    assert buf.stats().dropped == 3
    with pytest.raises(ValueError):
        buf.append_many([])
