// Pure parts of the page, under node's own test runner (run by tests/dashboard/test_units.py).
import assert from "node:assert/strict";
import { test } from "node:test";
import { field, toCsv } from "../src/csv.js";
import { absoluteHumidity, dewPoint, MAGNUS } from "../src/derived.js";
import { formatValue, METRICS, QUANTITIES } from "../src/metrics.js";
import { Grid, IntervalEstimate, Seen, StreamSeries, streamKey } from "../src/series.js";
import { isStale, relative, STALE_UNKNOWN_MS } from "../src/tiles.js";

const close = (a, b, eps) => assert.ok(Math.abs(a - b) < eps, `${a} !~ ${b}`);

test("dew point and absolute humidity match published values", () => {
  assert.deepEqual({ ...MAGNUS }, { a: 17.625, b: 243.04, c: 6.1094 });
  close(dewPoint(20, 50), 9.26, 0.02); // psychrometric tables: 9.3 °C
  close(dewPoint(25, 100), 25, 1e-9); // saturated air: dew point = temperature
  close(dewPoint(0, 80), -2.99, 0.05);
  close(absoluteHumidity(20, 50), 8.65, 0.05); // 17.3 g/m³ saturated at 20 °C, halved
  close(absoluteHumidity(30, 100), 30.3, 0.2);
  for (const [t, rh] of [[null, 50], [20, null], [20, 0], [20, -1], [20, 101], [NaN, 50], [-250, 50]]) {
    assert.equal(dewPoint(t, rh), null);
    assert.equal(absoluteHumidity(t, rh), null);
  }
});

test("dew point never exceeds temperature and rises with humidity", () => {
  for (let t = -30; t <= 50; t += 5) {
    let prev = -Infinity;
    for (let rh = 5; rh <= 100; rh += 5) {
      const td = dewPoint(t, rh);
      assert.ok(td <= t + 1e-9 && td > prev);
      prev = td;
    }
  }
});

test("labels, units and decimals come from the metrics table", () => {
  const temp = METRICS.find((m) => m.key === "temperature");
  assert.equal(temp.unit, "°C");
  assert.equal(formatValue(temp, 21.456), "21.46");
  assert.equal(formatValue(temp, null), "—");
  assert.ok(QUANTITIES.some((q) => q.key === "dewPoint"));
  assert.ok(METRICS.some((m) => m.key === "light" && !m.always));
});

test("the grid is bounded and slides with time", () => {
  const g = new Grid({ rangeMs: 3600e3, nowMs: 1e12, points: 720 });
  const s = new StreamSeries(g);
  assert.equal(g.step, 5000);
  assert.ok(s.add(1e12, { temperature: 20, humidity: 50 }));
  assert.ok(s.add(1e12 + 1, { temperature: 22, humidity: 50 }));
  assert.equal(s.mean.get("temperature")[719], 21);
  assert.equal(s.cnt[719], 2);
  assert.equal(s.add(1e12 - 3600e3 - 5000, { temperature: 1 }), false);
  g.advance(1e12 + 10_000);
  assert.equal(g.x.length, 720);
  assert.equal(s.mean.get("temperature").length, 720);
  assert.equal(s.mean.get("temperature")[717], 21);
  assert.equal(s.mean.get("temperature")[719], null); // the new buckets start empty
  assert.equal(s.cnt[719], 0);
  assert.equal(s.sum.get("temperature")[719], 0);
  assert.equal(g.x[719] - g.x[718], 5); // seconds, one step apart
  g.advance(1e12 + 10 * 3600e3); // far ahead: everything old is gone, still 720 long
  assert.equal(s.mean.get("temperature").length, 720);
  assert.ok(s.mean.get("temperature").every((v) => v === null));
  assert.equal(g.indexOf(1e12 + 10 * 3600e3), 719);
});

test("seen marks drop readings applied before, per boot", () => {
  const seen = new Seen();
  assert.ok(seen.accept("b1", 1, 10));
  assert.ok(seen.accept("b1", 2, 20));
  assert.equal(seen.accept("b1", 2, 20), false);
  assert.equal(seen.accept("b1", 1, 10), false);
  assert.ok(seen.accept("b2", 1, 30));
  assert.equal(seen.accept("b1", 2, 20), false);
  assert.ok(seen.accept("~hub", null, 5));
  assert.equal(seen.accept("~hub", null, 5), false);
  for (let i = 0; i < 20; i++) seen.accept(`x${i}`, 1, 1);
  assert.ok(seen.boots.size <= 16);
});

test("interval estimate is the median gap; stale after three of them", () => {
  const est = new IntervalEstimate();
  assert.equal(est.ms, null);
  for (const t of [0, 10e3, 20e3, 30e3, 300e3, 310e3]) est.note(t);
  assert.equal(est.ms, 10e3);
  assert.equal(isStale(340e3, 310e3, 10e3), false);
  assert.equal(isStale(340_001, 310e3, 10e3), true);
  assert.equal(isStale(STALE_UNKNOWN_MS, 0, null), false);
  assert.equal(isStale(STALE_UNKNOWN_MS + 1, 0, null), true);
  assert.equal(relative(65e3), "1 min ago");
});

test("streams are keyed by streamId when present, else device id", () => {
  assert.equal(streamKey({ deviceId: "pi", streamId: "pi/enviro" }), "pi/enviro");
  assert.equal(streamKey({ deviceId: "pi", streamId: null }), "pi");
});

test("csv fields are quoted and formulas defused", () => {
  assert.equal(field('a,"b"'), '"a,""b"""');
  assert.equal(field("=cmd()"), "'=cmd()");
  assert.equal(field(-1.5), "-1.5");
  const csv = toCsv({ key: "k", deviceId: "=x", moduleId: null }, [METRICS[0]], [
    { ms: 0, readings: 1, values: { temperature: 21 } },
  ]);
  assert.equal(csv, "time,stream,deviceId,moduleId,readings,temperature (°C)\r\n1970-01-01T00:00:00.000Z,k,'=x,,1,21.00\r\n");
});

test("a rollup point counts as its n readings at its mean, merged with raw ones", () => {
  const g = new Grid({ rangeMs: 720e3, nowMs: 720e3 - 1, points: 720 });
  const s = new StreamSeries(g);
  const mean = (v, n) => ({ min: v - 1, mean: v, max: v + 1, n });
  assert.equal(s.addRollup(10e3, { ts: "x", temperature: mean(20, 3), humidity: mean(50, 2) }), true);
  s.add(10e3, { temperature: 24, humidity: 50 });
  const [row] = s.rows();
  assert.equal(row.readings, 4);
  close(row.values.temperature, (20 * 3 + 24) / 4, 1e-9);
  close(row.values.humidity, 50, 1e-9);
  assert.equal(s.addRollup(10e3, { temperature: { mean: 1, n: 0 } }), false);
  assert.equal(s.addRollup(-1e9, { temperature: mean(20, 3) }), false);
});
