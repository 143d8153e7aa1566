"""Transactions on azure-core's pipeline: the same rows and errors as the SDK's, on Azurite."""

from __future__ import annotations

import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.core.credentials import AccessToken, AzureNamedKeyCredential
from azure.data.tables import EdmType, EntityProperty, TableClient, TableServiceClient, UpdateMode
from enviromon_sink import rest
from enviromon_sink.rest import (
    PipelineCalls,
    SdkCalls,
    TableCalls,
    TransactionRefused,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sink.transport import FAILED_CHANGESET, FaultyTransport
from tests.support.azurite import DEV_ACCOUNT, DEV_KEY

KINDS = ("sdk", "pipeline")


@pytest.fixture
def table(azurite: str, table_prefix: str) -> Iterator[TableClient]:
    service = TableServiceClient.from_connection_string(azurite)
    client = service.create_table(f"{table_prefix}tx")
    yield client
    service.delete_table(f"{table_prefix}tx")


def sender(kind: str, table: TableClient) -> TableCalls:
    if kind == "sdk":
        return SdkCalls(table=table)
    made = rest.for_table(table)
    assert isinstance(made, PipelineCalls)
    return made


def replace(entity: dict[str, Any], etag: str) -> tuple[Any, ...]:
    options = {
        "mode": UpdateMode.REPLACE,
        "etag": etag,
        "match_condition": MatchConditions.IfNotModified,
    }
    return ("update", entity, options)


ENTITY: dict[str, Any] = {
    "PartitionKey": "b03",
    "RowKey": "s$K~C3~BCche!enviro_sensor",
    "Count": EntityProperty(2**40, EdmType.INT64),
    "Label": "<b>Küche</b> & 'lab'",
    "Alert": True,
    "Calibration": -7,
    "Mean": 21.0,
    "LastSeen": datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
    "Raw": b"\x00\xff",
}


@pytest.mark.parametrize("kind", KINDS)
def test_rows_read_back_as_written(kind: str, table: TableClient) -> None:
    """Create, conditional replace, upsert and delete land exactly as the SDK reads them back."""
    send = sender(kind, table)
    created = send.submit([("create", ENTITY), ("create", {**ENTITY, "RowKey": "other"})])
    assert len(created) == 2 and all(a["etag"].startswith('W/"') for a in created)
    stored = table.get_entity(ENTITY["PartitionKey"], ENTITY["RowKey"])
    assert dict(stored) == ENTITY and stored.metadata["etag"] == created[0]["etag"]

    [updated] = send.submit([replace({**ENTITY, "Calibration": 3}, created[0]["etag"])])
    assert table.get_entity(ENTITY["PartitionKey"], ENTITY["RowKey"])["Calibration"] == 3
    assert updated["etag"] != created[0]["etag"]

    send.submit(
        [
            ("upsert", {**ENTITY, "RowKey": "third"}, {"mode": UpdateMode.REPLACE}),
            ("delete", {"PartitionKey": "b03", "RowKey": "other"}),
        ]
    )
    assert sorted(e["RowKey"] for e in table.list_entities()) == [ENTITY["RowKey"], "third"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_stale_etag_refuses_the_whole_changeset(kind: str, table: TableClient) -> None:
    """412 names the stale operation, and the other operations of the changeset do not land."""
    send = sender(kind, table)
    [first] = send.submit([("create", ENTITY)])
    send.submit([replace({**ENTITY, "Calibration": 1}, first["etag"])])
    with pytest.raises(TransactionRefused) as refused:
        send.submit(
            [
                ("create", {**ENTITY, "RowKey": "new"}),
                replace({**ENTITY, "Calibration": 2}, first["etag"]),
            ]
        )
    assert refused.value.status_code == 412
    assert refused.value.error_code == "UpdateConditionNotSatisfied"
    assert refused.value.failed_index == 1
    assert [e["RowKey"] for e in table.list_entities()] == [ENTITY["RowKey"]]
    with pytest.raises(TransactionRefused) as exists:
        send.submit([("create", ENTITY)])
    assert (exists.value.status_code, exists.value.error_code) == (409, "EntityAlreadyExists")


TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="\x00"),
    max_size=40,
)
# No ",": Azurite misparses "(PartitionKey='p',RowKey=',')" (the SDK's writes too); the
# sink's keys never hold one (keys.escape_key).
KEY = st.text(alphabet=string.ascii_letters + string.digits + "~$!'_.- %&()=+;@", min_size=1)
VALUE = st.one_of(
    TEXT,
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: EntityProperty(v, EdmType.INT64)),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.datetimes(
        min_value=datetime(1700, 1, 1),
        max_value=datetime(9000, 1, 1),
        timezones=st.just(UTC),
    ),
    st.binary(max_size=40),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    row_key=KEY,
    properties=st.dictionaries(st.from_regex(r"[A-Z][A-Za-z0-9]{0,12}", fullmatch=True), VALUE),
)
def test_any_entity_reads_back_through_the_sdk(
    table: TableClient, row_key: str, properties: dict[str, Any]
) -> None:
    """Keys with quotes and reserved characters, every property type: the SDK reads it back."""
    send = sender("pipeline", table)
    properties.pop("PartitionKey", None)
    properties.pop("RowKey", None)
    properties.pop("Timestamp", None)
    entity = {"PartitionKey": "p", "RowKey": row_key, **properties}
    send.submit([("upsert", entity, {"mode": UpdateMode.REPLACE})])
    [stored] = table.query_entities("RowKey eq @rk", parameters={"rk": row_key})
    assert dict(stored) == entity


