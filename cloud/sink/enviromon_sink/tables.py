"""What every Azure Tables module of the sink shares: error translation, Int64, time keys.

The one lower layer under ``streams.py`` and ``deadletter.py`` (they do not import each other).
Only the SDK's public API is used.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import EdmType, EntityProperty

from enviromon_sink.errors import TransientStoreError

#: The service's limit on entities per transaction.
MAX_TRANSACTION: Final = 100
#: The service's limit on a transaction's payload is 4 MiB; stay well below it.
MAX_TRANSACTION_BYTES: Final = 3 * 1024 * 1024
TRANSIENT_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})
#: The SDK's per-request INFO lines (request and response headers, ~2 per request).
SDK_REQUEST_LOGGER: Final = "azure.core.pipeline.policies.http_logging_policy"
_TS_FORMAT: Final = "%m%dT%H%M%S%fZ"  # after the 4-digit year


def quiet_sdk_request_logs(enabled: bool = False) -> None:
    """Turn the storage SDK's per-request INFO lines off (or back on, for debugging)."""
    logging.getLogger(SDK_REQUEST_LOGGER).setLevel(logging.INFO if enabled else logging.WARNING)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn transient Azure errors into TransientStoreError (``raise ... from exc``).

    Conflicts (409, 412), not-found (404) and other refusals pass through unchanged.
    """
    try:
        yield
    except Exception as exc:
        if is_transient(exc):
            raise TransientStoreError(f"Table storage: {type(exc).__name__}: {exc}"[:500]) from exc
        raise


def is_transient(exc: BaseException) -> bool:
    """Whether a retry of the whole batch may fix ``exc`` (5xx, 408, 429, connection)."""
    if isinstance(exc, ServiceRequestError | ServiceResponseError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, HttpResponseError):
        return exc.status_code in TRANSIENT_STATUS
    return isinstance(exc, AzureError)


def int64(value: int) -> EntityProperty:
    """An Int64 Table property: the SDK refuses a plain int beyond Int32's range."""
    return EntityProperty(int(value), EdmType.INT64)


def as_int(value: object) -> int:
    """An Int64 property read back (the SDK gives ``EntityProperty(value, INT64)``) as int."""
    raw: Any = getattr(value, "value", value)
    return int(raw)


def time_key(ts: datetime) -> str:
    """A fixed-width, sortable UTC time for RowKeys (microseconds).

    The year is padded by hand: ``strftime("%Y")`` gives ``999``, not ``0999``, on glibc, which
    would sort a year-999 reading after every year-2026 one.
    """
    utc = ts.astimezone(UTC)
    return f"{utc.year:04d}{utc.strftime(_TS_FORMAT)}"
