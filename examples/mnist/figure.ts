/**
 * The demo's figure: one panel per loss and dimension of the normalised test features,
 * coloured by class (the picture of the L-Softmax and SphereFace papers), as SVG, and
 * rendered to PNG by resvg (`@resvg/resvg-wasm`) with the DejaVu fonts of
 * `dejavu-fonts-ttf`.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { initWasm, Resvg } from "@resvg/resvg-wasm";
import { Rng } from "../../tests/helpers/random.ts";
import { normalise } from "./geometry.ts";

/** One panel: a run's test features and what its title says. */
export interface Panel {
  title: string;
  /** The numbers under the title. */
  subtitle: string;
  dim: number;
  features: Float32Array;
  labels: Int32Array;
  /** Each class's mean direction, `[classes, dim]` unit vectors. */
  centres: Float64Array;
}

/** Tableau's ten colours (matplotlib's default cycle), one per digit. */
export const COLOURS = [
  "#1f77b4",
  "#ff7f0e",
  "#2ca02c",
  "#d62728",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#7f7f7f",
  "#bcbd22",
  "#17becf",
];

const PANEL = 250, RADIUS = 92, TOP = 70, LEFT = 34, LEGEND = 64;
const f1 = (v: number) => v.toFixed(1);
const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");

/** The SVG of a grid of panels, `rows[r][c]`, with a title, row labels, a legend and a caption. */
export function figureSvg(rows: Panel[][], title: string, caption: readonly string[]): string {
  const cols = Math.max(...rows.map((r) => r.length));
  const width = Math.max(LEFT + cols * PANEL + 10, 760),
    height = TOP + rows.length * (PANEL + 40) + LEGEND + 18 * caption.length;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="30" font-size="20" font-weight="bold" text-anchor="middle">${esc(title)}</text>`,
  ];
  rows.forEach((row, r) => {
    const y0 = TOP + r * (PANEL + 40);
    const label = row[0] ? `${row[0].dim}-D features` : "";
    out.push(
      `<text transform="translate(${LEFT - 12} ${
        y0 + PANEL / 2 + 20
      }) rotate(-90)" font-size="15" font-weight="bold" text-anchor="middle">${label}</text>`,
    );
    row.forEach((p, c) => out.push(panelSvg(p, LEFT + c * PANEL, y0)));
  });
  const ly = TOP + rows.length * (PANEL + 40) + 18;
  const step = 58, lx = width / 2 - (COLOURS.length * step) / 2;
  out.push(`<text x="${lx - 10}" y="${ly + 5}" font-size="14" text-anchor="end">digit</text>`);
  COLOURS.forEach((colour, d) => {
    out.push(`<circle cx="${lx + d * step + 8}" cy="${ly}" r="7" fill="${colour}"/>`);
    out.push(`<text x="${lx + d * step + 20}" y="${ly + 5}" font-size="14">${d}</text>`);
  });
  caption.forEach((line, i) => {
    out.push(`<text x="${LEFT}" y="${ly + 36 + 18 * i}" font-size="12.5" fill="#333">${esc(line)}</text>`);
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}

/**
 * One panel. 2-D: every feature on the unit circle at its angle, the radius jittered
 * inward by up to 20 % so that dense classes show their spread. 3-D: an orthographic
 * view of the unit sphere from the direction that shows the most class means, the far
 * hemisphere faded. A class's digit is written at its mean direction.
 */
function panelSvg(p: Panel, x0: number, y0: number): string {
  const cx = x0 + PANEL / 2, cy = y0 + 46 + RADIUS + 8;
  const n = p.labels.length, unit = normalise(p.features, p.dim);
  const project = p.dim === 2 ? (v: ArrayLike<number>, i: number) => [v[i], v[i + 1], 1] : view(p.centres);
  const rng = new Rng(7);
  // One path per class and side: each dot a zero-length segment with a round cap.
  const paths = COLOURS.map(() => ({ front: [] as string[], back: [] as string[] }));
  for (let i = 0; i < n; i++) {
    const [u, v, depth] = project(unit, i * p.dim);
    const r = p.dim === 2 ? RADIUS * (1 - 0.2 * rng.next()) : RADIUS;
    (depth >= 0 ? paths[p.labels[i]].front : paths[p.labels[i]].back).push(`M${f1(cx + r * u)} ${f1(cy - r * v)}h0`);
  }
  const out = [
    `<text x="${cx}" y="${y0 + 18}" font-size="15" font-weight="bold" text-anchor="middle">${esc(p.title)}</text>`,
    `<text x="${cx}" y="${y0 + 37}" font-size="11.5" fill="#333" text-anchor="middle">${esc(p.subtitle)}</text>`,
    `<circle cx="${cx}" cy="${cy}" r="${RADIUS}" fill="${
      p.dim === 2 ? "none" : "#f4f4f4"
    }" stroke="#999" stroke-width="1"/>`,
  ];
  paths.forEach(({ back }, c) => {
    if (back.length) {
      out.push(
        `<path d="${back.join("")}" stroke="${
          COLOURS[c]
        }" stroke-opacity="0.18" stroke-width="3" stroke-linecap="round"/>`,
      );
    }
  });
  paths.forEach(({ front }, c) => {
    if (front.length) {
      out.push(
        `<path d="${front.join("")}" stroke="${
          COLOURS[c]
        }" stroke-opacity="0.75" stroke-width="3" stroke-linecap="round"/>`,
      );
    }
  });
  for (let c = 0; c < COLOURS.length; c++) {
    const [u, v, depth] = project(p.centres, c * p.dim);
    if (depth < 0.2) continue; // a label on the far side would sit on top of the near side's dots
    const r = RADIUS + 13;
    out.push(
      `<text x="${f1(cx + r * u)}" y="${f1(cy - r * v + 5)}" font-size="14" font-weight="bold" fill="${
        COLOURS[c]
      }" text-anchor="middle">${c}</text>`,
    );
  }
  return out.join("\n");
}

/**
 * The orthographic view of the sphere that shows the most class means on the near side
 * (then the largest sum of their depths), from 400 candidate directions of a Fibonacci
 * lattice: returns the projection `[screen x, screen y, depth]` of a unit vector.
 */
function view(centres: Float64Array): (v: ArrayLike<number>, i: number) => number[] {
  const k = centres.length / 3, golden = Math.PI * (3 - Math.sqrt(5));
  let best = [0, 0, 1], bestScore = -Infinity;
  for (let j = 0; j < 400; j++) {
    const z = 1 - (2 * j + 1) / 400, r = Math.sqrt(1 - z * z);
    const w = [r * Math.cos(golden * j), r * Math.sin(golden * j), z];
    let visible = 0, sum = 0;
    for (let c = 0; c < k; c++) {
      const d = centres[3 * c] * w[0] + centres[3 * c + 1] * w[1] + centres[3 * c + 2] * w[2];
      if (d > 0.2) visible++;
      sum += Math.max(0, d);
    }
    if (visible + sum / k > bestScore) bestScore = visible + sum / k, best = w;
  }
  const w = best;
  // Screen axes: u = normalise(up x w) with up = z (or x when w is nearly z), v = w x u.
  const up = Math.abs(w[2]) > 0.9 ? [1, 0, 0] : [0, 0, 1];
  let u = [up[1] * w[2] - up[2] * w[1], up[2] * w[0] - up[0] * w[2], up[0] * w[1] - up[1] * w[0]];
  const nu = Math.hypot(u[0], u[1], u[2]);
  u = u.map((a) => a / nu);
  const v = [w[1] * u[2] - w[2] * u[1], w[2] * u[0] - w[0] * u[2], w[0] * u[1] - w[1] * u[0]];
  const dot = (a: number[], p: ArrayLike<number>, i: number) => a[0] * p[i] + a[1] * p[i + 1] + a[2] * p[i + 2];
  return (p, i) => [dot(u, p, i), dot(v, p, i), dot(w, p, i)];
}

let ready: Promise<void> | undefined;

/** Renders an SVG to PNG at `zoom` times its size, with the DejaVu Sans fonts. */
export async function renderPng(svg: string, zoom = 2): Promise<Uint8Array> {
  const modules = new URL("../../node_modules/", import.meta.url);
  ready ??= initWasm(readFileSync(new URL("@resvg/resvg-wasm/index_bg.wasm", modules)));
  await ready;
  const fontBuffers = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf"].map((f) =>
    new Uint8Array(readFileSync(new URL(`dejavu-fonts-ttf/ttf/${f}`, modules)))
  );
  const resvg = new Resvg(svg, {
    font: { fontBuffers, defaultFontFamily: "DejaVu Sans", sansSerifFamily: "DejaVu Sans" },
    fitTo: { mode: "zoom", value: zoom },
    background: "white",
  });
  const png = resvg.render().asPng();
  resvg.free();
  return png;
}
