/**
 * `marginHead` with the face margin kinds of SPEC §7 (`adaface`, `curricularFace`, `magface`)
 * against the ArcFace head (s = 64, defaults otherwise), from embeddings x [N, D] and weights
 * W [C, D] (U(-1, 1)), WebAssembly backend, valueAndGrad: the ratio of each to `arcface`
 * (target <= 1.1: the per-row targets and the non-target transform cost little next to the
 * GEMMs). See bench/README.md.
 *
 * ```sh
 * deno run -A bench/face_head_bench.ts [--quick | --full] [--json out.json]
 * ```
 *
 * @module
 */
import type { Matrix } from "../cpu.ts";
import type { Contender, Lib, Shape } from "./engine.ts";
import { labelsOf, lossCall, mulberry32, run, uniform } from "./engine.ts";

type Ctx = { n: number; d: number; c: number; x: Float32Array; W: Float32Array; labels: Int32Array };

const KINDS = {
  arcface: [{}, {}],
  adaface: [{ state: { mean: 20, std: 100 } }, {}],
  curricularFace: [{ state: { t: 0.2 } }, {}],
  // the norms of U(-1, 1) rows of 512 are about 13: inside MagFace's [10, 110]
  magface: [{}, {}],
} as const;

/**
 * W U(-1, 1); each x_i its label's row plus as much noise (label cosines about 0.7, the others
 * about 0, as in training: a random x would make nearly every class a hard negative of CurricularFace).
 */
function context([n, d, c]: Shape): Ctx {
  const rand = mulberry32(c + d);
  const W = uniform(rand, c * d), labels = labelsOf(rand, n, c), noise = uniform(rand, n * d);
  const x = Float32Array.from(noise, (e, q) => W[labels[Math.floor(q / d)] * d + (q % d)] + e);
  return { n, d, c, x, W, labels };
}

function library(lib: Lib): Contender<Ctx>[] {
  return Object.entries(KINDS).map(([kind, [inputs, options]]) => ({
    name: kind,
    group: "head",
    ratioTo: "arcface",
    setup(ctx, mode) {
      const { n, d, c } = ctx, m = (data: Float32Array, rows: number): Matrix => ({ data, shape: [rows, d] });
      const all = { x: m(ctx.x, n), W: m(ctx.W, c), labels: ctx.labels, ...inputs };
      return { run: lossCall(lib.cpu.wasm.marginHead, mode, all, { kind, scale: 64, ...options }, ["x", "W"]) };
    },
  }));
}

await run<Ctx>(() => ({
  name: "face_head",
  title: "marginHead kinds adaface, curricularFace, magface against arcface (s = 64), x [N, D], W [C, D], wasm",
  modes: ["valueAndGrad", "forward"],
  defaultModes: ["valueAndGrad"],
  shapes: { default: [[256, 512, 100000]], quick: [[256, 512, 10000]], full: [[256, 512, 10000], [256, 512, 100000]] },
  timing: {
    default: { rounds: 3, roundTime: 0.5, warmupTime: 0.3, slowBudget: 30, minSamples: 1, skipAbove: 60 },
    quick: { rounds: 2, roundTime: 0.2, slowBudget: 5, skipAbove: 10 },
  },
  work: ([n, d, c], mode) => (mode === "valueAndGrad" ? 6 : 2) * n * d * c,
  unit: ["GFLOP/s", 1e9],
  library,
  contenders: [],
  context,
  baseline: "arcface",
}));
