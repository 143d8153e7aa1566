"""``enviromon calibrate``: set a stream's intercepts from a reference instrument's reading.

The user holds a reference next to the Pi and gives what it reads. For each quantity given::

    new intercept = old intercept + reference − reported       (slope kept)

where *reported* is the stream's latest reading (already calibrated with the old intercept)
and *old* is the calibration in the module twin's desired properties (slope 1, intercept 0
when absent). The patch goes to ``properties.desired.calibration``; the device applies it and
stamps every later reading with the twin's desired ``$version`` (the ``calibration`` field of
a schema-1 message), so the command waits until a reading with that version arrives.

Readings come from a :class:`ReadingSource`: the sink's REST API (``GET {api}/devices``) or
the local hub's event log.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from enviromon_sim.iothub.eventlog import EventLog
from enviromon_sim.iothub.topics import Identity
from enviromon_sim.ops.errors import OpsError, WaitTimeoutError
from enviromon_sim.ops.events import DEVICE_ID, MODULE_ID
from enviromon_sim.ops.service import HubService

CALIBRATED = ("temperature", "humidity", "pressure")
#: How far back in the local event log the latest reading is looked for.
EVENT_LOG_WINDOW = 10_000
DECIMALS = 4


@dataclass(frozen=True, slots=True)
class Latest:
    """A stream's newest reading: its calibrated values and calibration version."""

    values: Mapping[str, float | None]
    calibration: int
    marker: str = ""  # what tells two readings apart (boot:seq, or the sink's lastSeq)


class ReadingSource(Protocol):
    """Where the newest reading of a stream is read from."""

    def latest(self, identity: Identity) -> Latest | None:
        """The newest reading of ``identity`` (None when it has sent none)."""
        ...


@dataclass(frozen=True, slots=True)
class Change:
    """One quantity's calibration change."""

    key: str
    reported: float
    reference: float
    slope: float
    old_intercept: float
    new_intercept: float


