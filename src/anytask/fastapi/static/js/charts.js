// Hand-drawn SVG charts. Colours come from CSS classes (see app.css); only geometry is
// set here, through setAttribute.
import { h, parseTime, s } from "./dom.js";

const MARGIN = { top: 12, right: 12, bottom: 26, left: 40 };

function niceMax(value) {
  // the charts count tasks: the top is a multiple of 4, so that the four grid lines fall
  // on whole numbers (a top of 5 labelled them 1.3, 2.5 and 3.8)
  if (value <= 4) return 4;
  if (value < 40) return Math.ceil(value / 4) * 4;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [2, 4, 8, 10]) {
    if (step * magnitude >= value) return step * magnitude;
  }
  return 10 * magnitude;
}

function timeLabel(iso, spanSeconds) {
  const date = parseTime(iso);
  if (!date) return "";
  const opts =
    spanSeconds > 86400 * 1.5
      ? { month: "short", day: "numeric" }
      : { hour: "2-digit", minute: "2-digit" };
  return new Intl.DateTimeFormat(undefined, opts).format(date);
}

function frame(width, height, maxValue, series, spanSeconds, label) {
  const svg = s("svg", {
    class: "chart",
    width,
    height,
    viewBox: "0 0 " + width + " " + height,
    role: "img",
    "aria-label": label,
  });
  svg.append(s("title", null, label));
  const plotH = height - MARGIN.top - MARGIN.bottom;
  const plotW = width - MARGIN.left - MARGIN.right;
  const ticks = 4;
  for (let i = 0; i <= ticks; i += 1) {
    const value = (maxValue / ticks) * i;
    const y = MARGIN.top + plotH - (plotH * i) / ticks;
    svg.append(
      s("line", { class: "grid", x1: MARGIN.left, x2: width - MARGIN.right, y1: y, y2: y }),
      s(
        "text",
        { class: "axis-label", x: MARGIN.left - 6, y: y + 4, "text-anchor": "end" },
        String(Math.round(value * 10) / 10),
      ),
    );
  }
  const n = series.length;
  const every = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(plotW / 70))));
  for (let i = 0; i < n; i += every) {
    const x = MARGIN.left + (plotW * (i + 0.5)) / n;
    svg.append(
      s(
        "text",
        { class: "axis-label", x, y: height - 8, "text-anchor": "middle" },
        timeLabel(series[i].start, spanSeconds),
      ),
    );
  }
  return { svg, plotH, plotW };
}

/** Stacked bars: success / failed / other per bucket. */
export function throughputChart(series, { width, height = 220, spanSeconds = 3600 } = {}) {
  const totals = series.map((b) => (b.success || 0) + (b.failed || 0) + (b.other || 0));
  const maxValue = niceMax(Math.max(0, ...totals));
  const { svg, plotH, plotW } = frame(
    width,
    height,
    maxValue,
    series,
    spanSeconds,
    "Finished tasks over time",
  );
  const n = Math.max(1, series.length);
  const slot = plotW / n;
  const barW = Math.max(1, slot * 0.72);
  series.forEach((bucket, i) => {
    const group = s("g", { class: "bar-group" });
    const x = MARGIN.left + slot * i + (slot - barW) / 2;
    let y = MARGIN.top + plotH;
    for (const key of ["success", "failed", "other"]) {
      const value = bucket[key] || 0;
      if (!value) continue;
      const barH = (plotH * value) / maxValue;
      y -= barH;
      group.append(s("rect", { class: "bar bar-" + key, x, y, width: barW, height: barH }));
    }
    group.append(
      s(
        "title",
        null,
        timeLabel(bucket.start, 0) +
          ": " +
          (bucket.success || 0) +
          " success, " +
          (bucket.failed || 0) +
          " failed, " +
          (bucket.other || 0) +
          " other",
      ),
    );
    // an invisible full-height target so the tooltip works on empty buckets too
    group.prepend(
      s("rect", {
        class: "bar-hit",
        x: MARGIN.left + slot * i,
        y: MARGIN.top,
        width: slot,
        height: plotH,
      }),
    );
    svg.append(group);
  });
  return svg;
}

/** A line (with area) of failures per bucket. */
export function failuresChart(series, { width, height = 160, spanSeconds = 3600 } = {}) {
  const values = series.map((b) => b.failed || 0);
  const maxValue = niceMax(Math.max(0, ...values));
  const { svg, plotH, plotW } = frame(
    width,
    height,
    maxValue,
    series,
    spanSeconds,
    "Failures over time",
  );
  const n = Math.max(1, series.length);
  const points = values.map((v, i) => [
    MARGIN.left + (plotW * (i + 0.5)) / n,
    MARGIN.top + plotH - (plotH * v) / maxValue,
  ]);
  if (points.length) {
    const line = points.map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" ");
    const base = MARGIN.top + plotH;
    const area =
      points[0][0].toFixed(1) +
      "," +
      base +
      " " +
      line +
      " " +
      points[points.length - 1][0].toFixed(1) +
      "," +
      base;
    svg.append(
      s("polygon", { class: "area-failed", points: area }),
      s("polyline", { class: "line-failed", points: line }),
    );
    points.forEach(([x, y], i) => {
      svg.append(
        s(
          "circle",
          { class: "dot-failed", cx: x, cy: y, r: values[i] ? 3 : 1.5 },
          s("title", null, timeLabel(series[i].start, 0) + ": " + values[i] + " failed"),
        ),
      );
    });
  }
  return svg;
}

/** Small horizontal bars for p50/p95/p99 of one task name, scaled to `max` seconds. */
export function percentileBars(row, max, width = 140) {
  const scale = (v) => (max > 0 && v ? Math.max(1, (width * v) / max) : 0);
  return s(
    "svg",
    {
      class: "pbars",
      width,
      height: 16,
      viewBox: "0 0 " + width + " 16",
      role: "img",
      "aria-label": "p50, p95 and p99 relative to the slowest task",
    },
    s("rect", { class: "pbar pbar-p99", x: 0, y: 2, width: scale(row.p99), height: 12 }),
    s("rect", { class: "pbar pbar-p95", x: 0, y: 2, width: scale(row.p95), height: 12 }),
    s("rect", { class: "pbar pbar-p50", x: 0, y: 2, width: scale(row.p50), height: 12 }),
  );
}

export function legend(items) {
  return h(
    "ul",
    { class: "legend" },
    items.map(([cls, label]) =>
      h(
        "li",
        null,
        s(
          "svg",
          { width: 12, height: 12, "aria-hidden": "true" },
          s("rect", { class: cls, width: 12, height: 12, rx: 2 }),
        ),
        " ",
        label,
      ),
    ),
  );
}
