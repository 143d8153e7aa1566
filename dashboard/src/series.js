// The page's history: one time grid shared by every stream and chart, with bounded memory.
//
// The selected range is cut into POINTS buckets of equal width, aligned to multiples of the
// width, so every stream's series lines up with one x array (what uPlot wants) and each
// chart holds at most POINTS × streams numbers, whatever the reading rate. A bucket keeps
// the sum and count of its readings per quantity; the chart draws the mean. As time moves
// on, the oldest bucket is dropped and a new one opened: memory never grows with time.
//
// Exactly-once on the page: the sink counts each reading once, but the page may see one
// twice (a live message and the REST back-fill after a reconnect; two history pages that
// share an edge). Each stream remembers, per boot, the highest seq it has applied, for its
// last MAX_BOOTS boots; a reading at or below it is a duplicate and is not added again.

import { QUANTITIES, valueOf } from "./metrics.js";

export const POINTS = 720;
export const MAX_BOOTS = 16;
const INTERVAL_SAMPLES = 9;

export const RANGES = Object.freeze({
  "1h": 3600e3,
  "24h": 86400e3,
  "7d": 7 * 86400e3,
  "30d": 30 * 86400e3,
});

/**
 * The rollup step the page loads older history in, per range (null: raw readings only): at
 * most 96 (24 h), 672 (7 d) or 720 (30 d) points per stream. 24 h takes 15 min steps, not
 * 1 min: 1,440 points per stream were 144,000 for 100 streams, a 50 MB answer that took the
 * sink seconds to build; 96 per stream is 3.5 MB. The last 15–30 minutes come raw.
 */
export const ROLLUP_STEPS = Object.freeze({
  "1h": null,
  "24h": { step: "15m", ms: 15 * 60e3 },
  "7d": { step: "15m", ms: 15 * 60e3 },
  "30d": { step: "1h", ms: 3600e3 },
});

/** The key a reading or device state belongs to: its stream id, else its device id. */
export function streamKey(item) {
  const id = item && typeof item.streamId === "string" && item.streamId ? item.streamId : null;
  return id ?? String(item.deviceId);
}

export class Grid {
  /** `rangeMs` wide, ending with the bucket that holds `nowMs`. */
  constructor({ rangeMs, nowMs, points = POINTS }) {
    if (!(rangeMs > 0) || !(points > 1)) throw new RangeError("rangeMs and points must be > 0");
    this.rangeMs = rangeMs;
    this.points = points;
    this.step = Math.ceil(rangeMs / points);
    this.first = Math.floor(nowMs / this.step) - points + 1; // bucket number of x[0]
    /** Bucket start times in seconds (uPlot's time unit), oldest first. */
    this.x = Array.from({ length: points }, (_, i) => ((this.first + i) * this.step) / 1000);
    this.series = new Set();
  }

  get startMs() {
    return this.first * this.step;
  }

  get endMs() {
    return (this.first + this.points) * this.step;
  }

  /** The index of the bucket holding `ms`, or -1 outside the window. */
  indexOf(ms) {
    const i = Math.floor(ms / this.step) - this.first;
    return i >= 0 && i < this.points ? i : -1;
  }

  /** Slide the window so it ends with the bucket holding `nowMs`; true if it moved. */
  advance(nowMs) {
    const last = Math.floor(nowMs / this.step);
    let shift = last - (this.first + this.points - 1);
    if (shift <= 0) return false;
    if (shift > this.points) {
      this.first += shift - this.points;
      shift = this.points;
    }
    for (let k = 0; k < shift; k++) {
      this.first += 1;
      slide(this.x, ((this.first + this.points - 1) * this.step) / 1000);
      for (const s of this.series) s.shiftOne();
    }
    return true;
  }
}

/**
 * Drop `arr`'s first element and append `fill`, in place. (`shift()` then `push()` makes V8
 * grow an array's store by half, once: ~6 MB more heap for 100 streams' arrays, a step the
 * heap figure of the bench saw; this keeps the length and the store.)
 */
export function slide(arr, fill) {
  arr.copyWithin(0, 1);
  arr[arr.length - 1] = fill;
}

/** One stream's bucketed values per quantity, on a grid. */
export class StreamSeries {
  constructor(grid) {
    this.grid = grid;
    const n = grid.points;
    this.sum = new Map();
    this.n = new Map();
    this.mean = new Map();
    this.cnt = new Array(n).fill(0);
    for (const q of QUANTITIES) {
      this.sum.set(q.key, new Array(n).fill(0));
      this.n.set(q.key, new Array(n).fill(0));
      this.mean.set(q.key, new Array(n).fill(null));
    }
    this.present = new Set(); // quantities that ever had a value
    grid.series.add(this);
  }

  shiftOne() {
    slide(this.cnt, 0);
    for (const map of [this.sum, this.n]) for (const arr of map.values()) slide(arr, 0);
    for (const arr of this.mean.values()) slide(arr, null);
  }