def test_answer_parts_are_read_by_status_and_etag() -> None:
    """A 202 with one part per operation gives their ETags; a part missing is an error."""
    ok = (
        "--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n"
        + "".join(
            "--changesetresponse_2\r\nContent-Type: application/http\r\n\r\n"
            f"HTTP/1.1 204 No Content\r\nETag: W/\"datetime'{i}'\"\r\n\r\n\r\n"
            for i in range(3)
        )
        + "--changesetresponse_2--\r\n--batchresponse_1--\r\n"
    )
    answers = rest._answers(ok, 3)
    assert [a["etag"] for a in answers] == [f"W/\"datetime'{i}'\"" for i in range(3)]
    with pytest.raises(Exception, match="3 parts for 4 operations"):
        rest._answers(ok, 4)
    with pytest.raises(TransactionRefused) as refused:
        rest._answers(FAILED_CHANGESET.decode(), 2)
    assert (refused.value.status_code, refused.value.error_code) == (400, "InvalidInput")
    assert refused.value.failed_index == 1
    with pytest.raises(TransactionRefused, match="413 : not json"):
        rest._answers(
            "--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=cs\r\n\r\n"
            "--cs\r\n\r\nHTTP/1.1 413 Too Large\r\n\r\nnot json\r\n--cs--\r\n",
            1,
        )


def test_operations_the_wire_cannot_carry_are_refused_before_sending() -> None:
    """Ints beyond Int32, naive datetimes, odd types and options: clear errors, nothing sent."""
    for entity, message in (
        ({"PartitionKey": "p", "RowKey": "r", "N": 2**31}, "beyond Int32"),
        ({"PartitionKey": "p", "RowKey": "r", "T": datetime(2026, 1, 1)}, "aware datetime"),
        ({"PartitionKey": "p", "RowKey": "r", "L": [1]}, "unsupported property type"),
        ({"PartitionKey": "p", "RowKey": 5}, "must be strings"),
    ):
        with pytest.raises(TypeError, match=message):
            rest._request_of("t", ("upsert", entity))
    with pytest.raises(ValueError, match="unknown transaction operation"):
        rest._request_of("t", ("merge_all", {"PartitionKey": "p", "RowKey": "r"}))
    with pytest.raises(ValueError, match="needs an etag"):
        rest._request_of(
            "t",
            (
                "update",
                {"PartitionKey": "p", "RowKey": "r"},
                {"match_condition": MatchConditions.IfNotModified},
            ),
        )


