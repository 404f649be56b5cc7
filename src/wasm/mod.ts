/**
 * The WebAssembly SIMD backend: kernels compiled from `assembly/`, one per family
 * (`src/kernels.ts`).
 *
 * @module
 */
import type { Kernels } from "../kernels.ts";
import { hostKernels } from "../losses/mod.ts";
import { topkHits } from "./accuracy.ts";
import { hardLabel } from "./cross_entropy.ts";
import { head } from "./margin_head.ts";
import { distill } from "./distillation.ts";
import { klDiv, softTarget } from "./soft_cross_entropy.ts";
import { softmaxTransform } from "./softmax.ts";
import { referenceMetricKernels } from "../reference/mod.ts";

/**
 * The WebAssembly kernels. The metric-learning and mixture-of-experts families run the
 * float64 reference kernels here until their WebAssembly kernels land (issue 9).
 */
export const wasmKernels: Kernels = hostKernels(
  { hardLabel, softTarget, klDiv, distill, topkHits, head, softmax: softmaxTransform, ...referenceMetricKernels },
  "wasm",
);
