/**
 * `sphereface`: angular softmax (A-Softmax, Liu et al. 2017, "SphereFace: Deep
 * Hypersphere Embedding for Face Recognition"), and its annealing schedule.
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
  parse(o) {
    const m = integerMargin(o.m);
    const lambda = v.number("options.lambda", o.lambda, 0, { min: 0 });
    return {
      scale: 1,
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

/** Options of {@linkcode sphereFaceLambda}. */
export interface SphereFaceLambdaOptions {
  /** Lambda at step 0. @default 1000 */
  base?: number;
  /** Decay rate of `(1 + gamma * step)`. @default 0.12 */
  gamma?: number;
  /** Exponent of the decay. @default 1 */
  power?: number;
  /** Floor of lambda. @default 5 */
  min?: number;
}

/**
 * SphereFace's annealing schedule, a pure function of the training step:
 * `max(min, base * (1 + gamma * step)^-power)`.
 *
 * @param step The training step (>= 0).
 * @param options The schedule's constants.
 * @returns The `lambda` to pass to `sphereface` at that step.
 *
 * @example The first steps
 * ```ts
 * import { sphereFaceLambda } from "@softmargin/softmargin";
 * console.log(sphereFaceLambda(0), sphereFaceLambda(100), sphereFaceLambda(1e6)); // 1000 76.92... 5
 * ```
 */
export function sphereFaceLambda(step: number, options: SphereFaceLambdaOptions = {}): number {
  const s = v.number("step", step, 0, { min: 0 });
  const base = v.number("options.base", options.base, 1000);
  const gamma = v.number("options.gamma", options.gamma, 0.12, { min: 0 });
  const power = v.number("options.power", options.power, 1);
  const min = v.number("options.min", options.min, 5);
  return Math.max(min, base * (1 + gamma * s) ** -power);
}
