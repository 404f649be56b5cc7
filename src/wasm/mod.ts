/**
 * The WebAssembly SIMD backend: kernels compiled from `assembly/`, one per family
 * (`src/kernels.ts`).
 *
 * @module
 */
import type { Kernels } from "../kernels/mod.ts";
import { hostKernels } from "../kernels/mod.ts";
import { topkHits } from "./accuracy.ts";
import { hardLabel } from "./cross_entropy.ts";
import { head } from "./head_threads.ts";
import { distill } from "./distillation.ts";
import { klDiv, softTarget } from "./soft_cross_entropy.ts";
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
// The composites' combination: elementwise sums and one dot per row and expert, on the host.
import { combine } from "../reference/combine.ts";
import { wasmShardKernels } from "./sharded.ts";
import { linearCe } from "./linear_cross_entropy.ts";

/** The WebAssembly kernels. */
export const wasmKernels: Kernels = hostKernels(
  {
    hardLabel,
    softTarget,
    klDiv,
    distill,
    topkHits,
    head,
    linearCe,
    softmax: softmaxTransform,
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
    ...wasmShardKernels,
  },
  "wasm",
);
