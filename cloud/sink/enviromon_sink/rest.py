"""The two Table calls of the sink's hot path, on azure-core's public pipeline.

Entity-group transactions (OData ``$batch``) and entity queries. Why these are written here
rather than left to ``TableClient``: the SDK builds each transaction's multipart body with the
standard library's ``email`` package, parses the answer with ``email.feedparser`` and starts a
thread pool per transaction (~6 ms of client CPU per transaction plus ~0.5 ms per operation,
measured: docs/sink.md), and runs every queried entity through its generic model deserialiser
(~2.5 ms of a 13-row query's ~4 ms). Once a batch's streams share requests, that was most of
the sink's CPU. The wire formats are small and fixed (Azure Tables REST: "Performing entity
group transactions", "Query Entities", "Payload format for Table service operations"): this
module writes them with string formatting and ``json`` and reads back status lines, ETags and
JSON entities.

Everything around the wire is public API: ``azure.core.PipelineClient`` with azure-core's
retry, user-agent and SAS policies and the caller's transport; the SAS of an account key comes
from ``azure.data.tables.generate_account_sas``; failures are azure-core's exception types
(:class:`TransactionRefused` is an ``HttpResponseError``). :func:`for_table` builds
:class:`PipelineCalls` from a ``TableClient``'s public ``url``, ``table_name`` and
``credential``, or falls back to :class:`SdkCalls` (the SDK's own path) for a credential the
pipeline cannot use (a token credential).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

from azure.core import MatchConditions, PipelineClient
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.policies import (
    AzureSasCredentialPolicy,
    HeadersPolicy,
    HttpLoggingPolicy,
    RequestIdPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest
from azure.data.tables import (
    AccountSasPermissions,
    EdmType,
    EntityProperty,
    ResourceTypes,
    TableClient,
    TableTransactionError,
    UpdateMode,
    generate_account_sas,
)

#: An entity as read back: property name → value.
Entity = dict[str, Any]
#: An operation as ``TableClient.submit_transaction`` takes it:
#: ``(kind, entity)`` or ``(kind, entity, options)``; kinds ``create``, ``update``, ``upsert``,
#: ``delete``; options ``mode`` (REPLACE or MERGE), ``etag`` + ``match_condition``.
Operation = tuple[Any, ...]

#: What :func:`for_table` can build: this module's calls, or the SDK's own.
CALL_KINDS: Final = ("pipeline", "sdk")
API_VERSION: Final = "2019-02-02"
#: Lifetime of the SAS made from an account key; a new one is made this long before it ends.
SAS_LIFETIME: Final = timedelta(hours=1)
SAS_RENEW_BEFORE: Final = timedelta(minutes=10)
_INT32: Final = range(-(2**31), 2**31)
_CRLF: Final = "\r\n"
_STATUS_LINE: Final = re.compile(r"^HTTP/1\.[01] (\d{3})[^\r\n]*\r?$", re.MULTILINE)
_BOUNDARY: Final = re.compile(r'boundary="?([^";\r\n]+)"?', re.IGNORECASE)
_FAILED_INDEX: Final = re.compile(r"^(\d+):")


class TableCalls(Protocol):
    """Transactions and queries on one table."""

    def submit(self, operations: Sequence[Operation]) -> list[dict[str, Any]]:
        """Each operation's answer (``{"etag": ...}`` where there is one), in order.

        Raises:
            TransactionRefused: the changeset failed (``status_code``, ``error_code``,
                ``failed_index``); nothing in it landed.
            azure.core.exceptions.AzureError: the request itself failed (connection, 5xx).
        """
        ...

    def query(self, where: str, parameters: Mapping[str, str]) -> list[tuple[Entity, str]]:
        """Every entity matching the OData filter ``where``, with its ETag, all pages.

        ``@name`` in ``where`` stands for ``parameters[name]``, a string (quoted here).
        Int64 properties come back as ``EntityProperty(…, INT64)``, DateTime as aware
        ``datetime``, Binary as ``bytes``, as the SDK gives them.
        """
        ...


class TransactionRefused(HttpResponseError):
    """The service refused a changeset: one operation failed, so none landed."""

    def __init__(
        self, *, status_code: int, error_code: str, message: str, failed_index: int | None
    ) -> None:
        super().__init__(message=f"{status_code} {error_code}: {message}"[:500])
        self.status_code = status_code
        self.error_code = error_code
        #: Index of the operation the service named, if it named one.
        self.failed_index = failed_index


class SdkCalls:
    """:class:`TableCalls` by the SDK's own ``TableClient`` calls (any credential it takes)."""

    def __init__(self, *, table: TableClient) -> None:
        self._table = table

    def submit(self, operations: Sequence[Operation]) -> list[dict[str, Any]]:
        """See :meth:`TableCalls.submit`."""
        try:
            return [dict(meta) for meta in self._table.submit_transaction(list(operations))]
        except TableTransactionError as exc:
            message = str(getattr(exc, "message", "") or exc)
            raise TransactionRefused(
                status_code=int(exc.status_code or 0),
                error_code=str(getattr(exc, "error_code", "") or ""),
                message=message,
                failed_index=_failed_index(message),
            ) from exc

    def query(self, where: str, parameters: Mapping[str, str]) -> list[tuple[Entity, str]]:
        """See :meth:`TableCalls.query`."""
        return [
            (dict(entity), str(entity.metadata["etag"]))
            for entity in self._table.query_entities(where, parameters=dict(parameters))
        ]


