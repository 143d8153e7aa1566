"""History chunks: the pure cut (every reading once, bounded rows) and paging through them."""

from __future__ import annotations

import random
from datetime import timedelta

from enviromon_sink import chunks
from enviromon_sink.processor import Sink
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sink.helpers import T0, event, reading_body

_items = st.lists(
    st.builds(
        lambda s, minutes, label: {
            "b": "aaaaaaaa",
            "s": s,
            "t": (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z"),
            "src": "simulated",
            "v": {"temperature": 20.0},
            "c": 0,
            "f": [],
            "a": False,
            "l": label,
        },
        st.integers(1, 10**6),
        st.integers(0, 600),
        st.text(max_size=128),
    ),
    max_size=120,
    unique_by=lambda i: i["s"],
)


@settings(deadline=None)
@given(_items, _items)
def test_plan_keeps_every_reading_once_in_bounded_rows(
    recent: list[chunks.Item], new: list[chunks.Item]
) -> None:
    """Recent + new = the cut chunks + the new Recent (its JSON too); chunks ≤ 1 h, 30,000 chars."""
    new = [dict(i, b="bbbbbbbb") for i in new]  # distinct from recent's readings
    cut, kept, text = chunks.plan_dumped(recent, new)
    assert (cut, kept) == chunks.plan(recent, new) and text == chunks.dumps(kept)
    placed = [chunks.sort_key(i) for c in cut for i in c] + [chunks.sort_key(i) for i in kept]
    assert sorted(placed) == sorted(chunks.sort_key(i) for i in [*recent, *new])
    for chunk in cut:
        times = [chunks.ts_of(i) for i in chunk]
        assert chunk and max(times) - min(times) <= chunks.SPAN
        assert len(chunks.dumps(chunk)) <= chunks.MAX_CHUNK_CHARS
        assert chunks.sort_key(chunk[0]) == min(chunks.sort_key(i) for i in chunk)
    assert len(kept) < chunks.FLUSH_AT and len(chunks.dumps(kept)) <= chunks.MAX_RECENT_CHARS


def test_paging_over_chunks_late_readings_and_recent(azurite: str, table_prefix: str) -> None:
    """Six hours in many batches, a dozen late: any page size gives each once, in order."""
    sink = Sink.from_connection_string(azurite, table_prefix=table_prefix)
    seqs = list(range(1, 361))  # a reading a minute
    rng = random.Random(7)
    late = set(rng.sample(seqs, 12))  # at most 16 gaps are remembered (docs/sink.md)
    order = [s for s in seqs if s not in late] + sorted(late)  # late ones arrive at the end
    for i in range(0, len(order), 25):
        batch = order[i : i + 25]
        sink.process(
            [event(reading_body(s, ts=T0 + timedelta(minutes=s)), device="pi-slow") for s in batch]
        )
    state = sink.device("pi-slow")
    assert state is not None and state["count"] == 360 and state["missing"] == 0
    start, end = T0 + timedelta(minutes=30), T0 + timedelta(minutes=300)
    want = [s for s in seqs if start <= T0 + timedelta(minutes=s) < end]
    for limit in (1, 7, 100, 1000):
        seen: list[int] = []
        token = None
        while True:
            page = sink.history("pi-slow", start, end, limit, continuation=token)
            assert len(page.readings) <= limit
            seen.extend(r["seq"] for r in page.readings)
            token = page.continuation
            if token is None:
                break
        assert seen == want, limit
