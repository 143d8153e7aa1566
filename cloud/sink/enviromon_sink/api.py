"""The sink's REST API as plain functions: request data in, status, headers and JSON out.

Both hosts (function_app.py on Azure Functions, local_runner.py on this machine) route to
these, so the dashboard sees the same API everywhere:

- ``GET /api/negotiate`` → ``{"url": "wss://…?access_token=…", "expiresAt": "…Z"}``
- ``GET /api/devices`` → ``{"devices": [<stream state>, …]}`` (one entry per (device, module)
  stream, each with ``streamId`` and ``moduleId``)
- ``GET /api/devices/{id}/telemetry?from=&to=&limit=&module=&continuation=`` →
  ``{"deviceId", "moduleId", "from", "to", "limit", "readings": [...], "truncated": bool,
  "continuation": str | null}``: without ``module`` every stream of the device, merged by time;
  ``module=`` (empty) the plain device's stream; ``truncated`` means ``continuation`` fetches more.
- ``GET /api/telemetry?from=&to=&limit=`` → ``{"from", "to", "limit", "streams": [{"streamId",
  "deviceId", "moduleId", "readings": [...], "continuation": str | null}]}``: every stream's
  readings in one request (for a page's recent raw tail; ``limit`` per stream, default 1000,
  and ``continuation`` goes to the device route with ``module``).
- ``GET /api/rollups?step=1m|15m|1h&from=&to=&shape=points|columns`` →
  ``{"step", "from", "to", "shape", "streams": [{"streamId", "deviceId", "moduleId", "points":
  [{"ts", "<metric>": {"min", "mean", "max", "n"}, …}]}]}``: every stream at once; with
  ``shape=columns`` each stream has ``"ts": [...]`` and ``"metrics": {"<metric>": {"min":
  [...], "mean": [...], "max": [...], "n": [...]}}`` instead of ``points`` (half the bytes).

A device id that is well formed but unknown gets 200 with no readings, not 404: a device
that has not sent anything in the range looks the same, and the device list is the place
to learn which devices exist. Every response is ``Cache-Control: no-store`` (live data).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from azure.core.exceptions import ServiceRequestError, ServiceResponseError

from enviromon_sink.errors import SettingsError, SinkError, TransientStoreError
from enviromon_sink.negotiate import TokenSource, client_access
from enviromon_sink.normalise import valid_hub_id
from enviromon_sink.rollups import parse_step
from enviromon_sink.storage import HistoryPage

_log = logging.getLogger(__name__)

DEFAULT_RANGE = timedelta(hours=24)
MAX_RANGE = timedelta(days=31)
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000


class DeviceStore(Protocol):
    """The part of ``processor.Sink`` the API reads."""

    def list_devices(self) -> list[dict[str, Any]]:
        """Committed state of every device."""
        ...

    def history(
        self,
        device_id: str,
        start: datetime,
        end: datetime,
        limit: int = ...,
        *,
        module_id: str | None = ...,
        all_modules: bool = ...,
        continuation: str | None = ...,
    ) -> HistoryPage:
        """A device's readings with ``start <= time < end``, oldest first, a page of ``limit``."""
        ...

    def every_history(
        self, start: datetime, end: datetime, limit: int = ...
    ) -> list[dict[str, Any]]:
        """Every stream's readings in ``[start, end)``, at most ``limit`` each, and a token."""
        ...

    def rollups(
        self, step: str, start: datetime, end: datetime, *, as_columns: bool = False
    ) -> list[dict[str, Any]]:
        """Every stream's min/mean/max per ``step`` bucket in ``[start, end)``."""
        ...


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """An HTTP response, independent of the host."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body parsed (for tests and hosts that re-wrap it)."""
        return json.loads(self.body)


