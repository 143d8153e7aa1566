// CSV of one stream's shown history: one row per time bucket that holds readings, the
// values as the chart draws them (the bucket's mean, with the quantity's decimals).

import { formatValue } from "./metrics.js";

/** A CSV field: quoted when needed; text that a spreadsheet would run as a formula is defused. */
export function field(value) {
  let s = value === null || value === undefined ? "" : String(value);
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

export function toCsv(stream, quantities, rows) {
  const head = ["time", "stream", "deviceId", "moduleId", "readings"];
  for (const q of quantities) head.push(`${q.key} (${q.unit})`);
  const lines = [head.map(field).join(",")];
  for (const row of rows) {
    const cells = [
      new Date(row.ms).toISOString(),
      stream.key,
      stream.deviceId,
      stream.moduleId ?? "",
      row.readings,
    ];
    for (const q of quantities) {
      const v = row.values[q.key];
      cells.push(v === null ? "" : formatValue(q, v));
    }
    lines.push(cells.map(field).join(","));
  }
  return `${lines.join("\r\n")}\r\n`;
}

/** Hand `text` to the browser as a download named `name`. */
export function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/csv;charset=utf-8" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export function fileName(key, range) {
  return `enviromon-${String(key).replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 80)}-${range}.csv`;
}
