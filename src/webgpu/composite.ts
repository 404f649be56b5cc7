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
import type { Raw } from "../kernels/core.ts";
import { linked } from "../kernels/mod.ts";
import type { GpuContext } from "./context.ts";
import { Buffers, type Plan, type Planner, runJobs } from "./passes.ts";

/** The families that can be planned into a shared submission. */
export type Planners = Partial<Record<KernelName, Planner<never>>>;

/** Whether every term of `p` has a planner. */
export const plannable = (p: CompositeProblem, planners: Planners): boolean =>
  p.terms.every((t) => planners[t.kernel] !== undefined);

/** The terms of `p` in one submission and one readback, outputs on the GPU; their raw results. */
export async function together(ctx: GpuContext, p: CompositeProblem, planners: Planners): Promise<Raw[]> {
  const bufs = new Buffers(ctx);
  try {
    const plans: Plan[] = [];
    for (const t of p.terms) {
      const problem = linked(t, ([k, key]) => plans[k].values[key]);
      plans.push(await (planners[t.kernel] as Planner<unknown>)(ctx, problem, bufs, true));
    }
    const reads = await runJobs(ctx, bufs, plans.flatMap((q) => q.jobs));
    let at = 0;
    return plans.map((q) => q.finish(reads.slice(at, at += q.jobs.length)));
  } finally {
    bufs.done();
  }
}
