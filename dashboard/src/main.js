// The page: config → REST state and history → live socket → tiles and charts.

import "uplot/dist/uPlot.min.css";
import "./app.css";
import { Api, loadConfig } from "./api.js";
import { Charts } from "./charts.js";
import { download, fileName, toCsv } from "./csv.js";
import { Frames } from "./frames.js";
import { Live } from "./live.js";
import { QUANTITIES, valueOf } from "./metrics.js";
import {
  Grid,
  IntervalEstimate,
  RANGES,
  ROLLUP_STEPS,
  Seen,
  StreamSeries,
  streamKey,
} from "./series.js";
import { Tile } from "./tiles.js";

const HISTORY_CONCURRENCY = 6;
/** A back-fill starts this long before a stream's last reading (readings out of time order). */
const BACKFILL_MARGIN_MS = 5 * 60e3;
const MAX_PENDING = 20000;
/** Streams whose raw history starts within this of now share one request (the 1 h range too). */
const SHARED_WINDOW_MS = 2 * 3600e3;

class Stream {
  constructor(key, item, grid) {
    this.key = key;
    this.deviceId = String(item.deviceId);
    this.moduleId = typeof item.moduleId === "string" && item.moduleId ? item.moduleId : null;
    this.state = null;
    this.latest = null;
    this.latestMs = null;
    this.lastMs = null;
    /** Readings before this time are in the chart as rollups: raw ones are not added again. */
    this.rollupUntil = null;
    this.seen = new Seen();
    this.interval = new IntervalEstimate();
    this.series = new StreamSeries(grid);
  }

  get name() {
    const label = (this.state && this.state.label) || (this.latest && this.latest.label);
    return label || (this.moduleId ? `${this.deviceId}/${this.moduleId}` : this.deviceId);
  }

  latestValues() {
    const stateMs = this.state && this.state.lastSeen ? Date.parse(this.state.lastSeen) : null;
    if (this.latest && (stateMs === null || this.latestMs >= stateMs)) return this.latest;
    return (this.state && this.state.values) || this.latest || {};
  }

  lastSeenMs() {
    const stateMs = this.state && this.state.lastSeen ? Date.parse(this.state.lastSeen) : NaN;
    const a = Number.isFinite(stateMs) ? stateMs : null;
    if (a === null) return this.lastMs;
    return this.lastMs === null ? a : Math.max(a, this.lastMs);
  }
}

class App {
  constructor() {
    this.streams = new Map();
    this.range = "24h";
    this.grid = new Grid({ rangeMs: RANGES[this.range], nowMs: Date.now() });
    this.tilesEl = document.getElementById("tiles");
    this.frames = new Frames();
    this.frames.onIdle(() => this.maybeRendered());
    this.charts = new Charts(document.getElementById("charts"), this.frames);
    this.statusEl = document.getElementById("connection");
    this.messageEl = document.getElementById("message");
    this.syncing = null;
    this.syncAgain = false;
    this.pending = [];
    this.socketUp = false;
    this.chartKeys = [];
    this.generation = 0;
    this.duplicatesDropped = 0;
    this.rolledUpGeneration = -1;
    /** False once the sink answered 404 for the rollups route: raw history only. */
    this.rollupsRoute = true;
    /** False once the sink answered 404 for `GET /telemetry`: a request per stream. */
    this.everyRoute = true;
  }

