/**
 * The plain-TypeScript float64 backend: obviously correct, the test oracle and the
 * last-resort backend. One kernel per family (`src/kernels.ts`).
 *
 * @module
 */
import type { Kernels } from "../kernels.ts";
import { hostKernels } from "../losses/mod.ts";
import { topkHits } from "./accuracy.ts";
import { hardLabel } from "./cross_entropy.ts";
import { head } from "./margin_head.ts";
import { distill } from "./distillation.ts";
import { klDiv } from "./kl_div.ts";
import { softTarget } from "./soft_cross_entropy.ts";
import { softmaxTransform } from "./softmax.ts";

/** The reference kernels. */
export const referenceKernels: Kernels = hostKernels(
  { hardLabel, softTarget, klDiv, distill, topkHits, head, softmax: softmaxTransform },
  "js",
);