  /** Add one reading; false if it falls outside the window. */
  add(ms, values) {
    const i = this.grid.indexOf(ms);
    if (i < 0) return false;
    this.cnt[i] += 1;
    for (const q of QUANTITIES) {
      const v = valueOf(q, values);
      if (v === null) continue;
      const sum = this.sum.get(q.key);
      const n = this.n.get(q.key);
      sum[i] += v;
      n[i] += 1;
      this.mean.get(q.key)[i] = sum[i] / n[i];
      this.present.add(q.key);
    }
    return true;
  }

  /**
   * Add one rollup point (`{metric: {mean, n}}`, docs/sink.md) as its n readings; derived
   * quantities from the means, weighted by the fewer of their inputs. False outside the window.
   */
  addRollup(ms, point) {
    const means = {};
    const weight = {};
    for (const [key, agg] of Object.entries(point)) {
      if (agg && typeof agg === "object") this.weigh(means, weight, key, agg.mean, agg.n);
    }
    return this.addMeans(ms, means, weight);
  }

  /**
   * Add every bucket of a stream's rollup columns (`{ts: [...], metrics: {<metric>: {mean:
   * [...], n: [...]}}}`, docs/sink.md) as addRollup does; returns how many fell in the window.
   */
  addRollupColumns(ts, metrics, from, until) {
    const cols = Object.entries(metrics && typeof metrics === "object" ? metrics : {}).filter(
      ([, c]) => c && Array.isArray(c.mean) && Array.isArray(c.n),
    );
    let added = 0;
    for (let i = 0; i < ts.length; i++) {
      const ms = Date.parse(ts[i]);
      if (!(ms >= from && ms < until)) continue;
      const means = {};
      const weight = {};
      for (const [key, col] of cols) this.weigh(means, weight, key, col.mean[i], col.n[i]);
      if (this.addMeans(ms, means, weight)) added += 1;
    }
    return added;
  }

  weigh(means, weight, key, mean, n) {
    if (typeof n === "number" && n > 0 && typeof mean === "number") {
      means[key] = mean;
      weight[key] = n;
    }
  }

  /** `means` per metric, each standing for `weight[metric]` readings, into bucket of `ms`. */
  addMeans(ms, means, weight) {
    const i = this.grid.indexOf(ms);
    if (i < 0) return false;
    let readings = 0;
    for (const key in weight) readings = Math.max(readings, weight[key]);
    if (readings === 0) return false;
    this.cnt[i] += readings;
    for (const q of QUANTITIES) {
      const v = valueOf(q, means);
      if (v === null) continue;
      const w = q.from ? Math.min(weight.temperature, weight.humidity) : weight[q.key];
      const sum = this.sum.get(q.key);
      const n = this.n.get(q.key);
      sum[i] += v * w;
      n[i] += w;
      this.mean.get(q.key)[i] = sum[i] / n[i];
      this.present.add(q.key);
    }
    return true;
  }

  /** Rows of (bucket start ms, readings in it, mean per quantity) for buckets that hold any. */
  rows() {
    const out = [];
    for (let i = 0; i < this.grid.points; i++) {
      if (this.cnt[i] === 0) continue;
      const values = {};
      for (const q of QUANTITIES) values[q.key] = this.mean.get(q.key)[i];
      out.push({ ms: this.grid.x[i] * 1000, readings: this.cnt[i], values });
    }
    return out;
  }

  dispose() {
    this.grid.series.delete(this);
  }
}

/** Per-boot high-water marks: has this reading been applied already? */
export class Seen {
  constructor() {
    this.boots = new Map(); // boot → {seq, ms}; insertion order = age
  }

  /** True (and remembered) if the reading is new; false for one already applied. */
  accept(boot, seq, ms) {
    const key = String(boot);
    const mark = this.boots.get(key);
    const hasSeq = typeof seq === "number" && Number.isFinite(seq);
    if (mark) {
      if (hasSeq ? seq <= mark.seq : ms <= mark.ms) return false;
      mark.seq = hasSeq ? seq : mark.seq;
      mark.ms = Math.max(mark.ms, ms);
      return true;
    }
    this.boots.set(key, { seq: hasSeq ? seq : -Infinity, ms });
    if (this.boots.size > MAX_BOOTS) this.boots.delete(this.boots.keys().next().value);
    return true;
  }
}

/** Median gap of a stream's recent readings: its estimated send interval, in ms (or null). */
export class IntervalEstimate {
  constructor() {
    this.times = [];
  }

  note(ms) {
    const t = this.times;
    if (t.length && ms <= t[t.length - 1]) return;
    t.push(ms);
    if (t.length > INTERVAL_SAMPLES) t.shift();
  }

  get ms() {
    const t = this.times;
    if (t.length < 2) return null;
    const gaps = [];
    for (let i = 1; i < t.length; i++) gaps.push(t[i] - t[i - 1]);
    gaps.sort((a, b) => a - b);
    return gaps[Math.floor(gaps.length / 2)];
  }
}
