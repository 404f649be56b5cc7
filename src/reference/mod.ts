/**
 * The plain-TypeScript float64 backend: obviously correct, the test oracle and the
 * last-resort backend. One kernel per family (`src/kernels.ts`).
 *
 * @module
 */
import type { Kernels } from "../kernels/mod.ts";
import { hostKernels } from "../kernels/mod.ts";
import { topkHits } from "./accuracy.ts";
import { hardLabel } from "./cross_entropy.ts";
import { head } from "./margin_head.ts";
import { linearCe } from "./linear_cross_entropy.ts";
import { distill } from "./distillation.ts";
import { klDiv } from "./kl_div.ts";
import { softTarget } from "./soft_cross_entropy.ts";
import { softmaxTransform } from "./softmax.ts";
import { center } from "./center_loss.ts";
import { contrastive } from "./physics_contrastive.ts";
import { diversity } from "./feature_diversity.ts";
import { centerReg } from "./center_regularization.ts";
import { experts } from "./experts.ts";
import { hierarchical } from "./hierarchical.ts";
import { hnm } from "./hnm_contrastive.ts";
import { paired } from "./clip.ts";
import { metric } from "./metric.ts";
import { combine } from "./combine.ts";
import { referenceShardKernels } from "./sharded.ts";

/** The float64 kernels of the metric-learning and mixture-of-experts families (and the composites' combination). */
export const referenceMetricKernels = {
  center,
  contrastive,
  diversity,
  centerReg,
  experts,
  hierarchical,
  hnm,
  paired,
  metric,
  combine,
};

/** The reference kernels. */
export const referenceKernels: Kernels = hostKernels(
  {
    hardLabel,
    softTarget,
    klDiv,
    distill,
    topkHits,
    head,
    linearCe,
    softmax: softmaxTransform,
    ...referenceMetricKernels,
    ...referenceShardKernels,
  },
  "js",
);
