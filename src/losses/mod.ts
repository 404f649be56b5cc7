/**
 * Every loss, metric and transform, by public name, and how a backend's kernels
 * (`Kernels`, one per family) become the public objects (`bindLosses`).
 *
 * @module
 */
import type { Kernels } from "../kernels/mod.ts";
import type { CompositeDef, LossDef, MetricDef } from "../loss.ts";
import type { KernelName } from "../kernels/mod.ts";
import { bindComposite, bindLoss, bindMetric } from "../loss.ts";
import type { AsyncLoss, AsyncMetric, Loss, Metric } from "../types.ts";
import { accuracy, type AccuracyOptions } from "./accuracy.ts";
import { arcface, type ArcfaceOptions } from "./arcface.ts";
import { combinedMargin, type CombinedMarginOptions } from "./combined_margin.ts";
import { cosface, type CosfaceOptions } from "./cosface.ts";
import type { MarginGrads, MarginInputs } from "./margin.ts";
import { normface, type NormfaceOptions } from "./normface.ts";
import { type HeadGrads, type HeadInputs, marginHead, type MarginHeadOptions } from "./margin_head.ts";
import { sphereface, type SpherefaceOptions } from "./sphereface.ts";
import { lsoftmax, type LsoftmaxOptions } from "./lsoftmax.ts";
import {
  crossEntropy,
  type CrossEntropyGrads,
  type CrossEntropyInputs,
  type CrossEntropyOptions,
} from "./cross_entropy.ts";
import {
  distillation,
  type DistillationGrads,
  type DistillationInputs,
  type DistillationOptions,
  type DistillationParts,
} from "./distillation.ts";
import { focal, type FocalOptions } from "./focal.ts";
import { klDiv, type KlDivGrads, type KlDivInputs, type KlDivOptions } from "./kl_div.ts";
import {
  softCrossEntropy,
  type SoftCrossEntropyGrads,
  type SoftCrossEntropyInputs,
  type SoftCrossEntropyOptions,
} from "./soft_cross_entropy.ts";
import { bindSoftmax, type SoftmaxMethods } from "./softmax.ts";
import { centerLoss, type CenterLossGrads, type CenterLossInputs, type CenterLossOptions } from "./center_loss.ts";
import {
  physicsContrastive,
  type PhysicsContrastiveGrads,
  type PhysicsContrastiveInputs,
  type PhysicsContrastiveOptions,
} from "./physics_contrastive.ts";
import {
  featureDiversity,
  type FeatureDiversityGrads,
  type FeatureDiversityInputs,
  type FeatureDiversityOptions,
} from "./feature_diversity.ts";
import {
  centerRegularization,
  type CenterRegularizationGrads,
  type CenterRegularizationInputs,
  type CenterRegularizationOptions,
  type CenterRegularizationParts,
} from "./center_regularization.ts";
import type { ExpertGrads, ExpertInputs } from "./experts.ts";
import { mixOutputs, type MixOutputsOptions, type MixOutputsParts } from "./mix_outputs.ts";
import { iclMoe, type IclMoeInputs, type IclMoeOptions, type IclMoeParts } from "./icl_moe.ts";
import {
  hierarchical,
  type HierarchicalGrads,
  type HierarchicalInputs,
  type HierarchicalOptions,
  type HierarchicalParts,
} from "./hierarchical.ts";
import { physMoe, type PhysMoeGrads, type PhysMoeInputs, type PhysMoeOptions, type PhysMoeParts } from "./phys_moe.ts";
import {
  hnmContrastive,
  type HnmContrastiveGrads,
  type HnmContrastiveInputs,
  type HnmContrastiveOptions,
} from "./hnm_contrastive.ts";
import { bindSharded, type ShardedSet } from "./sharded.ts";

/** The loss definitions (each names its kernel family). */
export const definitions = {
  crossEntropy,
  softCrossEntropy,
  klDiv,
  distillation,
  focal,
  arcface,
  cosface,
  normface,
  combinedMargin,
  marginHead,
  sphereface,
  lsoftmax,
  centerLoss,
  physicsContrastive,
  featureDiversity,
  centerRegularization,
  mixOutputs,
  iclMoe,
  hierarchical,
  hnmContrastive,
};

/** The composite losses (weighted sums of other losses' terms). */
export const composites = { physMoe };

/** The metric definitions. */
export const metrics = { accuracy };

