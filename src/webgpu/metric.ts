/**
 * WebGPU glue of the `metric` family (`ntXent`, `tripletMargin`, `multiSimilarity`,
 * `proxyAnchor`; src/webgpu/metric.wgsl): one pass of seven dispatches (the rows normalised,
 * the similarities by the tiled product, one workgroup per anchor row for its loss terms,
 * the mining and the derivatives A, the loss and its denominator reduced on the GPU, the
 * gradients by the tiled product and through the normalisation), one submission and one
 * readback of the loss (and of host gradients). GPU-resident inputs are bound in place and
 * their gradients stay on the GPU; with `readback: false` the loss does too (SPEC §10).
 *
 * @module
 */
import { columns, type Raw } from "../kernels/core.ts";
import { type MetricProblem, MINING_CODES } from "../kernels/metric.ts";
import { onDevice } from "../validate.ts";
import { checkOut, type GpuContext } from "./context.ts";
import { fits, gradOf, job, type Planner, solve } from "./passes.ts";
import { checkLoops } from "./loops.ts";

/** The loss codes of src/webgpu/metric.wgsl. */
const LOSS_CODES = { ntXent: 0, tripletMargin: 1, multiSimilarity: 2, proxyAnchor: 3 } as const;

/** Above this 1/t (ntXent), alpha or beta (multiSimilarity), alpha (proxyAnchor), the exponents are taken in float pairs (src/webgpu/metric.wgsl). */
const PRECISE_ABOVE = 64;

/** The scale of the problem's exponents (1/t, alpha, beta; 0 for tripletMargin). */
const sharpness = (p: MetricProblem): number =>
  p.loss === "ntXent"
    ? 1 / p.temperature
    : p.loss === "multiSimilarity"
    ? Math.max(p.alpha, p.beta)
    : p.loss === "proxyAnchor"
    ? p.alpha
    : 0;

/** The `metric` family on the GPU. */
export const metric = (ctx: GpuContext, p: MetricProblem): Raw | Promise<Raw> => solve(ctx, p, planMetric);

/** Plans a loss of the `metric` family (one job). */
export const planMetric: Planner<MetricProblem> = (ctx, p, bufs, force) => {
  ctx.check();
  const { b, d, c } = p;
  const proxy = p.loss === "proxyAnchor", triplet = p.loss === "tripletMargin";
  const cols = proxy ? c : b;
  fits(ctx, "the similarities of the batch", (triplet ? 2 : 1) * b * cols);
  fits(ctx, "f and the proxies, three times", 3 * (b + c) * d);
  if (b + c > ctx.maxGroups) {
    throw new RangeError(
      `Expected at most ${ctx.maxGroups} rows of f and the proxies on this WebGPU device, got ${b + c}`,
    );
  }
  // (src/webgpu/loops.ts: proxyAnchor's `walk_proxy` goes through the batch three times per proxy, with D per
  // row in the precise mode; ntXent's and multiSimilarity's `walk`, D per pair of rows in it; tripletMargin's
  // `walk`, every anchor's pairs of rows per 256 of them but with batchHard)
  const exact = sharpness(p) > PRECISE_ABOVE;
  if (proxy) {
    checkLoops(
      ctx,
      b * (3 + (exact ? d + 1 : 0)) + 8,
      `B (${b}) for proxyAnchor${exact ? ` times D + 4 (D = ${d})` : ""}`,
    );
  }
  if (exact && !proxy) {
    checkLoops(ctx, Math.ceil(b / 256) * (d + 6) + 64, `ceil(B / 256) (B = ${b}) times D + 6 (D = ${d}) for ${p.loss}`);
  }
  if (triplet && p.mining !== "batchHard") {
    checkLoops(ctx, Math.ceil(b / 256) * (b + 3) + 64, `ceil(B / 256) times B + 3 (B = ${b}) for tripletMargin`);
  }
  const resident = force || onDevice(p.f) || onDevice(p.proxies);
  checkOut("f", p.outF as { buffer?: unknown } | null, resident);
  if (proxy) checkOut("proxies", p.outProxies as { buffer?: unknown } | null, resident);
  const work = bufs.scratch(3 * (b + c) * d * 4), s = bufs.scratch((triplet ? 2 : 1) * b * cols * 4);
  const stats = bufs.temp(ctx.buffer((4 + 4 * (b + c) + 2 * cols) * 4));
  const gf = p.grad ? bufs.output(resident, p.outF as { buffer?: GPUBuffer } | null, b * d * 4) : null;
  const gp = p.grad && proxy ? bufs.output(resident, p.outProxies as { buffer?: GPUBuffer } | null, c * d * 4) : null;
  const tiles = (x: number) => Math.ceil(x / 64), grad = p.grad ? 1 : 0;
  const pass = job({
    kernel: "metric",
    params: {
      b,
      d,
      c,
      cols,
      loss: LOSS_CODES[p.loss],
      mining: MINING_CODES[p.mining],
      soft: p.soft ? 1 : 0,
      exact: exact ? 1 : 0,
      zero: 0,
      margin: p.margin,
      alpha: p.alpha,
      beta: p.beta,
      base: p.base,
      upstream: p.upstream,
      present: p.present,
      inv_t: 1 / p.temperature,
    },
    layout: "rrrwwwww",
    bindings: [bufs.input(p.f), bufs.input(p.proxies), bufs.input(p.labels), work, stats, s, gf, gp],
    // (A dispatch of no workgroups is left out.)
    dispatches: [
      ["norm", tiles(b + c)],
      ["sims", tiles(b), tiles(cols)],
      proxy ? ["walk_proxy", tiles(c)] : ["walk", b],
      ["reduce", 1],
      ["grad", grad * tiles(b), tiles(d)],
      ["grad_p", proxy ? grad * tiles(c) : 0, tiles(d)],
      ["back_h", grad * tiles(b + c), d],
      ["back", grad * tiles(b + c)],
    ],
    reads: [
      [stats, 8],
      [gf ?? stats, gf && !resident ? b * d * 4 : 0],
      [gp ?? stats, gp && !resident ? c * d * 4 : 0],
    ],
  });
  const grads = (hostF?: Float32Array, hostP?: Float32Array): Record<string, Float32Array> => {
    const g: Record<string, Float32Array> = {};
    if (gf) g.f = gradOf(resident, gf, [b, d], hostF, p.outF);
    if (gp) g.proxies = gradOf(resident, gp, [c, d], hostP, p.outProxies);
    return g;
  };
  return {
    jobs: [pass],
    values: resident ? grads() : {},
    finish: ([[res, hostF, hostP]]) => ({ rows: [columns(res, 1, 2)[0]], grads: grads(hostF, hostP) }),
  };
};