def _linear(calibration: Mapping[str, Any], key: str) -> tuple[float, float]:
    entry = calibration.get(key) or {}
    if not isinstance(entry, Mapping):
        raise OpsError(f"twin desired calibration.{key} is not an object: {entry!r}")
    slope = entry.get("slope", 1.0)
    intercept = entry.get("intercept", 0.0)
    for name, value in (("slope", slope), ("intercept", intercept)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise OpsError(f"twin desired calibration.{key}.{name} is not a number: {value!r}")
    return float(slope), float(intercept)


def plan(
    desired_calibration: Mapping[str, Any],
    reported: Mapping[str, float | None],
    references: Mapping[str, float],
) -> list[Change]:
    """The change for each quantity in ``references``. Pure.

    Raises OpsError when the latest reading lacks a quantity, or a value is not finite.
    """
    changes = []
    for key, reference in references.items():
        if key not in CALIBRATED:
            raise OpsError(f"{key} is not calibrated (only {', '.join(CALIBRATED)})")
        if not math.isfinite(reference):
            raise OpsError(f"--{key} must be a finite number")
        value = reported.get(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise OpsError(f"the latest reading has no {key} to compare with")
        slope, old = _linear(desired_calibration, key)
        new = round(old + reference - float(value), DECIMALS)
        changes.append(Change(key, float(value), reference, slope, old, new))
    return changes


def patch_for(changes: list[Change]) -> dict[str, Any]:
    """The desired-properties patch for ``changes`` (each quantity's slope and intercept)."""
    return {
        "calibration": {c.key: {"slope": c.slope, "intercept": c.new_intercept} for c in changes}
    }


def check_desired(desired: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
    """Raise OpsError for a patch the module would refuse, before it is made.

    The merged desired document must validate against contract/twin-desired-v1.schema.json,
    as the module checks it.
    """
    import copy
    from importlib import resources

    import jsonschema

    from enviromon_sim.iothub.twins import merge

    merged = copy.deepcopy(dict(desired))
    merge(merged, copy.deepcopy(dict(patch)))
    schema = json.loads(
        resources.files("enviromon_sim")
        .joinpath("contract/twin-desired-v1.schema.json")
        .read_text("utf-8")
    )
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(merged), key=lambda e: list(e.path)
    )
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(document)"
        raise OpsError(
            f"the module would refuse this patch: {where}: {errors[0].message} (nothing changed)"
        )


def desired_version(twin: Mapping[str, Any]) -> int:
    """The desired ``$version`` of a twin."""
    desired = (twin.get("properties") or {}).get("desired") or {}
    version = desired.get("$version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise OpsError("the twin has no desired $version")
    return version


@dataclass(slots=True)
class Outcome:
    """What ``calibrate`` did: the changes, the twin version, the first reading with it."""

    changes: list[Change]
    version: int
    reading: Latest | None = None
    waited_for_device: bool = field(default=False)


def calibrate(
    *,
    service: HubService,
    readings: ReadingSource,
    identity: Identity,
    references: Mapping[str, float],
    timeout: float,
    poll: float = 0.5,
    wait: bool = True,
    say: Callable[[str], None] = lambda _msg: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Read, compute, patch the twin, and wait for a reading with the new version.

    Raises WaitTimeoutError when no reading (or none with the new version) arrives in time.
    """
    if not references:
        raise OpsError("give at least one of --temperature, --humidity, --pressure")
    deadline = clock() + timeout
    twin = service.get_twin(identity)
    current = desired_version(twin)
    latest = readings.latest(identity)
    waited = False
    if latest is None:
        say(f"waiting for a first reading from {identity}…")
        latest = _wait_for(readings, identity, 0, deadline, poll, clock, sleep)
        waited = True
    calibration = ((twin.get("properties") or {}).get("desired") or {}).get("calibration") or {}
    if calibration and latest.calibration < current:
        # The reading was calibrated with an older twin than the one we would patch from.
        say(f"waiting for {identity} to apply desired version {current}…")
        latest = _wait_for(readings, identity, current, deadline, poll, clock, sleep)
        waited = True
    changes = plan(calibration, latest.values, references)
    patch = patch_for(changes)
    check_desired((twin.get("properties") or {}).get("desired") or {}, patch)
    twin = service.patch_desired(identity, patch)
    version = desired_version(twin)
    outcome = Outcome(changes, version, waited_for_device=waited)
    if wait:
        say(f"patched {identity} desired calibration (version {version}); waiting for a reading…")
        outcome.reading = _wait_for(readings, identity, version, deadline, poll, clock, sleep)
    return outcome


def _wait_for(
    readings: ReadingSource,
    identity: Identity,
    version: int,
    deadline: float,
    poll: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> Latest:
    seen: int | None = None
    while True:
        latest = readings.latest(identity)
        if latest is not None:
            seen = latest.calibration
            if latest.calibration >= version:
                return latest
        if clock() >= deadline and seen is None:
            raise WaitTimeoutError(f"no reading from {identity} yet: is it sending?")
        if clock() >= deadline:
            raise WaitTimeoutError(
                f"no reading from {identity} with calibration version {version} yet (latest:"
                f" {seen if seen is not None else 'none'}); the twin is patched — is the device"
                " online, and did it accept the patch? (see its twin's reported properties)"
            )
        sleep(poll)


# ----- reading sources -----------------------------------------------------------------


def latest_in_body(body: bytes) -> Latest | None:
    """The newest schema-1 reading in a message body (an object or an array), else None."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    items = doc if isinstance(doc, list) else [doc]
    best: dict[str, Any] | None = None
    for item in items:
        if not isinstance(item, dict) or item.get("schema") != 1:
            continue
        seq = item.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            continue
        if best is None or seq >= best["seq"]:
            best = item
    if best is None:
        return None
    calibration = best.get("calibration", 0)
    if isinstance(calibration, bool) or not isinstance(calibration, int):
        return None
    values = {
        k: float(v)
        for k in CALIBRATED
        if isinstance((v := best.get(k)), int | float) and not isinstance(v, bool)
    }
    return Latest(values, calibration, f"{best.get('boot')}:{best['seq']}")


class EventLogReadings:
    """The local hub's event log: the newest schema-1 reading of a stream."""

    def __init__(self, *, path: Path) -> None:
        """Read ``path`` (``events.sqlite`` in the hub's state dir)."""
        self.path = Path(path)

    def latest(self, identity: Identity) -> Latest | None:
        """The newest reading of ``identity`` among the last EVENT_LOG_WINDOW events."""
        if not self.path.exists():
            raise OpsError(f"no event log at {self.path}: run `enviromon hub serve` there")
        found: Latest | None = None
        with EventLog(self.path) as log:
            after = max(0, log.last_sequence_number() - EVENT_LOG_WINDOW)
            while batch := log.read_after(after, max_events=1000):
                after = batch[-1].sequence_number
                for ev in batch:
                    props = ev.system_properties
                    if props.get(DEVICE_ID) != identity.device_id:
                        continue
                    if (props.get(MODULE_ID) or None) != identity.module_id:
                        continue
                    found = latest_in_body(ev.body) or found
        return found


class SinkApiReadings:
    """The sink's REST API: ``GET {base}/devices`` (latest values and calibration per device)."""

    def __init__(self, *, base_url: str, timeout: float = 10.0) -> None:
        """``base_url`` like ``http://127.0.0.1:7071/api`` or ``https://<app>.azurewebsites.net/api``."""
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OpsError(f"--api must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def latest(self, identity: Identity) -> Latest | None:
        """The sink's state of the device, if its newest reading came from this module."""
        url = self.base_url + "/devices"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:  # noqa: S310
                doc = json.loads(resp.read())
        except (OSError, ValueError) as exc:
            raise OpsError(f"cannot read {url}: {exc}") from exc
        devices = doc.get("devices") if isinstance(doc, dict) else None
        if not isinstance(devices, list):
            raise OpsError(f"{url} did not answer {{'devices': [...]}}")
        for state in devices:
            if not isinstance(state, dict) or state.get("deviceId") != identity.device_id:
                continue
            if identity.module_id is not None and state.get("moduleId") != identity.module_id:
                continue
            values = state.get("values") or {}
            calibration = state.get("calibration", 0)
            if not isinstance(values, dict) or not isinstance(calibration, int):
                raise OpsError(f"{url}: unexpected state for {identity}")
            return Latest(
                {k: v for k, v in values.items() if isinstance(v, int | float) or v is None},
                calibration,
                f"{state.get('boot')}:{state.get('lastSeq')}",
            )
        return None
