"""function_app.py end to end: host-built events and requests → Azurite → local Web PubSub."""

from __future__ import annotations

import contextlib
import json
import sys
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func
import pytest
from azure.functions import meta as _meta
from azure.functions._thirdparty import typing_inspect as _typing_inspect
from azure.functions.decorators.function_app import Function
from enviromon_sink.errors import SettingsError, TransientStoreError
from websockets.sync.client import ClientConnection, connect

from tests.sink.functions_host import HubMessage, function_batch, http_request, telemetry_body
from tests.sink.tcp_proxy import TcpProxy
from tests.support.azurite import local_table_port, with_table_port
from tests.support.pubsub import recv_json

# Untyped library modules, used as the worker uses them.
meta: Any = _meta
typing_inspect: Any = _typing_inspect
SINK_DIR = Path(__file__).resolve().parents[2] / "cloud" / "sink"
DASHBOARD = "http://127.0.0.1:8080"


@pytest.fixture
def fa(
    monkeypatch: pytest.MonkeyPatch, azurite: str, table_prefix: str, pubsub: Any
) -> Iterator[ModuleType]:
    """function_app imported as the worker does, with app settings in the environment."""
    monkeypatch.syspath_prepend(str(SINK_DIR))
    for name, value in {
        "AZURE_TABLES_CONNECTION_STRING": azurite,
        "WEBPUBSUB_CONNECTION_STRING": pubsub.connection_string,
        "WEBPUBSUB_HUB": "enviromon",
        "ENVIROMON_TABLE_PREFIX": table_prefix,
        "ENVIROMON_CORS_ORIGINS": DASHBOARD,
        "ENVIROMON_PUBLISH_TIMEOUT_SECONDS": "2",
    }.items():
        monkeypatch.setenv(name, value)
    import function_app

    function_app.reset_services()
    yield function_app
    function_app.reset_services()


_indexed: dict[int, dict[str, Function]] = {}


def indexed(module: ModuleType) -> dict[str, Function]:
    """The app's functions by name, indexed once as the worker does (a second get_functions()
    on the same app is refused as duplicate names)."""
    if id(module.app) not in _indexed:
        _indexed[id(module.app)] = {f.get_function_name(): f for f in module.app.get_functions()}
    return _indexed[id(module.app)]


def functions(module: ModuleType) -> dict[str, Callable[..., Any]]:
    """The user functions by name."""
    return {name: f.get_user_function() for name, f in indexed(module).items()}


def run_batch(module: ModuleType, messages: list[HubMessage]) -> None:
    functions(module)["telemetry"](function_batch(messages))


def readings(device: str, seqs: range, boot: str = "0000b001") -> list[HubMessage]:
    return [
        HubMessage(telemetry_body(device, s, boot=boot), device, "enviro_sensor", {}, f"{boot}:{s}")
        for s in seqs
    ]


def get(module: ModuleType, name: str, route: str, **kw: Any) -> func.HttpResponse:
    response = functions(module)[name](http_request("GET", route, **kw))
    assert isinstance(response, func.HttpResponse)
    return response


def device_counts(module: ModuleType) -> dict[str, int]:
    body = json.loads(get(module, "devices", "devices").get_body())
    return {d["deviceId"]: d["count"] for d in body["devices"]}


@contextlib.contextmanager
def listen(module: ModuleType) -> Iterator[ClientConnection]:
    """A dashboard: negotiate through the function, then open the WebSocket it returned."""
    response = get(module, "negotiate", "negotiate", headers={"Origin": DASHBOARD})
    assert response.status_code == 200
    url = json.loads(response.get_body())["url"]
    subprotocols: Any = ["json.webpubsub.azure.v1"]
    with connect(url, subprotocols=subprotocols, open_timeout=5) as ws:
        assert recv_json(ws)["event"] == "connected"
        yield ws


