/**
 * `normface`: scaled cosine softmax without a margin (NormFace, Wang et al. 2017).
 *
 * @module
 */
import type { Definition } from "../loss.ts";
import { makePhi, type MarginGrads, type MarginInputs, marginLoss, type MarginOptions, type Phi } from "./margin.ts";

/** Options of `normface`. */
export interface NormfaceOptions extends MarginOptions {
  /** Logit scale s, finite, in (0, 1e6] (float32 logits `s cos`). @default 16 */
  scale?: number;
}

/** `normface`'s target function: the cosine itself. */
export function normfaceTarget(): Phi {
  return makePhi({ m1: 1, m2: 0, m3: 0, branch: "none" }, (x) => [x, 1]);
}

/**
 * NormFace (Wang et al. 2017, "NormFace: L2 Hypersphere Embedding for Face
 * Verification"): cross-entropy of the logits `s cos` without a margin, `scale` s = 16.
 *
 * @example NormFace
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const cos = { data: new Float32Array([0.8, 0.1, -0.2, 0.3, 0.6, 0.1]), shape: [2, 3] as const };
 * console.log(wasm.normface.forward({ cos, labels: [0, 1] }).loss); // 0.0043 (PyTorch: 0.0042713)
 * ```
 */
export const normface: Definition<MarginInputs, NormfaceOptions, MarginGrads, unknown, "loss", "logits"> = marginLoss<
  NormfaceOptions
>("normface", 16, normfaceTarget, []);
