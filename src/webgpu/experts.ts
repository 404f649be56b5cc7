/**
 * WebGPU glue of the `experts` family (`mixOutputs`, `iclMoe`, physMoe's expert terms):
 * src/webgpu/experts.wgsl, one pass of five dispatches (the gated ensemble, each expert's softmax
 * statistics with its CE/focal and collaboration terms, the pairs, the gradient weights
 * of `ExpertWeights` evaluated on the GPU from the CE means, the gradients), one
 * submission and one readback. The experts' logits are stacked in one buffer (GPU-resident
 * ones copied in by the same submission), and so are their gradients (copied out to one
 * buffer per expert when they stay on the GPU).
 *
 * @module
 */
import { columns, type Raw } from "../kernels/core.ts";
import type { ExpertsProblem } from "../kernels/experts.ts";
import { DeviceValues, onDevice } from "../validate.ts";
import { checkOut, F, type GpuContext } from "./context.ts";
import { fits, job, type Planner, solve } from "./passes.ts";

/** Floats of each (row, expert) record of the statistics (src/webgpu/experts.wgsl's `ST`). */
const ST = 16;

/** The experts family on the GPU. */
export const experts = (ctx: GpuContext, p: ExpertsProblem): Raw | Promise<Raw> => solve(ctx, p, planExperts);

/** Plans the experts family (one job). */
export const planExperts: Planner<ExpertsProblem> = (ctx, p, bufs, force) => {
  ctx.check();
  const { e, b, c } = p;
  const m = b * c;
  fits(ctx, "expertLogits (the experts stacked)", e * m);
  fits(ctx, "the experts' statistics", b * e * ST + e);
  if (b > ctx.maxGroups) throw new RangeError(`Expected at most ${ctx.maxGroups} rows on this WebGPU device, got ${b}`);
  const resident = force || p.logits.some(onDevice) || onDevice(p.gating);
  p.outs.forEach((o, k) => checkOut(`expertLogits[${k}]`, o as { buffer?: unknown } | null, resident));
  // The stack: host experts written into it, GPU-resident ones copied in before the pass.
  const z = bufs.scratch(Math.max(4, e * m * 4));
  p.logits.forEach((x, k) => {
    if (!onDevice(x)) ctx.device.queue.writeBuffer(z, k * m * 4, x.buffer as ArrayBuffer, x.byteOffset, m * 4);
  });
  const vals = new Float32Array(e + (p.shift ? c : 0));
  vals.set(p.gamma);
  if (p.shift) vals.set(p.shift, e);
  // The gated ensemble (scratch: a composite's later term reads it in the same submission),
  // or the mean logits (a result of the call: its own buffer when it stays on the GPU).
  if (p.gating && p.mean) throw new TypeError("Expected an experts problem with a gating or the mean logits, got both");
  const ens = p.gating ? bufs.scratch(m * 4) : p.mean ? (resident ? ctx.buffer(m * 4) : bufs.scratch(m * 4)) : null;
  const rows = bufs.scratch((2 * e + 1) * b * 4);
  const g = p.grad ? bufs.scratch(e * m * 4) : null;
  const outs = p.grad && resident
    ? p.outs.map((o) => (o as { buffer?: GPUBuffer } | null)?.buffer ?? ctx.buffer(m * 4))
    : [];
  const host = !resident;
  const w = p.weights;
  const pass = job({
    kernel: "experts",
    params: {
      e,
      b,
      c,
      flags: p.grad ? F.GRAD : 0,
      has_shift: p.shift ? 1 : 0,
      has_gating: p.gating ? 1 : 0,
      pairs: p.pairs ? 1 : 0,
      mean: p.mean ? 1 : 0,
      ce_w: w.ce,
      parallel: w.parallel,
      eps: w.eps,
      col_w: w.col,
      pairs_w: w.pairs,
    },
    layout: "rrrrwwww",
    bindings: [
      z,
      bufs.input(p.gating),
      bufs.input(vals),
      bufs.input(p.labels),
      ens,
      bufs.scratch((b * e * ST + e) * 4),
      rows,
      g,
    ],
    dispatches: [
      ["ensemble", ens ? b : 0],
      ["stats", b, e],
      ["pairs", p.pairs ? b : 0],
      ["weights", g ? 1 : 0],
      ["grads", g ? b : 0, e],
    ],
    reads: [
      [rows, (2 * e + 1) * b * 4],
      [g ?? rows, g && host ? e * m * 4 : 0],
      [ens ?? rows, ens && host ? m * 4 : 0],
    ],
    before: (enc) =>
      p.logits.forEach((x, k) => {
        if (onDevice(x)) enc.copyBufferToBuffer(x.buffer, 0, z, k * m * 4, m * 4);
      }),
    after: (enc) => outs.forEach((o, k) => enc.copyBufferToBuffer(g!, k * m * 4, o, 0, m * 4)),
  });
  const onGpu = (): Record<string, Float32Array> => {
    const out: Record<string, Float32Array> = {};
    outs.forEach((o, k) => (out[`expertLogits.${k}`] = new DeviceValues(o, [b, c]) as unknown as Float32Array));
    return out;
  };
  const key = p.gating ? "ensemble" : "meanLogits";
  const ensemble = ens && resident ? { [key]: new DeviceValues(ens, [b, c]) as unknown as Float32Array } : null;
  return {
    jobs: [pass],
    values: resident ? { ...onGpu(), ...ensemble } : {},
    finish: ([[r, hg, he]]) => {
      const part = (k: number) => columns(r, b, 1, k * b)[0];
      const ce = Array.from({ length: e }, (_, k) => part(k));
      const col = Array.from({ length: e }, (_, k) => part(e + k));
      const pairs = p.pairs ? part(2 * e) : new Float64Array(b);
      let grads: Record<string, Float32Array> = {};
      if (g && resident) grads = onGpu();
      else if (g) {
        p.logits.forEach((_, k) => {
          const out = p.outs[k]?.data ?? new Float32Array(m);
          out.set(hg.subarray(k * m, (k + 1) * m));
          grads[`expertLogits.${k}`] = out;
        });
      }
      const outputs = ensemble ?? (ens ? { [key]: he.slice() } : undefined);
      return { rows: [...ce, ...col, pairs], grads, outputs };
    },
  };
};
