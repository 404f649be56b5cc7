/**
 * `normface`: scaled cosine softmax without a margin (NormFace, Wang et al. 2017).
 *
 * @module
 */
import { marginLoss, type MarginOptions } from "./margin.ts";

/** Options of `normface`. */
export interface NormfaceOptions extends MarginOptions {
  /** Logit scale s. @default 16 */
  scale?: number;
}

/** The definition of `normface`: every logit `s cos`. */
export const normface = marginLoss<NormfaceOptions>("normface", 16, () => (x) => [x, 1]);
