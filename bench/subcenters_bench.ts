/**
 * `arcface` on cosines with `subcenters` (SPEC §7) on the WebAssembly backend, valueAndGrad: the
 * sub-centre maximum runs inside the fused row kernel, so K = 1 must cost what it cost before the
 * option (run with `--baseline DIR`, a checkout before it: the ratio `arcface K=1` / `base arcface
 * K=1`), and K = 3 with C/3 classes (the same [N, C] cosines) about what K = 1 with C classes does.
 * See bench/README.md.
 *
 * ```sh
 * deno run -A bench/subcenters_bench.ts [--quick] [--baseline DIR] [--json out.json]
 * ```
 *
 * @module
 */
import type { Contender, Lib, Shape } from "./engine.ts";
import { labelsOf, lossCall, mulberry32, run, uniform } from "./engine.ts";

type Ctx = { n: number; c: number; cos: Float32Array; labels: Int32Array; labels3: Int32Array };

/** Cosines U(-1, 1) `[N, C]` (C a multiple of 3), labels of C and of C / 3 classes. */
function context([n, c]: Shape): Ctx {
  const rand = mulberry32(n + c);
  return { n, c, cos: uniform(rand, n * c), labels: labelsOf(rand, n, c), labels3: labelsOf(rand, n, c / 3) };
}

function library(lib: Lib): Contender<Ctx>[] {
  const contender = (k: number): Contender<Ctx> => ({
    name: `arcface K=${k}`,
    group: `K${k}`,
    ratioTo: "arcface K=1",
    setup(ctx, mode) {
      const inputs = { cos: { data: ctx.cos, shape: [ctx.n, ctx.c] }, labels: k === 1 ? ctx.labels : ctx.labels3 };
      return {
        run: lossCall(lib.cpu.wasm.arcface, mode, inputs, { scale: 64, ...(k > 1 ? { subcenters: k } : {}) }, ["cos"]),
      };
    },
  });
  // (the baseline checkout has no `subcenters`)
  return lib.tag === "" ? [contender(1), contender(3)] : [contender(1)];
}

await run<Ctx>(() => ({
  name: "subcenters",
  title: "arcface on cosines [N, C] with subcenters K = 1 (C classes) and K = 3 (C / 3 classes), s = 64, wasm",
  modes: ["valueAndGrad", "forward"],
  defaultModes: ["valueAndGrad"],
  shapes: { default: [[256, 3000], [256, 30000]], quick: [[256, 3000]] },
  timing: {
    default: { rounds: 21, roundTime: 0.3, warmupTime: 0.3, slowBudget: 20, minSamples: 1, skipAbove: 30 },
    quick: { rounds: 5, roundTime: 0.2, slowBudget: 5, skipAbove: 10 },
  },
  work: ([n, c]) => n * c,
  unit: ["Gvalues/s", 1e9],
  library,
  contenders: [],
  context,
  baseline: "arcface K=1",
}));
