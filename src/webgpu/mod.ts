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
import { centerReg } from "./center_regularization.ts";
import { experts, planExperts } from "./experts.ts";
import { combine, planCombine } from "./combine.ts";
import { plannable, type Planners, together } from "./composite.ts";
import { holdsDevice } from "../kernels/core.ts";
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
import type { ShardKernels } from "../kernels/shards.ts";
import { headShardGrads, headShardStats } from "./sharded.ts";
import { linearCe } from "../reference/linear_cross_entropy.ts";

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
    headShardStats: (q) => headShardStats(ctx, q),
    // linearCrossEntropy: the float64 reference on host inputs until its GPU kernels exist.
    linearCe: hostKernels({ linearCe } as unknown as Kernels, "webgpu (linearCrossEntropy, host inputs only)").linearCe,
    headShardGrads: (q) => headShardGrads(ctx, q),
  };
  const inOrder = sequential(kernels);
  return {
    ...kernels,
    // GPU-resident inputs: every term in one submission, the gradients combined on the GPU.
    composite: (p) => (holdsDevice(p) && plannable(p, planners) ? together(ctx, p, planners) : inOrder(p)),
  };
}

export { type ContextOptions, DeviceLostError, GpuContext } from "./context.ts";
