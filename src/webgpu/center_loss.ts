/**
 * WebGPU glue of `centerLoss`: src/webgpu/center_loss.wgsl, one pass (the rows and the gradient
 * of x, then each class centre's gradient over its rows; one more per ROW_RANGE rows of the largest
 * class past the first), one submission and one readback.
 *
 * @module
 */
import { columns, type Raw, then } from "../kernels/core.ts";
import type { CenterProblem } from "../kernels/center.ts";
import { onDevice } from "../validate.ts";
import { checkOut, F, type GpuContext } from "./context.ts";
import { byClass, fits, gradOf, job, runJobsNow, withBuffers } from "./passes.ts";
import { ROW_RANGE } from "./loops.ts";

/** `centerLoss` on the GPU. */
export function center(ctx: GpuContext, p: CenterProblem): Raw | Promise<Raw> {
  ctx.check();
  const { n, c, d } = p;
  fits(ctx, "x", n * d);
  fits(ctx, "centers", c * d);
  for (const [what, count] of [["rows of x", n], ["classes", c]] as const) {
    if (count > ctx.maxGroups) {
      throw new RangeError(`Expected at most ${ctx.maxGroups} ${what} on this WebGPU device, got ${count}`);
    }
  }
  const resident = onDevice(p.x) || onDevice(p.centers);
  checkOut("x", p.outX as { buffer?: unknown } | null, resident);
  checkOut("centers", p.outCenters as { buffer?: unknown } | null, resident);
  return withBuffers(ctx, (bufs) => {
    // (src/webgpu/loops.ts: `class_grad` goes through its class's rows by ranges of ROW_RANGE, one dispatch each)
    const { ints, most } = byClass(p.labels, c);
    const ranges = p.grad ? Math.max(1, Math.ceil(most / ROW_RANGE)) : 1;
    const scales = new Float32Array(n);
    if (p.grad) scales.set(p.scales);
    const rows = bufs.temp(ctx.buffer(n * 4));
    const gx = p.grad ? bufs.output(resident, p.outX as { buffer?: GPUBuffer } | null, n * d * 4) : null;
    const gc = p.grad ? bufs.output(resident, p.outCenters as { buffer?: GPUBuffer } | null, c * d * 4) : null;
    const host = p.grad && !resident;
    const bindings = [bufs.input(p.x), bufs.input(p.centers), bufs.input(ints), bufs.input(scales), rows, gx, gc];
    const jobs = Array.from({ length: ranges }, (_, r) =>
      job({
        kernel: "center_loss",
        params: { n, c, d, flags: p.grad ? F.GRAD : 0, r0: r * ROW_RANGE, rn: ROW_RANGE },
        layout: "rrrrwww",
        bindings,
        // (A dispatch of no workgroups is left out.)
        dispatches: [["rows", r === 0 ? n : 0], ["class_grad", gc ? c : 0, Math.ceil(d / 256)]],
        reads: [],
      }));
    jobs[ranges - 1].reads = [[rows, n * 4], [gx ?? rows, host ? n * d * 4 : 0], [gc ?? rows, host ? c * d * 4 : 0]];
    return then(
      runJobsNow(ctx, bufs, jobs),
      (reads): Raw => {
        const [rowOut, hx, hc] = reads[ranges - 1];
        const loss = columns(rowOut, n, 1)[0];
        if (!gx || !gc) return { rows: [loss], grads: {} };
        return {
          rows: [loss],
          grads: {
            x: gradOf(resident, gx, [n, d], hx, p.outX),
            centers: gradOf(resident, gc, [c, d], hc, p.outCenters),
          },
        };
      },
    );
  });
}
