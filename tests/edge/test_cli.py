"""The `enviro-sensor` console script, run as a real subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .pipeline_doubles import assert_valid

SCRIPT = Path(sys.executable).parent / "enviro-sensor"
TIMEOUT = 60
ONE_SIMULATED = ("--sensor", "simulated", "--count", "1", "--print", "--no-led")
FOREVER = ("--sensor", "simulated", "--count", "0", "--print", "--no-led")
NO_BUS = "250"  # an I2C bus number no machine running the tests has


def command() -> list[str]:
    if SCRIPT.exists():
        return [str(SCRIPT)]
    return [sys.executable, "-m", "enviro_sensor.cli"]


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENVIRO_", "IOTEDGE_"))}
    env["ENVIRO_STATE_DIR"] = str(tmp_path / "state")
    env["HOME"] = str(tmp_path)  # nothing lands in the real home
    env.update(extra)
    return env


def run(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command(), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env_for(tmp_path, **extra),
        check=False,
    )


def test_simulated_three_readings(tmp_path: Path) -> None:
    """`--sensor simulated --count 3 --print`: 3 valid schema-1 lines, seq 1..3, exit 0."""
    result = run(tmp_path, "--sensor", "simulated", "--count", "3", "--print")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    messages = [json.loads(line) for line in lines]
    for message in messages:
        assert_valid(message)
        assert message["source"] == "simulated"
        assert message["deviceId"]
    assert [m["seq"] for m in messages] == [1, 2, 3]
    assert len({m["boot"] for m in messages}) == 1
    assert "Traceback" not in result.stderr
    assert "simulated" in result.stderr  # the log says which sensor


def test_device_id_and_seed_make_devices_differ(tmp_path: Path) -> None:
    """--device-id labels messages; two seeds give different readings."""
    a = run(
        tmp_path,
        *ONE_SIMULATED,
        "--seed",
        "1",
        "--device-id",
        "pi-a",
    )
    b = run(
        tmp_path,
        *ONE_SIMULATED,
        "--seed",
        "2",
        "--device-id",
        "pi-b",
        IOTEDGE_DEVICEID="ignored",
    )
    ma, mb = json.loads(a.stdout), json.loads(b.stdout)
    assert (ma["deviceId"], mb["deviceId"]) == ("pi-a", "pi-b")
    assert ma["temperature"] != mb["temperature"]
    c = run(
        tmp_path,
        *ONE_SIMULATED,
        IOTEDGE_DEVICEID="edge-device-7",
    )
    assert json.loads(c.stdout)["deviceId"] == "edge-device-7"


def test_bme680_without_bus_is_a_clear_error(tmp_path: Path) -> None:
    """No /dev/i2c-N: one clear error naming the bus and the addresses, exit 3, no traceback."""
    if Path(f"/dev/i2c-{NO_BUS}").exists():
        pytest.skip("this machine has that I2C bus")
    result = run(
        tmp_path, "--sensor", "bme680", "--bus", NO_BUS, "--count", "1", "--print", "--no-led"
    )
    assert result.returncode == 3
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert error_lines and error_lines[-1].startswith("enviro-sensor: error:")
    assert "0x76" in result.stderr and "0x77" in result.stderr
    assert f"/dev/i2c-{NO_BUS}" in result.stderr
    assert "raspi-config" in result.stderr  # the likely fix


def test_auto_falls_back_loudly(tmp_path: Path) -> None:
    """--sensor auto without a chip: simulated readings, labelled, with a loud warning."""
    if Path(f"/dev/i2c-{NO_BUS}").exists():
        pytest.skip("this machine has that I2C bus")
    result = run(
        tmp_path, "--sensor", "auto", "--bus", NO_BUS, "--count", "1", "--print", "--no-led"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["source"] == "simulated"
    assert "SIMULATED" in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--address", "0x10"], "0x76 or 0x77"),
        (["--interval", "abc"], "--interval"),
        (["--count", "-1"], "--count"),
        (["--sensor", "bme280"], "--sensor"),
        (["--oversampling", "8,2"], "--oversampling"),
        (["--heater-temp", "hot"], "--heater-temp"),
        (["--frobnicate"], "unrecognized arguments"),
    ],
)
def test_bad_option_is_one_line_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    """A bad option: one clear line on stderr, exit 2, no traceback, nothing on stdout."""
    result = run(tmp_path, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert needle in result.stderr
    assert "--help" in result.stderr


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"ENVIRO_TELEMETRY_INTERVAL": "fast"}, "ENVIRO_TELEMETRY_INTERVAL"),
        ({"ENVIRO_SENSOR": "bme280"}, "sensor kind"),
        ({"ENVIRO_I2C_ADDRESS": "0x10"}, "0x76 or 0x77"),
        ({"ENVIRO_I2C_BUS": "one"}, "ENVIRO_I2C_BUS"),
        ({"ENVIRO_HEATER_DURATION": "0"}, "ENVIRO_HEATER_DURATION"),
        ({"ENVIRO_OVERSAMPLING": "8,3,4"}, "ENVIRO_OVERSAMPLING"),
    ],
)
def test_bad_environment_is_exit_5(tmp_path: Path, env: dict[str, str], needle: str) -> None:
    """A bad ENVIRO_* variable: a clear error naming it, exit 5."""
    result = run(tmp_path, "--count", "1", "--no-led", **env)
    assert result.returncode == 5, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_default_sensor_with_no_board_is_exit_3_not_simulated(tmp_path: Path) -> None:
    """No --sensor and nothing on the bus (a loose cable at boot): exit 3, no readings at all."""
    if Path(f"/dev/i2c-{NO_BUS}").exists():
        pytest.skip("this machine has that I2C bus")
    result = run(tmp_path, "--bus", NO_BUS, "--count", "1", "--print", "--no-led")
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""
    assert "SIMULATED" not in result.stderr and "Traceback" not in result.stderr
    assert "BME680" in result.stderr and "Enviro board" in result.stderr


def test_every_bad_variable_is_named_at_once(tmp_path: Path) -> None:
    """Config, sensor, LED and log variables all bad: each named once, exit 5, no traceback."""
    bad = {
        "ENVIRO_TELEMETRY_INTERVAL": "0",
        "ENVIRO_LED_ENABLED": "maybe",
        "ENVIRO_SENSOR": "bme280",
        "ENVIRO_HEATER_TEMPERATURE": "hot",
        "ENVIRO_LED_PIN": "seventeen",
        "ENVIRO_LOG_LEVEL": "LOUD",
    }
    result = run(tmp_path, "--count", "1", "--print", **bad)
    assert result.returncode == 5, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    for name in bad:
        assert name in result.stderr, name


def test_bad_hub_and_config_variables_are_named_together(tmp_path: Path) -> None:
    """Hub mode: a bad ENVIRO_HUB_* variable and a bad twin-field variable, both in one error."""
    result = run(
        tmp_path,
        "--sensor",
        "simulated",
        "--count",
        "1",
        "--no-led",
        ENVIRO_HUB_RETRY_INTERVAL="never",
        ENVIRO_READINGS_PER_MESSAGE="lots",
        IOTHUB_DEVICE_CONNECTION_STRING="HostName=127.0.0.1;DeviceId=pi;SharedAccessKey=eA==",
    )
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stderr
    assert "ENVIRO_HUB_RETRY_INTERVAL" in result.stderr
    assert "ENVIRO_READINGS_PER_MESSAGE" in result.stderr


def test_bad_log_level_alone_is_exit_5_without_traceback(tmp_path: Path) -> None:
    """ENVIRO_LOG_LEVEL=LOUD: a clear error naming the variable and the choices."""
    result = run(tmp_path, *ONE_SIMULATED, ENVIRO_LOG_LEVEL="LOUD")
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stderr
    assert "ENVIRO_LOG_LEVEL" in result.stderr and "DEBUG, INFO, WARNING, ERROR" in result.stderr


def test_unknown_variable_is_warned_about_by_name(tmp_path: Path) -> None:
    """A misspelt ENVIRO_* variable is named in a warning; the run goes on."""
    result = run(tmp_path, *ONE_SIMULATED, ENVIRO_TELEMETRY_INTERVALL="5")
    assert result.returncode == 0, result.stderr
    assert "unknown environment variable ENVIRO_TELEMETRY_INTERVALL" in result.stderr
    assert "ENVIRO_STATE_DIR" not in result.stderr  # a known one is not warned about


def test_bad_heater_value_is_exit_5(tmp_path: Path) -> None:
    """--heater-temp out of range: one line naming the option and the range, exit 5."""
    result = run(tmp_path, "--sensor", "simulated", "--count", "1", "--heater-temp", "500")
    assert result.returncode == 5, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("enviro-sensor: error: bad configuration:")
    assert "--heater-temp" in line
    assert "200 and 400 °C, got 500 °C" in line


def test_sensor_options_are_accepted(tmp_path: Path) -> None:
    """Every BME680 option in range: the run works (the simulated sensor ignores them)."""
    result = run(
        tmp_path,
        *ONE_SIMULATED,
        "--heater-temp",
        "250",
        "--heater-ms",
        "100",
        "--oversampling",
        "16,1,2",
        "--filter",
        "0",
        "--read-retries",
        "0",
        ENVIRO_HEATER_TEMPERATURE="500",  # the option wins over the variable
    )
    assert result.returncode == 0, result.stderr
    assert_valid(json.loads(result.stdout))


def test_command_does_not_import_the_azure_sdk(tmp_path: Path) -> None:
    """The command stays light (fast start, small RSS): no Azure SDK module is imported."""
    code = (
        "import sys; from enviro_sensor import cli; "
        "rc = cli.main(['--sensor', 'simulated', '--count', '1', '--print', '--no-led']); "
        "assert rc == 0, rc; "
        "bad = sorted(m for m in sys.modules if m.startswith(('azure', 'paho'))); "
        "print('IMPORTED', bad, file=sys.stderr); sys.exit(3 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env_for(tmp_path),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "IMPORTED []" in result.stderr
    assert_valid(json.loads(result.stdout))


def test_help_reads_well(tmp_path: Path) -> None:
    """--help explains the options, shows examples and the exit codes."""
    result = run(tmp_path, "--help")
    assert result.returncode == 0
    for text in (
        "--sensor",
        "--address",
        "--count",
        "--interval",
        "--print",
        "examples:",
        "check the wiring",
        "exit codes:",
        "0x77",
        "--heater-temp",
        "--heater-ms",
        "--oversampling",
        "--filter",
        "--read-retries",
    ):
        assert text in result.stdout
    # argparse wraps to the terminal's width: compare with the line breaks folded.
    folded = " ".join(result.stdout.split())
    assert "$ENVIRO_HEATER_TEMPERATURE or 320" in folded
    assert "$ENVIRO_HEATER_DURATION or 150" in folded
    assert "$ENVIRO_OVERSAMPLING or 8,2,4" in folded


def test_stored_twin_config_is_applied(tmp_path: Path) -> None:
    """The last twin config on disk calibrates a start without network."""
    state = tmp_path / "state"
    state.mkdir()
    desired = {"calibration": {"temperature": {"intercept": 100.0}}, "$version": 7}
    (state / "config.json").write_text(json.dumps({"format": 1, "desired": desired}))
    result = run(tmp_path, *ONE_SIMULATED, "--seed", "3")
    message = json.loads(result.stdout)
    assert message["calibration"] == 7
    # +100 °C pushes any indoor temperature past 85 °C: flagged, not sent.
    assert message["temperature"] is None
    assert "temperature_out_of_range" in message["flags"]


@contextlib.contextmanager
def printing_forever(tmp_path: Path, interval: str) -> Iterator[subprocess.Popen[str]]:
    """The command printing simulated readings until stopped; killed if still running after."""
    proc = subprocess.Popen(
        [*command(), *FOREVER, "--interval", interval],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(tmp_path),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)


@pytest.mark.timeout(120)
def test_ctrl_c_stops_cleanly(tmp_path: Path) -> None:
    """A run forever stops on SIGINT after its first line: exit 0, no traceback."""
    with printing_forever(tmp_path, "30") as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert_valid(json.loads(first))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert out == ""
    assert "Traceback" not in err
    assert "SIGINT" in err


@pytest.mark.timeout(120)
def test_closed_stdout_stops_quietly(tmp_path: Path) -> None:
    """Piped into something that exits (`| head -1`): the command stops, exit 0, no traceback."""
    with printing_forever(tmp_path, "0.5") as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert_valid(json.loads(proc.stdout.readline()))
        proc.stdout.close()
        proc.wait(timeout=TIMEOUT)
        err = proc.stderr.read()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
