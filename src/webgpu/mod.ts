/**
 * The WebGPU backend: one kernel per family (`src/kernels.ts`) over a device's
 * `GpuContext`. Choosing it (and falling back) is `src/backend.ts`'s job.
 *
 * @module
 */
import type { Kernels } from "../kernels/mod.ts";
import type { GpuContext } from "./context.ts";
import { hardLabel } from "./cross_entropy.ts";
import { head } from "./margin_head.ts";
import { klDiv, softTarget } from "./soft_cross_entropy.ts";
import { distill } from "./distillation.ts";
import { topkHits } from "./accuracy.ts";
import { softmaxTransform } from "./softmax.ts";
import { contrastive } from "./physics_contrastive.ts";
import { center } from "./center_loss.ts";
import { hierarchical } from "./hierarchical.ts";
import { diversity } from "./feature_diversity.ts";
import { hnm } from "./hnm_contrastive.ts";
import { paired } from "./clip.ts";
import { centerReg } from "./center_regularization.ts";
import { experts, planExperts } from "./experts.ts";
import { combine, planCombine } from "./combine.ts";
import { plannable, type Planners, together } from "./composite.ts";
import { holdsDevice, markedFinite } from "../kernels/core.ts";
import type { GpuPath } from "../kernels/mod.ts";
import { materialize } from "./finish.ts";
import { sequential } from "../kernels/mod.ts";
import { planContrastive } from "./physics_contrastive.ts";
import { planHierarchical } from "./hierarchical.ts";
import { planCenterReg } from "./center_regularization.ts";

/** The families a composite's terms may be planned from (src/webgpu/composite.ts). */
const planners: Planners = {
  contrastive: planContrastive,
  experts: planExperts,
  hierarchical: planHierarchical,
  centerReg: planCenterReg,
  combine: planCombine,
} as Planners;
import { hostKernels } from "../kernels/mod.ts";
import { referenceShardKernels } from "../reference/sharded.ts";
import { metric } from "./metric.ts";
import type { ShardKernels } from "../kernels/shards.ts";
import { headShardGrads, headShardStats, headShardTopK } from "./sharded.ts";
import { linearCe } from "./linear_cross_entropy.ts";

/**
 * A kernel with `checkFinite` on GPU-resident inputs: their values read back and scanned
 * first; inside a recorded call (`readback: false`, which reads nothing back) a
 * `TypeError`.
 */
function finiteFirst<P, R>(ctx: GpuContext, kernel: (p: P) => R | Promise<R>): (p: P) => R | Promise<R> {
  return (p) => {
    const marked = markedFinite(p);
    if (marked.length === 0) return kernel(p);
    if (ctx.recording) {
      throw new TypeError(
        `Expected options.checkFinite to be false with options.readback false (it reads ${
          marked[0].checkFinite
        } back), got true`,
      );
    }
    return ctx.checkFinite(...(marked as unknown as Float32Array[])).then(() => kernel(p));
  };
}

/** The WebGPU kernels of a context. */
export function webgpuKernels(ctx: GpuContext): Kernels {
  const kernels: Omit<Kernels, "composite"> = {
    hardLabel: (p) => hardLabel(ctx, p),
    softTarget: (p) => softTarget(ctx, p),
    klDiv: (p) => klDiv(ctx, p),
    distill: (p) => distill(ctx, p),
    topkHits: (p) => topkHits(ctx, p),
    head: (p) => head(ctx, p),
    softmax: (p) => softmaxTransform(ctx, p),
    contrastive: (p) => contrastive(ctx, p),
    center: (p) => center(ctx, p),
    hierarchical: (p) => hierarchical(ctx, p),
    diversity: (p) => diversity(ctx, p),
    hnm: (p) => hnm(ctx, p),
    paired: (p) => paired(ctx, p),
    centerReg: (p) => centerReg(ctx, p),
    experts: (p) => experts(ctx, p),
    combine: (p) => combine(ctx, p),
    // The logit shards run the float64 reference on host inputs (a shard's statistics and
    // gradient are row passes over host data the caller all-reduces); the head shards the
    // GPU head's two phases (src/webgpu/sharded.ts).
    ...(hostKernels(
      referenceShardKernels as unknown as Kernels,
      "webgpu (sharded losses, host inputs only)",
    ) as unknown as ShardKernels),
    // The metric family (src/webgpu/metric.ts).
    metric: (p) => metric(ctx, p),
    headShardStats: (q) => headShardStats(ctx, q),
    linearCe: (p) => linearCe(ctx, p),
    headShardGrads: (q) => headShardGrads(ctx, q),
    headShardTopK: (q) => headShardTopK(ctx, q),
  };
  for (const [k, f] of Object.entries(kernels)) {
    (kernels as Record<string, unknown>)[k] = finiteFirst(ctx, f as (p: unknown) => unknown);
  }
  const inOrder = sequential(kernels);
  return {
    ...kernels,
    // GPU-resident inputs: every term in one submission, the gradients combined on the GPU.
    composite: finiteFirst(
      ctx,
      (p) => (holdsDevice(p) && plannable(p, planners) ? together(ctx, p, planners) : inOrder(p)),
    ),
  };
}

/**
 * The GPU path of a context (SPEC §10; `readback: false`, `encoder` and `Losses.sync`,
 * bound by src/loss.ts): its kernels, recorded synchronously into one command encoder,
 * and the finish step's values computed on the GPU.
 */
export function webgpuPath(ctx: GpuContext, kernels: Kernels): GpuPath {
  return {
    kernels,
    record: (encoder, body) => ctx.record(encoder, body),
    materialize: (r) => materialize(ctx, r),
    drop: (b) => ctx.temp(b),
    settled: async () => {
      await ctx.settled();
      ctx.check();
    },
  };
}

export { type ContextOptions, DeviceLostError, GpuContext } from "./context.ts";
