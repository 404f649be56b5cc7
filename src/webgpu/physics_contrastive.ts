/**
 * WebGPU glue of `physicsContrastive`: src/webgpu/physics_contrastive.wgsl, one pass of three
 * dispatches (the B x B dots by the heads' tiles, one workgroup per anchor for its loss and
 * coefficients A, the gradient (A + A^T) f by the same tiles), one submission and one
 * readback.
 *
 * @module
 */
import { columns, type Raw } from "../kernels/core.ts";
import type { ContrastiveProblem } from "../kernels/contrastive.ts";
import { onDevice } from "../validate.ts";
import { checkOut, F, type GpuContext } from "./context.ts";
import { fits, gradOf, job, type Planner, solve } from "./passes.ts";

/** `physicsContrastive` on the GPU. */
export const contrastive = (ctx: GpuContext, p: ContrastiveProblem): Raw | Promise<Raw> =>
  solve(ctx, p, planContrastive);

/** Plans `physicsContrastive` (one job). */
export const planContrastive: Planner<ContrastiveProblem> = (ctx, p, bufs, force) => {
  ctx.check();
  const { b, d } = p;
  fits(ctx, "the B x B similarities of physicsContrastive", b * b);
  fits(ctx, "f", b * d);
  if (b > ctx.maxGroups) {
    throw new RangeError(`Expected at most ${ctx.maxGroups} rows of f on this WebGPU device, got ${b}`);
  }
  const resident = force || onDevice(p.f);
  checkOut("f", p.out as { buffer?: unknown } | null, resident);
  // Per anchor: valid, |P_i|, the gradient scale.
  const anchors = new Float32Array(3 * b);
  for (let i = 0; i < b; i++) {
    anchors[3 * i] = p.valid[i];
    anchors[3 * i + 1] = p.positives[i];
    anchors[3 * i + 2] = p.grad ? p.scales[i] : 0;
  }
  const s = bufs.scratch(b * b * 4), rows = bufs.temp(ctx.buffer(b * 8));
  const g = p.grad ? bufs.output(resident, p.out as { buffer?: GPUBuffer } | null, b * d * 4) : null;
  const tiles = Math.ceil(b / 64);
  const pass = job({
    kernel: "physics_contrastive",
    params: {
      b,
      d,
      k: p.rule ? p.k : 0,
      flags: p.grad ? F.GRAD : 0,
      has_rule: p.rule ? 1 : 0,
      inv_tau: 1 / p.temperature,
      threshold: p.threshold,
    },
    layout: "rrrrwww",
    bindings: [bufs.input(p.f), bufs.input(p.labels), bufs.input(p.rule), bufs.input(anchors), s, rows, g],
    // (A dispatch of no workgroups is left out.)
    dispatches: [["gram", tiles, tiles], ["rows", b], ["grad", g ? tiles : 0, Math.ceil(d / 64)]],
    reads: [[rows, b * 8], [g ?? rows, g && !resident ? b * d * 4 : 0]],
  });
  const grads = (host?: Float32Array): Record<string, Float32Array> =>
    g ? { f: gradOf(resident, g, [b, d], host, p.out) } : {};
  return {
    jobs: [pass],
    values: resident ? grads() : {},
    finish: ([[rowOut, host]]) => ({ rows: [columns(rowOut, b, 2)[0]], grads: grads(host) }),
  };
};
