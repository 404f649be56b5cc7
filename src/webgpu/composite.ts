/**
 * A composite loss's terms on the GPU in one submission (`Kernels.composite` of the
 * WebGPU backend for GPU-resident inputs): each term is planned in order (its links bound
 * to the earlier terms' planned buffers: the experts' gated ensemble becomes the
 * hierarchical term's fine logits, the terms' gradients the `combine` term's operands),
 * with every output on the GPU, then all their jobs run in one submission with one
 * readback of the terms' per-row values. Host inputs run the terms one by one
 * (`sequential` in src/loss.ts).
 *
 * @module
 */
import type { CompositeProblem, KernelName } from "../kernels/mod.ts";
import { type Raw, then } from "../kernels/core.ts";
import { linked } from "../kernels/mod.ts";
import type { GpuContext } from "./context.ts";
import { type Plan, type Planner, runJobsNow, withBuffers } from "./passes.ts";

/** The families that can be planned into a shared submission. */
export type Planners = Partial<Record<KernelName, Planner<never>>>;

/** Whether every term of `p` has a planner. */
export const plannable = (p: CompositeProblem, planners: Planners): boolean =>
  p.terms.every((t) => planners[t.kernel] !== undefined);

/**
 * The terms of `p` in one submission and one readback, outputs on the GPU; their raw
 * results (recorded, their per-row values left on the GPU, inside a recorded call).
 */
export function together(ctx: GpuContext, p: CompositeProblem, planners: Planners): Raw[] | Promise<Raw[]> {
  return withBuffers(ctx, (bufs) => {
    const plans: Plan[] = [];
    for (const t of p.terms) {
      const problem = linked(t, ([k, key]) => plans[k].values[key]);
      plans.push((planners[t.kernel] as Planner<unknown>)(ctx, problem, bufs, true));
    }
    return then(runJobsNow(ctx, bufs, plans.flatMap((q) => q.jobs)), (reads) => {
      let at = 0;
      return plans.map((q) => q.finish(reads.slice(at, at += q.jobs.length)));
    });
  });
}