/** A loss's methods, synchronous (`"sync"`, the CPU entry point) or returning Promises (`"async"`, `init`). */
export type Methods<W extends "sync" | "async", I, O, G, Parts = unknown> = W extends "sync" ? Loss<I, O, G, Parts>
  : AsyncLoss<I, O, G, Parts>;

/** A metric's `compute`, synchronous or returning a Promise. */
export type MetricMethods<W extends "sync" | "async", I, O> = W extends "sync" ? Metric<I, O> : AsyncMetric<I, O>;

/**
 * Every loss, metric and transform, bound to one backend. A loss has `forward`,
 * `backward` and `valueAndGrad`; a metric has `compute`; inputs are row-major float32
 * matrices `{ data, shape }` (on WebGPU also `{ buffer, shape }`) and integer labels. An
 * unknown input, option or `out` key is a `TypeError`. See each member for its formula,
 * and docs/LOSSES.md for the reference of every loss.
 */
export interface LossSet<W extends "sync" | "async"> {
  /**
   * Row-wise softmax `y_ij = e^(x_ij - m_i) / sum_k e^(x_ik - m_i)` (`m_i` the row max).
   * `forward({ x })` gives `{ output }`; `backward({ x }, options, upstream)` the
   * vector-Jacobian product `y * (g - sum_k g_k y_k)` as `{ x }`.
   *
   * @example Softmax of one row
   * ```ts
   * import { wasm } from "@softmargin/softmargin/cpu";
   * const { output } = wasm.softmax.forward({ x: { data: new Float32Array([0, Math.log(3)]), shape: [1, 2] } });
   * console.log(output.data); // [0.25, 0.75]
   * ```
   */
  softmax: SoftmaxMethods<W>;
  /**
   * Row-wise log-softmax `x_ij - m_i - log sum_k e^(x_ik - m_i)`; its vector-Jacobian
   * product is `g - softmax(x) * sum_k g_k`.
   *
   * @example Log-probabilities
   * ```ts
   * import { wasm } from "@softmargin/softmargin/cpu";
   * const { output } = wasm.logSoftmax.forward({ x: { data: new Float32Array([1, 1]), shape: [1, 2] } });
   * console.log(output.data); // [-0.6931, -0.6931] (log 1/2)
   * ```
   */
  logSoftmax: SoftmaxMethods<W>;
  /**
   * Softmax cross-entropy with integer labels, as `torch.nn.functional.cross_entropy`:
   * `loss_i = -(1-eps) w_y log p_iy - (eps/C) sum_c w_c log p_ic`, `p = softmax(logits)`,
   * with class weights `w` (`weight`, default all 1) and label smoothing `eps`
   * (`labelSmoothing`, default 0, Szegedy et al. 2016, "Rethinking the Inception
   * Architecture"). `reduction` `"mean"` (default) divides by the summed weight of the
   * non-ignored rows; rows labelled `ignoreIndex` (default -100) count 0, and a batch
   * with none left has loss 0 and zero gradients (PyTorch gives NaN there).
   * Shapes: logits `[N, C]`, labels `[N]`; gradient `grads.logits` `[N, C]`:
   * `s_i (q_sum p - q)` for the target distribution `q` of the formula.
   *
   * @example Loss and gradient
   * ```ts
   * import { wasm } from "@softmargin/softmargin/cpu";
   * const logits = { data: new Float32Array([2, 0, 0, 0, 3, 0]), shape: [2, 3] as const };
   * const { loss, grads } = wasm.crossEntropy.valueAndGrad({ logits, labels: [0, 1] }, { labelSmoothing: 0.1 });
   * console.log(loss, grads.logits.shape); // 0.3339 [2, 3]
   * ```
   */
  crossEntropy: Methods<W, CrossEntropyInputs, CrossEntropyOptions, CrossEntropyGrads>;
  /**
   * Cross-entropy against soft targets ("soft_entropy"): `loss_i = -sum_c t_ic log p_ic`,
   * `p = softmax(logits)`. Shapes: logits and target `[N, C]`; `reduction` `"mean"` over
   * rows (default), `"sum"`, `"none"`. Gradients: logits `s_i (sum_c t_ic) p - t`,
   * target `-s_i log p`.
   *
   * @example Soft labels
   * ```ts
   * import { wasm } from "@softmargin/softmargin/cpu";
   * const logits = { data: new Float32Array([1, 2, 3]), shape: [1, 3] as const };
   * const target = { data: new Float32Array([0.1, 0.2, 0.7]), shape: [1, 3] as const };
   * console.log(wasm.softCrossEntropy.forward({ logits, target }).loss); // 0.8076 (PyTorch: 0.8076059644)
   * ```
   */
  softCrossEntropy: Methods<W, SoftCrossEntropyInputs, SoftCrossEntropyOptions, SoftCrossEntropyGrads>;
  /**
   * Kullback-Leibler divergence as `torch.nn.functional.kl_div(logInput, target)`:
   * `sum t (log t - logInput)` (terms with `t = 0` are 0), or with `logTarget`
   * `sum e^t (t - logInput)`. No softmax is applied: `logInput` holds log-probabilities.
   * `reduction`: `"batchmean"` (default, sum / N), `"sum"`, `"mean"` (sum / (N*C)) or
   * `"none"` (one value per row, unlike PyTorch's element-wise output). Gradients:
   * `logInput` `-t`, `target` `log t + 1 - logInput` (0 where `t = 0`, where PyTorch gives
   * NaN) or `e^t (t - logInput + 1)`.
   *
   * @example KL between two distributions
   * ```ts
   * import { wasm } from "@softmargin/softmargin/cpu";
   * const logInput = { data: new Float32Array([Math.log(0.5), Math.log(0.5)]), shape: [1, 2] as const };
   * const target = { data: new Float32Array([0.9, 0.1]), shape: [1, 2] as const };
   * console.log(wasm.klDiv.forward({ logInput, target }).loss); // 0.3681 (PyTorch: 0.3680642072)
   * ```
   */
  klDiv: Methods<W, KlDivInputs, KlDivOptions, KlDivGrads>;
  /**
   * Knowledge distillation (Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a
   * Neural Network"): `alpha T^2 KL(softmax(teacher/T) || softmax(student/T)) + (1-alpha) CE(student, labels)`,
   * temperature `T` (default 4), `alpha` (default 0.9). With `"mean"` the KL is averaged
   * over all N rows (batchmean) and the cross-entropy over the non-ignored rows; the result
   * also holds the reduced parts `kl` and `ce` before weighting (not with `"none"`). Shapes: student, teacher `[N, C]`,
   * labels `[N]`; gradient w.r.t. the student only: `alpha T (Q - P) + (1-alpha)(p - onehot)`.
   *
   * @example Distil a teacher
   * ```ts
   * import { wasm } from "@softmargin/softmargin/cpu";
   * const student = { data: new Float32Array([1, 0, 0, 1]), shape: [2, 2] as const };
   * const teacher = { data: new Float32Array([3, 0, 0, 3]), shape: [2, 2] as const };
   * const { loss, kl, ce } = wasm.distillation.forward({ student, teacher, labels: [0, 1] }, { temperature: 2 });
   * console.log(loss, kl, ce); // 0.3562 0.0902 0.3133
   * ```
   */
  distillation: Methods<W, DistillationInputs, DistillationOptions, DistillationGrads, DistillationParts>;
  /**
   * Focal loss on softmax probabilities (Lin et al. 2017, "Focal Loss for Dense Object
   * Detection"): `loss_i = alpha_y (1 - p_t)^gamma CE_i`, `p_t = e^-CE_i`, `gamma` default
   * 2 (0 gives each row's cross-entropy), optional per-class `alpha [C]`. `"mean"` averages over the
   * non-ignored rows (alpha weighs rows but is not a denominator). The gradient is finite
   * at `p_t = 1` for every `gamma >= 0` (the unbounded factor `(1-p_t)^(gamma-1)` meets
   * `CE_i = 0` and the product is taken as its limit, 0).
   *
   * @example Focal loss
   * ```ts
   * import { wasm } from "@softmargin/softmargin/cpu";
   * const logits = { data: new Float32Array([2, 0, 0, 0, 0, 2]), shape: [2, 3] as const };
   * console.log(wasm.focal.forward({ logits, labels: [0, 1] }, { gamma: 2 }).loss); // 0.8994 (PyTorch-built reference: 0.8993823043)
   * ```
   */
  focal: Methods<W, CrossEntropyInputs, FocalOptions, CrossEntropyGrads>;
  /**
   * Top-k accuracy, a metric: `compute` returns the share of non-ignored rows whose label
   * is among the `k` (default 1) largest logits; a label counts when fewer than `k` logits
   * are strictly greater (ties count for the label). 0 when every row is ignored. A metric
   * has no gradient, no `backward` and no `out`.
   *
   * @example Top-1 and top-2
   * ```ts
   * import { wasm } from "@softmargin/softmargin/cpu";
   * const logits = { data: new Float32Array([3, 2, 1, 1, 2, 3]), shape: [2, 3] as const };
   * console.log(wasm.accuracy.compute({ logits, labels: [1, 2] })); // 0.5
   * console.log(wasm.accuracy.compute({ logits, labels: [1, 2] }, { k: 2 })); // 1
   * ```
   */
  accuracy: MetricMethods<W, CrossEntropyInputs, AccuracyOptions>;
  /**
   * ArcFace / AAM-Softmax (Deng et al. 2019, "ArcFace: Additive Angular Margin Loss for
   * Deep Face Recognition"): cosines `cos [N, C]` clamped to [-1, 1], logits `s cos`
   * except the label's, `s phi(cos_y)` with `phi = cos(theta + m)` (`scale` s = 64,
   * `margin` m = 0.5); `easyMargin` keeps `cos` where `cos <= 0`, otherwise `cos - m sin(pi - m)`
   * is used where `cos <= cos(pi - m)`; then cross-entropy (`reduction`, `ignoreIndex` as
   * `crossEntropy`). Gradient w.r.t. `cos`: `s (p_j)` for j != y, `s (p_y - 1) phi'(cos_y)`
   * (`marginGrad: "constant"`: `phi' = 1`, as insightface); `phi'` uses the cosine clamped to
   * `[-1 + 1e-6, 1 - 1e-6]`, so it is finite at cosines of exactly +-1.
   *
   * @example ArcFace on cosines
   * ```ts
   * import { wasm } from "@softmargin/softmargin/cpu";
   * const cos = { data: new Float32Array([0.8, 0.1, -0.2, 0.3, 0.6, 0.1]), shape: [2, 3] as const };
   * console.log(wasm.arcface.forward({ cos, labels: [0, 1] }, { scale: 30 }).loss); // 2.3606 (PyTorch: 2.3606137)
   * ```
   */
  arcface: Methods<W, MarginInputs, ArcfaceOptions, MarginGrads>;
  /**
   * CosFace / LMCL (Wang et al. 2018, "CosFace: Large Margin Cosine Loss") and
   * AM-Softmax (Wang et al. 2018, who used s = 30): label logit `s (cos_y - m)`,
   * `scale` s = 64, `margin` m = 0.35; otherwise as `arcface`.
   *
   * @example CosFace
   * ```ts
   * import { wasm } from "@softmargin/softmargin/cpu";
   * const cos = { data: new Float32Array([0.8, 0.1, -0.2, 0.3, 0.6, 0.1]), shape: [2, 3] as const };
   * console.log(wasm.cosface.forward({ cos, labels: [0, 1] }, { scale: 30 }).loss); // 0.8517 (PyTorch: 0.8517327)
   * ```
   */
  cosface: Methods<W, MarginInputs, CosfaceOptions, MarginGrads>;
  /**
   * NormFace (Wang et al. 2017, "NormFace: L2 Hypersphere Embedding for Face
   * Verification"): cross-entropy of the logits `s cos` without a margin, `scale` s = 16.
   *
   * @example NormFace
   * ```ts
   * import { wasm } from "@softmargin/softmargin/cpu";
   * const cos = { data: new Float32Array([0.8, 0.1, -0.2, 0.3, 0.6, 0.1]), shape: [2, 3] as const };
   * console.log(wasm.normface.forward({ cos, labels: [0, 1] }).loss); // 0.0043 (PyTorch: 0.0042713)
   * ```
   */
  normface: Methods<W, MarginInputs, NormfaceOptions, MarginGrads>;
  /**
   * insightface's combined margin: label logit `s (cos(m1 theta + m2) - m3)`,
   * `theta = acos(cos_y)`, defaults s = 64, m1 = 1, m2 = 0.5, m3 = 0 (no threshold branch,
   * so it equals `arcface` wherever ArcFace's branch is not taken).
   *
   * @example Combined margin
   * ```ts
   * import { wasm } from "@softmargin/softmargin/cpu";
   * const cos = { data: new Float32Array([0.8, 0.1, -0.2, 0.3, 0.6, 0.1]), shape: [2, 3] as const };
   * console.log(wasm.combinedMargin.forward({ cos, labels: [0, 1] }, { scale: 30, m1: 1, m2: 0.3, m3: 0.2 }).loss); // 2.4533
   * ```
   */
  combinedMargin: Methods<W, MarginInputs, CombinedMarginOptions, MarginGrads>;
  /**
   * A margin head from embeddings: `cos = normalize(x) normalize(W)^T` (`F.normalize`,
   * dividing by `max(||v||, 1e-12)`), then the margin loss of `kind` (`"arcface"` default,
   * `"cosface"`, `"normface"`, `"combinedMargin"`, with that kind's options), with
   * gradients w.r.t. `x [N, D]` and `W [C, D]` through the normalisations. The WebAssembly
   * backend works in chunks of classes with an online log-sum-exp, so the `[N, C]`
   * logits never exist: extra memory is O(N * chunk + N * D) beyond W and its gradient.
   *
   * @example An ArcFace head
   * ```ts
   * import { wasm } from "@softmargin/softmargin/cpu";
   * const x = { data: new Float32Array([1, 0, 0.6, 0.8]), shape: [2, 2] as const };
   * const W = { data: new Float32Array([1, 0, 0, 1, -1, 0]), shape: [3, 2] as const };
   * const { loss, grads } = wasm.marginHead.valueAndGrad({ x, W, labels: [0, 1] }, { kind: "arcface", scale: 16 });
   * console.log(loss, grads.W.shape); // 1.5097 [3, 2] (PyTorch: 1.5097439)
   * ```
   */
  marginHead: Methods<W, HeadInputs, MarginHeadOptions, HeadGrads>;
  /**
   * SphereFace / A-Softmax (Liu et al. 2017, "SphereFace: Deep Hypersphere Embedding for
   * Face Recognition"): rows of W normalised, x not; logits `||x|| cos_j`, the label's
   * `||x|| (lambda cos + psi(theta)) / (1 + lambda)` with `psi = (-1)^k cos(m theta) - 2k`,
   * `k = floor(m theta / pi)` (no gradient through k), `cos(m theta)` by the Chebyshev
   * polynomial `T_m(cos)`; integer `m` (4), `lambda` (0; anneal with `sphereFaceLambda`).
   *
   * @example SphereFace with annealing
   * ```ts
   * import { sphereFaceLambda } from "@softmargin/softmargin";
   * import { wasm } from "@softmargin/softmargin/cpu";
   * const x = { data: new Float32Array([2, 0.5, 0.3, 1.5]), shape: [2, 2] as const };
   * const W = { data: new Float32Array([1, 0, 0, 1, -1, 0]), shape: [3, 2] as const };
   * console.log(wasm.sphereface.forward({ x, W, labels: [0, 1] }, { m: 4, lambda: sphereFaceLambda(500) }).loss); // 0.3083 (PyTorch: 0.3083298)
   * ```
   */
  sphereface: Methods<W, HeadInputs, SpherefaceOptions, HeadGrads>;
  /**
   * L-Softmax (Liu et al. 2016, "Large-Margin Softmax Loss for Convolutional Neural
   * Networks"): logits `x W^T`, the label's `(||W_y|| ||x|| psi(theta_y) + beta z_y) / (1 + beta)`
   * with `psi` as `sphereface`; integer `m` (4), `beta` (0; anneal with `lSoftmaxBeta`).
   *
   * @example L-Softmax
   * ```ts
   * import { wasm } from "@softmargin/softmargin/cpu";
   * const x = { data: new Float32Array([2, 0.5, 0.3, 1.5]), shape: [2, 2] as const };
   * const W = { data: new Float32Array([1, 0, 0, 1, -1, 0]), shape: [3, 2] as const };
   * console.log(wasm.lsoftmax.forward({ x, W, labels: [0, 1] }, { m: 2, beta: 10 }).loss); // 0.3025 (PyTorch: 0.3024612)
   * ```
   */
  lsoftmax: Methods<W, HeadInputs, LsoftmaxOptions, HeadGrads>;
  /**
   * Center loss (Wen et al. 2016, "A Discriminative Feature Learning Approach for Deep
   * Face Recognition"): `loss_i = ||x_i - c_{y_i}||^2`, `reduction` `"mean"` over the N
   * rows (default), `"sum"`, `"none"`. Shapes: x `[N, D]`, centers `[C, D]`, labels `[N]`
   * in `[0, C)`; gradients `x: 2 s_i (x_i - c_y)`, `centers: -sum_{i: y_i = j} 2 s_i (x_i - c_j)`.
   * Wen et al. move the centres with `centerUpdate` instead of their gradient.
   *
   * @example Distance to the class centre
   * ```ts
   * import { js } from "@softmargin/softmargin/cpu";
   * const x = { data: new Float32Array([1, 2]), shape: [1, 2] as const };
   * const centers = { data: new Float32Array([0, 0, 1, 1]), shape: [2, 2] as const };
   * console.log(js.centerLoss.forward({ x, centers, labels: [1] }).loss); // 1 = (1-1)^2 + (2-1)^2
   * ```
   */
  centerLoss: Methods<W, CenterLossInputs, CenterLossOptions, CenterLossGrads>;
  /**
   * A rule-aware supervised contrastive loss (Khosla et al. 2020, "Supervised Contrastive
   * Learning", extended with a class-similarity rule): `S = f f^T / tau`, `R_ij = rule[y_i, y_j]`
   * (0 without `rule`), positives `P_ij = (y_i = y_j or R_ij > threshold) and i != j`,
   * `loss_i = -sum_j P_ij (S_ij - log sum_{k != i} e^(S_ik) (1 - R_ik)) / sum_j P_ij`,
   * averaged over the anchors that have a positive and a non-zero weight `1 - R` (0 when
   * none). `temperature` 0.07, `threshold` 0.8; f `[B, D]` normalised by the caller, rule
   * `[K, K]` with values in [0, 1]. Gradient w.r.t. f.
   *
   * @example Two pairs
   * ```ts
   * import { js } from "@softmargin/softmargin/cpu";
   * const f = { data: new Float32Array([1, 0, 1, 0, 0, 1, 0, 1]), shape: [4, 2] as const };
   * console.log(js.physicsContrastive.forward({ f, labels: [0, 0, 1, 1] }, { temperature: 1 }).loss); // 0.5514 = log(1 + 2/e)
   * ```
   */
  physicsContrastive: Methods<W, PhysicsContrastiveInputs, PhysicsContrastiveOptions, PhysicsContrastiveGrads>;
  /**
   * Feature diversity of experts: `-lambda * mean` of `||f_e[b] - f_e'[b]||` over every
   * sample b and ordered pair of different experts (`lambda` 0.01; minimising it pushes
   * the experts apart; 0 for one expert). Gradients w.r.t. each expert's features (0
   * where a distance is 0).
   *
   * @example Two experts
   * ```ts
   * import { js } from "@softmargin/softmargin/cpu";
   * const a = { data: new Float32Array([0, 0]), shape: [1, 2] as const };
   * const b = { data: new Float32Array([3, 4]), shape: [1, 2] as const };
   * console.log(js.featureDiversity.forward({ features: [a, b] }, { lambda: 1 }).loss); // -5
   * ```
   */
  featureDiversity: Methods<W, FeatureDiversityInputs, FeatureDiversityOptions, FeatureDiversityGrads>;
  /**
   * Centre regularisation: with `c^ = normalize(centers)`,
   * `L_center = mean_i (1 - f_i . c^_{y_i})` and, for `A` the rule without its diagonal
   * with rows divided by their sums, `L_proto = mean_c (1 - c^_c . (A c^)_c)`; the value is
   * `L_center + prototypeWeight * L_proto` (`prototypeWeight` 0.5), parts `center` and
   * `proto`. Gradients w.r.t. f and the centres.
   *
   * @example
   * ```ts
   * import { js } from "@softmargin/softmargin/cpu";
   * const f = { data: new Float32Array([1, 0]), shape: [1, 2] as const };
   * const centers = { data: new Float32Array([2, 0, 0, 1]), shape: [2, 2] as const };
   * const rule = { data: new Float32Array([1, 0, 0, 1]), shape: [2, 2] as const };
   * const { loss, center, proto } = js.centerRegularization.forward({ f, centers, labels: [0], rule });
   * console.log(loss, center, proto); // 0.5 0 1
   * ```
   */
  centerRegularization: Methods<
    W,
    CenterRegularizationInputs,
    CenterRegularizationOptions,
    CenterRegularizationGrads,
    CenterRegularizationParts
  >;
  /**
   * Mixture-of-experts loss with distillation and a parallel term: `ce_e = CE(z_e + log prior, y)`
   * (`prior [C]` optional: logit adjustment, Menon et al. 2021), `distill = sum_{i != j} KL_batchmean(softmax(z_j) || softmax(z_i))`,
   * `parallel = E / sum_e 1/(ce_e + eps)`; value `sum_e ce_e + distillWeight distill + parallelWeight parallel`
   * (weights 0, `eps` 1e-6). Parts `ce`, `distill`, `parallel` and `meanLogits` (`[B, C]`).
   * Gradients w.r.t. every expert's logits (the distillation through both softmaxes).
   *
   * @example One expert is plain cross-entropy
   * ```ts
   * import { js } from "@softmargin/softmargin/cpu";
   * const z = { data: new Float32Array([0, 0]), shape: [1, 2] as const };
   * console.log(js.mixOutputs.forward({ expertLogits: [z], labels: [0] }).loss); // 0.6931 = log 2
   * ```
   */
  mixOutputs: Methods<W, ExpertInputs, MixOutputsOptions, ExpertGrads, MixOutputsParts>;
  /**
   * Independent and collaborative learning of experts: `L_dol = sum_e` (focal with `gamma`
   * for the `tailExperts`, cross-entropy for the others; means over B) and, for the gated
   * ensemble `sum_e gating[:, e] z_e` (a constant target), `L_col = sum_e KL_batchmean(softmax(ensemble) || softmax(z_e))`.
   * Value `L_dol + L_col`, parts `dol` and `col`; gradients w.r.t. the expert logits.
   *
   * @example Two agreeing experts
   * ```ts
   * import { js } from "@softmargin/softmargin/cpu";
   * const z = { data: new Float32Array([0, 0]), shape: [1, 2] as const };
   * const gating = { data: new Float32Array([0.5, 0.5]), shape: [1, 2] as const };
   * console.log(js.iclMoe.forward({ expertLogits: [z, z], gating, labels: [1] }).col); // 0
   * ```
   */
  iclMoe: Methods<W, IclMoeInputs, IclMoeOptions, ExpertGrads, IclMoeParts>;
  /**
   * Hierarchical cross-entropy: `CE(coarse, fineToCoarse[y])` plus the cross-entropy over
   * only the fine classes of the true coarse class (the others are excluded, not masked
   * with -1e9: their gradient is exactly 0). Parts `coarse` and `fine`; gradients w.r.t.
   * coarse `[B, K]` and fine `[B, C]`.
   *
   * @example Two groups of two
   * ```ts
   * import { js } from "@softmargin/softmargin/cpu";
   * const coarse = { data: new Float32Array([0, 0]), shape: [1, 2] as const };
   * const fine = { data: new Float32Array([0, 0, 5, 9]), shape: [1, 4] as const };
   * const r = js.hierarchical.forward({ coarse, fine, labels: [1], fineToCoarse: [0, 0, 1, 1] });
   * console.log(r.coarse, r.fine); // 0.6931 0.6931 (log 2 each: classes 2 and 3 are not read)
   * ```
   */
  hierarchical: Methods<W, HierarchicalInputs, HierarchicalOptions, HierarchicalGrads, HierarchicalParts>;
  /**
   * The physics-constrained mixture-of-experts objective, in one call:
   * `lambdaScl physicsContrastive(features, labels, rule) + L_dol + L_col + lambdaHier hierarchical(coarse, fine)
   * + lambdaReg centerRegularization(features, centers, labels, rule)` with iclMoe's
   * `L_dol`, `L_col` and the gated ensemble `fine = sum_e gating[:, e] z_e` (differentiable
   * here, a constant target in `L_col`); `contrast: false` leaves the first term out.
   * Defaults `lambdaScl` 0.1, `lambdaHier` 1, `lambdaReg` 0.001, and the parts' own
   * (`temperature`, `threshold`, `gamma`, `prototypeWeight`, `tailExperts`). Returns the
   * total, the unweighted parts `scl`, `dol`, `col`, `hier`, `reg`, and gradients w.r.t.
   * features, coarse, expertLogits, gating and centers. On WebGPU, GPU-resident inputs
   * (`{ buffer, shape }`, the `rule` excepted) run every term and the combination of their
   * gradients in one submission that reads back only the parts; the gradients stay on the GPU.
   *
   * @example A tiny batch
   * ```ts
   * import { js } from "@softmargin/softmargin/cpu";
   * const m = (rows: number, cols: number, values: number[]) => ({ data: new Float32Array(values), shape: [rows, cols] as const });
   * const r = js.physMoe.valueAndGrad({
   *   features: m(2, 2, [1, 0, 0, 1]),
   *   coarse: m(2, 1, [0, 0]),
   *   expertLogits: [m(2, 2, [1, 0, 0, 1]), m(2, 2, [2, 0, 0, 2])],
   *   gating: m(2, 2, [0.5, 0.5, 0.5, 0.5]),
   *   labels: [0, 1],
   *   rule: m(2, 2, [1, 0, 0, 1]),
   *   fineToCoarse: [0, 0],
   *   centers: m(2, 2, [1, 0, 0, 1]),
   * }, { tailExperts: [1] });
   * console.log(r.loss, r.scl, r.hier, r.grads.gating.shape); // the total, two of its parts, [2, 2]
   * ```
   */
  physMoe: Methods<W, PhysMoeInputs, PhysMoeOptions, PhysMoeGrads, PhysMoeParts>;
  /**
   * Hard-negative contrastive loss against class prototypes: with f and the prototypes
   * normalised, `pos = cos(f, p_y) / t`, `neg_j = cos(f, p_{hard_j}) / t` (`temperature` t
   * 0.07), `loss = -log(e^pos / (e^pos + mean_j e^neg_j))`, computed as a log-sum-exp;
   * `reduction` `"mean"` over B. `hard [B, k]` comes from `hnmHardNegatives`. Gradient
   * w.r.t. f only.
   *
   * @example
   * ```ts
   * import { js } from "@softmargin/softmargin/cpu";
   * const f = { data: new Float32Array([1, 0]), shape: [1, 2] as const };
   * const prototypes = { data: new Float32Array([1, 0, 1, 0]), shape: [2, 2] as const };
   * const hard = { data: Int32Array.of(1), shape: [1, 1] as const };
   * console.log(js.hnmContrastive.forward({ f, prototypes, labels: [0], hard }).loss); // 0.6931 (log 2: the negative equals the positive)
   * ```
   */
  hnmContrastive: Methods<W, HnmContrastiveInputs, HnmContrastiveOptions, HnmContrastiveGrads>;
  /**
   * The class-sharded (model-parallel) forms of `crossEntropy`, the margin losses on
   * cosines and `marginHead`: each shard holds a range of classes, `stats` gives its per-row
   * statistics, the caller all-reduces them (`mergeShardStats`), and `finish` gives the
   * shard's loss share and gradients. See {@linkcode ShardedSet} and docs/SHARDING.md.
   *
   * @example
   * ```ts
   * import { mergeShardStats, wasm } from "@softmargin/softmargin/cpu";
   * const cos = { data: new Float32Array([0.8, 0.1, 0.3, 0.6]), shape: [2, 2] as const };
   * const options = { scale: 16, offset: 0, classes: 2 };
   * const stats = mergeShardStats([wasm.sharded.arcface.stats({ cos, labels: [0, 1] }, options)]);
   * console.log(wasm.sharded.arcface.finish({ cos, labels: [0, 1] }, stats, options).loss); // one shard: the whole loss
   * ```
   */
  sharded: ShardedSet<W>;
}