  async start() {
    this.bindRange();
    matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => this.rebuildCharts());
    let config;
    try {
      config = await loadConfig();
    } catch (exc) {
      this.setConnection("offline");
      this.say(String(exc.message || exc));
      return;
    }
    this.api = new Api(config);
    this.rebuildCharts();
    this.live = new Live({
      api: this.api,
      onMessage: (data) => this.onMessage(data),
      onConnected: () => {
        this.socketUp = true;
        this.sync({ connected: true });
      },
      onState: (state) => {
        if (state !== "connecting") this.socketUp = false;
        this.setConnection(state);
      },
    });
    this.live.start();
    this.sync();
    setInterval(() => this.tick(), 1000);
  }

  say(text) {
    this.messageEl.textContent = text;
    this.messageEl.hidden = !text;
  }

  setConnection(state) {
    const shown = state === "live" && this.syncing ? "reconnecting" : state;
    this.statusEl.textContent = shown;
    this.statusEl.dataset.state = shown;
    document.body.dataset.connection = shown;
  }

  bindRange() {
    for (const input of document.querySelectorAll('input[name="range"]')) {
      input.checked = input.value === this.range;
      input.addEventListener("change", () => {
        if (input.checked && input.value in RANGES) this.setRange(input.value);
      });
    }
  }

  setRange(range) {
    this.range = range;
    this.generation += 1;
    for (const s of this.streams.values()) s.series.dispose();
    this.grid = new Grid({ rangeMs: RANGES[range], nowMs: Date.now() });
    for (const s of this.streams.values()) {
      s.series = new StreamSeries(this.grid);
      s.seen = new Seen();
      s.lastMs = null;
      s.rollupUntil = null;
    }
    this.rebuildCharts();
    this.sync({ full: true });
  }

  /**
   * Load state and history (all of the range, or since each stream's last reading).
   * `connected`: the socket just came up. A sync that has not started fetching raw readings
   * yet covers that gap itself (its raw phase reads up to a time after the socket was up, and
   * live messages wait in `pending`), so it is not run again; on page load that saves a
   * second round of history requests.
   */
  sync({ full = false, connected = false } = {}) {
    if (this.syncing) {
      if (connected && !this.rawStarted) return this.syncing;
      this.syncAgain = true;
      this.syncFull = this.syncFull || full;
      return this.syncing;
    }
    document.body.dataset.synced = "false";
    document.body.dataset.rendered = "false";
    this.setConnection(this.socketUp ? "live" : this.statusEl.dataset.state || "connecting");
    this.syncing = this.syncOnce(full)
      .catch((exc) => {
        this.say(`Could not load from the API: ${exc.message || exc}`);
      })
      .finally(() => {
        this.syncing = null;
        const again = this.syncAgain;
        const againFull = this.syncFull;
        this.syncAgain = false;
        this.syncFull = false;
        if (again) {
          this.sync({ full: againFull });
          return;
        }
        this.drainPending();
        document.body.dataset.synced = "true";
        if (this.socketUp) this.setConnection("live");
        this.maybeRendered();
      });
    return this.syncing;
  }

  async syncOnce(full) {
    const gen = this.generation;
    this.rawStarted = false;
    const now = Date.now();
    const wantRollups = this.rolledUpGeneration !== gen && this.rollupsRoute;
    const rawTo = now + 60e3; // later than any moment the socket came up
    // On a full load (or the first) every stream's raw tail starts where the rollups end, a
    // time known now: its request goes out with the device list and the rollups.
    const span = wantRollups ? this.rollupWindow(now) : null;
    const fresh = full || [...this.streams.values()].every((s) => s.lastMs === null);
    const early =
      fresh && span && this.everyRoute
        ? this.earlyRaw(Math.max(this.grid.startMs, span.until), rawTo)
        : null;
    const [devices, until] = await Promise.all([
      this.api.devices(),
      wantRollups ? this.loadRollups(gen, span) : null,
    ]);
    if (gen !== this.generation) return;
    for (const state of devices) {
      if (state && state.deviceId !== undefined) this.applyState(state);
    }
    // Streams with no rollup in the window have no reading before `until` either.
    if (typeof until === "number") {
      for (const s of this.streams.values()) if (s.rollupUntil === null) s.rollupUntil = until;
    }
    this.say("");
    const starts = new Map();
    for (const s of this.streams.values()) {
      const floor = Math.max(this.grid.startMs, s.rollupUntil ?? -Infinity);
      const start =
        full || s.lastMs === null ? floor : Math.max(floor, s.lastMs - BACKFILL_MARGIN_MS);
      starts.set(s, start);
    }
    this.rawStarted = true;
    const partial = await this.loadRaw(gen, starts, rawTo, early);
    if (partial) {
      this.say(
        `${partial} device(s) have more raw readings in this range than the page loads;` +
          " their charts show the most recent part only.",
      );
    }
  }

  /** everyHistory(fromMs, toMs) started ahead of need: `{ fromMs, answer }` (a promise). */
  earlyRaw(fromMs, toMs) {
    const answer = this.api.everyHistory(fromMs, toMs);
    answer.catch(() => {}); // awaited (and its error shown) by loadRaw, or dropped unused
    return { fromMs, answer };
  }

  /**
   * Raw readings of each stream from its start to `rawTo`; returns how many streams were cut.
   * Streams starting within SHARED_WINDOW_MS come from one request for every stream (from the
   * earliest of their starts; what a stream has already is dropped by its seq marks and its
   * rollup time). Streams starting earlier, and all of them on a sink without that route,
   * are read one request per stream (naming its module, so the sink reads that stream alone).
   * `early` (earlyRaw) is that one request, already sent, used if it starts early enough.
   */
  async loadRaw(gen, starts, rawTo, early = null) {
    const apply = (rows) => {
      if (gen === this.generation) for (const r of rows) this.applyReading(r);
    };
    const own = [];
    let common = Infinity;
    const shareFrom = Date.now() - SHARED_WINDOW_MS;
    for (const [s, start] of starts) {
      if (this.everyRoute && start >= shareFrom) common = Math.min(common, start);
      else own.push([s.deviceId, s.moduleId ?? "", start, s.key]);
    }
    let partial = 0;
    if (common !== Infinity) {
      const answer =
        early && early.fromMs <= common
          ? await early.answer
          : await this.api.everyHistory(common, rawTo);
      if (gen !== this.generation) return 0;
      if (answer === null) {
        this.everyRoute = false;
        return this.loadRaw(gen, starts, rawTo);
      }
      const mine = new Set(own.map((job) => job[3]));
      for (const item of answer) {
        if (!item || typeof item !== "object" || item.deviceId === undefined) continue;
        const rows = Array.isArray(item.readings) ? item.readings : [];
        // A stream read on its own below gets its older readings first (seq marks).
        if (mine.has(streamKey(item))) continue;
        apply(rows);
        if (item.continuation && rows.length) {
          const last = Date.parse(rows[rows.length - 1].ts);
          if (Number.isFinite(last)) own.push([item.deviceId, item.moduleId ?? "", last]);
        }
      }
    }
    const worker = async () => {
      while (own.length) {
        const [id, module, start] = own.shift();
        if (await this.api.history(id, module, start, rawTo, apply)) partial += 1;
      }
    };
    await Promise.all(Array.from({ length: HISTORY_CONCURRENCY }, worker));
    return partial;
  }

  /** The range's rollup step and the span `[start, until)` rollups cover, or null (raw only). */
  rollupWindow(now) {
    const roll = ROLLUP_STEPS[this.range];
    if (!roll) return null;
    return {
      roll,
      start: Math.ceil(this.grid.startMs / roll.ms) * roll.ms,
      until: Math.floor(now / roll.ms) * roll.ms - roll.ms,
    };
  }

  /**
   * The range's older history from the sink's rollups (every stream in one request), up to
   * the start of the step before the current one; raw readings fill in from there. A 404
   * (a sink without the route) turns rollups off: raw history for the whole range.
   */
  async loadRollups(gen, span) {
    if (!span) {
      this.rolledUpGeneration = gen;
      return null;
    }
    const { roll, start, until } = span;
    const streams = await this.api.rollups(roll.step, start, until);
    if (gen !== this.generation) return null;
    this.rolledUpGeneration = gen;
    if (streams === null) {
      this.rollupsRoute = false;
      return null;
    }
    for (const item of streams) {
      if (!item || typeof item !== "object" || item.deviceId === undefined) continue;
      const s = this.stream(item);
      s.rollupUntil = until;
      if (Array.isArray(item.ts)) s.series.addRollupColumns(item.ts, item.metrics, start, until);
      for (const p of Array.isArray(item.points) ? item.points : []) {
        const ms = p && typeof p === "object" ? Date.parse(p.ts) : NaN;
        if (Number.isFinite(ms) && ms >= start && ms < until) s.series.addRollup(ms, p);
      }
    }
    this.scheduleRebuild();
    return until;
  }

  onMessage(data) {
    if (!data || typeof data !== "object" || data.type !== "readings") return;
    if (this.syncing) {
      if (this.pending.length >= MAX_PENDING) this.syncAgain = true;
      else this.pending.push(data);
      return;
    }
    this.applyMessage(data);
  }

  drainPending() {
    const pending = this.pending;
    this.pending = [];
    for (const data of pending) this.applyMessage(data);
  }

  applyMessage(data) {
    if (data.devices && typeof data.devices === "object") {
      for (const state of Object.values(data.devices)) {
        if (state && state.deviceId !== undefined) this.applyState(state);
      }
    }
    if (Array.isArray(data.readings)) for (const r of data.readings) this.applyReading(r);
  }

  stream(item) {
    const key = streamKey(item);
    let s = this.streams.get(key);
    if (!s) {
      s = new Stream(key, item, this.grid);
      this.streams.set(key, s);
      s.tile = new Tile(s, (st) => this.exportCsv(st));
      this.placeTile(s);
      this.streamsChanged = true;
    }
    return s;
  }

  placeTile(s) {
    const keys = [...this.streams.keys()].sort();
    const next = keys[keys.indexOf(s.key) + 1];
    const before = next === undefined ? null : this.streams.get(next).tile.root;
    this.tilesEl.insertBefore(s.tile.root, before && before.parentNode ? before : null);
    document.getElementById("empty").hidden = true;
  }

  applyState(state) {
    const s = this.stream(state);
    s.state = state;
    this.touchTile(s);
  }

  applyReading(r) {
    if (!r || typeof r !== "object" || r.deviceId === undefined) return;
    const ms = Date.parse(r.ts);
    if (!Number.isFinite(ms)) return;
    const s = this.stream(r);
    if (!s.seen.accept(r.boot, r.seq, ms)) {
      this.duplicatesDropped += 1;
      return;
    }
    s.interval.note(ms);
    if (s.lastMs === null || ms > s.lastMs) s.lastMs = ms;
    if (s.latestMs === null || ms >= s.latestMs) {
      s.latest = r;
      s.latestMs = ms;
    }
    const rolledUp = s.rollupUntil !== null && ms < s.rollupUntil;
    if (!rolledUp && s.series.add(ms, r)) {
      for (const q of QUANTITIES) if (valueOf(q, r) !== null) this.touchChart(q.key);
    }
    this.touchTile(s);
  }

  touchChart(key) {
    if (this.streamsChanged || !this.chartKeys.includes(key)) {
      this.scheduleRebuild();
      return;
    }
    this.charts.touch(key);
  }

  scheduleRebuild() {
    if (this.rebuildTimer) return;
    this.rebuildTimer = setTimeout(() => {
      this.rebuildTimer = 0;
      this.rebuildCharts();
    }, 100);
  }

  shownQuantities() {
    return QUANTITIES.filter(
      (q) => q.always || [...this.streams.values()].some((s) => s.series.present.has(q.key)),
    );
  }

  rebuildCharts() {
    this.streamsChanged = false;
    const list = [...this.streams.values()].sort((a, b) => (a.key < b.key ? -1 : 1));
    const quantities = this.shownQuantities();
    this.chartKeys = quantities.map((q) => q.key);
    this.charts.rebuild(this.grid, quantities, list);
    this.maybeRendered();
  }

  touchTile(s) {
    this.frames.queue(s, () => s.tile.update(QUANTITIES, Date.now()));
  }

  tick() {
    const now = Date.now();
    if (this.grid.advance(now)) this.charts.touch();
    for (const s of this.streams.values()) {
      this.frames.queue(`tick:${s.key}`, () => s.tile.tick(Date.now()));
    }
  }

  /** `data-rendered` on body once loaded and every tile and chart is drawn (tests, bench). */
  maybeRendered() {
    const done =
      !this.syncing &&
      !this.rebuildTimer &&
      !this.streamsChanged &&
      !this.frames.pending &&
      document.body.dataset.synced === "true";
    if (done && document.body.dataset.rendered !== "true") {
      document.body.dataset.rendered = "true";
      if (!this.markedFirst) performance.mark("enviromon:rendered");
      this.markedFirst = true;
    }
  }

  exportCsv(stream) {
    const quantities = this.shownQuantities();
    const text = toCsv(stream, quantities, stream.series.rows());
    download(fileName(stream.key, this.range), text);
  }
}

new App().start();
