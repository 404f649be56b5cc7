/**
 * `normface`: scaled cosine softmax without a margin (NormFace, Wang et al. 2017).
 *
 * @module
 */
import { makePhi, marginLoss, type MarginOptions, type Phi } from "./margin.ts";

/** Options of `normface`. */
export interface NormfaceOptions extends MarginOptions {
  /** Logit scale s, finite, in (0, 1e6] (float32 logits `s cos`). @default 16 */
  scale?: number;
}

/** `normface`'s target function: the cosine itself. */
export function normfaceTarget(): Phi {
  return makePhi({ m1: 1, m2: 0, m3: 0, branch: "none" }, (x) => [x, 1]);
}

/** The definition of `normface`: every logit `s cos`. */
export const normface = marginLoss<NormfaceOptions>("normface", 16, normfaceTarget, []);
