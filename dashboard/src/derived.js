// Derived values, computed in the page from temperature (°C) and relative humidity (%RH).
//
// Magnus formula over water with the constants of Alduchov & Eskridge (1996), "Improved
// Magnus form approximation of saturation vapor pressure", J. Appl. Meteor. 35:
//   saturation vapour pressure  es(T) = c · exp(a·T / (b + T))   [hPa]
//   with a = 17.625, b = 243.04 °C, c = 6.1094 hPa (good to 0.4 % over −40…50 °C).
// Dew point: γ = ln(RH/100) + a·T/(b + T); Td = b·γ / (a − γ).
// Absolute humidity: e = RH/100 · es(T); ρv = e·100 / (Rv · (T + 273.15)) · 1000 [g/m³]
//   with Rv = 461.5 J/(kg·K), the specific gas constant of water vapour.

export const MAGNUS = Object.freeze({ a: 17.625, b: 243.04, c: 6.1094 });
export const WATER_VAPOUR_GAS_CONSTANT = 461.5;

function usable(t, rh) {
  return (
    typeof t === "number" &&
    typeof rh === "number" &&
    Number.isFinite(t) &&
    Number.isFinite(rh) &&
    t > -MAGNUS.b &&
    rh > 0 &&
    rh <= 100
  );
}

/** Saturation vapour pressure over water in hPa. */
export function saturationVapourPressure(t) {
  return MAGNUS.c * Math.exp((MAGNUS.a * t) / (MAGNUS.b + t));
}

/** Dew point in °C, or null without a usable temperature and humidity (RH must be > 0). */
export function dewPoint(t, rh) {
  if (!usable(t, rh)) return null;
  const g = Math.log(rh / 100) + (MAGNUS.a * t) / (MAGNUS.b + t);
  return (MAGNUS.b * g) / (MAGNUS.a - g);
}

/** Absolute humidity in g/m³, or null without a usable temperature and humidity. */
export function absoluteHumidity(t, rh) {
  if (!usable(t, rh)) return null;
  const e = (rh / 100) * saturationVapourPressure(t) * 100; // Pa
  return (e / (WATER_VAPOUR_GAS_CONSTANT * (t + 273.15))) * 1000;
}
