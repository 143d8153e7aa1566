// The metrics table (contract/metrics.json, copied into dashboard/contract by `make contract`)
// drives every label, unit and number of decimals on the page: none is written in HTML.
import table from "../contract/metrics.json" with { type: "json" };
import { absoluteHumidity, dewPoint } from "./derived.js";

/** Metrics every tile and chart shows, even before a value arrives (the edge sends them). */
export const METRICS = table.metrics.map((m) => ({
  key: m.key,
  label: m.label,
  unit: m.unit,
  decimals: m.decimals,
  always: m.edge === true && m.optional !== true, // optional ones (light) only when sent
}));

/** Values the page computes from temperature and relative humidity (see derived.js). */
export const DERIVED = [
  { key: "dewPoint", label: "Dew point", unit: "°C", decimals: 1, always: true, from: dewPoint },
  {
    key: "absoluteHumidity",
    label: "Absolute humidity",
    unit: "g/m³",
    decimals: 1,
    always: true,
    from: absoluteHumidity,
  },
];

/** Every quantity with a chart: the table's metrics, then the derived ones. */
export const QUANTITIES = [...METRICS, ...DERIVED];

/** A reading's (or a state's `values`) number for `q`, derived ones computed; null if none. */
export function valueOf(q, values) {
  if (q.from) return q.from(num(values.temperature), num(values.humidity));
  return num(values[q.key]);
}

function num(v) {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

/** `v` with the quantity's decimals, or an em dash when there is none. */
export function formatValue(q, v) {
  return v === null || v === undefined || !Number.isFinite(v) ? "—" : v.toFixed(q.decimals);
}
