/**
 * WebGPU glue of `hnmContrastive`: src/webgpu/hnm_contrastive.wgsl, a workgroup per logit (the
 * k + 1 prototype cosines of each row in float pairs), one per row (the row loss and its
 * coefficients), one invocation per entry of the gradient of f; one submission and one readback.
 *
 * @module
 */
import { columns, type Raw, then } from "../kernels/core.ts";
import type { HnmProblem } from "../kernels/hnm.ts";
import { onDevice } from "../validate.ts";
import { checkOut, F, type GpuContext } from "./context.ts";
import { fits, gradOf, runPass, withBuffers } from "./passes.ts";
import { checkLoops } from "./loops.ts";

/** `hnmContrastive` on the GPU. */
export function hnm(ctx: GpuContext, p: HnmProblem): Raw | Promise<Raw> {
  ctx.check();
  const { b, c, d, k } = p;
  fits(ctx, "f", b * d);
  fits(ctx, "prototypes", c * d);
  fits(ctx, "the rows' logits and coefficients", b * (5 * (k + 1) + 2));
  // (src/webgpu/loops.ts: an entry of the gradient goes through the row's k negatives)
  checkLoops(ctx, k + 8, `k (${k}) for hnmContrastive's gradient`);
  if (b > ctx.maxGroups) throw new RangeError(`Expected at most ${ctx.maxGroups} rows on this WebGPU device, got ${b}`);
  if (k + 1 > ctx.maxGroups) {
    throw new RangeError(`Expected at most ${ctx.maxGroups - 1} hard negatives a row on this WebGPU device, got ${k}`);
  }
  const resident = onDevice(p.f) || onDevice(p.prototypes);
  checkOut("f", p.out as { buffer?: unknown } | null, resident);
  return withBuffers(ctx, (bufs) => {
    const ints = new Int32Array(b * (k + 1));
    ints.set(p.labels);
    ints.set(p.hard, b);
    const scales = new Float32Array(b);
    if (p.grad) scales.set(p.scales);
    const rows = bufs.scratch(b * 4);
    const g = p.grad ? bufs.output(resident, p.out as { buffer?: GPUBuffer } | null, Math.max(4, b * d * 4)) : null;
    const host = p.grad && !resident;
    return then(
      runPass(ctx, bufs, {
        kernel: "hnm_contrastive",
        params: { b, c, d, k, flags: p.grad ? F.GRAD : 0, zero: 0, inv_t: 1 / p.temperature },
        layout: "rrrrwww",
        bindings: [
          bufs.input(p.f),
          bufs.input(p.prototypes),
          bufs.input(ints),
          bufs.input(scales),
          bufs.scratch(b * (5 * (k + 1) + 2) * 4),
          rows,
          g,
        ],
        dispatches: [["cosines", k + 1, b], ["rows", b], ["grad", p.grad ? Math.ceil(d / 64) : 0, b]],
        reads: [[rows, b * 4], [g ?? rows, host ? b * d * 4 : 0]],
      }),
      ([rowOut, hg]): Raw => {
        const loss = columns(rowOut, b, 1)[0];
        if (!g) return { rows: [loss], grads: {} };
        return { rows: [loss], grads: { f: gradOf(resident, g, [b, d], hg, p.out) } };
      },
    );
  });
}
