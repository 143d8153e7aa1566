"""Opening /dev/i2c-N for a real sensor, with the error a user on a Pi can act on."""

from __future__ import annotations

import os
from typing import Any

from enviro_sensor.errors import I2CBusNotFoundError


def hex_list(addresses: tuple[int, ...]) -> str:
    """``(0x76, 0x77)`` as ``"0x76 and 0x77"``."""
    return " and ".join(f"{a:#04x}" for a in addresses)


def open_bus(bus_number: int, *, what: str, addresses: str, fixes: str) -> Any:
    """An ``smbus2.SMBus`` on /dev/i2c-N; the caller closes it.

    Args:
        bus_number: the N.
        what: the chip(s) that would have been probed, e.g. "BME680".
        addresses: the addresses that would have been tried, as text.
        fixes: what to check, appended to the message.

    Raises:
        I2CBusNotFoundError: no such bus, or it cannot be opened.
    """
    path = f"/dev/i2c-{bus_number}"
    if not os.path.exists(path):
        raise I2CBusNotFoundError(
            f"No I2C bus: {path} does not exist, so no {what} could be probed "
            f"(addresses {addresses} not tried). " + fixes
        )
    import smbus2  # imported here: only a real bus needs it

    try:
        return smbus2.SMBus(bus_number)
    except OSError as exc:
        raise I2CBusNotFoundError(
            f"Cannot open I2C bus {path} ({exc}); addresses {addresses} not tried. "
            "Is this user in the i2c group (or the device mapped into the container)? " + fixes
        ) from exc
