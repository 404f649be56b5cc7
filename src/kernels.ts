/**
 * The kernel families: what a backend implements. Every loss definition names its
 * family (`LossDef.kernel`), so this interface and the definitions are the one place
 * that says which kernel runs each loss; a backend is one function per family
 * (`src/reference/mod.ts`, `src/wasm/mod.ts`, `gpu/mod.ts`).
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
 *
 * @module
 */
import type { Kernel } from "./loss.ts";
import type { AccuracyProblem } from "./losses/accuracy.ts";
import type { HardLabelProblem } from "./losses/cross_entropy.ts";
import type { DistillationProblem } from "./losses/distillation.ts";
import type { KlProblem } from "./losses/kl_div.ts";
import type { HeadProblem } from "./losses/margin_head.ts";
import type { PairProblem } from "./losses/soft_cross_entropy.ts";
import type { SoftmaxKernel } from "./losses/softmax.ts";

/** One kernel per family: what a backend implements. */
export interface Kernels {
  hardLabel: Kernel<HardLabelProblem>;
  softTarget: Kernel<PairProblem>;
  klDiv: Kernel<KlProblem>;
  distill: Kernel<DistillationProblem>;
  topkHits: Kernel<AccuracyProblem>;
  head: Kernel<HeadProblem>;
  softmax: SoftmaxKernel;
}
