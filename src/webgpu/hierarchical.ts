/**
 * WebGPU glue of `hierarchical`: src/webgpu/hierarchical.wgsl, one workgroup per row (the coarse
 * cross-entropy, then the cross-entropy over the true group's children), one submission
 * and one readback.
 *
 * @module
 */
import { columns, type Raw } from "../kernels/core.ts";
import type { HierarchicalProblem } from "../kernels/hierarchical.ts";
import { onDevice } from "../validate.ts";
import { checkOut, F, type GpuContext } from "./context.ts";
import { fits, gradOf, job, type Planner, solve } from "./passes.ts";

/** `hierarchical` on the GPU. */
export const hierarchical = (ctx: GpuContext, p: HierarchicalProblem): Raw | Promise<Raw> =>
  solve(ctx, p, planHierarchical);

/** Plans `hierarchical` (one job). */
export const planHierarchical: Planner<HierarchicalProblem> = (ctx, p, bufs, force) => {
  ctx.check();
  const { b, k, c } = p;
  fits(ctx, "coarse", b * k);
  fits(ctx, "fine", b * c);
  if (b > ctx.maxGroups) throw new RangeError(`Expected at most ${ctx.maxGroups} rows on this WebGPU device, got ${b}`);
  const resident = force || onDevice(p.coarse) || onDevice(p.fine);
  checkOut("coarse", p.outCoarse as { buffer?: unknown } | null, resident);
  checkOut("fine", p.outFine as { buffer?: unknown } | null, resident);
  // labels, coarse labels, start, children, and the coarse class of each fine class.
  const ints = new Int32Array(2 * b + k + 1 + 2 * c);
  ints.set(p.labels);
  ints.set(p.coarseLabels, b);
  ints.set(p.start, 2 * b);
  ints.set(p.children, 2 * b + k + 1);
  const f2c = ints.subarray(2 * b + k + 1 + c);
  for (let g = 0; g < k; g++) for (let q = p.start[g]; q < p.start[g + 1]; q++) f2c[p.children[q]] = g;
  const scales = new Float32Array(b);
  if (p.grad) scales.set(p.scales);
  const rows = bufs.scratch(2 * b * 4);
  const gc = p.grad ? bufs.output(resident, p.outCoarse as { buffer?: GPUBuffer } | null, b * k * 4) : null;
  const gf = p.grad ? bufs.output(resident, p.outFine as { buffer?: GPUBuffer } | null, b * c * 4) : null;
  const host = p.grad && !resident;
  const pass = job({
    kernel: "hierarchical",
    params: { b, k, c, flags: p.grad ? F.GRAD : 0 },
    layout: "rrrrwww",
    bindings: [bufs.input(p.coarse), bufs.input(p.fine), bufs.input(ints), bufs.input(scales), rows, gc, gf],
    dispatches: [["rows", b]],
    reads: [[rows, 2 * b * 4], [gc ?? rows, host ? b * k * 4 : 0], [gf ?? rows, host ? b * c * 4 : 0]],
  });
  const grads = (hc?: Float32Array, hf?: Float32Array): Record<string, Float32Array> =>
    !gc || !gf ? {} : {
      coarse: gradOf(resident, gc, [b, k], hc, p.outCoarse),
      fine: gradOf(resident, gf, [b, c], hf, p.outFine),
    };
  return {
    jobs: [pass],
    values: resident ? grads() : {},
    finish: ([[rowOut, hc, hf]]) => ({
      rows: [columns(rowOut, b, 1)[0], columns(rowOut, b, 1, b)[0]],
      grads: grads(hc, hf),
    }),
  };
};
