/**
 * WebGPU glue of `distillation`: src/webgpu/distillation.wgsl.
 *
 * @module
 */
import { columns, type Raw, then } from "../kernels/core.ts";
import type { DistillationProblem } from "../kernels/distill.ts";
import { F, type GpuContext, runRows } from "./context.ts";

/** `distillation` on the GPU: the KL and cross-entropy rows, and the student's gradient. */
export function distill(ctx: GpuContext, p: DistillationProblem): Raw | Promise<Raw> {
  const { n, c } = p;
  let rowIn: Float32Array | null = null;
  if (p.grad) {
    // Per row: the gradient factors of the KL term and of the cross-entropy term.
    rowIn = new Float32Array(2 * n);
    for (let i = 0; i < n; i++) {
      rowIn[2 * i] = p.ka[i];
      rowIn[2 * i + 1] = p.ca[i];
    }
  }
  return then(
    runRows(ctx, {
      kernel: "distillation",
      n,
      c,
      params: { flags: p.grad ? F.GRAD : 0, inv_t: 1 / p.temperature },
      ins: [p.student, p.teacher],
      outs: p.grad ? [{ name: "student", out: p.out }] : [],
      labels: p.labels,
      rowIn,
      rsIn: 2,
      rsOut: 2,
    }),
    ({ rows, outs }): Raw => ({ rows: columns(rows, n, 2), grads: p.grad ? { student: outs[0] } : {} }),
  );
}
