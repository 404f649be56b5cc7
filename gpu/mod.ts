/**
 * The WebGPU backend: one kernel per family (`src/kernels.ts`) over a device's
 * `GpuContext`. Choosing it (and falling back) is `src/backend.ts`'s job.
 *
 * @module
 */
import type { Kernels } from "../src/kernels.ts";
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
import { hostKernels } from "../src/losses/mod.ts";
import { referenceMetricKernels } from "../src/reference/mod.ts";
import { referenceShardKernels } from "../src/reference/sharded.ts";
import type { ShardKernels } from "../src/losses/sharded.ts";
import { headShardGrads, headShardStats } from "./sharded.ts";

/** The WebGPU kernels of a context. */
export function webgpuKernels(ctx: GpuContext): Kernels {
  return {
    hardLabel: (p) => hardLabel(ctx, p),
    softTarget: (p) => softTarget(ctx, p),
    klDiv: (p) => klDiv(ctx, p),
    distill: (p) => distill(ctx, p),
    topkHits: (p) => topkHits(ctx, p),
    head: (p) => head(ctx, p),
    softmax: (p) => softmaxTransform(ctx, p),
    // The metric-learning and mixture-of-experts families without WGSL kernels yet run the
    // float64 reference on host inputs (issue 9).
    ...(hostKernels(
      referenceMetricKernels as unknown as Kernels,
      "webgpu (metric-learning losses, host inputs only)",
    ) as Pick<Kernels, keyof typeof referenceMetricKernels>),
    contrastive: (p) => contrastive(ctx, p),
    center: (p) => center(ctx, p),
    hierarchical: (p) => hierarchical(ctx, p),
    diversity: (p) => diversity(ctx, p),
    hnm: (p) => hnm(ctx, p),
    centerReg: (p) => centerReg(ctx, p),
    // The logit shards run the float64 reference on host inputs (a shard's statistics and
    // gradient are row passes over host data the caller all-reduces); the head shards the
    // GPU head's two phases (gpu/sharded.ts).
    ...(hostKernels(
      referenceShardKernels as unknown as Kernels,
      "webgpu (sharded losses, host inputs only)",
    ) as unknown as ShardKernels),
    headShardStats: (q) => headShardStats(ctx, q),
    headShardGrads: (q) => headShardGrads(ctx, q),
  };
}

export { type ContextOptions, DeviceLostError, GpuContext } from "./context.ts";
