// The sink's REST API (docs/sink-deploy.md): negotiate, devices, history, rollups.

const TIMEOUT_MS = 15000;
const HISTORY_PAGE = 10000; // the API's largest page
/** Raw readings fetched per device and range at most; more is marked as partial. */
export const MAX_ROWS_PER_DEVICE = 50000;

export class ApiError extends Error {}

/** `config.json` beside index.html: `{"apiBaseUrl": "...", "hub": "..."}`, checked. */
export async function loadConfig(url = "config.json") {
  const body = await getJson(new URL(url, document.baseURI).href);
  const base = body && body.apiBaseUrl;
  if (typeof base !== "string" || !/^https?:\/\//.test(base)) {
    throw new ApiError("config.json: apiBaseUrl must be an http(s) URL");
  }
  const hub = body.hub === undefined ? "enviromon" : body.hub;
  if (typeof hub !== "string" || !/^[A-Za-z][A-Za-z0-9_]{0,127}$/.test(hub)) {
    throw new ApiError("config.json: hub must be a Web PubSub hub name");
  }
  return { apiBaseUrl: base.replace(/\/+$/, ""), hub };
}

async function getJson(url) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
  let resp;
  try {
    resp = await fetch(url, { signal: ctl.signal, cache: "no-store", credentials: "omit" });
  } catch (exc) {
    throw new ApiError(`cannot reach ${url}: ${exc.message || exc}`);
  } finally {
    clearTimeout(timer);
  }
  if (!resp.ok) {
    const err = new ApiError(`${url}: HTTP ${resp.status}`);
    err.status = resp.status;
    throw err;
  }
  return resp.json();
}

/** The `streams` list of a route's answer, or null when the sink has no such route (404). */
async function streamsOf(url) {
  let body;
  try {
    body = await getJson(url);
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 404) return null;
    throw exc;
  }
  return Array.isArray(body && body.streams) ? body.streams : [];
}

export class Api {
  constructor({ apiBaseUrl }) {
    this.base = apiBaseUrl;
  }

  /** A fresh receive-only client URL (tokens expire, so every connect asks again). */
  async negotiate() {
    const body = await getJson(`${this.base}/negotiate`);
    if (!body || typeof body.url !== "string" || !/^wss?:\/\//.test(body.url)) {
      throw new ApiError("negotiate returned no WebSocket URL");
    }
    return body.url;
  }

  async devices() {
    const body = await getJson(`${this.base}/devices`);
    return Array.isArray(body && body.devices) ? body.devices : [];
  }

  /**
   * Every stream's rollups (docs/sink.md) of `step` (1m, 15m, 1h) with bucket start in
   * [fromMs, toMs), as columns: `[{streamId, deviceId, moduleId, ts: [...], metrics: {<metric>:
   * {mean: [...], n: [...], ...}}}]` (a sink that predates `shape` sends `points: [{ts,
   * <metric>: {mean, n, ...}}]` instead), or null when the sink has no rollups route (HTTP 404).
   */
  async rollups(step, fromMs, toMs) {
    const q = new URLSearchParams({
      step,
      from: new Date(fromMs).toISOString(),
      to: new Date(toMs).toISOString(),
      shape: "columns",
    });
    return streamsOf(`${this.base}/rollups?${q}`);
  }

  /**
   * Every stream's readings with fromMs <= ts < toMs in one request (`GET /telemetry`):
   * `[{streamId, deviceId, moduleId, readings, continuation}]`, at most HISTORY_PAGE readings
   * per stream (a `continuation` says more remain: fetch them with `history`), or null when
   * the sink has no such route (HTTP 404).
   */
  async everyHistory(fromMs, toMs) {
    const q = new URLSearchParams({
      from: new Date(fromMs).toISOString(),
      to: new Date(toMs).toISOString(),
      limit: String(HISTORY_PAGE),
    });
    return streamsOf(`${this.base}/telemetry?${q}`);
  }

  /**
   * Every reading of one stream — `deviceId` and `moduleId` ("" for the device's own stream)
   * — with fromMs <= ts < toMs, oldest first, page by page (`onPage(readings)`); returns
   * whether it stopped at MAX_ROWS_PER_DEVICE.
   */
  async history(deviceId, moduleId, fromMs, toMs, onPage) {
    let from = fromMs;
    let total = 0;
    for (;;) {
      const q = new URLSearchParams({
        from: new Date(from).toISOString(),
        to: new Date(toMs).toISOString(),
        limit: String(HISTORY_PAGE),
        module: moduleId,
      });
      const url = `${this.base}/devices/${encodeURIComponent(deviceId)}/telemetry?${q}`;
      const body = await getJson(url);
      const rows = Array.isArray(body.readings) ? body.readings : [];
      onPage(rows);
      total += rows.length;
      if (!body.truncated || rows.length === 0) return false;
      if (total >= MAX_ROWS_PER_DEVICE) return true;
      // The next page starts at the last row's time (inclusive): rows sharing that
      // instant come again and are dropped as duplicates by the page's seq marks.
      const last = Date.parse(rows[rows.length - 1].ts);
      if (!(last > from)) return true; // a page of one instant: cannot move on
      from = last;
    }
  }
}
