"""Run the module's entry point (enviro_sensor.cli.main) with a fake BME680 on the I2C bus.

Only the hardware is faked: ``smbus2.SMBus`` opens a :class:`FakeBme680Bus` instead of
``/dev/i2c-N`` (and that device path is made to exist). The file named by ``FAKE_I2C_CONTROL``
switches the bus: ``unplugged`` makes every bus operation fail with EREMOTEIO (a loose cable),
anything else plugs it back. Usage: ``python -m tests.edge_hub.fake_i2c_module [cli args]``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.edge.fake_bme680 import FakeBme680Bus

BUS = FakeBme680Bus(addresses=(0x76,))


def _watch(control: Path) -> None:
    while True:
        try:
            BUS.unplugged = control.read_text().strip() == "unplugged"
        except OSError:
            BUS.unplugged = False
        time.sleep(0.05)


def main() -> int:
    import smbus2
    from enviro_sensor import cli

    bus_number = int(os.environ.get("ENVIRO_I2C_BUS", "1"))
    fake_path = f"/dev/i2c-{bus_number}"
    real_exists = os.path.exists

    def exists(path: Any) -> bool:
        return True if str(path) == fake_path else real_exists(path)

    os.path.exists = exists  # type: ignore[assignment]
    smbus2.SMBus = lambda number: BUS  # type: ignore[assignment,misc]
    control = Path(os.environ["FAKE_I2C_CONTROL"])
    threading.Thread(target=_watch, args=(control,), daemon=True).start()
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
