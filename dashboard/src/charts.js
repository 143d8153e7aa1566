// One uPlot chart per quantity, one line per stream, on the shared time grid.
// Redraws are spread out: at most one chart per animation frame, so a busy second of live
// readings never becomes one long main-thread task.

import uPlot from "uplot";
import { formatValue } from "./metrics.js";

const HEIGHT = 180;

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/** A colour per stream index, spread around the hue circle, readable on either theme. */
export function streamColour(i) {
  const dark = matchMedia("(prefers-color-scheme: dark)").matches;
  const hue = Math.round((i * 137.508) % 360);
  return `hsl(${hue} 70% ${dark ? 65 : 38}%)`;
}

const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
const plain = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

/** Axis labels short enough for the axis: 1.2K, 150K, 1013, 21.5. */
export function tickLabel(v) {
  return Math.abs(v) >= 10000 ? compact.format(v) : plain.format(v);
}

export class Charts {
  constructor(container, frames) {
    this.container = container;
    this.frames = frames;
    this.charts = new Map(); // quantity key → {q, figure, plot}
    this.resize = new ResizeObserver(() => this.fit());
    this.resize.observe(container);
  }

  /** Build the charts for `quantities` over `streams` (array of {key, name, series}). */
  rebuild(grid, quantities, streams) {
    for (const c of this.charts.values()) c.plot.destroy();
    this.charts.clear();
    this.container.replaceChildren();
    this.grid = grid;
    this.streams = streams;
    const axis = cssVar("--fg") || "#222";
    const gridLine = cssVar("--grid") || "#ccc";
    const width = this.width();
    for (const q of quantities) {
      const figure = document.createElement("figure");
      figure.className = "chart";
      figure.id = `chart-${q.key}`;
      const caption = document.createElement("figcaption");
      caption.textContent = `${q.label} (${q.unit})`;
      const holder = document.createElement("div");
      holder.setAttribute("role", "img");
      holder.setAttribute("aria-label", `${q.label} in ${q.unit}, one line per stream`);
      figure.append(caption, holder);
      this.container.append(figure);
      const series = [
        {},
        ...streams.map((s, i) => ({
          label: s.name,
          stroke: streamColour(i),
          width: 1,
          // Buckets narrower than a stream's interval leave empty ones between readings:
          // join across them (a stream that stops shows as the line ending, and its tile
          // turns stale).
          spanGaps: true,
          points: { show: false },
          value: (_u, v) => formatValue(q, v),
        })),
      ];
      const plot = new uPlot(
        {
          width,
          height: HEIGHT,
          series,
          legend: { live: true },
          cursor: { drag: { x: false, y: false } },
          scales: { x: { time: true } },
          axes: [
            { stroke: axis, grid: { stroke: gridLine, width: 1 }, ticks: { stroke: gridLine } },
            {
              stroke: axis,
              grid: { stroke: gridLine, width: 1 },
              ticks: { stroke: gridLine },
              size: 64,
              values: (_u, ticks) => ticks.map((v) => tickLabel(v)),
            },
          ],
        },
        this.data(q),
        holder,
      );
      this.charts.set(q.key, { q, figure, plot });
      this.count(q.key);
    }
  }

  data(q) {
    return [this.grid.x, ...this.streams.map((s) => s.series.mean.get(q.key))];
  }

  width() {
    return Math.max(240, Math.floor(this.container.clientWidth) - 2);
  }

  fit() {
    const width = this.width();
    for (const c of this.charts.values()) {
      if (c.plot.width !== width) c.plot.setSize({ width, height: HEIGHT });
    }
  }

  /** Ask for a redraw of `key` (or every chart), one chart per queued job. */
  touch(key) {
    const keys = key === undefined ? [...this.charts.keys()] : [key];
    for (const k of keys) {
      if (this.charts.has(k)) this.frames.queue(`chart:${k}`, () => this.draw(k));
    }
  }

  draw(key) {
    const c = this.charts.get(key);
    if (!c) return;
    // In a batch uPlot draws before returning (otherwise in a microtask after the frame's
    // whole job run, where several charts' draws add up into one long task the budget of
    // frames.js never sees).
    c.plot.batch(() => c.plot.setData(this.data(c.q)));
    this.count(key);
  }

  /** `data-points` on each figure: the points it draws (read by tests and the bench). */
  count(key) {
    const c = this.charts.get(key);
    let n = 0;
    for (const s of this.streams) for (const v of s.series.mean.get(key)) if (v !== null) n++;
    c.figure.dataset.points = String(n);
  }
}
