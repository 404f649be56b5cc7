/**
 * `cosface`: additive cosine margin (CosFace / LMCL, Wang et al. 2018; AM-Softmax,
 * Wang et al. 2018, which used s = 30).
 *
 * @module
 */
import type { Definition } from "../loss.ts";
import * as v from "../validate.ts";
import {
  type InterClassOptions,
  makePhi,
  type MarginGrads,
  type MarginInputs,
  marginLoss,
  type MarginOptions,
  type Phi,
} from "./margin.ts";

/** Options of `cosface`. */
export interface CosfaceOptions extends MarginOptions, InterClassOptions {
  /** Logit scale s, finite, in (0, 1e6] (float32 logits `s cos`). @default 64 */
  scale?: number;
  /** Cosine margin m subtracted from the target cosine, finite, in [-2, 2]; or one per row, `Float32Array [N]`. @default 0.35 */
  margin?: number | Float32Array;
}

/** Checks `cosface`'s options and returns its target function `cos - m`. */
export function cosfaceTarget(o: CosfaceOptions): Phi {
  const margin = v.cosineMargin("options.margin", o.margin, 0.35);
  return makePhi({ m1: 1, m2: 0, m3: margin, branch: "none" }, (x) => [x - margin, 1]);
}

/** The options of `cosface` beyond those every margin loss takes. */
export const COSFACE_KEYS = ["margin"] as const;

/**
 * CosFace / LMCL (Wang et al. 2018, "CosFace: Large Margin Cosine Loss") and
 * AM-Softmax (Wang et al. 2018, who used s = 30): label logit `s (cos_y - m)`,
 * `scale` s = 64, `margin` m = 0.35; otherwise as `arcface`.
 *
 * @example CosFace
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const cos = { data: new Float32Array([0.8, 0.1, -0.2, 0.3, 0.6, 0.1]), shape: [2, 3] as const };
 * console.log(wasm.cosface.forward({ cos, labels: [0, 1] }, { scale: 30 }).loss); // 0.8517 (PyTorch: 0.8517327)
 * ```
 */
export const cosface: Definition<MarginInputs, CosfaceOptions, MarginGrads, unknown, "loss", "logits"> = marginLoss<
  CosfaceOptions
>(
  "cosface",
  64,
  cosfaceTarget,
  COSFACE_KEYS,
  ["interclassFilteringThreshold"],
);
