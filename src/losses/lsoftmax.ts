/**
 * `lsoftmax`: large-margin softmax (L-Softmax, Liu et al. 2016, "Large-Margin Softmax
 * Loss for Convolutional Neural Networks").
 *
 * @module
 */
import * as v from "../validate.ts";
import type { Definition } from "../loss.ts";
import { type HeadGrads, type HeadInputs, headLoss, type HeadOptions, integerMargin, psi } from "./margin_head.ts";

/** Options of `lsoftmax`. */
export interface LsoftmaxOptions extends HeadOptions {
  /** Integer angular margin m in [1, 8]. @default 4 */
  m?: number;
  /** Annealing weight beta in [0, 1e6] of the plain logit (see `lSoftmaxBeta`). @default 0 */
  beta?: number;
}

/**
 * L-Softmax (Liu et al. 2016, "Large-Margin Softmax Loss for Convolutional Neural
 * Networks"): logits `x W^T`, the label's `(||W_y|| ||x|| psi(theta_y) + beta z_y) / (1 + beta)`
 * with `psi` as `sphereface`; integer `m` (4), `beta` (0; anneal with `lSoftmaxBeta`).
 *
 * @example L-Softmax
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const x = { data: new Float32Array([2, 0.5, 0.3, 1.5]), shape: [2, 2] as const };
 * const W = { data: new Float32Array([1, 0, 0, 1, -1, 0]), shape: [3, 2] as const };
 * console.log(wasm.lsoftmax.forward({ x, W, labels: [0, 1] }, { m: 2, beta: 10 }).loss); // 0.3025 (PyTorch: 0.3024612)
 * ```
 */
export const lsoftmax: Definition<HeadInputs, LsoftmaxOptions, HeadGrads> = headLoss<LsoftmaxOptions>("lsoftmax", {
  normX: false,
  normW: false,
  clamp: false,
  options: ["m", "beta"],
  parse(o) {
    const m = integerMargin(o.m);
    const beta = v.weight("options.beta", o.beta, 0, 0);
    return {
      scale: 1,
      spec: { kind: "lsoftmax", m, weight: beta },
      // u = z_y = x . W_y; cos = u / max(||x|| ||W_y||, 1e-12); T = (||x|| ||W_y|| psi(cos) + beta u) / (1 + beta)
      target(u, nx, nw) {
        const den = Math.max(nx * nw, 1e-12);
        const raw = u / den;
        const cos = Math.min(1, Math.max(-1, raw));
        // The clamps pass no gradient: to cos outside [-1, 1], to ||x|| ||W_y|| below 1e-12.
        const inside = cos === raw;
        const [p, dp] = psi(m, cos);
        const tail = p - (inside && nx * nw > 1e-12 ? dp * cos : 0);
        return [
          (nx * nw * p + beta * u) / (1 + beta),
          ((inside ? (nx * nw * dp) / den : 0) + beta) / (1 + beta),
          (nw * tail) / (1 + beta),
          (nx * tail) / (1 + beta),
        ];
      },
    };
  },
});
