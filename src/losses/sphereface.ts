/**
 * `sphereface`: angular softmax (A-Softmax, Liu et al. 2017, "SphereFace: Deep
 * Hypersphere Embedding for Face Recognition").
 *
 * @module
 */
import * as v from "../validate.ts";
import { headLoss, type HeadOptions, integerMargin, psi } from "./margin_head.ts";

/** Options of `sphereface`. */
export interface SpherefaceOptions extends HeadOptions {
  /** Integer angular margin m >= 1. @default 4 */
  m?: number;
  /** Annealing weight lambda >= 0 of the plain cosine (see `sphereFaceLambda`). @default 0 */
  lambda?: number;
}

/**
 * The definition of `sphereface`: rows of W normalised, x not; logits
 * `||x|| cos_j = x . W_j/||W_j||`, the label's `||x|| (lambda cos + psi(theta)) / (1 + lambda)`.
 */
export const sphereface = headLoss<SpherefaceOptions>("sphereface", {
  normX: false,
  normW: true,
  clamp: false,
  options: ["m", "lambda"],
  parse(o) {
    const m = integerMargin(o.m);
    const lambda = v.number("options.lambda", o.lambda, 0, { min: 0 });
    return {
      scale: 1,
      spec: { kind: "sphereface", m, weight: lambda },
      // u = ||x|| cos; T = ||x|| g(cos) / (1 + lambda), g = lambda cos + psi
      target(u, nx) {
        const nxe = Math.max(nx, 1e-12);
        const raw = u / nxe;
        const cos = Math.min(1, Math.max(-1, raw));
        // The clamps pass no gradient: to cos outside [-1, 1], to ||x|| below 1e-12.
        const inside = cos === raw;
        const [p, dp] = psi(m, cos);
        const g = lambda * cos + p, dg = lambda + dp;
        return [
          (nx * g) / (1 + lambda),
          inside ? (nx * dg) / nxe / (1 + lambda) : 0,
          (g - (inside && nx > 1e-12 ? dg * cos : 0)) / (1 + lambda),
          0,
        ];
      },
    };
  },
});
