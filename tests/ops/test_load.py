"""`enviromon load` against the local hub: N devices on the real SDK send every planned message
in each shape; the sink's own normaliser reads every one of them back."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
from enviromon_sim.cli import main
from enviromon_sim.iothub.hub import HubThread
from enviromon_sink.adapters import from_event_log
from enviromon_sink.normalise import normalise

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "contract" / "telemetry-v1.schema.json").read_text("utf-8"))


@pytest.fixture(autouse=True)
def _local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IOTHUB_CONNECTION_STRING", raising=False)


def test_every_shape_arrives_whole_and_the_sink_reads_it(
    hub: HubThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """2 devices × 4 messages per shape: all in the event log, from the hub's ids, in order per
    device, schema 1 valid against the contract, and each normalised to one reading."""
    state = str(hub.hub.state_dir)
    assert hub.proxy_port is not None
    tunnel = ["--proxy-port", str(hub.proxy_port)]
    expected_source = {
        "schema1": "simulated",
        "websim": "simulated",
        "legacy": "legacy",
        "simtemp": "simulated",
    }
    after = 0
    for shape, source in expected_source.items():
        rc = main(
            [
                "load",
                "--devices",
                "2",
                "--rate",
                "8",
                "--duration",
                "0.5",
                "--shape",
                shape,
                "--prefix",
                f"{shape}-",
                "--state-dir",
                state,
                "--no-progress",
                "--json",
                "--seed",
                "7",
                *tunnel,
            ]
        )
        out, err = capsys.readouterr()
        assert rc == 0, err
        summary = json.loads(out)
        assert summary["planned"] == summary["sent"] == 8 and summary["failed"] == 0
        events = hub.event_log.read_after(after, max_events=1000)
        after = events[-1].sequence_number
        assert len(events) == 8
        senders = Counter(e.system_properties["iothub-connection-device-id"] for e in events)
        assert senders == {f"{shape}-0001": 4, f"{shape}-0002": 4}
        for device in senders:
            ids = [
                e.system_properties["message-id"]
                for e in events
                if e.system_properties["iothub-connection-device-id"] == device
            ]
            boots = {i.split(":")[0] for i in ids}
            assert len(boots) == 1 and [i.split(":")[1] for i in ids] == ["1", "2", "3", "4"]
        readings = [r for ev in from_event_log(events) for r in normalise(ev)]
        assert len(readings) == 8
        assert {r.source for r in readings} == {source}
        assert all(r.values["temperature"] is not None for r in readings)
        assert {r.device_id for r in readings} == set(senders)
        if shape == "schema1":
            for ev in events:
                jsonschema.validate(json.loads(ev.body), SCHEMA)
                assert ev.properties["source"] == "simulated"
                assert ev.properties["temperatureAlert"] in ("true", "false")
    # Run again with the same prefix: the devices exist, their connection strings are reused.
    rc = main(
        [
            "load",
            "--devices",
            "1",
            "--rate",
            "2",
            "--duration",
            "0.5",
            "--prefix",
            "legacy-",
            "--state-dir",
            state,
            "--no-progress",
            *tunnel,
        ]
    )
    out, _ = capsys.readouterr()
    assert rc == 0 and out.startswith("sent 1/1 schema1 messages from 1 devices")


def test_load_refuses_bad_plans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A zero rate, no messages, too many devices, or no hub: one-line errors, exit 1."""
    state = str(tmp_path / "none")
    for argv, expected in (
        (["--rate", "0"], "--rate"),
        (["--rate", "1", "--duration", "0.1"], "at least one message"),
        (["--devices", "5000"], "--devices"),
        ([], "no running hub"),
    ):
        rc = main(["load", "--state-dir", state, "--no-progress", *argv])
        _, err = capsys.readouterr()
        assert rc == 1 and err.startswith("error: ") and expected in err, (argv, err)
