/**
 * `arcface`: additive angular margin (ArcFace, AAM-Softmax; Deng et al. 2019).
 *
 * @module
 */
import type { Definition } from "../loss.ts";
import * as v from "../validate.ts";
import {
  derivativeCos,
  INTER_KEYS,
  type InterClassOptions,
  makePhi,
  type MarginGrads,
  type MarginInputs,
  marginLoss,
  type MarginOptions,
  type Phi,
} from "./margin.ts";

/** Options of `arcface`. */
export interface ArcfaceOptions extends MarginOptions, InterClassOptions {
  /** Logit scale s, finite, in (0, 1e6] (float32 logits `s cos`). @default 64 */
  scale?: number;
  /**
   * Angular margin m in radians, in [0, pi); a `Float32Array [N]` gives each row its own (ElasticFace,
   * `elasticMargins`), its own `cos(pi - m)` threshold included. @default 0.5
   */
  margin?: number | Float32Array;
  /** Apply the margin only where cos > 0 (else the plain cosine). @default false */
  easyMargin?: boolean;
  /**
   * wespeaker's inter-top-k penalty: the k non-target classes with the largest cosines (after
   * the filtering threshold; ties to the smaller class; every non-target when k >= C - 1) get
   * the logit `s cos(theta_j - interTopKMargin)`. An integer >= 0; `cos` on the host. @default 0
   */
  interTopK?: number;
  /** The margin m' of `interTopK`, in [0, pi). @default 0.06 */
  interTopKMargin?: number;
}

/**
 * ArcFace's target function: `phi = cos(theta + m) = cos cos(m) - sin sin(m)`,
 * `sin = sqrt(max(0, 1 - cos^2))`; with `easyMargin` `phi` where `cos > 0` else `cos`;
 * otherwise `phi` where `cos > cos(pi - m)` else `cos - m sin(pi - m)` (which keeps the
 * target logit decreasing in theta past pi - m).
 */
export function arcfacePhi(margin: number, easyMargin: boolean): Phi {
  const cm = Math.cos(margin), sm = Math.sin(margin);
  const th = Math.cos(Math.PI - margin), mm = Math.sin(Math.PI - margin) * margin;
  return makePhi({ m1: 1, m2: margin, m3: 0, branch: easyMargin ? "easy" : "threshold" }, (x) => {
    const sin = Math.sqrt(Math.max(0, 1 - x * x));
    const xd = derivativeCos(x);
    const phi: [number, number] = [x * cm - sin * sm, cm + (sm * xd) / Math.sqrt(1 - xd * xd)];
    if (easyMargin) return x > 0 ? phi : [x, 1];
    return x > th ? phi : [x - mm, 1];
  });
}

/** Checks `arcface`'s options and returns its target function. */
export function arcfaceTarget(o: ArcfaceOptions): Phi {
  const margin = v.number("options.margin", o.margin, 0.5, { min: 0, max: Math.PI, maxExclusive: true });
  return arcfacePhi(margin, v.boolean("options.easyMargin", o.easyMargin, false));
}

/** The options of `arcface` beyond those every margin loss takes. */
export const ARCFACE_KEYS = ["margin", "easyMargin"] as const;

/**
 * ArcFace / AAM-Softmax (Deng et al. 2019, "ArcFace: Additive Angular Margin Loss for
 * Deep Face Recognition"): cosines `cos [N, C]` clamped to [-1, 1], logits `s cos`
 * except the label's, `s phi(cos_y)` with `phi = cos(theta + m)` (`scale` s = 64,
 * `margin` m = 0.5); `easyMargin` keeps `cos` where `cos <= 0`, otherwise `cos - m sin(pi - m)`
 * is used where `cos <= cos(pi - m)`; then cross-entropy (`reduction`, `ignoreIndex` as
 * `crossEntropy`). Gradient w.r.t. `cos`: `s (p_j)` for j != y, `s (p_y - 1) phi'(cos_y)`
 * (`marginGrad: "constant"`: `phi' = 1`, as insightface); `phi'` uses the cosine clamped to
 * `[-1 + 1e-6, 1 - 1e-6]`, so it is finite at cosines of exactly +-1.
 * `interclassFilteringThreshold` T > 0 (insightface) replaces every non-target cosine above T by
 * 0 first; `interTopK` k > 0 (wespeaker) gives the k largest non-targets the logit
 * `s cos(theta_j - m')`, `m' = interTopKMargin` (0.06), as docs/LOSSES.md section 11 says.
 * `subcenters` K (sub-center ArcFace, Deng et al. 2020): `cos` is `[N, C K]`, each class's cosine the
 * largest of its K columns (ties to the smaller), its gradient at that column alone (docs/LOSSES.md section 12).
 *
 * @example ArcFace on cosines
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const cos = { data: new Float32Array([0.8, 0.1, -0.2, 0.3, 0.6, 0.1]), shape: [2, 3] as const };
 * console.log(wasm.arcface.forward({ cos, labels: [0, 1] }, { scale: 30 }).loss); // 2.3606 (PyTorch: 2.3606137)
 * ```
 */
export const arcface: Definition<MarginInputs, ArcfaceOptions, MarginGrads, unknown, "loss", "logits"> = marginLoss<
  ArcfaceOptions
>(
  "arcface",
  64,
  arcfaceTarget,
  ARCFACE_KEYS,
  INTER_KEYS,
);
