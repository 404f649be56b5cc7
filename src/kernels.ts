/**
 * The kernel families: what a backend implements. Every loss definition names its
 * family (`LossDef.kernel`), so this interface and the definitions are the one place
 * that says which kernel runs each loss; a backend is one function per family
 * (`src/reference/mod.ts`, `src/wasm/mod.ts`, `src/webgpu/mod.ts`).
 *
 * | family      | problem                                    | losses                                                          |
 * | ----------- | ------------------------------------------ | --------------------------------------------------------------- |
 * | `hardLabel` | fused softmax cross-entropy, label logit   | crossEntropy, focal, arcface, cosface, normface, combinedMargin |
 * | `softTarget`| soft-target cross-entropy                  | softCrossEntropy                                                |
 * | `klDiv`     | KL divergence of log-probabilities         | klDiv                                                           |
 * | `distill`   | temperature KL + cross-entropy             | distillation                                                    |
 * | `topkHits`  | top-k hits (a metric)                      | accuracy                                                        |
 * | `head`      | class-chunked GEMM + online log-sum-exp    | marginHead, sphereface, lsoftmax                                |
 * | `softmax`   | row softmax / log-softmax and their VJPs   | softmax, logSoftmax                                             |
 * | `center`    | distances to class centres                 | centerLoss                                                      |
 * | `contrastive` | B x B similarities, rule-aware SupCon    | physicsContrastive (and physMoe)                                |
 * | `diversity` | pairwise distances between experts         | featureDiversity                                                |
 * | `centerReg` | normalised centres and the rule graph      | centerRegularization (and physMoe)                              |
 * | `experts`   | one softmax per expert: CE/focal, KL terms | mixOutputs, iclMoe (and physMoe)                                |
 * | `hierarchical` | coarse CE + CE over the true group      | hierarchical (and physMoe)                                      |
 * | `hnm`       | prototype cosines, hard negatives          | hnmContrastive                                                  |
 * | `combine`   | sums of terms' gradients, a gated VJP      | (physMoe's combination of its terms' gradients)                 |
 * | `logitShardStats`, `logitShardGrads` | a shard of classes of the fused softmax | `sharded.crossEntropy` and the margin losses |
 * | `headShardStats`, `headShardGrads` | the head's two phases on a shard of W | `sharded.marginHead`                         |
 *
 * A composite (`physMoe`) has no family of its own: its terms run on the families
 * above, the `combine` term last, through `composite`: in order on the CPU
 * (`sequential` in `src/loss.ts`), in one submission on WebGPU when the inputs are on
 * the GPU (`src/webgpu/composite.ts`).
 *
 * @module
 */
import type { CompositeProblem, Kernel, Raw } from "./loss.ts";
import type { CombineProblem } from "./losses/combine.ts";
import type { AccuracyProblem } from "./losses/accuracy.ts";
import type { HardLabelProblem } from "./losses/cross_entropy.ts";
import type { DistillationProblem } from "./losses/distillation.ts";
import type { KlProblem } from "./losses/kl_div.ts";
import type { HeadProblem } from "./losses/margin_head.ts";
import type { PairProblem } from "./losses/soft_cross_entropy.ts";
import type { SoftmaxKernel } from "./losses/softmax.ts";
import type { CenterProblem } from "./losses/center_loss.ts";
import type { ContrastiveProblem } from "./losses/physics_contrastive.ts";
import type { DiversityProblem } from "./losses/feature_diversity.ts";
import type { CenterRegProblem } from "./losses/center_regularization.ts";
import type { ExpertsProblem } from "./losses/experts.ts";
import type { HierarchicalProblem } from "./losses/hierarchical.ts";
import type { HnmProblem } from "./losses/hnm_contrastive.ts";
import type { ShardKernels } from "./losses/sharded.ts";

/** One kernel per family: what a backend implements (the sharded losses' families included). */
export interface Kernels extends ShardKernels {
  hardLabel: Kernel<HardLabelProblem>;
  softTarget: Kernel<PairProblem>;
  klDiv: Kernel<KlProblem>;
  distill: Kernel<DistillationProblem>;
  topkHits: Kernel<AccuracyProblem>;
  head: Kernel<HeadProblem>;
  softmax: SoftmaxKernel;
  center: Kernel<CenterProblem>;
  contrastive: Kernel<ContrastiveProblem>;
  diversity: Kernel<DiversityProblem>;
  centerReg: Kernel<CenterRegProblem>;
  experts: Kernel<ExpertsProblem>;
  hierarchical: Kernel<HierarchicalProblem>;
  hnm: Kernel<HnmProblem>;
  combine: Kernel<CombineProblem>;
  /** A composite's terms, in order, each with its links bound; their raw results. */
  composite: (p: CompositeProblem) => Raw[] | Promise<Raw[]>;
}
