/**
 * The WebAssembly SIMD backend: kernels compiled from `assembly/`.
 *
 * @module
 */
import { hostKernels, type Kernels } from "../losses/mod.ts";
import { topkHits } from "./accuracy.ts";
import { hardLabel } from "./cross_entropy.ts";
import { head } from "./margin_head.ts";
import { distill } from "./distillation.ts";
import { klDiv, softTarget } from "./soft_cross_entropy.ts";
import { softmaxTransform } from "./softmax.ts";

/** The WebAssembly kernels. */
export const wasmKernels: Kernels = hostKernels({
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
}, "wasm");
