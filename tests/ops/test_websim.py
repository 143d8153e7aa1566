"""sim/websim/enviromon-websim.js, the script for the Raspberry Pi web simulator's code pane, run
in Node with the real Node device SDK (azure-iot-device + azure-iot-device-mqtt, the simulator's
client family) against the local hub; only the simulator's hardware modules (wiring-pi,
bme280-sensor) are stand-ins. The sink's normaliser and counting read back what it sent."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import jsonschema
from enviromon_sim.iothub.hub import HubThread
from enviromon_sim.iothub.topics import Identity
from enviromon_sink.adapters import from_event_log
from enviromon_sink.counting import fold
from enviromon_sink.normalise import normalise

from tests.support.hub import wait_until

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "sim" / "websim" / "enviromon-websim.js"
SCHEMA = json.loads((ROOT / "contract" / "telemetry-v1.schema.json").read_text("utf-8"))
PLACEHOLDER = "'[Your IoT hub device connection string]'"

# The simulator's hardware, as its sample code uses it: wiring-pi's LED calls, and a BME280
# whose readSensorData() resolves {temperature_C, humidity, pressure_hPa}, with the pressure
# the simulator reports (about 10-12).
WIRING_PI = """
const writes = [];
module.exports = {
  OUTPUT: 1,
  setup: function () {},
  pinMode: function () {},
  digitalWrite: function (pin, value) { writes.push([pin, value]); },
  writes: writes
};
"""
BME280 = """
class BME280 {
  constructor(options) { this.options = options; this.n = 0; }
  static BME280_DEFAULT_I2C_ADDRESS() { return 0x77; }
  init() { return Promise.resolve(0x60); }
  readSensorData() {
    this.n += 1;
    return Promise.resolve({
      temperature_C: 20.5 + this.n, humidity: 40.25 + this.n, pressure_hPa: 10.9
    });
  }
}
module.exports = BME280;
"""
PRELOAD = """
globalThis.enviromonClientOptions = {
  ca: require('fs').readFileSync(process.env.ENVIROMON_TEST_CA, 'utf8')
};
"""


def test_websim_script_sends_schema1_that_the_sink_counts(hub: HubThread, tmp_path: Path) -> None:
    """Three messages from the pasted script arrive as valid schema 1 with pressure left out,
    the hub's device id, boot:seq message ids and the simulator's temperatureAlert property;
    the sink counts 3, no duplicates, none missing."""
    node = shutil.which("node")
    assert node is not None, "Node.js is needed (make node)"
    assert (ROOT / "node_modules" / "azure-iot-device-mqtt").is_dir(), "run `npm ci`"
    identity = Identity("websim-1")
    hub.hub.add(identity)
    # The Node SDK dials mqtts://<GatewayHostName or HostName>: a gateway host with a port
    # reaches the hub on its free port, while HostName (in the SAS token) stays the hub's name.
    conn = hub.hub.connection_string(identity) + f";GatewayHostName=127.0.0.1:{hub.hub.mqtt_port}"
    stubs = tmp_path / "node_modules"
    for name, source in (("wiring-pi", WIRING_PI), ("bme280-sensor", BME280)):
        (stubs / name).mkdir(parents=True)
        (stubs / name / "index.js").write_text(source, "utf-8")
    (tmp_path / "preload.js").write_text(PRELOAD, "utf-8")
    code = SCRIPT.read_text("utf-8")
    assert code.count(PLACEHOLDER) == 1
    pasted = tmp_path / "pasted.js"
    pasted.write_text(code.replace(PLACEHOLDER, json.dumps(conn)), "utf-8")
    env = dict(os.environ)
    env["NODE_PATH"] = os.pathsep.join([str(stubs), str(ROOT / "node_modules")])
    env["ENVIROMON_TEST_CA"] = str(hub.hub.tls.ca_cert)
    proc = subprocess.Popen(
        [node, "-r", str(tmp_path / "preload.js"), str(pasted)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(
            lambda: hub.event_log.last_sequence_number() >= 3 or proc.poll() is not None,
            timeout=45,
            interval=0.2,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    events = hub.event_log.read_after(0)[:3]
    assert len(events) == 3, output
    bodies = [json.loads(e.body) for e in events]
    for event, body in zip(events, bodies, strict=True):
        jsonschema.validate(body, SCHEMA)
        assert event.system_properties["iothub-connection-device-id"] == "websim-1"
        assert event.system_properties["message-id"] == f"{body['boot']}:{body['seq']}"
        assert event.system_properties["content-type"] == "application/json"
        assert event.properties == {"temperatureAlert": "false", "source": "simulated"}
        assert body["pressure"] is None and body["source"] == "simulated"
        assert body["deviceId"] == "websim-1"
    assert [b["seq"] for b in bodies] == [1, 2, 3]
    assert [b["temperature"] for b in bodies] == [21.5, 22.5, 23.5]
    assert [b["humidity"] for b in bodies] == [41.25, 42.25, 43.25]
    assert len({b["boot"] for b in bodies}) == 1 and len(bodies[0]["boot"]) == 16
    readings = [r for ev in from_event_log(events) for r in normalise(ev)]
    state, _ = fold(None, readings)
    assert (state.count, state.duplicates, state.missing) == (3, 0, 0)
    assert state.values["temperature"] == 23.5 and state.source == "simulated"
    assert "Message sent to Azure IoT Hub" in output
