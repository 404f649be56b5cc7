/**
 * WebGPU glue of `featureDiversity`: src/webgpu/feature_diversity.wgsl, one pass (the pairwise
 * distances of each row, then the gradients), one submission and one readback. The
 * experts' matrices are stacked in one buffer (GPU-resident ones copied in by the same
 * submission), so the kernel binds one storage buffer however many experts there are.
 *
 * @module
 */
import { columns, type Raw, then } from "../kernels/core.ts";
import type { DiversityProblem } from "../kernels/diversity.ts";
import { DeviceValues, onDevice } from "../validate.ts";
import { checkOut, F, type GpuContext } from "./context.ts";
import { fits, runPass, withBuffers } from "./passes.ts";

/** `featureDiversity` on the GPU. */
export function diversity(ctx: GpuContext, p: DiversityProblem): Raw | Promise<Raw> {
  ctx.check();
  const { e, b, d } = p;
  const m = b * d;
  fits(ctx, "features (the experts stacked)", e * m);
  fits(ctx, "the pairwise distances", b * e * e);
  if (b > ctx.maxGroups) throw new RangeError(`Expected at most ${ctx.maxGroups} rows on this WebGPU device, got ${b}`);
  const resident = p.features.some(onDevice);
  p.outs.forEach((o, s) => checkOut(`features[${s}]`, o as { buffer?: unknown } | null, resident));
  return withBuffers(ctx, (bufs) => {
    // The stack: host experts written into it, GPU-resident ones copied in before the pass.
    const feats = bufs.scratch(Math.max(4, e * m * 4));
    p.features.forEach((f, s) => {
      if (!onDevice(f) && m > 0) {
        ctx.device.queue.writeBuffer(feats, s * m * 4, f.buffer as ArrayBuffer, f.byteOffset, m * 4);
      }
    });
    const dist = bufs.scratch(Math.max(4, b * e * e * 4));
    const rows = bufs.scratch(b * 4);
    const g = p.grad ? bufs.scratch(Math.max(4, e * m * 4)) : null;
    const outs = p.grad && resident
      ? p.outs.map((o) => (o as { buffer?: GPUBuffer } | null)?.buffer ?? ctx.buffer(m * 4))
      : [];
    const host = p.grad && !resident;
    return then(
      runPass(ctx, bufs, {
        kernel: "feature_diversity",
        params: { e, b, d, flags: p.grad ? F.GRAD : 0, scale: p.scale },
        layout: "rwww",
        bindings: [feats, dist, rows, g],
        dispatches: [["dists", b], ["grads", g && d > 0 ? b : 0, Math.ceil(d / 256)]],
        reads: [[rows, b * 4], [g ?? rows, host ? e * m * 4 : 0]],
        before: (enc) =>
          p.features.forEach((f, s) => {
            if (onDevice(f) && m > 0) enc.copyBufferToBuffer(f.buffer, 0, feats, s * m * 4, m * 4);
          }),
        after: (enc) => outs.forEach((o, s) => m > 0 && enc.copyBufferToBuffer(g!, s * m * 4, o, 0, m * 4)),
      }),
      ([rowOut, hg]): Raw => {
        const grads: Record<string, Float32Array> = {};
        if (p.grad) {
          for (let s = 0; s < e; s++) {
            if (resident) grads[`features.${s}`] = new DeviceValues(outs[s], [b, d]) as unknown as Float32Array;
            else {
              const out = p.outs[s]?.data ?? new Float32Array(m);
              out.set(hg.subarray(s * m, (s + 1) * m));
              grads[`features.${s}`] = out;
            }
          }
        }
        return { rows: [columns(rowOut, b, 1)[0]], grads };
      },
    );
  });
}