class PipelineCalls:
    """:class:`TableCalls` written on an azure-core pipeline (see the module docstring)."""

    def __init__(
        self,
        *,
        account_url: str,
        table_name: str,
        credential: AzureNamedKeyCredential | AzureSasCredential | None,
        transport: HttpTransport[Any, Any] | None = None,
        retry_total: int = 3,
        retry_backoff_factor: float = 0.2,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """Transactions on table ``table_name`` of the account at ``account_url``.

        ``account_url`` (``https://<account>.table.core.windows.net``, or Azurite's
        ``http://127.0.0.1:10002/<account>``) may carry a SAS query, as ``TableClient.url``
        does when made from a SAS connection string; else ``credential`` is a SAS or an
        account key (a SAS is made from the key, for tables and entities, and renewed before
        it expires).
        """
        parts = urlsplit(account_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"account_url must be an http(s) URL, not {account_url!r}")
        if not table_name or not table_name.isalnum():
            raise ValueError(f"table_name must be a table's name, not {table_name!r}")
        if parts.query and credential is not None:
            raise ValueError("account_url carries a SAS already: pass no credential")
        if not parts.query and credential is None:
            raise ValueError("a credential is needed (or a SAS in account_url)")
        if retry_total < 0:
            raise ValueError("retry_total must be ≥ 0")
        self._account = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self._table_name = table_name
        self._query = parts.query
        self._key = credential if isinstance(credential, AzureNamedKeyCredential) else None
        self._sas: AzureSasCredential | None = (
            credential if isinstance(credential, AzureSasCredential) else None
        )
        self._clock = clock
        self._sas_expiry: datetime | None = None
        self._lock = threading.Lock()
        policies: list[Any] = [
            RequestIdPolicy(),  # x-ms-client-request-id, as the SDK's requests carry
            HeadersPolicy(
                {
                    "x-ms-version": API_VERSION,
                    "DataServiceVersion": "3.0",
                    "MaxDataServiceVersion": "3.0;NetFx",
                }
            ),
            UserAgentPolicy(sdk_moniker="enviromon-sink-rest"),
            RetryPolicy(retry_total=retry_total, retry_backoff_factor=retry_backoff_factor),
        ]
        if self._key is not None:
            self._sas = AzureSasCredential(self._new_sas())
        if self._sas is not None:
            policies.append(AzureSasCredentialPolicy(self._sas))
        # The SDK's per-request log lines, under the same logger (tables.quiet_sdk_request_logs
        # turns them off by default); it redacts the SAS signature.
        policies.append(HttpLoggingPolicy())
        self._client: PipelineClient[Any, Any] = PipelineClient(
            self._account, policies=policies, transport=transport
        )

    def _new_sas(self) -> str:
        assert self._key is not None
        now = self._clock()
        self._sas_expiry = now + SAS_LIFETIME
        return generate_account_sas(
            self._key,
            # Azurite files "Query Entities" under the container (table) resource type.
            resource_types=ResourceTypes(container=True, object=True),
            permission=AccountSasPermissions(
                read=True, write=True, delete=True, add=True, update=True
            ),
            start=now - timedelta(minutes=5),  # the service's clock may be a little behind
            expiry=self._sas_expiry,
        )

    def _renew_sas(self) -> None:
        if self._key is None or self._sas is None:
            return
        with self._lock:
            assert self._sas_expiry is not None
            if self._clock() >= self._sas_expiry - SAS_RENEW_BEFORE:
                self._sas.update(self._new_sas())

    def submit(self, operations: Sequence[Operation]) -> list[dict[str, Any]]:
        """See :meth:`TableCalls.submit`: one POST of the changeset to ``$batch``."""
        if not operations:
            return []
        self._renew_sas()
        batch = f"batch_{uuid.uuid4()}"
        changeset = f"changeset_{uuid.uuid4()}"
        body = _body(self._account, self._table_name, operations, batch, changeset)
        url = f"{self._account}/$batch" + (f"?{self._query}" if self._query else "")
        request = HttpRequest(
            "POST",
            url,
            headers={
                "Content-Type": f"multipart/mixed; boundary={batch}",
                "Accept": "application/json",
            },
            content=body.encode("utf-8"),
        )
        response = self._client.send_request(request)
        response.read()  # a no-op when the transport has read it already
        if response.status_code != 202:
            raise HttpResponseError(response=response)
        return _answers(response.text(), len(operations))

    def query(self, where: str, parameters: Mapping[str, str]) -> list[tuple[Entity, str]]:
        """See :meth:`TableCalls.query`: GETs of ``<table>()``, following continuations."""
        self._renew_sas()
        # quote_plus with the sub-delimiters a query may hold as they are: the URL stays
        # short (urllib3 re-scans it character by character), and reads as the SDK's does.
        where_q = quote_plus(_bind(where, parameters), safe="'()$!,:@")
        base = f"{self._account}/{self._table_name}()?$filter={where_q}"
        if self._query:
            base += f"&{self._query}"
        found: list[tuple[Entity, str]] = []
        url = base
        while True:
            request = HttpRequest(
                "GET", url, headers={"Accept": "application/json;odata=minimalmetadata"}
            )
            response = self._client.send_request(request)
            response.read()
            if response.status_code != 200:
                raise HttpResponseError(response=response)
            try:
                rows = json.loads(response.text())["value"]
            except (ValueError, KeyError, TypeError) as exc:
                raise HttpResponseError(message="query answer is not an OData feed") from exc
            found.extend(_entity(row) for row in rows)
            next_pk = response.headers.get("x-ms-continuation-NextPartitionKey")
            if not next_pk:
                return found
            url = f"{base}&NextPartitionKey={quote(next_pk)}"
            next_rk = response.headers.get("x-ms-continuation-NextRowKey")
            if next_rk:
                url += f"&NextRowKey={quote(next_rk)}"


def for_table(
    table: TableClient,
    *,
    transport: HttpTransport[Any, Any] | None = None,
    retry_total: int = 3,
    kind: str = "pipeline",
) -> TableCalls:
    """:class:`PipelineCalls` for ``table`` when its key or SAS allows, else :class:`SdkCalls`.

    Only ``table``'s public ``url``, ``table_name`` and ``credential`` are read.
    ``kind="sdk"`` always gives :class:`SdkCalls`.
    """
    if kind not in CALL_KINDS:
        raise ValueError(f"kind must be one of {CALL_KINDS}, not {kind!r}")
    if kind == "sdk":
        return SdkCalls(table=table)
    credential = table.credential
    sas_in_url = bool(urlsplit(table.url).query)  # a SAS connection string
    chosen: AzureNamedKeyCredential | AzureSasCredential | None
    if sas_in_url and credential is None:
        chosen = None
    elif not sas_in_url and isinstance(credential, AzureNamedKeyCredential | AzureSasCredential):
        chosen = credential
    else:
        return SdkCalls(table=table)
    return PipelineCalls(
        account_url=table.url,
        table_name=table.table_name,
        credential=chosen,
        transport=transport,
        retry_total=retry_total,
    )


# -- the wire ------------------------------------------------------------------------------


def _body(
    account: str, table: str, operations: Sequence[Operation], batch: str, changeset: str
) -> str:
    out = [
        f"--{batch}",
        f"Content-Type: multipart/mixed; boundary={changeset}",
        "",
    ]
    for index, operation in enumerate(operations):
        method, path, headers, payload = _request_of(table, operation)
        out += [
            f"--{changeset}",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            f"Content-ID: {index}",
            "",
            f"{method} {account}/{path} HTTP/1.1",
            "Content-Type: application/json",
            "Accept: application/json;odata=minimalmetadata",
            "Prefer: return-no-content",
            "DataServiceVersion: 3.0",
            *(f"{name}: {value}" for name, value in headers.items()),
            "",
            payload,
        ]
    out += [f"--{changeset}--", f"--{batch}--", ""]
    return _CRLF.join(out)


def _request_of(table: str, operation: Operation) -> tuple[str, str, dict[str, str], str]:
    """(method, path under the account, extra headers, JSON body) of one operation."""
    kind = str(operation[0])
    entity: Mapping[str, Any] = operation[1]
    options: Mapping[str, Any] = operation[2] if len(operation) > 2 else {}
    unknown = set(options) - {"mode", "etag", "match_condition"}
    if unknown:
        raise ValueError(f"unsupported operation options: {sorted(unknown)}")
    pk, rk = entity.get("PartitionKey"), entity.get("RowKey")
    if not isinstance(pk, str) or not isinstance(rk, str):
        raise TypeError("PartitionKey and RowKey must be strings")
    address = f"{table}(PartitionKey='{_key(pk)}',RowKey='{_key(rk)}')"
    if kind == "create":
        return "POST", table, {}, _json(entity)
    merge = options.get("mode", UpdateMode.MERGE) == UpdateMode.MERGE
    method = "MERGE" if merge else "PUT"
    if kind == "upsert":
        return method, address, {}, _json(entity)
    if_match = _if_match(options)
    if kind == "update":
        return method, address, {"If-Match": if_match}, _json(entity)
    if kind == "delete":
        return "DELETE", address, {"If-Match": if_match}, ""
    raise ValueError(f"unknown transaction operation {kind!r}")


def _if_match(options: Mapping[str, Any]) -> str:
    condition = options.get("match_condition", MatchConditions.Unconditionally)
    if condition == MatchConditions.IfNotModified:
        etag = options.get("etag")
        if not etag:
            raise ValueError("IfNotModified needs an etag")
        return str(etag)
    if condition == MatchConditions.Unconditionally:
        return "*"
    raise ValueError(f"unsupported match_condition {condition!r}")


def _key(value: str) -> str:
    """A key inside ``(PartitionKey='…')``: quotes doubled, then percent-encoded."""
    return quote(value.replace("'", "''"), safe="")


def _json(entity: Mapping[str, Any]) -> str:
    """An entity as the service's JSON, with ``@odata.type`` where JSON alone is ambiguous."""
    out: dict[str, Any] = {}
    for name, value in entity.items():
        kind = type(value)
        if kind is str or kind is bool:  # most properties: no checks, no annotation
            out[name] = value
        elif value is None:
            continue
        elif isinstance(value, EntityProperty):
            out.update(_typed(name, value.value, value.edm_type))
        elif isinstance(value, bool | str):
            out[name] = value
        elif isinstance(value, int):
            if value not in _INT32:
                raise TypeError(f"{name}: {value} is beyond Int32; pass an Int64 EntityProperty")
            out[name] = value
        elif isinstance(value, float):
            out.update(_typed(name, value, EdmType.DOUBLE))
        elif isinstance(value, datetime):
            out.update(_typed(name, value, EdmType.DATETIME))
        elif isinstance(value, bytes):
            out.update(_typed(name, value, EdmType.BINARY))
        else:
            raise TypeError(f"{name}: unsupported property type {type(value).__name__}")
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _typed(name: str, value: Any, edm: EdmType | str) -> dict[str, Any]:
    edm = EdmType(edm)
    if edm == EdmType.INT64:
        return {name: str(int(value)), f"{name}@odata.type": "Edm.Int64"}
    if edm == EdmType.DOUBLE:
        return {name: float(value), f"{name}@odata.type": "Edm.Double"}
    if edm == EdmType.DATETIME:
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise TypeError(f"{name}: a DateTime must be an aware datetime")
        text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {name: text, f"{name}@odata.type": "Edm.DateTime"}
    if edm == EdmType.BINARY:
        return {name: base64.b64encode(value).decode("ascii"), f"{name}@odata.type": "Edm.Binary"}
    if edm in (EdmType.STRING, EdmType.BOOLEAN, EdmType.INT32):
        return {name: value}
    raise TypeError(f"{name}: unsupported EDM type {edm}")


def _answers(text: str, count: int) -> list[dict[str, Any]]:
    """Each operation's ``{"etag": …}`` from a 202 answer; raise the failed operation's error."""
    boundaries = _BOUNDARY.findall(text)
    # The outer part names the changeset response's boundary; split the answer on it.
    inner = boundaries[0] if boundaries else None
    parts = text.split(f"--{inner}") if inner else [text]
    answers: list[dict[str, Any]] = []
    for part in parts:
        status = _STATUS_LINE.search(part)
        if status is None:
            continue
        rest = part[status.end() :].removeprefix("\n")  # the status line's own end
        head, _, payload = (
            ("", "", rest[2:]) if rest.startswith("\r\n") else rest.partition("\r\n\r\n")
        )
        headers = _headers(head)
        code = int(status.group(1))
        if code >= 300:
            raise _refused(code, payload)
        answer: dict[str, Any] = {}
        if "etag" in headers:
            answer["etag"] = headers["etag"]
        answers.append(answer)
    if len(answers) != count:
        raise HttpResponseError(
            message=f"transaction answer has {len(answers)} parts for {count} operations"
        )
    return answers


def _headers(head: str) -> dict[str, str]:
    out = {}
    for line in head.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def _refused(status: int, payload: str) -> TransactionRefused:
    code, message = "", payload.strip()[:300]
    try:
        error = json.loads(payload.strip() or "{}").get("odata.error", {})
        code = str(error.get("code", ""))
        message = str(error.get("message", {}).get("value", message))
    except (ValueError, AttributeError):
        pass  # not JSON: keep the raw text as the message
    return TransactionRefused(
        status_code=status,
        error_code=code,
        message=message,
        failed_index=_failed_index(message),
    )


def _failed_index(message: str) -> int | None:
    """The ``<index>:`` the service puts before a failed changeset operation's message."""
    found = _FAILED_INDEX.match(message.strip())
    return int(found.group(1)) if found else None


# -- queries ---------------------------------------------------------------------------------

_PARAMETER: Final = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")


def _bind(where: str, parameters: Mapping[str, str]) -> str:
    """``where`` with each ``@name`` replaced by its parameter as an OData string literal."""

    def literal(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in parameters:
            raise ValueError(f"query parameter @{name} has no value")
        value = parameters[name]
        if not isinstance(value, str):
            raise TypeError(f"query parameter @{name} must be a string")
        return "'" + value.replace("'", "''") + "'"

    return _PARAMETER.sub(literal, where)


def _entity(row: Mapping[str, Any]) -> tuple[Entity, str]:
    """A JSON entity (minimal metadata) as the SDK would give it, and its ETag."""
    entity: Entity = {}
    etag = row.get("odata.etag")
    for name, value in row.items():
        if "." in name or name == "Timestamp":  # odata.*, *@odata.type: not properties
            continue
        kind = type(value)
        if kind is not str and kind is not int:  # bool, float, null: as JSON gives them
            entity[name] = value
            continue
        edm = row.get(name + "@odata.type")
        if edm is None:
            big = kind is int and value not in _INT32
            entity[name] = EntityProperty(value, EdmType.INT64) if big else value
        elif edm == "Edm.Int64":
            entity[name] = EntityProperty(int(value), EdmType.INT64)
        elif edm == "Edm.DateTime":
            entity[name] = datetime.fromisoformat(value).astimezone(UTC)
        elif edm == "Edm.Binary":
            entity[name] = base64.b64decode(value)
        elif edm == "Edm.Double":
            entity[name] = float(value)  # "NaN", "Infinity" come as strings
        else:
            entity[name] = value
    if not etag:
        timestamp = row.get("Timestamp")
        if not isinstance(timestamp, str):
            raise HttpResponseError(message="queried entity has neither ETag nor Timestamp")
        etag = "W/\"datetime'" + quote(timestamp, safe="") + "'\""
    return entity, str(etag)
