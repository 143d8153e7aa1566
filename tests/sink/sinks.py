"""Building real sinks on Azurite for the sink tests (and reading back what they wrote)."""

from __future__ import annotations

from typing import Any

from azure.data.tables import EntityProperty, TableServiceClient
from enviromon_sink.chunks import loads
from enviromon_sink.keys import table_name
from enviromon_sink.processor import Sink


def make_sink(conn: str, prefix: str, **kw: Any) -> Sink:
    """A Sink on ``conn`` with its own tables."""
    return Sink.from_connection_string(conn, table_prefix=prefix, **kw)


def rows(conn: str, prefix: str, role: str) -> list[dict[str, Any]]:
    """Every entity of one of the sink's tables (Int64 properties unwrapped to int)."""
    service = TableServiceClient.from_connection_string(conn)
    table = service.get_table_client(table_name(prefix, role))
    return [{k: _plain(v) for k, v in e.items()} for e in table.list_entities()]


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, EntityProperty) else value


def history_rows(conn: str, prefix: str) -> list[dict[str, Any]]:
    """Every reading the streams table keeps as history (in chunk rows and states' Recent).

    Each as ``{"stream", "boot", "seq", ...}`` (the kept fields), repeats included.
    """
    out: list[dict[str, Any]] = []
    for row in rows(conn, prefix, "streams"):
        rk = str(row["RowKey"])
        text = row.get("Readings") if rk.startswith("h$") else row.get("Recent")
        stream = rk.split("$")[1]
        out.extend({"stream": stream, "boot": i["b"], "seq": i["s"], **i} for i in loads(text))
    return out


def state_rows(conn: str, prefix: str) -> list[dict[str, Any]]:
    """The state rows of the streams table (RowKey ``s$…``)."""
    return [r for r in rows(conn, prefix, "streams") if str(r["RowKey"]).startswith("s$")]
