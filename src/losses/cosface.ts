/**
 * `cosface`: additive cosine margin (CosFace / LMCL, Wang et al. 2018; AM-Softmax,
 * Wang et al. 2018, which used s = 30).
 *
 * @module
 */
import * as v from "../validate.ts";
import { makePhi, marginLoss, type MarginOptions, type Phi } from "./margin.ts";

/** Options of `cosface`. */
export interface CosfaceOptions extends MarginOptions {
  /** Logit scale s, finite, in (0, 1e6] (float32 logits `s cos`). @default 64 */
  scale?: number;
  /** Cosine margin m subtracted from the target cosine. @default 0.35 */
  margin?: number;
}

/** Checks `cosface`'s options and returns its target function `cos - m`. */
export function cosfaceTarget(o: CosfaceOptions): Phi {
  const margin = v.number("options.margin", o.margin, 0.35);
  return makePhi({ m1: 1, m2: 0, m3: margin, branch: "none" }, (x) => [x - margin, 1]);
}

/** The options of `cosface` beyond those every margin loss takes. */
export const COSFACE_KEYS = ["margin"] as const;

/** The definition of `cosface`: target logit `s (cos - m)`. */
export const cosface = marginLoss<CosfaceOptions>("cosface", 64, cosfaceTarget, COSFACE_KEYS);
