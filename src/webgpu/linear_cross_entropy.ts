/**
 * WebGPU glue of `linearCrossEntropy` (the `linearCe` family; src/webgpu/linear_cross_entropy.wgsl
 * and linear_cross_entropy_mm.wgsl): the classes in chunks of at most `CHUNK` (a multiple of 64,
 * the `[N, chunk]` block of logit pairs within 16 MiB), so the `[N, V]` logits never exist; extra memory
 * O(N chunk + N D). One job (compute pass) per chunk and phase, all in one submission:
 *  1. per chunk `dots` (the logits' block, x W_J^T + b_J) and `stats` (merged into each row's
 *     running (max, non-label sum-exp, smoothing sum), as shards merge); `finish` after the
 *     last: the row losses, z-loss terms, correct rows and lse;
 *  2. (gradients) per chunk `dots` again and `grad` (du in place of the block), then its
 *     products: dX += du W_J (two-float across chunks), dW_J = du^T X, db_J = column sums.
 * One readback (the per-row values, and the gradients of host inputs); with `readback: false`
 * the per-row values stay on the GPU and the loss's finish step reduces them there. W and dW
 * are bound a chunk's rows at a time (W may exceed one storage binding). With `classes` and W
 * or bias on the GPU, their rows are gathered on the GPU first (copies of runs of classes).
 *
 * Precision: the logits are pairs (hi, lo): a tile whose logits can be large (max ||x_i|| max ||W_j||
 * + max |b_j| > 256 over its rows and classes, as the CPU's precise mode) takes its dot products in
 * double-float32, and every difference of two logits is formed from their pairs (with a cap, as
 * the cap's difference c tanh((a - b) / c) (1 - tanh(a / c) tanh(b / c))), so logits to |1e4|
 * meet SPEC's bound (no precise tiles where a cap of at most 256 bounds the logits). dX is summed in two-float across
 * chunks, dW in float32 per block of 256 rows and those blocks' products in two-float (docs/LOSSES.md), db in two-float.
 *
 * @module
 */
import { columns, type Raw } from "../kernels/core.ts";
import type { LinearCeProblem } from "../kernels/linear_ce.ts";
import { PRECISE_ABOVE } from "../kernels/head.ts";
import { DeviceValues, onDevice } from "../validate.ts";
import { checkOut, type GpuContext, type KernelName, type Params } from "./context.ts";
import { type Dispatch, fits, gradOf, job, type PassJob, type Planner, solve } from "./passes.ts";
import { DEPTH_WINDOW, ROW_RANGE } from "./loops.ts";

/** The most classes per chunk. */
const CHUNK = 4096;
/** Bytes of the [N, chunk] block aimed for. */
const BLOCK_BYTES = 1 << 24;
/** Per-row values of st (src/webgpu/linear_ce_params.wgsl's LCE_RS); the row loss, z term and correct at 6, 7, 8. */
const RS = 14;

/** `linearCrossEntropy` on the GPU. */
export const linearCe = (ctx: GpuContext, p: LinearCeProblem): Raw | Promise<Raw> => solve(ctx, p, planLinearCe);

/** The runs of consecutive classes of a sorted list: [first class, first index, length]. */
function runs(rows: Int32Array): [number, number, number][] {
  const out: [number, number, number][] = [];
  rows.forEach((k, r) => {
    const last = out.at(-1);
    if (last && last[0] + last[2] === k) last[2]++;
    else out.push([k, r, 1]);
  });
  return out;
}

