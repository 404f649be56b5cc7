/**
 * WebGPU glue of the `metric` family (`ntXent`, `tripletMargin`, `multiSimilarity`,
 * `proxyAnchor`; src/webgpu/metric.wgsl): one pass of seven to ten dispatches (the rows normalised,
 * the similarities by the tiled product, one workgroup per anchor row for its loss terms,
 * the mining and the derivatives A, in stages where one invocation would loop too much, the
 * loss and its denominator reduced on the GPU, the
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

/**
 * The labels, then the rows in the order of their labels (stable), and each row's class as the range
 * [from, to) of that order: tripletMargin's mining goes through an anchor's positives only (src/webgpu/metric.wgsl).
 */
function classRanges(labels: Int32Array): Int32Array {
  const b = labels.length, out = new Int32Array(4 * b);
  out.set(labels);
  const order = Array.from({ length: b }, (_, i) => i).sort((i, j) => labels[i] - labels[j] || i - j);
  out.set(order, b);
  for (let r = 0; r < b;) {
    let e = r;
    while (e < b && labels[order[e]] === labels[order[r]]) e++;
    for (let q = r; q < e; q++) (out[2 * b + order[q]] = r, out[3 * b + order[q]] = e);
    r = e;
  }
  return out;
}

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
  // (src/webgpu/loops.ts: proxyAnchor's `walk_proxy`, a workgroup per proxy, goes through the batch three times
  // per 256 rows; the exact exponents (D per pair of rows) and tripletMargin's mining but batchHard (B per pair) have a pass of their own,
  // `pairs`, between the walk's stages, and tripletMargin's distances (D per near pair) one before, `dist`)
  const exact = sharpness(p) > PRECISE_ABOVE;
  // (`norm` and `back` go through a row twice; proxyAnchor's `grad_p` through the batch, about 1.2 iterations a row:
  // measured, B = 52,000 went, 56,000 did not)
  checkLoops(ctx, 2 * d + 8, `D (${d}) times 2 for ${p.loss}`);
  if (proxy && p.grad) checkLoops(ctx, 1.3 * b, `B (${b}) for proxyAnchor's grads.proxies`);
  const split = exact || (triplet && p.mining !== "batchHard");
  const resident = force || onDevice(p.f) || onDevice(p.proxies);
  checkOut("f", p.outF as { buffer?: unknown } | null, resident);
  if (proxy) checkOut("proxies", p.outProxies as { buffer?: unknown } | null, resident);
  const work = bufs.scratch(3 * (b + c) * d * 4), s = bufs.scratch((triplet ? 2 : 1) * b * cols * 4);
  // (tripletMargin's split mining: the sums of each row's blocks of 256 pairs after the rows')
  const parts = triplet && split ? 2 * b * Math.ceil(b / 256) : 0;
  const stats = bufs.temp(ctx.buffer((4 + 4 * (b + c) + 2 * cols + parts) * 4));
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
    bindings: [
      bufs.input(p.f),
      bufs.input(p.proxies),
      bufs.input(triplet && split ? classRanges(p.labels) : p.labels),
      work,
      stats,
      s,
      gf,
      gp,
    ],
    // (A dispatch of no workgroups is left out.)
    dispatches: [
      ["norm", tiles(b + c)],
      ["sims", tiles(b), tiles(cols)],
      ["dist", triplet ? Math.ceil(b / 256) : 0, b],
      proxy ? ["walk_proxy", c] : ["walk", triplet && split ? 0 : b],
      ["pairs", split ? Math.ceil(cols / 256) : 0, b],
      proxy ? ["walk_proxy_end", split ? c : 0] : ["walk_end", split ? b : 0],
      ["reduce", 1],
      ["grad", grad * tiles(b), tiles(d)],
      ["grad_p", proxy ? grad * tiles(c) : 0, tiles(d)],
      ["back_h", triplet ? grad * tiles(b + c) : 0, d],
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
