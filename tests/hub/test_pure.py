"""SAS tokens, topics, twin patches and the registry: the hub's pure parts."""

from __future__ import annotations

import json
import os
import stat
import urllib.parse
from pathlib import Path

import pytest
from azure.iot.device.common.auth.sastoken import RenewableSasToken
from azure.iot.device.common.auth.signing_mechanism import SymmetricKeySigningMechanism
from enviromon_sim.iothub import sas
from enviromon_sim.iothub.errors import (
    AuthError,
    DeviceExistsError,
    DeviceNotFoundError,
    InvalidIdError,
    InvalidPatchError,
    ProtocolError,
)
from enviromon_sim.iothub.hub import HubConfig
from enviromon_sim.iothub.registry import Registry
from enviromon_sim.iothub.statefiles import private_dir, write_file
from enviromon_sim.iothub.topics import (
    Identity,
    MethodResponse,
    Telemetry,
    TwinGet,
    TwinReportedPatch,
    matches,
    parse_inbound,
)
from enviromon_sim.iothub.twins import TwinStore, merge, parse_patch
from hypothesis import given
from hypothesis import strategies as st

ids = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-.%_*?!(),:=@$'", min_size=1, max_size=20
)


@given(ids, st.one_of(st.none(), ids))
def test_tokens_made_by_the_sdk_verify(device: str, module: str | None) -> None:
    """A token built by the SDK's own RenewableSasToken verifies against the same key."""
    key = sas.generate_key()
    uri = sas.resource_uri("localhost", device, module)
    token = RenewableSasToken(uri, SymmetricKeySigningMechanism(key), ttl=60)
    parsed = sas.parse_token(str(token))
    assert parsed.resource_uri == uri
    sas.verify(parsed, key_b64=key, expected_uri=uri, now=parsed.expiry - 1)
    with pytest.raises(AuthError, match="expired"):
        sas.verify(parsed, key_b64=key, expected_uri=uri, now=parsed.expiry)
    with pytest.raises(AuthError, match="signature"):
        sas.verify(parsed, key_b64=sas.generate_key(), expected_uri=uri, now=0)
    with pytest.raises(AuthError, match="another resource"):
        sas.verify(parsed, key_b64=key, expected_uri=uri + "x", now=0)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "Bearer x",
        "SharedAccessSignature sr=a&sig=b",
        "SharedAccessSignature sr=a&sig=b&se=x",
        "SharedAccessSignature sr=a&sr=a&sig=b&se=1",
        "SharedAccessSignature junk",
    ],
)
def test_malformed_tokens_are_auth_errors(token: str) -> None:
    """Anything that is not a complete SAS token is an AuthError."""
    with pytest.raises(AuthError):
        sas.parse_token(token)


def test_telemetry_topic_properties_are_decoded() -> None:
    """System properties map to event-log names; application properties are URL-decoded."""
    me = Identity("pi-1", "enviro_sensor")
    topic = (
        "devices/pi-1/modules/enviro_sensor/messages/events/"
        "%24.on=telemetry&%24.mid=b%3A1&%24.ct=application%2Fjson&%24.ce=utf-8&%24.to=x&"
        "a%20b=c%26d&empty="
    )
    msg = parse_inbound(topic, me)
    assert msg == Telemetry(
        "telemetry",
        {"message-id": "b:1", "content-type": "application/json", "content-encoding": "utf-8"},
        {"a b": "c&d", "empty": ""},
    )


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=10).filter(lambda k: not k.startswith("$.")),
        st.text(max_size=10),
        max_size=5,
    )
)
def test_application_properties_round_trip_the_sdk_encoding(props: dict[str, str]) -> None:
    """What the SDK's encoding (urlencode with quote) produces decodes back exactly.

    Names starting with ``$.`` are system properties to IoT Hub, never application ones.
    """
    encoded = urllib.parse.urlencode(sorted(props.items()), quote_via=urllib.parse.quote)
    msg = parse_inbound("devices/d/messages/events/" + encoded, Identity("d"))
    assert isinstance(msg, Telemetry)
    assert msg.properties == props


def test_iothub_topics_and_spoofing() -> None:
    """Twin and method topics parse; other devices' topics and unknown ones are refused."""
    me = Identity("pi-1")
    assert parse_inbound("$iothub/twin/GET/?$rid=1", me) == TwinGet("1")
    assert parse_inbound(
        "$iothub/twin/PATCH/properties/reported/?$rid=a-b", me
    ) == TwinReportedPatch("a-b")
    assert parse_inbound("$iothub/methods/res/200/?$rid=9", me) == MethodResponse("9", 200)
    for topic in (
        "devices/pi-2/messages/events/",
        "devices/pi-1/modules/m/messages/events/",
        "devices/pi-1x/messages/events/",
        "$iothub/twin/GET/",
        "$iothub/twin/GET/?$rid=",
        "$iothub/methods/res/abc/?$rid=1",
        "$iothub/whatever/?$rid=1",
        "devices/pi-1/messages/devicebound/",
    ):
        with pytest.raises(ProtocolError):
            parse_inbound(topic, me)


