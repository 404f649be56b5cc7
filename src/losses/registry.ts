/**
 * The registry: every loss, metric and transform, one line each: its definition (the
 * public member of `Losses`/`SyncLosses` of the same name, with the JSDoc written on the
 * definition) and its public types. `src/losses/mod.ts` binds every definition exported
 * here to a backend and derives the member types (and the class-sharded forms) from
 * them; `mod.ts` and `cpu.ts` export the types. Adding a loss of an existing kernel
 * family is its module and one line here.
 *
 * @module
 */
export { softmax, type SoftmaxGrads, type SoftmaxInputs, type SoftmaxOptions, type SoftmaxOutput } from "./softmax.ts";
export { logSoftmax, type SoftmaxMethods, type SoftmaxResult } from "./softmax.ts";
export {
  crossEntropy,
  type CrossEntropyGrads,
  type CrossEntropyInputs,
  type CrossEntropyOptions,
  type CrossEntropyParts,
} from "./cross_entropy.ts";
export {
  softCrossEntropy,
  type SoftCrossEntropyGrads,
  type SoftCrossEntropyInputs,
  type SoftCrossEntropyOptions,
} from "./soft_cross_entropy.ts";
export { klDiv, type KlDivGrads, type KlDivInputs, type KlDivOptions, type KlReduction } from "./kl_div.ts";
export {
  distillation,
  type DistillationGrads,
  type DistillationInputs,
  type DistillationOptions,
  type DistillationParts,
} from "./distillation.ts";
export { focal, type FocalOptions } from "./focal.ts";
export { accuracy, type AccuracyOptions } from "./accuracy.ts";
export type { InterClassOptions, MarginGrads, MarginInputs, MarginOptions } from "./margin.ts";
export { arcface, type ArcfaceOptions } from "./arcface.ts";
export { cosface, type CosfaceOptions } from "./cosface.ts";
export { normface, type NormfaceOptions } from "./normface.ts";
export { combinedMargin, type CombinedMarginOptions } from "./combined_margin.ts";
export {
  type HeadGrads,
  type HeadInputs,
  type HeadOptions,
  marginHead,
  type MarginHeadOptions,
  type MarginHeadParts,
} from "./margin_head.ts";
export { sphereface, type SpherefaceOptions } from "./sphereface.ts";
export { lsoftmax, type LsoftmaxOptions } from "./lsoftmax.ts";
export { centerLoss, type CenterLossGrads, type CenterLossInputs, type CenterLossOptions } from "./center_loss.ts";
export {
  physicsContrastive,
  type PhysicsContrastiveGrads,
  type PhysicsContrastiveInputs,
  type PhysicsContrastiveOptions,
} from "./physics_contrastive.ts";
export {
  featureDiversity,
  type FeatureDiversityGrads,
  type FeatureDiversityInputs,
  type FeatureDiversityOptions,
} from "./feature_diversity.ts";
export {
  centerRegularization,
  type CenterRegularizationGrads,
  type CenterRegularizationInputs,
  type CenterRegularizationOptions,
  type CenterRegularizationParts,
} from "./center_regularization.ts";
export type { ExpertGrads, ExpertInputs } from "./experts.ts";
export { mixOutputs, type MixOutputsOptions, type MixOutputsParts } from "./mix_outputs.ts";
export { iclMoe, type IclMoeInputs, type IclMoeOptions, type IclMoeParts } from "./icl_moe.ts";
export {
  hierarchical,
  type HierarchicalGrads,
  type HierarchicalInputs,
  type HierarchicalOptions,
  type HierarchicalParts,
} from "./hierarchical.ts";
export { physMoe, type PhysMoeGrads, type PhysMoeInputs, type PhysMoeOptions, type PhysMoeParts } from "./phys_moe.ts";
export {
  hnmContrastive,
  type HnmContrastiveGrads,
  type HnmContrastiveInputs,
  type HnmContrastiveOptions,
  type IntMatrix,
} from "./hnm_contrastive.ts";
export { clip, type ClipGrads, type ClipInputs, type ClipOptions } from "./clip.ts";
export { siglip, type SiglipGrads, type SiglipInputs, type SiglipOptions } from "./siglip.ts";
export { ntXent, type NtXentGrads, type NtXentInputs, type NtXentOptions } from "./nt_xent.ts";
export {
  type Mining,
  tripletMargin,
  type TripletMarginGrads,
  type TripletMarginInputs,
  type TripletMarginOptions,
} from "./triplet_margin.ts";
export {
  multiSimilarity,
  type MultiSimilarityGrads,
  type MultiSimilarityInputs,
  type MultiSimilarityOptions,
} from "./multi_similarity.ts";
export { proxyAnchor, type ProxyAnchorGrads, type ProxyAnchorInputs, type ProxyAnchorOptions } from "./proxy_anchor.ts";
export {
  linearCrossEntropy,
  type LinearCrossEntropyGrads,
  type LinearCrossEntropyInputs,
  type LinearCrossEntropyOptions,
  type LinearCrossEntropyParts,
} from "./linear_cross_entropy.ts";
export type { FaceInputs } from "./face_margin.ts";
export { adaface, type AdafaceGrads, type AdafaceInputs, type AdafaceOptions, type AdafaceParts } from "./adaface.ts";
export {
  curricularFace,
  type CurricularFaceInputs,
  type CurricularFaceOptions,
  type CurricularFaceParts,
  type CurricularFaceState,
} from "./curricular_face.ts";
export { magface, type MagfaceGrads, type MagfaceInputs, type MagfaceOptions, type MagfaceParts } from "./magface.ts";