def json_response(status: int, payload: Any) -> ApiResponse:
    """A JSON response that no cache keeps."""
    return ApiResponse(
        status=status,
        body=json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8"),
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


def error_response(status: int, message: str) -> ApiResponse:
    """``{"error": message}`` with ``status``."""
    return json_response(status, {"error": message})


def with_cors(response: ApiResponse, allowed_origin: str | None) -> ApiResponse:
    """Add CORS headers for an allowed origin (None: leave the response as it is)."""
    if allowed_origin is None:
        return response
    headers = dict(response.headers)
    headers["Access-Control-Allow-Origin"] = allowed_origin
    if allowed_origin != "*":
        headers["Vary"] = "Origin"
    return ApiResponse(status=response.status, body=response.body, headers=headers)


def preflight(allowed_origin: str | None) -> ApiResponse:
    """The answer to a CORS preflight (``OPTIONS``): GET only, no credentials."""
    if allowed_origin is None:
        return ApiResponse(status=403, body=b"", headers={"Cache-Control": "no-store"})
    response = ApiResponse(
        status=204,
        body=b"",
        headers={
            "Access-Control-Allow-Methods": "GET, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": "600",
            "Cache-Control": "no-store",
        },
    )
    return with_cors(response, allowed_origin)


def negotiate(token_source: TokenSource | None, *, minutes: int) -> ApiResponse:
    """A receive-only client URL, or 503 when Web PubSub is not configured or fails."""
    if token_source is None:
        return error_response(503, "live updates are not configured (no Web PubSub)")
    try:
        access = client_access(token_source, minutes=minutes)
    except (SinkError, SettingsError, ValueError) as exc:
        _log.error("negotiate failed: %s", exc)
        return error_response(503, "live updates are unavailable")
    return json_response(200, access.to_json())


def list_devices(store: DeviceStore) -> ApiResponse:
    """The committed state of every device."""
    return _guard(lambda: json_response(200, {"devices": store.list_devices()}))


def device_history(
    store: DeviceStore,
    device_id: str,
    query: Mapping[str, str],
    *,
    now: datetime | None = None,
) -> ApiResponse:
    """A device's readings in ``[from, to)`` (ISO-8601 with a zone; default the last 24 h)."""
    # The same rule the core applies to ids from the hub: any id it could have stored is
    # served (it is data, escaped into a key and passed as a query parameter), others are 400.
    if valid_hub_id(device_id) != device_id:
        return error_response(400, "device id must be 1-128 characters, no control characters")
    try:
        start, end, limit = parse_history_query(query, now=now or datetime.now(UTC))
    except ValueError as exc:
        return error_response(400, str(exc))
    module = query.get("module")
    if module is not None and module != "" and valid_hub_id(module) != module:
        return error_response(400, "module id must be 1-128 characters, no control characters")
    continuation = query.get("continuation") or None

    def run() -> ApiResponse:
        try:
            page = store.history(
                device_id,
                start,
                end,
                limit,
                module_id=module or None,
                all_modules=module is None,
                continuation=continuation,
            )
        except ValueError as exc:
            return error_response(400, str(exc))
        return json_response(
            200,
            {
                "deviceId": device_id,
                "moduleId": module or None,
                "from": _iso(start),
                "to": _iso(end),
                "limit": limit,
                "readings": page.readings,
                "truncated": page.continuation is not None,
                "continuation": page.continuation,
            },
        )

    return _guard(run)


def every_history(
    store: DeviceStore, query: Mapping[str, str], *, now: datetime | None = None
) -> ApiResponse:
    """Every stream's readings in ``[from, to)`` (default the last 24 h), ``limit`` per stream."""
    try:
        start, end, limit = parse_history_query(query, now=now or datetime.now(UTC))
    except ValueError as exc:
        return error_response(400, str(exc))
    return _guard(
        lambda: json_response(
            200,
            {
                "from": _iso(start),
                "to": _iso(end),
                "limit": limit,
                "streams": store.every_history(start, end, limit),
            },
        )
    )


def rollups(
    store: DeviceStore, query: Mapping[str, str], *, now: datetime | None = None
) -> ApiResponse:
    """Every stream's rollup points (min/mean/max per step) in ``[from, to)``."""
    try:
        step = parse_step(query.get("step"))
        shape = query.get("shape", "points")
        if shape not in ("points", "columns"):
            raise ValueError("'shape' must be points or columns")
        start, end, _ = parse_history_query(
            {k: v for k, v in query.items() if k not in ("limit", "shape")},
            now=now or datetime.now(UTC),
        )
    except ValueError as exc:
        return error_response(400, str(exc))
    return _guard(
        lambda: json_response(
            200,
            {
                "step": step,
                "from": _iso(start),
                "to": _iso(end),
                "shape": shape,
                "streams": store.rollups(step, start, end, as_columns=shape == "columns"),
            },
        )
    )


def parse_history_query(
    query: Mapping[str, str], *, now: datetime
) -> tuple[datetime, datetime, int]:
    """``from``, ``to`` and ``limit`` from a query string, checked.

    Raises:
        ValueError: with a message fit to show the caller.
    """
    end = _parse_time(query, "to") or now
    try:
        start = _parse_time(query, "from") or (end - DEFAULT_RANGE)
    except OverflowError:
        raise ValueError("'to' is too early for the default 24 h range: give 'from'") from None
    if start >= end:
        raise ValueError("'from' must be before 'to'")
    if end - start > MAX_RANGE:
        raise ValueError(f"the range may span at most {MAX_RANGE.days} days")
    raw_limit = query.get("limit")
    if raw_limit is None or raw_limit == "":
        limit = DEFAULT_LIMIT
    else:
        if not raw_limit.isdigit() or len(raw_limit) > 6:
            raise ValueError(f"'limit' must be a whole number from 1 to {MAX_LIMIT}")
        limit = int(raw_limit)
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"'limit' must be a whole number from 1 to {MAX_LIMIT}")
    return start, end, limit


def _parse_time(query: Mapping[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > 40:
        raise ValueError(f"'{name}' is not an ISO-8601 time")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"'{name}' is not an ISO-8601 time such as 2026-11-25T03:20:00Z") from None
    if value.tzinfo is None:
        raise ValueError(f"'{name}' needs a time zone, e.g. a trailing Z for UTC")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"'{name}' is out of range") from None


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _guard(run: Callable[[], ApiResponse]) -> ApiResponse:
    """Storage trouble → 503 (retry later); anything else → 500 without internals."""
    try:
        return run()
    except (TransientStoreError, ServiceRequestError, ServiceResponseError) as exc:
        _log.warning("storage unavailable: %s", exc)
        response = error_response(503, "storage is unavailable, try again shortly")
        return ApiResponse(
            status=response.status,
            body=response.body,
            headers={**response.headers, "Retry-After": "5"},
        )
    except Exception:
        _log.exception("request failed")
        return error_response(500, "internal error")