/** Every loss with synchronous methods (the CPU backends). */
export type SyncLosses = LossSet<"sync">;
/** Every loss with methods returning Promises. */
export type AsyncLosses = LossSet<"async">;

/** Binds every definition to a backend's kernels: synchronous methods, or (`sync` false) Promises. */
export function bindLosses(kernels: Kernels, sync: true): SyncLosses;
export function bindLosses(kernels: Kernels, sync: false): AsyncLosses;
export function bindLosses(kernels: Kernels, sync: boolean): SyncLosses | AsyncLosses {
  const async = !sync;
  const out: Record<string, unknown> = {
    softmax: bindSoftmax(kernels.softmax, false, async),
    logSoftmax: bindSoftmax(kernels.softmax, true, async),
    sharded: bindSharded(kernels, async),
  };
  for (const [name, def] of Object.entries(definitions)) {
    const d = def as unknown as LossDef<unknown, unknown, unknown, KernelName>;
    out[name] = bindLoss(d, kernels[d.kernel] as (p: unknown) => never, async);
  }
  for (const [name, def] of Object.entries(composites)) {
    const d = def as unknown as CompositeDef<unknown, unknown, unknown, unknown>;
    out[name] = bindComposite(d, kernels, async);
  }
  for (const [name, def] of Object.entries(metrics)) {
    const d = def as unknown as MetricDef<unknown, unknown, KernelName>;
    out[name] = bindMetric(d, kernels[d.kernel] as (p: unknown) => never, async);
  }
  return out as unknown as SyncLosses | AsyncLosses;
}
