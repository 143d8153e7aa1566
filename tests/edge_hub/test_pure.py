"""Pure parts of hub mode: settings from the environment, twin sync rules, methods, backoff."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from enviro_sensor.config import ConfigStore, ModuleConfig
from enviro_sensor.errors import ConfigError
from enviro_sensor.hubclient import HubSettings, Proxy
from enviro_sensor.methods import Methods
from enviro_sensor.runner import MAX_RETRY_S, backoff
from enviro_sensor.twin import DesiredSync, ReportedSync, merge_patch, significant
from hypothesis import given
from hypothesis import strategies as st

CS = "HostName=hub.example;DeviceId=pi-1;SharedAccessKey=a2V5"

json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
json_doc = st.recursive(
    json_leaf, lambda inner: st.dictionaries(st.text(max_size=3), inner, max_size=4), max_leaves=12
)
objects = st.dictionaries(st.text(max_size=3), json_doc, max_size=4)


def _no_nulls(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _no_nulls(v) for k, v in doc.items() if v is not None}
    return doc


@given(objects, objects)
def test_merge_patch_is_rfc7386(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Merging a patch, then the same patch again, changes nothing more; nulls delete keys;
    keys the patch does not name keep their value; the inputs are never changed."""
    before_t, before_p = repr(target), repr(patch)
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once
    for key, value in patch.items():
        if value is None:
            assert key not in once
        elif not isinstance(value, dict):
            assert once[key] == value
    for key in target.keys() - patch.keys():
        assert once[key] == target[key]
    assert merge_patch({}, _no_nulls(patch)) == _no_nulls(patch)
    assert (repr(target), repr(patch)) == (before_t, before_p)


class Target:
    """A ConfigTarget holding the config (and persisting it, like App with a store)."""

    def __init__(self, config: ModuleConfig, store: ConfigStore | None = None) -> None:
        self.config = config
        self.store = store
        self.applied = 0

    def apply_desired(self, patch: Mapping[str, Any]) -> ModuleConfig:
        if self.store is not None:
            self.config = self.store.apply(self.config, patch)
        else:
            self.config = self.config.apply_patch(patch)
        self.applied += 1
        return self.config


def test_whole_twin_replaces_and_patches_merge(tmp_path: Path) -> None:
    """Base (env) + whole document; a patch on top; a deleted property returns to the base
    value, not to the previous document's; the result is persisted."""
    base = ModuleConfig.from_env({"ENVIRO_TELEMETRY_INTERVAL": "3"})
    store = ConfigStore(path=tmp_path / "config.json")
    target = Target(base, store)
    sync = DesiredSync(base=base, target=target)
    doc = {"telemetryInterval": 20, "alerts": {"temperatureHigh": 25}, "$version": 4}
    assert sync.apply_twin(doc)
    assert (target.config.telemetry_interval, target.config.temperature_high) == (20, 25)
    assert sync.apply_patch({"telemetryInterval": None, "$version": 5})
    assert target.config.telemetry_interval == 3  # the env base, not the default 10
    assert target.config.temperature_high == 25 and target.config.version == 5
    assert sync.apply_twin({"$version": 6, "$metadata": {"x": 1}})
    assert target.config.temperature_high == 30 and target.config.version == 6
    assert store.load(base) == target.config


def test_old_versions_are_ignored_same_version_reapplied() -> None:
    """A patch at or below the document's $version is ignored; an older whole twin too."""
    base = ModuleConfig()
    target = Target(base)
    sync = DesiredSync(base=base, target=target)
    assert sync.apply_twin({"telemetryInterval": 20, "$version": 7})
    assert not sync.apply_patch({"telemetryInterval": 30, "$version": 7})
    assert not sync.apply_twin({"telemetryInterval": 40, "$version": 6})
    assert target.config.telemetry_interval == 20
    assert sync.apply_twin({"telemetryInterval": 20, "$version": 7})  # idempotent
    assert sync.apply_patch({"telemetryInterval": 30, "$version": 8})
    assert target.config.telemetry_interval == 30


def test_stored_version_guards_against_an_older_twin() -> None:
    """Started from a stored v9 config: a whole twin at v3 is ignored."""
    stored = ModuleConfig(telemetry_interval=42, version=9)
    target = Target(stored)
    sync = DesiredSync(base=ModuleConfig(), target=target)
    assert not sync.apply_twin({"$version": 3})
    assert target.config.telemetry_interval == 42


def test_invalid_document_refused_whole_with_every_reason() -> None:
    """Three bad fields and a good one: nothing applied, three reasons; the next good patch
    that fixes them clears the refusal."""
    base = ModuleConfig()
    target = Target(base)
    sync = DesiredSync(base=base, target=target)
    assert sync.apply_twin({"alerts": {"temperatureHigh": 28}, "$version": 2})
    bad = {"telemetryInterval": 0, "readingsPerMessage": "many", "x": 1, "led": {"enabled": False}}
    assert not sync.apply_patch({**bad, "$version": 3})
    report = sync.reported()
    assert report["status"] == "refused" and report["refusedVersion"] == 3
    assert report["version"] == 2 and report["desiredVersion"] == 3
    assert len(report["errors"]) == 3, report["errors"]
    assert target.config.led_enabled and target.config.temperature_high == 28
    fix = {"telemetryInterval": None, "readingsPerMessage": None, "x": None, "$version": 4}
    assert sync.apply_patch(fix)
    assert sync.reported()["status"] == "applied" and sync.reported()["errors"] == []
    assert not target.config.led_enabled  # the good part of v3 is in the document now


