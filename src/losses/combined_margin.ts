/**
 * `combinedMargin`: insightface's combined margin `cos(m1 theta + m2) - m3`, which
 * covers SphereFace-like (m1), ArcFace (m2) and CosFace (m3) margins.
 *
 * @module
 */
import type { Definition } from "../loss.ts";
import * as v from "../validate.ts";
import {
  derivativeCos,
  type InterClassOptions,
  makePhi,
  type MarginGrads,
  type MarginInputs,
  marginLoss,
  type MarginOptions,
  type Phi,
} from "./margin.ts";

/** Options of `combinedMargin`. */
export interface CombinedMarginOptions extends MarginOptions, InterClassOptions {
  /** Logit scale s, finite, in (0, 1e6] (float32 logits `s cos`). @default 64 */
  scale?: number;
  /** Multiplicative angular margin, finite, in [0, 8]. @default 1 */
  m1?: number;
  /** Additive angular margin (radians), finite, in [-pi, pi]; or one per row, `Float32Array [N]`. @default 0.5 */
  m2?: number | Float32Array;
  /** Additive cosine margin, finite, in [-2, 2]; or one per row, `Float32Array [N]`. @default 0 */
  m3?: number | Float32Array;
}

/**
 * Checks `combinedMargin`'s options and returns its target function
 * `cos(m1 theta + m2) - m3`, `theta = acos(cos)`, with
 * `d phi / d cos = m1 sin(m1 theta + m2) / sqrt(1 - cos^2)` evaluated at the cosine
 * clamped to `[-1 + 1e-6, 1 - 1e-6]`. No threshold branch.
 */
export function combinedMarginTarget(o: CombinedMarginOptions): Phi {
  const m1 = v.angularFactor("options.m1", o.m1, 1, 0);
  const m2 = v.number("options.m2", o.m2, 0.5, { min: -Math.PI, max: Math.PI });
  const m3 = v.cosineMargin("options.m3", o.m3, 0);
  return makePhi({ m1, m2, m3, branch: "none" }, (x) => {
    // The derivative is taken at the clamped cosine (angle and denominator alike), so
    // that it is finite and continuous at +-1 and equals ArcFace's for m1 = 1, m3 = 0.
    const xd = derivativeCos(x);
    return [Math.cos(m1 * Math.acos(x) + m2) - m3, (m1 * Math.sin(m1 * Math.acos(xd) + m2)) / Math.sqrt(1 - xd * xd)];
  });
}

/** The options of `combinedMargin` beyond those every margin loss takes. */
export const COMBINED_MARGIN_KEYS = ["m1", "m2", "m3"] as const;

/**
 * insightface's combined margin: label logit `s (cos(m1 theta + m2) - m3)`,
 * `theta = acos(cos_y)`, defaults s = 64, m1 = 1, m2 = 0.5, m3 = 0 (no threshold branch,
 * so it equals `arcface` wherever ArcFace's branch is not taken).
 *
 * @example Combined margin
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const cos = { data: new Float32Array([0.8, 0.1, -0.2, 0.3, 0.6, 0.1]), shape: [2, 3] as const };
 * console.log(wasm.combinedMargin.forward({ cos, labels: [0, 1] }, { scale: 30, m1: 1, m2: 0.3, m3: 0.2 }).loss); // 2.4533
 * ```
 */
export const combinedMargin: Definition<MarginInputs, CombinedMarginOptions, MarginGrads, unknown, "loss", "logits"> =
  marginLoss<CombinedMarginOptions>(
    "combinedMargin",
    64,
    combinedMarginTarget,
    COMBINED_MARGIN_KEYS,
    ["interclassFilteringThreshold"],
  );
