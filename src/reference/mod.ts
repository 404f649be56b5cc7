/**
 * The plain-TypeScript float64 backend: obviously correct, the test oracle and the
 * last-resort backend.
 *
 * @module
 */
import { hostKernels, type Kernels } from "../losses/mod.ts";
import { topkHits } from "./accuracy.ts";
import { hardLabel } from "./cross_entropy.ts";
import { head } from "./margin_head.ts";
import { distill } from "./distillation.ts";
import { klDiv } from "./kl_div.ts";
import { softTarget } from "./soft_cross_entropy.ts";
import { softmaxTransform } from "./softmax.ts";

/** The reference kernels. */
export const referenceKernels: Kernels = hostKernels({
  crossEntropy: hardLabel,
  focal: hardLabel,
  softCrossEntropy: softTarget,
  klDiv,
  distillation: distill,
  accuracy: topkHits,
  arcface: hardLabel,
  cosface: hardLabel,
  normface: hardLabel,
  combinedMargin: hardLabel,
  marginHead: head,
  sphereface: head,
  lsoftmax: head,
  softmax: softmaxTransform,
}, "js");