/** Plans `linearCrossEntropy`: a job per chunk and phase. */
export const planLinearCe: Planner<LinearCeProblem> = (ctx, p, bufs) => {
  ctx.check();
  const { n, d, c } = p;
  const resident = onDevice(p.x) || onDevice(p.W) || onDevice(p.bias);
  checkOut("x", p.outX as { buffer?: unknown } | null, resident);
  checkOut("W", p.outW as { buffer?: unknown } | null, resident);
  fits(ctx, `x [${n}, ${d}]`, n * d);
  const tiles = (x: number) => Math.ceil(x / 64);
  const fit = (bytes: number) => Math.floor(bytes / 64) * 64;
  const chunk = Math.min(CHUNK, tiles(c) * 64, Math.max(64, fit(BLOCK_BYTES / (8 * n))), fit(ctx.maxBinding / (4 * d)));
  if (chunk < 64 || n * chunk * 8 > ctx.maxBinding) {
    fits(ctx, `a block of 64 classes (pairs) of x [${n}, ${d}]`, n * 128);
  }
  if (chunk < 64) fits(ctx, `64 rows of W [${c}, ${d}]`, 64 * d);
  if (tiles(n) > ctx.maxGroups) {
    throw new RangeError(`Expected x to have at most ${ctx.maxGroups * 64} rows on WebGPU, got ${n}`);
  }
  // (src/webgpu/loops.ts: the logits' tiles go through D by windows of DEPTH_WINDOW, one dispatch each)
  const windows = Math.ceil(d / DEPTH_WINDOW);
  const X = bufs.input(p.x)!;
  let W = bufs.input(p.W)!, B = bufs.input(p.bias);
  // With classes and W or bias on the GPU: their classes' rows gathered into buffers of their own.
  const gathers: [GPUBuffer, GPUBuffer, number][] = [];
  if (p.rows) {
    const gather = (from: GPUBuffer, width: number) => {
      const to = bufs.scratch(c * width * 4);
      gathers.push([from, to, width]);
      return to;
    };
    W = gather(W, d);
    B = B && gather(B, 1);
  }
  const weight = p.weight ? bufs.temp(ctx.upload(p.weight)) : null;
  // rin [N, 3]: the label (i32 bits), s_i, zs_i.
  const rin = new Float32Array(3 * n), labels = new Int32Array(rin.buffer);
  for (let i = 0; i < n; i++) {
    labels[3 * i] = p.labels[i];
    if (p.grad) [rin[3 * i + 1], rin[3 * i + 2]] = [p.scales[i], p.zLoss ? p.zScales[i] : 0];
  }
  const Rin = bufs.temp(ctx.upload(rin));
  const S = bufs.scratch(n * chunk * 8), st = bufs.scratch(n * RS * 4);
  const gx = p.grad ? bufs.output(resident, p.outX as { buffer?: GPUBuffer } | null, n * d * 4) : null;
  const gxlo = p.grad ? bufs.scratch(n * d * 4) : null;
  const gw = p.grad ? bufs.output(resident, p.outW as { buffer?: GPUBuffer } | null, c * d * 4) : null;
  const gb = p.grad && p.bias ? bufs.output(resident, null, c * 4) : null;
  let wAll = c;
  if (p.weight) wAll = p.weight.reduce((a, w) => a + w, 0);
  const base: Params<"linear_cross_entropy"> = {
    n,
    c,
    d,
    has_bias: p.bias ? 1 : 0,
    has_weight: p.weight ? 1 : 0,
    eps: p.smoothing,
    softcap: p.softcap,
    zloss: p.zLoss,
    wall: wAll,
    // Tiles whose logits can exceed PRECISE_ABOVE take their dot products in pairs (none where a cap bounds the logits).
    // (by windows of D: a window's share of it)
    bound: p.softcap && p.softcap <= PRECISE_ABOVE ? 3e38 : PRECISE_ABOVE / windows,
    r0: 0,
    rn: n,
  };
  // dW's and db's sums by ranges of rows (src/webgpu/loops.ts), their pairs kept between ranges in gwlo.
  const ranges = Math.ceil(n / ROW_RANGE);
  const gwlo = p.grad && ranges > 1 ? bufs.scratch((chunk * d + chunk) * 4) : null;
  const rowGroups = Math.min(n, ctx.maxGroups);
  const jobs: PassJob<KernelName>[] = [];
  const win = (b: GPUBuffer, j0: number, cols: number): GPUBufferBinding => ({
    buffer: b,
    offset: j0 * d * 4,
    size: cols * d * 4,
  });
  const pass = (phase: 1 | 2) => {
    let wseen = 0;
    for (let j0 = 0; j0 < c; j0 += chunk) {
      const cols = Math.min(chunk, c - j0), last = j0 + cols >= c;
      const params = { ...base, j0, cols, first: j0 === 0 ? 1 : 0, wseen };
      if (p.weight) { for (let j = j0; j < j0 + cols; j++) wseen += p.weight[j]; }
      else wseen += cols;
      const dots: Dispatch = ["dots", tiles(n), tiles(cols)];
      const window = (w: number) => ({ k0: w * DEPTH_WINDOW, kn: Math.min(DEPTH_WINDOW, d - w * DEPTH_WINDOW) });
      const bindings = [X, win(W, j0, cols), B, weight, Rin, S, st];
      for (let w = 0; w < windows - 1; w++) {
        jobs.push(
          job({
            kernel: "linear_cross_entropy",
            params: { ...params, ...window(w) },
            layout: "rrrrrww",
            bindings,
            dispatches: [dots],
            reads: [],
          }),
        );
      }
      jobs.push(job({
        kernel: "linear_cross_entropy",
        params: { ...params, ...window(windows - 1) },
        layout: "rrrrrww",
        bindings,
        dispatches: phase === 1
          ? [dots, ["stats", rowGroups], ...(last ? [["finish", tiles(n)] as Dispatch] : [])]
          : [dots, ["grad", tiles(cols), rowGroups]],
        reads: [],
      }));
      if (phase === 1) continue;
      const sums: Dispatch[] = [
        ["grad_w", tiles(cols), tiles(d)],
        ...(gb ? [["grad_b", tiles(cols)] as Dispatch] : []),
      ];
      for (let r = 0; r < ranges; r++) {
        const r0 = r * ROW_RANGE;
        jobs.push(job({
          kernel: "linear_cross_entropy_mm",
          params: { ...params, r0, rn: Math.min(ROW_RANGE, n - r0) },
          layout: "rrrwwwww",
          bindings: [S, X, win(W, j0, cols), gx, gxlo, win(gw!, j0, cols), gb, gwlo],
          dispatches: r > 0 ? sums : [
            ["grad_x", tiles(n), tiles(d)],
            ...sums,
            ...(last ? [["fin_x", Math.min(tiles(n * d), ctx.maxGroups)] as Dispatch] : []),
          ],
          reads: [],
        }));
      }
    }
  };
  pass(1);
  if (p.grad) pass(2);
  if (gathers.length > 0) {
    jobs[0].before = (enc) => {
      for (const [from, to, width] of gathers) {
        for (const [k, r, len] of runs(p.rows!)) {
          enc.copyBufferToBuffer(from, k * width * 4, to, r * width * 4, len * width * 4);
        }
      }
    };
  }
  const host = p.grad && !resident;
  jobs[jobs.length - 1].reads = [
    [st, n * RS * 4],
    [gx ?? st, host ? n * d * 4 : 0],
    [gw ?? st, host ? c * d * 4 : 0],
    [gb ?? st, host && gb ? c * 4 : 0],
  ];
  return {
    jobs,
    values: {},
    finish: (reads) => {
      const [values, hx, hw, hb] = reads[reads.length - 1];
      const raw: Raw = { rows: columns(values, n, RS, 6).slice(0, 3), grads: {} };
      if (!p.grad) return raw;
      raw.grads = {
        x: gradOf(resident, gx!, [n, d], hx, p.outX),
        W: gradOf(resident, gw!, [c, d], hw, p.outW),
      };
      if (gb) {
        const wide = onDevice(p.bias) && p.bias.shape[0] === 1 && c > 1;
        const host = p.outBias ?? new Float32Array(c);
        if (!resident) host.set(hb);
        raw.grads.bias = resident ? new DeviceValues(gb, wide ? [1, c] : [c, 1]) as unknown as Float32Array : host;
      }
      return raw;
    },
  };
};