@pytest.mark.parametrize("doc", [None, [1], "x", 5])
def test_non_object_documents_are_refused(doc: Any) -> None:
    """A desired document or patch that is not an object: refused, reported, no crash."""
    target = Target(ModuleConfig())
    sync = DesiredSync(base=ModuleConfig(), target=target)
    assert not sync.apply_twin(doc)
    assert not sync.apply_patch(doc)
    assert sync.reported()["status"] == "refused" and target.applied == 0


def test_reported_only_on_change_and_at_most_every_interval() -> None:
    """Counters alone never trigger a patch; a real change does, but not within the interval."""
    now = [0.0]
    doc: dict[str, Any] = {"reads": {"ok": 1}, "sensor": {"state": "ok"}, "airQuality": {}}
    sent: list[dict[str, Any]] = []
    sync = ReportedSync(
        source=lambda: {**doc}, send=sent.append, min_interval=5, clock=lambda: now[0]
    )
    assert sync.tick() and len(sent) == 1
    doc["sensor"] = {"state": "degraded"}
    now[0] = 2
    assert not sync.tick()  # changed, but only 2 s since the last patch
    now[0] = 5
    assert sync.tick() and len(sent) == 2
    doc["reads"] = {"ok": 50}
    now[0] = 15
    assert not sync.tick()  # only a counter moved
    doc["sensor"] = {"state": "ok"}
    assert sync.tick() and sent[-1]["reads"] == {"ok": 50}  # counters go along
    sync.invalidate()
    now[0] = 21
    assert sync.tick() and sync.patches == 4
    assert significant({"reads": {"ok": 3, "failed": 1}}) == {"reads": {"failed": 1}}
    depth = [significant({"buffer": {"depth": d, "bytes": 9}})["buffer"] for d in (0, 1, 3, 900)]
    assert depth == [{"depth": 0}, {"depth": 1}, {"depth": 2}, {"depth": 10}]


def test_settings_from_environment() -> None:
    """Nothing set: None. A connection string: device or module identity; the proxy; IoT Edge
    wins when IOTEDGE_WORKLOADURI is set; a missing IOTEDGE_* is named."""
    assert HubSettings.from_env({}) is None
    s = HubSettings.from_env(
        {
            "IOTHUB_DEVICE_CONNECTION_STRING": CS + ";ModuleId=m1",
            "ENVIRO_HUB_PROXY": "http://p:3128",
        }
    )
    assert s is not None and s.identity == "pi-1/m1" and s.is_module
    assert s.proxy == Proxy(kind="HTTP", host="p", port=3128)
    assert "a2V5" not in repr(s)
    with pytest.raises(ConfigError, match="IOTEDGE_MODULEID"):
        HubSettings.from_env({"IOTEDGE_WORKLOADURI": "unix:///x", "IOTEDGE_DEVICEID": "d"})


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("proxy:3128", "scheme"),
        ("http://:3128", "no host"),
        ("http://proxy", "no port"),
        ("http://u:p@proxy:3128", "no credentials"),
        ("http://proxy:3128/path", "only scheme"),
        ("http://proxy:99999", "not a proxy URL"),
    ],
)
def test_bad_proxy_urls(url: str, needle: str) -> None:
    """Each bad proxy URL: a ConfigError naming the variable and the problem."""
    with pytest.raises(ConfigError, match="ENVIRO_HUB_PROXY") as info:
        Proxy.parse(url)
    assert needle in str(info.value)


def test_socks_proxy_keeps_credentials() -> None:
    """socks5 with user and password (percent-decoded); never shown by describe()."""
    proxy = Proxy.parse("socks5://me:p%40ss@10.0.0.1:1080")
    assert (proxy.kind, proxy.username, proxy.password) == ("SOCKS5", "me", "p@ss")
    assert "p@ss" not in proxy.describe()


class FakeApp:
    def __init__(self, reading: Any) -> None:
        self.reading = reading
        self.resets = 0

    def step(self, *, flush: bool = False) -> Any:
        assert flush  # readNow sends at once, whatever readingsPerMessage says
        return self.reading

    def reset_air_quality(self) -> None:
        self.resets += 1

    def reported(self) -> dict[str, Any]:
        return {"sensor": {"lastError": "I/O error"}, "airQuality": {"state": "burning_in"}}


def test_methods_answer_everything_and_never_raise() -> None:
    """A failed read is 503 with the reason; no LED is 503; any name or payload gets an answer."""
    methods = Methods(app=FakeApp(None), led=None)  # type: ignore[arg-type]
    assert methods.handle("readNow", None) == (503, {"error": "the sensor read failed: I/O error"})
    assert methods.handle("identify", {"seconds": 3})[0] == 503
    assert methods.handle("resetAirQualityBaseline", None)[0] == 200
    for name in (None, 5, "", "readnow", "x" * 1000):
        status, payload = methods.handle(name, None)
        assert status == 404 and len(payload["error"]) < 300


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    """Delays are jittered, grow with the attempt, and never pass the cap."""
    firsts = {backoff(1) for _ in range(50)}
    assert all(0.5 <= d <= 1.0 for d in firsts) and len(firsts) > 1
    assert max(backoff(4) for _ in range(200)) > 2.0
    assert all(backoff(30) <= MAX_RETRY_S for _ in range(200))