def test_functions_are_declared_as_deployed() -> None:
    """Trigger, cardinality, settings names, retry policy and routes are what Azure reads."""
    sys.path.insert(0, str(SINK_DIR))
    try:
        import function_app
    finally:
        sys.path.remove(str(SINK_DIR))
    fns = indexed(function_app)
    assert set(fns) == {
        "telemetry",
        "negotiate",
        "devices",
        "device_telemetry",
        "every_telemetry",
        "rollups",
    }
    [trigger] = json.loads(fns["telemetry"].get_function_json())["bindings"]
    assert trigger["type"] == "eventHubTrigger"
    assert trigger["cardinality"] == "MANY"
    assert trigger["dataType"] == "BINARY"
    assert trigger["connection"] == "IOTHUB_EVENTS_CONNECTION"
    assert trigger["consumerGroup"] == "%IOTHUB_CONSUMER_GROUP%"
    assert trigger["eventHubName"] == "%IOTHUB_EVENT_HUB_NAME%"
    retry = fns["telemetry"].get_settings_dict("retry_policy")
    assert retry is not None
    assert retry["strategy"] == "exponential_backoff"
    assert retry["max_retry_count"] == "-1"
    routes = {
        name: json.loads(fns[name].get_function_json())["bindings"][0]["route"]
        for name in ("negotiate", "devices", "device_telemetry", "every_telemetry", "rollups")
    }
    assert routes == {
        "negotiate": "negotiate",
        "devices": "devices",
        "device_telemetry": "devices/{id}/telemetry",
        "every_telemetry": "telemetry",
        "rollups": "rollups",
    }
    host = json.loads((SINK_DIR / "host.json").read_text())
    assert host["extensions"]["eventHubs"]["maxEventBatchSize"] <= 100


def test_annotations_pass_the_workers_binding_checks() -> None:
    """Each parameter's annotation is one the worker accepts for its binding (a type or a
    typing generic, and its converter's check), so indexing on Azure does not fail."""
    sys.path.insert(0, str(SINK_DIR))
    try:
        import function_app
    finally:
        sys.path.remove(str(SINK_DIR))
    for fn in indexed(function_app).values():
        hints = typing.get_type_hints(fn.get_user_function())
        for binding in json.loads(fn.get_function_json())["bindings"]:
            if binding["name"] == "$return":
                converter = meta._ConverterMeta.get(binding["type"])
                assert converter.check_output_type_annotation(hints["return"])
                continue
            annotation = hints[binding["name"]]
            assert isinstance(annotation, type) or typing_inspect.is_generic_type(annotation)
            converter = meta._ConverterMeta.get(binding["type"])
            assert converter.check_input_type_annotation(annotation), binding


def test_batch_counts_and_reaches_the_dashboard(fa: ModuleType) -> None:
    """A batch is counted, stored and received by a client that negotiated via the function."""
    with listen(fa) as ws:
        batch = readings("pi-kitchen", range(1, 6)) + readings("pi-hall", range(1, 3))
        run_batch(fa, batch)
        frame = recv_json(ws)
    assert frame["type"] == "message" and frame["dataType"] == "json"
    message = frame["data"]
    assert message["type"] == "readings"
    assert [(r["deviceId"], r["seq"]) for r in message["readings"]] == [
        *[("pi-kitchen", s) for s in range(1, 6)],
        ("pi-hall", 1),
        ("pi-hall", 2),
    ]
    assert message["devices"]["pi-kitchen!enviro_sensor"]["count"] == 5
    assert device_counts(fa) == {"pi-hall": 2, "pi-kitchen": 5}


def test_replayed_batch_counts_once(fa: ModuleType) -> None:
    """The retry policy re-runs a whole batch: the second run adds nothing."""
    batch = readings("pi-1", range(1, 21))
    run_batch(fa, batch)
    run_batch(fa, batch)
    run_batch(fa, batch[5:12])
    state = json.loads(get(fa, "devices", "devices").get_body())["devices"][0]
    assert state["count"] == 20
    assert state["duplicates"] == 27
    history = json.loads(
        get(
            fa, "device_telemetry", "devices/pi-1/telemetry", route_params={"id": "pi-1"}
        ).get_body()
    )
    assert [r["seq"] for r in history["readings"]] == list(range(1, 21))