@pytest.mark.parametrize(
    ("flt", "topic", "expected"),
    [
        ("$iothub/twin/res/#", "$iothub/twin/res/200/?$rid=1", True),
        ("$iothub/twin/res/#", "$iothub/twin/PATCH/x", False),
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/c/d", False),
        ("a/#", "a", True),
        ("a/b", "a/b/c", False),
    ],
)
def test_topic_filter_matching(flt: str, topic: str, expected: bool) -> None:
    """MQTT + and # wildcards."""
    assert matches(flt, topic) is expected


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b"1",
        b"{bad",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a.b": 1}',
        b'{"$x": 1}',
        b'{"a b": 1}',
        b'{"": 1}',
        json.dumps(
            {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": 1}}}}}}}}}}}
        ).encode(),
        b"\xff\xfe",
    ],
)
def test_invalid_patches_are_refused(raw: bytes) -> None:
    """Non-objects, bad JSON, NaN, forbidden key characters and deep nesting are refused."""
    with pytest.raises(InvalidPatchError):
        parse_patch(raw)


@given(
    st.dictionaries(
        st.sampled_from("abc"),
        st.one_of(
            st.none(),
            st.integers(),
            st.dictionaries(st.sampled_from("xy"), st.one_of(st.none(), st.integers())),
        ),
    )
)
def test_merge_patch_deletes_nulls_and_keeps_others(patch: dict[str, object]) -> None:
    """After merging, keys patched to null are gone and every other patched key has its value."""
    target: dict[str, object] = {"a": {"x": 1}, "b": 2, "keep": True}
    merge(target, patch)
    assert target["keep"] is True
    for key, value in patch.items():
        if value is None:
            assert key not in target
        elif not isinstance(value, dict):
            assert target[key] == value
    assert all(v is not None for v in target.values())


def test_twin_versions_limits_and_persistence(tmp_path: Path) -> None:
    """Each accepted patch bumps $version; an oversize patch is refused whole; state reloads."""
    store = TwinStore(tmp_path / "twins.json")
    me = Identity("pi-1", "m")
    assert store.patch_desired(me, {"a": 1}) == 2
    assert store.patch_reported(me, {"r": "x"}) == 2
    with pytest.raises(InvalidPatchError, match="32 KB"):
        store.patch_desired(me, {"big": "x" * 40_000})
    again = TwinStore(tmp_path / "twins.json").device_view(me)
    assert again == {"desired": {"a": 1, "$version": 2}, "reported": {"r": "x", "$version": 2}}


def test_registry_ids_keys_and_file_mode(tmp_path: Path) -> None:
    """Ids are checked; keys are random 32-byte base64; the file is private and reloads."""
    reg = Registry(tmp_path / "registry.json")
    a = reg.add_device("pi-1")
    m = reg.add_module("pi-1", "enviro_sensor")
    assert a.key != m.key and len(a.key) == 44 and m.generation_id
    with pytest.raises(DeviceExistsError):
        reg.add_device("pi-1")
    with pytest.raises(DeviceNotFoundError):
        reg.add_module("pi-9", "m")
    for bad in ("", "a/b", "a+b", "a#", "x" * 129, "ü"):
        with pytest.raises(InvalidIdError):
            reg.add_device(bad)
    assert stat.S_IMODE(os.stat(tmp_path / "registry.json").st_mode) == 0o600
    other = Registry(tmp_path / "registry.json")
    assert other.get(Identity("pi-1", "enviro_sensor")).key == m.key
    assert other.list() == [Identity("pi-1"), Identity("pi-1", "enviro_sensor")]


def test_state_files_are_private_and_replaced_whole(tmp_path: Path) -> None:
    """The state dir is 0700 and files 0600 (or the mode asked); no temporary file is left."""
    state = private_dir(tmp_path / "a" / "state")
    path = state / "f.json"
    write_file(path, "one")
    write_file(path, b"two")
    write_file(state / "ca.pem", "public", mode=0o644)
    assert path.read_text() == "two"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "ca.pem").stat().st_mode) == 0o644
    assert sorted(p.name for p in state.iterdir()) == ["ca.pem", "f.json"]


def test_tls_material_is_generated_private_and_valid(tmp_path: Path) -> None:
    """The server key is 0600, the CA key is not kept, and the certificate verifies against
    the CA for 127.0.0.1 and localhost."""
    from cryptography import x509
    from enviromon_sim.iothub.tls import ensure_dev_certs

    files = ensure_dev_certs(tmp_path / "tls")
    assert stat.S_IMODE(files.server_key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == [
        "ca.pem",
        "server.key",
        "server.pem",
    ]
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert ensure_dev_certs(tmp_path / "tls") == files  # reused, not regenerated


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": "0.0.0.0"},
        {"host": "192.168.1.10"},
        {"host": "example.com"},
        {"mqtt_port": 70000},
        {"hostname": "a/b"},
        {"workload_socket": Path("/tmp/x.sock")},
        {"workload_socket": Path("/tmp/x.sock"), "workload_device_id": "bad id"},
    ],
)
def test_hub_config_refuses_non_loopback_hosts_and_bad_values(
    tmp_path: Path, kwargs: dict[str, object]
) -> None:
    """Every listener stays on loopback; ports, hostname and workload device are checked."""
    with pytest.raises(ValueError):
        HubConfig(state_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        HubConfig(tmp_path)  # type: ignore[misc]
    assert HubConfig(state_dir=tmp_path, host="::1").host == "::1"
