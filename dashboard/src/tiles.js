// A tile per stream. Every device-supplied string (ids, labels, flags, source) is put in
// with textContent or as an attribute value: never parsed as HTML.

import { formatValue, valueOf } from "./metrics.js";

/** Sources that are a real sensor; anything else gets the `simulated` badge. */
export const REAL_SOURCES = new Set(["bme680", "bme280"]);
/** How many estimated send intervals without a reading make a stream stale. */
export const STALE_INTERVALS = 3;
/** With no interval estimate yet (fewer than two readings), stale after this long. */
export const STALE_UNKNOWN_MS = 15 * 60e3;

const COUNTS = [
  ["count", "Received"],
  ["missing", "Missing"],
  ["duplicates", "Duplicates"],
  ["rejected", "Rejected"],
];

/** Set a node's text only when it changes (an unchanged write still costs a style pass). */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setHidden(node, hidden) {
  if (node.hidden !== hidden) node.hidden = hidden;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function relative(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function isStale(nowMs, lastSeenMs, intervalMs) {
  if (lastSeenMs === null) return false;
  const limit = intervalMs === null ? STALE_UNKNOWN_MS : STALE_INTERVALS * Math.max(intervalMs, 1000);
  return nowMs - lastSeenMs > limit;
}

export class Tile {
  constructor(stream, onExport) {
    this.stream = stream;
    const root = el("article", "tile");
    root.dataset.stream = stream.key;
    const head = el("header");
    this.name = el("h3", "name");
    this.badges = el("p", "badges");
    this.sim = el("span", "badge sim", "simulated");
    this.simSource = el("span", "source");
    this.alert = el("span", "badge alert");
    this.stale = el("span", "badge stale", "stale");
    this.badges.append(this.sim, this.simSource, this.alert, this.stale);
    head.append(this.name, this.badges);
    this.ids = el("p", "ids");
    this.values = el("dl", "values");
    this.cells = new Map();
    this.seen = el("p", "seen");
    this.seenRel = el("span", "rel");
    this.seenAbs = el("time", "abs");
    this.seen.append("Last seen ", this.seenRel, " · ", this.seenAbs);
    this.counts = el("dl", "counts");
    this.countCells = new Map();
    for (const [key, label] of COUNTS) {
      const box = el("div");
      const dd = el("dd", undefined, "—");
      box.append(el("dt", undefined, label), dd);
      this.counts.append(box);
      this.countCells.set(key, dd);
    }
    this.cal = el("p", "cal");
    this.button = el("button", "csv", "Export CSV");
    this.button.type = "button";
    this.button.addEventListener("click", () => onExport(stream));
    root.append(head, this.ids, this.values, this.seen, this.counts, this.cal, this.button);
    this.root = root;
  }

  /** Refresh everything from the stream (its state, latest reading, estimates). */
  update(quantities, nowMs) {
    const s = this.stream;
    const state = s.state || {};
    const latest = s.latest || {};
    const name = state.label || latest.label || s.deviceId;
    setText(this.name, name);
    const label = `Export CSV of the shown history of ${name}`;
    if (this.button.getAttribute("aria-label") !== label) this.button.setAttribute("aria-label", label);
    setText(this.ids, s.moduleId ? `${s.deviceId} / ${s.moduleId}` : s.deviceId);
    const source = state.source ?? latest.source ?? null;
    const simulated = !REAL_SOURCES.has(source);
    setHidden(this.sim, !simulated);
    setHidden(this.simSource, !simulated || source === "simulated");
    setText(this.simSource, `source: ${source ?? "unknown"}`);
    const alert = Boolean(state.alert ?? latest.alert);
    setText(this.alert, alert ? "alert" : "no alert");
    this.alert.classList.toggle("on", alert);
    const values = s.latestValues();
    for (const q of quantities) {
      if (!q.always && !s.series.present.has(q.key) && valueOf(q, values) === null) continue;
      let cell = this.cells.get(q.key);
      if (!cell) {
        const box = el("div");
        const dd = el("dd");
        const v = el("span", "v");
        dd.append(v, " ", el("span", "u", q.unit));
        box.append(el("dt", undefined, q.label), dd);
        this.values.append(box);
        cell = v;
        this.cells.set(q.key, cell);
      }
      setText(cell, formatValue(q, valueOf(q, values)));
    }
    for (const [key] of COUNTS) {
      const n = state[key];
      setText(this.countCells.get(key), Number.isInteger(n) ? String(n) : "—");
    }
    const flags = Array.isArray(state.flags) ? state.flags.filter((f) => typeof f === "string") : [];
    const cal = Number.isInteger(state.calibration) ? state.calibration : latest.calibration;
    setText(this.cal, `Calibration v${Number.isInteger(cal) ? cal : "?"}` +
      (flags.length ? ` · flags: ${flags.join(", ")}` : ""));
    this.tick(nowMs);
  }

  /** The parts that change with the clock: last seen and the stale marker. */
  tick(nowMs) {
    const s = this.stream;
    const last = s.lastSeenMs();
    if (last === null) {
      setText(this.seenRel, "never");
      setText(this.seenAbs, "");
      this.seenAbs.removeAttribute("datetime");
    } else {
      setText(this.seenRel, relative(nowMs - last));
      const iso = new Date(last).toISOString();
      if (this.seenAbs.dateTime !== iso) {
        this.seenAbs.dateTime = iso;
        setText(this.seenAbs, new Date(last).toLocaleString());
      }
    }
    const stale = isStale(nowMs, last, s.interval.ms);
    setHidden(this.stale, !stale);
    this.root.classList.toggle("is-stale", stale);
  }
}