def test_spoofed_body_device_id_is_only_a_label(fa: ModuleType) -> None:
    """A body claiming another device counts for the device the hub authenticated."""
    body = telemetry_body("pi-victim", 1)
    run_batch(fa, [HubMessage(body, "pi-attacker", None, {}, "x:1")])
    assert device_counts(fa) == {"pi-attacker": 1}


def test_bad_message_does_not_cost_the_batch(fa: ModuleType) -> None:
    """Garbage in the batch is dead-lettered; the good readings around it are counted."""
    batch = readings("pi-1", range(1, 3))
    batch.insert(1, HubMessage(b'{"temperature": NaN', "pi-1"))
    batch.append(HubMessage(b"\x00" * 1000, None))
    run_batch(fa, batch)
    assert device_counts(fa) == {"pi-1": 2}


def test_webpubsub_down_counts_stay_exact(fa: ModuleType, pubsub: Any) -> None:
    """Web PubSub down: the batch commits, the failure is counted; back up, delivery resumes."""
    run_batch(fa, readings("pi-1", range(1, 4)))
    pubsub.stop()
    run_batch(fa, readings("pi-1", range(4, 8)))  # must not raise
    assert device_counts(fa) == {"pi-1": 7}
    publisher = fa.services().publisher
    assert publisher.failures == 1
    pubsub.start()
    with listen(fa) as ws:
        run_batch(fa, readings("pi-1", range(8, 10)))
        frame = recv_json(ws)
    assert [r["seq"] for r in frame["data"]["readings"]] == [8, 9]
    assert frame["data"]["devices"]["pi-1!enviro_sensor"]["count"] == 9
    assert publisher.failures == 1


def test_tables_down_raises_so_the_host_retries(
    monkeypatch: pytest.MonkeyPatch, fa: ModuleType, azurite: str
) -> None:
    """Storage gone mid-run: the function raises; the retried batch then counts once."""
    proxy = TcpProxy(local_table_port(azurite))
    try:
        monkeypatch.setenv("AZURE_TABLES_CONNECTION_STRING", with_table_port(azurite, proxy.port))
        fa.reset_services()
        run_batch(fa, readings("pi-1", range(1, 4)))
        proxy.down()
        batch = readings("pi-1", range(4, 9))
        with pytest.raises(TransientStoreError):
            run_batch(fa, batch)
        proxy.up()
        run_batch(fa, batch)  # the retry policy's re-run
        run_batch(fa, batch)  # and a redelivery after a restart, for good measure
        assert device_counts(fa) == {"pi-1": 8}
    finally:
        proxy.close()


def test_http_routes_cors_and_errors(fa: ModuleType) -> None:
    """CORS for the dashboard origin only; preflight; bad range is 400 with a message."""
    run_batch(fa, readings("pi-1", range(1, 3)))
    ok = get(fa, "devices", "devices", headers={"Origin": DASHBOARD})
    assert ok.status_code == 200
    assert ok.headers["Access-Control-Allow-Origin"] == DASHBOARD
    assert ok.headers["Cache-Control"] == "no-store"
    assert ok.mimetype == "application/json"
    other = get(fa, "devices", "devices", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    pre = functions(fa)["devices"](
        http_request("OPTIONS", "devices", headers={"Origin": DASHBOARD})
    )
    assert pre.status_code == 204
    assert "GET" in pre.headers["Access-Control-Allow-Methods"]
    bad = get(
        fa,
        "device_telemetry",
        "devices/pi-1/telemetry",
        route_params={"id": "pi-1"},
        params={"from": "last tuesday"},
    )
    assert bad.status_code == 400
    assert "'from' is not an ISO-8601 time" in json.loads(bad.get_body())["error"]


def test_missing_settings_name_the_setting(monkeypatch: pytest.MonkeyPatch, fa: ModuleType) -> None:
    """Without a Tables connection the first invocation fails naming the setting."""
    monkeypatch.delenv("AZURE_TABLES_CONNECTION_STRING")
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    fa.reset_services()
    with pytest.raises(SettingsError, match="AZURE_TABLES_CONNECTION_STRING"):
        run_batch(fa, readings("pi-1", range(1, 2)))
