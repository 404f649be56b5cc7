/**
 * `sphereface`: angular softmax (A-Softmax, Liu et al. 2017, "SphereFace: Deep
 * Hypersphere Embedding for Face Recognition").
 *
 * @module
 */
import * as v from "../validate.ts";
import type { Definition } from "../loss.ts";
import { type HeadGrads, type HeadInputs, headLoss, type HeadOptions, integerMargin, psi } from "./margin_head.ts";

/** Options of `sphereface`. */
export interface SpherefaceOptions extends HeadOptions {
  /** Integer angular margin m in [1, 8]. @default 4 */
  m?: number;
  /** Annealing weight lambda in [0, 1e6] of the plain cosine (see `sphereFaceLambda`). @default 0 */
  lambda?: number;
}

/**
 * SphereFace / A-Softmax (Liu et al. 2017, "SphereFace: Deep Hypersphere Embedding for
 * Face Recognition"): rows of W normalised, x not; logits `||x|| cos_j`, the label's
 * `||x|| (lambda cos + psi(theta)) / (1 + lambda)` with `psi = (-1)^k cos(m theta) - 2k`,
 * `k = floor(m theta / pi)` (no gradient through k), `cos(m theta)` by the Chebyshev
 * polynomial `T_m(cos)`; integer `m` (4), `lambda` (0; anneal with `sphereFaceLambda`).
 *
 * @example SphereFace with annealing
 * ```ts
 * import { sphereFaceLambda } from "@softmargin/softmargin";
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const x = { data: new Float32Array([2, 0.5, 0.3, 1.5]), shape: [2, 2] as const };
 * const W = { data: new Float32Array([1, 0, 0, 1, -1, 0]), shape: [3, 2] as const };
 * console.log(wasm.sphereface.forward({ x, W, labels: [0, 1] }, { m: 4, lambda: sphereFaceLambda(500) }).loss); // 0.3083 (PyTorch: 0.3083298)
 * ```
 */
export const sphereface: Definition<HeadInputs, SpherefaceOptions, HeadGrads> = headLoss<SpherefaceOptions>(
  "sphereface",
  {
    normX: false,
    normW: true,
    clamp: false,
    options: ["m", "lambda"],
    parse(o) {
      const m = integerMargin(o.m);
      const lambda = v.weight("options.lambda", o.lambda, 0, 0);
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
  },
);