def test_the_sas_made_from_the_key_is_renewed_before_it_expires(
    azurite: str, table: TableClient
) -> None:
    """An hour's SAS, renewed 10 minutes before its end: the transaction after that still lands."""
    # The clock starts in the past, so the renewed SAS is already valid for the server.
    now = [datetime.now(UTC) - timedelta(minutes=55)]
    transport = FaultyTransport()
    send = PipelineCalls(
        account_url=table.url,
        table_name=table.table_name,
        credential=AzureNamedKeyCredential(DEV_ACCOUNT, DEV_KEY),
        transport=transport,
        clock=lambda: now[0],
    )
    send.submit([("create", ENTITY)])
    now[0] += timedelta(minutes=51)
    send.submit([("upsert", ENTITY, {"mode": UpdateMode.REPLACE})])
    first, second = (url for _, url, _ in transport.sent)
    assert "sig=" in first and "sig=" in second and first != second
    assert table.get_entity(ENTITY["PartitionKey"], ENTITY["RowKey"])["Count"].value == 2**40


class _Token:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("t", 0)


def test_for_table_uses_the_pipeline_for_keys_and_sas_and_the_sdk_otherwise(azurite: str) -> None:
    """An account key or a SAS gets the pipeline; a token credential keeps the SDK's path."""
    keyed = TableServiceClient.from_connection_string(azurite).get_table_client("t")
    assert isinstance(rest.for_table(keyed), PipelineCalls)
    sas_conn = (
        f"TableEndpoint={keyed.url};SharedAccessSignature=sv=2019-02-02&ss=t&srt=o&sp=r&sig=x"
    )
    with_sas = TableServiceClient.from_connection_string(sas_conn).get_table_client("t")
    assert isinstance(rest.for_table(with_sas), PipelineCalls)
    token = TableClient("https://acct.table.core.windows.net", "t", credential=_Token())
    assert isinstance(rest.for_table(token), SdkCalls)
    with pytest.raises(ValueError, match="table_name"):
        PipelineCalls(account_url=keyed.url, table_name="a/b", credential=None)
    with pytest.raises(ValueError, match="http"):
        PipelineCalls(account_url="ftp://x", table_name="t", credential=None)
    with pytest.raises(ValueError, match="credential is needed"):
        PipelineCalls(account_url="https://x", table_name="t", credential=None)


def test_queries_give_what_the_sdk_gives_across_pages(table: TableClient) -> None:
    """1,050 rows (two pages of the service's 1,000): same entities and ETags as the SDK's."""
    pipeline, sdk = sender("pipeline", table), sender("sdk", table)
    for start in range(0, 1050, 100):
        pipeline.submit(
            [
                ("create", {**ENTITY, "PartitionKey": "q'p", "RowKey": f"r{i:04d}", "I": i})
                for i in range(start, min(start + 100, 1050))
            ]
        )
    where = "PartitionKey eq @pk and RowKey ge @lo"
    params = {"pk": "q'p", "lo": "r0000"}
    got = pipeline.query(where, params)
    assert len(got) == 1050 and got[0][0] == {
        **ENTITY,
        "PartitionKey": "q'p",
        "RowKey": "r0000",
        "I": 0,
    }
    assert got == sdk.query(where, params)
    assert pipeline.query("RowKey eq @rk", {"rk": "none"}) == []


def test_query_parameters_are_bound_as_string_literals() -> None:
    """Quotes doubled; a missing or non-string parameter is an error, not a broken filter."""
    assert rest._bind("RowKey eq @k and X eq @k2", {"k": "a'b", "k2": "c"}) == (
        "RowKey eq 'a''b' and X eq 'c'"
    )
    with pytest.raises(ValueError, match="@k has no value"):
        rest._bind("RowKey eq @k", {})
    with pytest.raises(TypeError, match="must be a string"):
        rest._bind("RowKey eq @k", {"k": 5})  # type: ignore[dict-item]


def test_each_call_asks_for_the_answer_format_it_parses(table: TableClient) -> None:
    """The query asks for minimal metadata (the types it reads back); $batch for plain JSON."""
    transport = FaultyTransport()
    send = rest.for_table(table, transport=transport)
    send.submit([("create", ENTITY)])
    assert send.query("RowKey eq @rk", {"rk": ENTITY["RowKey"]})
    accepts = {method: headers.get("Accept") for method, _, headers in transport.sent}
    assert accepts == {"POST": "application/json", "GET": "application/json;odata=minimalmetadata"}
