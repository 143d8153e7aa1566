"""Pure formulas: saturation vapour pressure (Magnus), dew point, sea-level pressure.

Magnus formula over water, with the constants of Sonntag (1990), the ones WMO guidance uses::

    e_s(T) = 6.112 hPa · exp(17.62 · T / (243.12 °C + T))          T in °C

valid from −45 °C to 60 °C (within about 0.3 % there); we use it up to the sensor's 85 °C. The
dew point of air at temperature T and relative humidity RH::

    γ = ln(RH / 100) + 17.62 · T / (243.12 + T)
    T_d = 243.12 · γ / (17.62 − γ)

Relative humidity at another temperature T' for the same air (the same water vapour pressure,
so the same dew point): ``RH' = RH · e_s(T) / e_s(T')``.

Sea-level pressure from station pressure p (hPa) at altitude h (m) and station temperature T
(°C), the barometric formula of the standard atmosphere with a temperature lapse rate of
0.0065 K/m (the form Bosch's and Pimoroni's altitude examples invert)::

    p0 = p · (1 − 0.0065 · h / (T + 0.0065 · h + 273.15)) ^ −5.257

where 5.257 = g·M / (R·L) (g 9.80665 m/s², M 0.0289644 kg/mol, R 8.31446 J/(mol·K),
L 0.0065 K/m).
"""

from __future__ import annotations

import math

MAGNUS_A = 17.62
MAGNUS_B_C = 243.12
MAGNUS_E0_HPA = 6.112
#: Where we use the Magnus formula (°C): Sonntag's −45 °C up to the BME680/BME280's 85 °C.
MAGNUS_MIN_C = -45.0
MAGNUS_MAX_C = 85.0

LAPSE_RATE_K_PER_M = 0.0065
BAROMETRIC_EXPONENT = 5.257
KELVIN_OFFSET = 273.15


def in_magnus_range(temperature: float) -> bool:
    """Whether the Magnus formula is used at this temperature (°C)."""
    return MAGNUS_MIN_C <= temperature <= MAGNUS_MAX_C


def _magnus_exponent(temperature: float) -> float:
    return MAGNUS_A * temperature / (MAGNUS_B_C + temperature)


def saturation_vapour_pressure(temperature: float) -> float:
    """e_s in hPa at ``temperature`` °C (Magnus, Sonntag 1990)."""
    return MAGNUS_E0_HPA * math.exp(_magnus_exponent(temperature))


def dew_point(temperature: float, humidity: float) -> float:
    """Dew point in °C of air at ``temperature`` °C and ``humidity`` %RH (> 0)."""
    gamma = math.log(humidity / 100.0) + _magnus_exponent(temperature)
    return MAGNUS_B_C * gamma / (MAGNUS_A - gamma)


def humidity_at(humidity: float, measured_at: float, corrected: float) -> float:
    """Relative humidity of the same air (same dew point) at the ``corrected`` temperature.

    Not clamped: above 100 means the corrected temperature is below the measured dew point.
    """
    # e_s(T) / e_s(T') as one exponential: no overflow in between.
    return humidity * math.exp(_magnus_exponent(measured_at) - _magnus_exponent(corrected))


def sea_level_pressure(pressure: float, temperature: float, altitude: float) -> float:
    """Sea-level pressure in hPa (the standard atmosphere's barometric formula).

    Args:
        pressure: station pressure, hPa.
        temperature: station temperature, °C.
        altitude: metres above sea level.
    """
    lapse = LAPSE_RATE_K_PER_M * altitude
    base = 1.0 - lapse / (temperature + lapse + KELVIN_OFFSET)
    return float(pressure * math.pow(base, -BAROMETRIC_EXPONENT))
