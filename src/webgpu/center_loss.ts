/**
 * WebGPU glue of `centerLoss`: src/webgpu/center_loss.wgsl, one pass (the rows and the gradient
 * of x, then each class centre's gradient over its rows), one submission and one readback.
 *
 * @module
 */
import { columns, type Raw, then } from "../kernels/core.ts";
import type { CenterProblem } from "../kernels/center.ts";
import { onDevice } from "../validate.ts";
import { checkOut, F, type GpuContext } from "./context.ts";
import { fits, gradOf, runPass, withBuffers } from "./passes.ts";
import { checkLoops } from "./loops.ts";

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
    // labels, the rows sorted by class (a counting sort), each class's first index.
    const ints = new Int32Array(2 * n + c + 1);
    ints.set(p.labels);
    for (let i = 0; i < n; i++) ints[2 * n + p.labels[i] + 1]++;
    for (let j = 0; j < c; j++) ints[2 * n + j + 1] += ints[2 * n + j];
    const next = ints.slice(2 * n, 2 * n + c);
    for (let i = 0; i < n; i++) ints[n + next[p.labels[i]]++] = i;
    // (src/webgpu/loops.ts: `class_grad` goes through its class's rows in one invocation)
    let most = 0;
    for (let j = 0; j < c; j++) most = Math.max(most, ints[2 * n + j + 1] - ints[2 * n + j]);
    if (p.grad) checkLoops(ctx, most + 1, `the most rows of one class (${most}) for centerLoss's grads.centers`);
    const scales = new Float32Array(n);
    if (p.grad) scales.set(p.scales);
    const rows = bufs.temp(ctx.buffer(n * 4));
    const gx = p.grad ? bufs.output(resident, p.outX as { buffer?: GPUBuffer } | null, n * d * 4) : null;
    const gc = p.grad ? bufs.output(resident, p.outCenters as { buffer?: GPUBuffer } | null, c * d * 4) : null;
    const host = p.grad && !resident;
    return then(
      runPass(ctx, bufs, {
        kernel: "center_loss",
        params: { n, c, d, flags: p.grad ? F.GRAD : 0 },
        layout: "rrrrwww",
        bindings: [bufs.input(p.x), bufs.input(p.centers), bufs.input(ints), bufs.input(scales), rows, gx, gc],
        // (A dispatch of no workgroups is left out.)
        dispatches: [["rows", n], ["class_grad", gc ? c : 0, Math.ceil(d / 256)]],
        reads: [[rows, n * 4], [gx ?? rows, host ? n * d * 4 : 0], [gc ?? rows, host ? c * d * 4 : 0]],
      }),
      ([rowOut, hx, hc]): Raw => {
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
