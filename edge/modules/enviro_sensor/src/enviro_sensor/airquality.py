"""A relative air-quality score from gas resistance and humidity (Pimoroni's recipe).

This is **not** Bosch's IAQ index (that needs Bosch's closed BSEC library). It is the score from
Pimoroni's ``indoor-air-quality.py`` example, 0..100 where higher is better, and it is relative:
it compares the current gas resistance with this sensor's own baseline, taken in the air it sat in
during burn-in. Two devices' scores are not comparable, and a baseline taken in stale air makes
stale air look good.

The recipe:

1. Burn-in: for 300 s from the first heat-stable sample, collect the gas resistance of every
   heat-stable sample (at least :data:`MIN_BURN_IN_SAMPLES`). The score is null meanwhile.
2. Gas baseline = mean of the last 50 burn-in samples. Humidity baseline = 40 %RH.
3. Humidity score (25 % of the total): how close humidity is to 40 %RH.
   Gas score (75 %): ``gas / baseline`` when the gas resistance is below the baseline (lower
   resistance = more VOCs), full marks otherwise.
4. Score = humidity score + gas score.
5. After burn-in the gas baseline adapts slowly (our addition, not Pimoroni's): each heat-stable
   sample pulls it towards itself as an exponential moving average with a time constant of
   :data:`BASELINE_TIME_CONSTANT_S` (24 h), ``baseline += (gas − baseline) · (1 − e^(−Δt/τ))``,
   with Δt the time since the previous sample (at most :data:`MAX_STEP_S`, so a sample after a
   long gap does not count for the whole gap). A sensor that ages, or moves to a cleaner room,
   so does not report the same offset forever; an hour of cooking moves the baseline by about
   4 % of the dip (1 − e^(−1/24)), and a slow drift is followed with a lag of about τ.

The baseline is persisted on disk (atomically), so a restart does not burn in again; it is kept per
sensor source and heater profile, so a baseline learnt from simulated data is never applied to a
real chip, and one learnt at 320 °C is not applied after the heater was set to 250 °C (the gas
resistance depends strongly on the heater temperature).
:meth:`AirQuality.reset` forgets it and starts a new burn-in.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import write_atomic

log = logging.getLogger(__name__)

BURN_IN_SECONDS = 300.0
#: Time constant of the baseline's slow adaptation after burn-in (step 5 above).
BASELINE_TIME_CONSTANT_S = 24 * 3600.0
#: The longest Δt one sample counts for.
MAX_STEP_S = 3600.0
#: How often an adapted baseline is written to disk (it changes slowly; a restart loses less).
SAVE_INTERVAL_S = 600.0
BASELINE_SAMPLES = 50
MIN_BURN_IN_SAMPLES = 5
HUMIDITY_BASELINE = 40.0  # %RH
HUMIDITY_WEIGHTING = 0.25  # humidity 25 : gas 75
STORE_FORMAT = 1


def score(gas: float, humidity: float, *, gas_baseline: float) -> float:
    """Pimoroni's score, 0..100 (higher = better air), clamped to that range.

    Args:
        gas: gas resistance, Ω (> 0).
        humidity: relative humidity, %RH (0..100).
        gas_baseline: mean gas resistance over the burn-in, Ω (> 0).
    """
    hum_offset = humidity - HUMIDITY_BASELINE
    hum_full = HUMIDITY_WEIGHTING * 100.0
    if hum_offset > 0:
        hum_score = (
            (100.0 - HUMIDITY_BASELINE - hum_offset) / (100.0 - HUMIDITY_BASELINE) * hum_full
        )
    else:
        hum_score = (HUMIDITY_BASELINE + hum_offset) / HUMIDITY_BASELINE * hum_full
    gas_full = 100.0 - hum_full
    gas_score = gas / gas_baseline * gas_full if gas_baseline - gas > 0 else gas_full
    total = hum_score + gas_score
    return min(100.0, max(0.0, total))


class AirQuality:
    """The burn-in, the baseline, and the score for each reading.

    Not thread-safe: one pipeline owns it.
    """

    def __init__(
        self,
        *,
        source: str,
        state_path: str | os.PathLike[str] | None,
        profile: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        burn_in_seconds: float = BURN_IN_SECONDS,
        time_constant_s: float = BASELINE_TIME_CONSTANT_S,
        gas_sensor: bool = True,
    ) -> None:
        """Create the scorer, loading a persisted baseline for ``source`` if there is one.

        Args:
            source: the sensor source ("bme680"/"simulated"); a stored baseline from another
                source is ignored.
            state_path: file that keeps the baseline across restarts; None keeps it in memory.
            profile: what else the baseline depends on (the BME680's heater profile); a stored
                baseline learnt with another profile is ignored.
            clock: monotonic seconds (injectable for tests).
            burn_in_seconds: burn-in length (300 s in Pimoroni's recipe).
            time_constant_s: how slowly the baseline adapts after burn-in (24 h).
            gas_sensor: False for a sensor without one (a BME280): there is never a score, and
                the state says so instead of "burning_in" forever.

        Raises:
            ValueError: ``burn_in_seconds`` is negative or not finite, or ``time_constant_s``
                is not positive and finite.
        """
        if not (math.isfinite(burn_in_seconds) and burn_in_seconds >= 0):
            raise ValueError(f"burn_in_seconds must be finite and >= 0, got {burn_in_seconds}")
        if not (math.isfinite(time_constant_s) and time_constant_s > 0):
            raise ValueError(f"time_constant_s must be finite and > 0, got {time_constant_s}")
        self._tau = time_constant_s
        self._gas_sensor = gas_sensor
        self._last_sample: float | None = None
        self._last_save: float | None = None
        self._source = source
        self._profile = profile
        self._path = Path(state_path) if state_path is not None else None
        self._clock = clock
        self._burn_in_seconds = burn_in_seconds
        self._samples: deque[float] = deque(maxlen=BASELINE_SAMPLES)
        self._sample_count = 0
        self._started: float | None = None
        self._baseline: float | None = self._load()

    @property
    def baseline(self) -> float | None:
        """The gas baseline in Ω, or None while burning in."""
        return self._baseline

    def state(self) -> dict[str, Any]:
        """The baseline state, for the twin's reported properties."""
        if not self._gas_sensor:
            return {"state": "unavailable", "reason": "no gas sensor"}
        if self._baseline is not None:
            return {
                "state": "ready",
                "gasBaseline": round(self._baseline),
                "timeConstantHours": round(self._tau / 3600.0, 2),
            }
        elapsed = 0.0 if self._started is None else self._clock() - self._started
        return {
            "state": "burning_in",
            "samples": self._sample_count,
            "remainingSeconds": round(max(0.0, self._burn_in_seconds - elapsed), 1),
        }

    def update(self, gas: float | None, humidity: float | None) -> float | None:
        """Feed one validated reading; the score, or None (burning in, or no gas/humidity).

        Args:
            gas: validated gas resistance, Ω; None when the heater was not stable (or invalid):
                such a sample is not part of the burn-in either.
            humidity: validated humidity, %RH; None when invalid.
        """
        if gas is None or not math.isfinite(gas) or gas <= 0:
            return None
        if self._baseline is None:
            self._burn_in(gas)
            return None
        baseline = self._baseline
        self._adapt(gas)
        if humidity is None or not math.isfinite(humidity):
            return None
        return score(gas, min(100.0, max(0.0, humidity)), gas_baseline=baseline)

    def reset(self) -> None:
        """Forget the baseline (memory and disk) and start a new burn-in."""
        self._baseline = None
        self._samples.clear()
        self._sample_count = 0
        self._started = None
        self._last_sample = None
        self._last_save = None
        if self._path is not None:
            try:
                self._path.unlink(missing_ok=True)
            except OSError as exc:
                log.error("cannot remove air-quality baseline %s: %s", self._path, exc)
        log.info("air-quality baseline reset: burning in again for %.0f s", self._burn_in_seconds)

    def _adapt(self, gas: float) -> None:
        """Pull the baseline towards ``gas`` (exponential moving average, time constant τ)."""
        assert self._baseline is not None
        now = self._clock()
        last, self._last_sample = self._last_sample, now
        if last is None:
            return  # the first sample after burn-in or a restart: no Δt yet
        step = min(max(0.0, now - last), MAX_STEP_S)
        self._baseline += (gas - self._baseline) * -math.expm1(-step / self._tau)
        if self._last_save is None or now - self._last_save >= SAVE_INTERVAL_S:
            self._last_save = now
            self._save()

    def _burn_in(self, gas: float) -> None:
        now = self._clock()
        if self._started is None:
            self._started = now
            log.info("air-quality burn-in started (%.0f s)", self._burn_in_seconds)
        self._samples.append(gas)
        self._sample_count += 1
        if now - self._started >= self._burn_in_seconds and (
            self._sample_count >= MIN_BURN_IN_SAMPLES
        ):
            self._baseline = sum(self._samples) / len(self._samples)
            self._last_sample = self._last_save = now
            log.info(
                "air-quality burn-in done: gas baseline %.0f Ω from %d samples",
                self._baseline,
                len(self._samples),
            )
            self._save()

    def _load(self) -> float | None:
        if self._path is None:
            return None
        try:
            data = json.loads(self._path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("air-quality baseline %s unusable (%s): burning in again", self._path, exc)
            return None
        try:
            ok = isinstance(data, dict) and data.get("format") == STORE_FORMAT
            baseline = float(data["gasBaseline"]) if ok else math.nan
            source = data.get("source") if ok else None
            profile = data.get("profile") if ok else None
        except (KeyError, TypeError, ValueError):
            baseline, source, profile = math.nan, None, None
        if not (math.isfinite(baseline) and baseline > 0):
            log.warning("air-quality baseline %s unusable: burning in again", self._path)
            return None
        if source != self._source:
            log.warning(
                "air-quality baseline %s was learnt from a %s sensor, this is %s: burning in again",
                self._path,
                source,
                self._source,
            )
            return None
        if profile != self._profile:
            log.warning(
                "air-quality baseline %s was learnt with heater profile %s, now %s: "
                "burning in again",
                self._path,
                profile,
                self._profile,
            )
            return None
        log.info("air-quality baseline %.0f Ω loaded from %s", baseline, self._path)
        return baseline

    def _save(self) -> None:
        if self._path is None or self._baseline is None:
            return
        body = {
            "format": STORE_FORMAT,
            "source": self._source,
            "profile": self._profile,
            "gasBaseline": self._baseline,
            "samples": len(self._samples),
        }
        try:
            write_atomic(self._path, json.dumps(body).encode("utf-8"))
        except OSError as exc:
            # Keep scoring with the in-memory baseline; only a restart would burn in again.
            log.error("cannot persist air-quality baseline to %s: %s", self._path, exc)
