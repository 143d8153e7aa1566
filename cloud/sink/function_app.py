"""enviromon cloud sink on Azure Functions (Python v2 programming model).

Thin on purpose: each function adapts the host's types and calls the plain modules in
``enviromon_sink`` (which the local runner drives the same way). App settings: see
docs/sink-deploy.md.

Delivery: the IoT Hub trigger checkpoints after each batch whether or not the function
threw, so a failure must be retried *here*, before the function returns. The retry policy
re-runs the whole batch with exponential backoff, without a retry limit: the core counts a
replayed batch zero times again, so re-running is always safe, and giving up would lose the
batch's readings once the trigger checkpoints past them.
"""

# No `from __future__ import annotations` here: the worker reads these annotations at
# indexing time and should get real types, not strings.
import logging
import threading
from dataclasses import dataclass

# typing.List, not list[...]: the Functions Python worker refuses a types.GenericAlias
# trigger annotation ("invalid non-type annotation"); azure-functions' EventHub converter
# only recognises typing generics as a batch.
from typing import List  # noqa: UP035

import azure.functions as func
from enviromon_sink import adapters, api
from enviromon_sink.negotiate import TokenSource, token_source_from_settings
from enviromon_sink.processor import Sink
from enviromon_sink.publisher import Publisher, publisher_from_settings
from enviromon_sink.settings import Settings

_log = logging.getLogger("enviromon_sink.function_app")

# Browsers call the HTTP API from the dashboard's static site: a function key there would be
# public anyway, and the API only reads; negotiate hands out receive-only tokens.
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@dataclass(frozen=True, slots=True)
class _Services:
    settings: Settings
    sink: Sink
    publisher: Publisher
    tokens: TokenSource | None


_services: _Services | None = None
_services_lock = threading.Lock()


def services() -> _Services:
    """Build the sink, publisher and token source once per worker, on first use.

    Lazily, so a settings problem surfaces as a clear SettingsError in the first
    invocation's log, instead of as a worker that fails to index its functions.
    """
    global _services
    with _services_lock:
        if _services is None:
            settings = Settings.from_env()
            _services = _Services(
                settings=settings,
                sink=Sink.from_connection_string(
                    settings.tables_connection_string, **settings.sink_options()
                ),
                publisher=publisher_from_settings(settings),
                tokens=token_source_from_settings(settings),
            )
        return _services


def reset_services() -> None:
    """Forget the built services, so the next call reads the settings again (tests)."""
    global _services
    with _services_lock:
        _services = None


@app.function_name("telemetry")
@app.event_hub_message_trigger(
    arg_name="events",
    event_hub_name="%IOTHUB_EVENT_HUB_NAME%",
    connection="IOTHUB_EVENTS_CONNECTION",
    consumer_group="%IOTHUB_CONSUMER_GROUP%",
    cardinality=func.Cardinality.MANY,
    # Bodies byte for byte: the default hands IoT Hub JSON bodies over re-serialised.
    data_type=func.DataType.BINARY,
)
@app.retry(
    strategy="exponential_backoff",
    max_retry_count="-1",
    minimum_interval="00:00:02",
    maximum_interval="00:05:00",
)
def telemetry(events: List[func.EventHubEvent]) -> None:  # noqa: UP006 - see the import
    """Count, store and publish one batch from IoT Hub's built-in endpoint.

    Raises whatever the core raises on a transient storage failure, so the retry policy
    re-runs the whole batch.
    """
    svc = services()
    result = svc.sink.process(adapters.from_function_events(events))
    # After the commit; never raises, never rolls the counts back.
    svc.publisher.publish(result)
    _log.info(
        "batch of %d event(s): %d new reading(s), %d duplicate(s), %d dead-lettered",
        len(events),
        len(result.readings),
        result.duplicates,
        result.dead_lettered,
    )


def _http(request: func.HttpRequest, response: api.ApiResponse) -> func.HttpResponse:
    """An ApiResponse as a Functions HttpResponse, with CORS for the dashboard's origin."""
    allowed = services().settings.allowed_origin(request.headers.get("Origin"))
    response = api.with_cors(response, allowed)
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-type"}
    content_type = response.headers.get("Content-Type", "application/json").split(";")[0]
    return func.HttpResponse(
        body=response.body,
        status_code=response.status,
        headers=headers,
        mimetype=content_type,
        charset="utf-8",
    )


def _preflight(request: func.HttpRequest) -> func.HttpResponse | None:
    if request.method.upper() != "OPTIONS":
        return None
    allowed = services().settings.allowed_origin(request.headers.get("Origin"))
    response = api.preflight(allowed)
    return func.HttpResponse(
        body=response.body, status_code=response.status, headers=response.headers
    )


@app.function_name("negotiate")
@app.route(route="negotiate", methods=["GET", "OPTIONS"])
def negotiate(req: func.HttpRequest) -> func.HttpResponse:
    """A receive-only Web PubSub client URL for the dashboard."""
    pre = _preflight(req)
    if pre is not None:
        return pre
    svc = services()
    return _http(req, api.negotiate(svc.tokens, minutes=svc.settings.negotiate_minutes))


@app.function_name("devices")
@app.route(route="devices", methods=["GET", "OPTIONS"])
def devices(req: func.HttpRequest) -> func.HttpResponse:
    """The committed state of every device."""
    pre = _preflight(req)
    if pre is not None:
        return pre
    return _http(req, api.list_devices(services().sink))


@app.function_name("device_telemetry")
@app.route(route="devices/{id}/telemetry", methods=["GET", "OPTIONS"])
def device_telemetry(req: func.HttpRequest) -> func.HttpResponse:
    """One device's history: ``?from=&to=`` (ISO-8601), ``&limit=``."""
    pre = _preflight(req)
    if pre is not None:
        return pre
    device_id = req.route_params.get("id", "")
    return _http(req, api.device_history(services().sink, device_id, dict(req.params)))


@app.function_name("every_telemetry")
@app.route(route="telemetry", methods=["GET", "OPTIONS"])
def every_telemetry(req: func.HttpRequest) -> func.HttpResponse:
    """Every stream's readings: ``?from=&to=`` (ISO-8601), ``&limit=`` per stream."""
    pre = _preflight(req)
    if pre is not None:
        return pre
    return _http(req, api.every_history(services().sink, dict(req.params)))


@app.function_name("rollups")
@app.route(route="rollups", methods=["GET", "OPTIONS"])
def rollups(req: func.HttpRequest) -> func.HttpResponse:
    """Every stream's min/mean/max per step: ``?step=1m|15m|1h&from=&to=``."""
    pre = _preflight(req)
    if pre is not None:
        return pre
    return _http(req, api.rollups(services().sink, dict(req.params)))
