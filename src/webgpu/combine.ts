/**
 * WebGPU glue of the `combine` family (a composite's gradients combined where they are):
 * src/webgpu/combine.wgsl, one job per sum and one per expert of the gated ensemble's
 * vector-Jacobian product, all in the composite's submission (src/webgpu/composite.ts). Host
 * arrays are combined on the host (`src/reference/combine.ts`).
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { CombineProblem } from "../kernels/combine.ts";
import { combine as hostCombine } from "../reference/combine.ts";
import { DeviceValues, onDevice } from "../validate.ts";
import { holdsDevice } from "../kernels/core.ts";
import type { GpuContext, KernelName } from "./context.ts";
import { type Buffers, job, type PassJob, type Planner, solve } from "./passes.ts";

/** The combine family on the WebGPU backend: on the GPU for GPU values, else on the host. */
export const combine = (ctx: GpuContext, p: CombineProblem): Raw | Promise<Raw> =>
  holdsDevice(p) ? solve(ctx, p, planCombine) : hostCombine(p);

/** The buffer of values (uploaded when on the host). */
const gpu = (bufs: Buffers, x: Float32Array) => bufs.input(x)!;

/** Plans the combination: one job per sum and per expert. */
export const planCombine: Planner<CombineProblem> = (ctx, p, bufs) => {
  ctx.check();
  const jobs: PassJob<KernelName>[] = p.sums.map(([into, from]) => {
    const n = onDevice(into) ? into.shape[0] * into.shape[1] : into.length;
    return job({
      kernel: "combine",
      params: { n },
      layout: "rrrww",
      bindings: [gpu(bufs, from), null, null, gpu(bufs, into), null],
      dispatches: [["add", Math.min(Math.ceil(n / 256), 1024)]],
      reads: [],
    });
  });
  const q = p.gated;
  let gg: GPUBuffer | null = null;
  if (q) {
    gg = (q.out as { buffer?: GPUBuffer } | null)?.buffer ?? ctx.buffer(q.b * q.e * 4);
    for (let k = 0; k < q.e; k++) {
      jobs.push(job({
        kernel: "combine",
        params: { b: q.b, c: q.c, e: q.e, k },
        layout: "rrrww",
        bindings: [gpu(bufs, q.dFine), gpu(bufs, q.logits[k]), gpu(bufs, q.gating), gpu(bufs, q.into[k]), gg],
        dispatches: [["gated", q.b]],
        reads: [],
      }));
    }
  }
  const grads: Record<string, Float32Array> = gg && q
    ? { gating: new DeviceValues(gg, [q.b, q.e]) as unknown as Float32Array }
    : {};
  return { jobs, values: grads, finish: () => ({ rows: [], grads }) };
};
