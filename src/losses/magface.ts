/**
 * `magface`: the magnitude-aware margin and its regulariser (MagFace, Meng et al. 2021).
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { Matrix } from "../types.ts";
import * as v from "../validate.ts";
import { derivativeCos, type MarginOptions } from "./margin.ts";
import { FACE_KEYS, faceBase, type FaceInputs, faceProblem, labelCos, rowVector } from "./face_margin.ts";
import { finishHardLabel } from "./cross_entropy.ts";
import type { HardLabelProblem } from "../kernels/hard_label.ts";

/** Inputs of `magface`. */
export interface MagfaceInputs extends FaceInputs {
  /** Feature norms `||x_i||` `[N]` (differentiable). */
  norms: Float32Array | readonly number[];
}

/** Options of `magface`. */
export interface MagfaceOptions extends MarginOptions {
  /** Logit scale s, finite, in (0, 1e6]. @default 64 */
  scale?: number;
  /** Lower bound l_a of the norms, finite, > 0. @default 10 */
  lowerNorm?: number;
  /** Upper bound u_a of the norms, finite, > lowerNorm. @default 110 */
  upperNorm?: number;
  /** The margin at `lowerNorm`, in [0, pi). @default 0.45 */
  lowerMargin?: number;
  /** The margin at `upperNorm`, in [0, pi). @default 0.8 */
  upperMargin?: number;
  /** Weight lambda_g of the regulariser `g`, in [0, 1e6]. @default 35 */
  lambda?: number;
  /** The margin only where `cos_y > 0` (else the plain cosine); false: ArcFace's threshold rule. @default true */
  easyMargin?: boolean;
}

/** Gradients of `magface`. */
export interface MagfaceGrads {
  /** Gradient w.r.t. the cosines `[N, C]`. */
  cos: Matrix;
  /** Gradient w.r.t. the norms `[N]` (0 where a norm is outside `[lowerNorm, upperNorm]`). */
  norms: Float32Array;
}

/** The parts of `magface`, reduced as the loss is. */
export interface MagfaceParts {
  /** The cross-entropy with the adaptive margin. */
  ce: number;
  /** The regulariser `a / u_a^2 + 1 / a`. */
  g: number;
}

/** MagFace's problem: the hard-label one and what the norms' gradient needs. */
interface MagfaceProblem extends HardLabelProblem {
  readonly lambda: number;
  /** Per row: `g_i`, and `d g_i / d norm_i`, `d z_y / d norm_i` (0 where the clamp cuts). */
  readonly gRows: Float64Array;
  readonly dg: Float64Array;
  readonly dzy: Float64Array;
}

/**
 * MagFace (Meng et al. 2021, "MagFace: A Universal Representation for Face Recognition and
 * Quality Assessment"): with `a = clamp(norms, lowerNorm, upperNorm)` (gradient 0 outside,
 * passed at the bounds) and the margin `m(a) = (upperMargin - lowerMargin) / (upperNorm -
 * lowerNorm) (a - lowerNorm) + lowerMargin`, the label's logit is `s cos(theta_y + m(a))`
 * (`easyMargin`, default: where `cos_y > 0`, else `s cos_y`; otherwise ArcFace's threshold
 * rule with `m(a)`), the others `s cos_j`; `ce` is the cross-entropy, `g = a / upperNorm^2 +
 * 1 / a` per row, and the loss `ce + lambda g`, each part reduced as `reduction` says
 * (`"mean"`: over the non-ignored rows, as MagLoss's means). Defaults `scale` 64,
 * `lowerNorm` 10, `upperNorm` 110, `lowerMargin` 0.45, `upperMargin` 0.8, `lambda` 35.
 * Shapes: cos `[N, C]`, norms `[N]`, labels `[N]`; gradients `grads.cos` `[N, C]` and
 * `grads.norms` `[N]` (through the margin, `-s sin(theta_y + m(a)) m'(a)` at `cos_y`
 * itself, and through `g`). `marginGrad: "constant"` changes only the label's derivative
 * w.r.t. its cosine (`s`).
 *
 * @example Loss and parts
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const cos = { data: new Float32Array([0.8, 0.1, -0.2, 0.3, 0.6, 0.1]), shape: [2, 3] as const };
 * const r = wasm.magface.valueAndGrad({ cos, norms: [20, 60], labels: [0, 1] }, { scale: 30 });
 * console.log(r.loss.toFixed(3), r.ce.toFixed(3), r.g.toFixed(4), r.grads.norms.length); // 5.506 4.224 0.0366 2 (PyTorch: 5.5062398)
 * ```
 */
export const magface: Definition<MagfaceInputs, MagfaceOptions, MagfaceGrads, MagfaceParts> = lossDef<
  MagfaceInputs,
  MagfaceOptions,
  MagfaceGrads,
  "hardLabel",
  MagfaceParts
>({
  name: "magface",
  kernel: "hardLabel",
  inputs: ["cos", "norms", "labels"],
  options: [...FACE_KEYS, "lowerNorm", "upperNorm", "lowerMargin", "upperMargin", "lambda", "easyMargin"],
  grads: ["cos", "norms"],
  prepare(inputs, options, grad, upstream) {
    const o = v.options(options);
    const b = faceBase("magface", inputs, o, 64);
    const norms = rowVector("norms", inputs.norms, b.n);
    const lower = v.number("options.lowerNorm", o.lowerNorm, 10, { min: 0, minExclusive: true, max: 1e6 });
    const upper = v.number("options.upperNorm", o.upperNorm, 110, { min: lower, minExclusive: true, max: 1e6 });
    const angle = { min: 0, max: Math.PI, maxExclusive: true };
    const lm = v.number("options.lowerMargin", o.lowerMargin, 0.45, angle);
    const um = v.number("options.upperMargin", o.upperMargin, 0.8, angle);
    const lambda = v.weight("options.lambda", o.lambda, 35, 0);
    const easy = v.boolean("options.easyMargin", o.easyMargin, true);
    const slopeM = (um - lm) / (upper - lower);
    const n = b.n, target = new Float64Array(2 * n);
    const gRows = new Float64Array(n), dg = new Float64Array(n), dzy = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      if (b.labels[i] < 0) continue;
      const a = Math.min(upper, Math.max(lower, norms[i]));
      const inside = a === norms[i] || Number.isNaN(norms[i]) ? 1 : 0;
      const m = slopeM * (a - lower) + lm, cm = Math.cos(m), sm = Math.sin(m);
      const [x, passes] = labelCos(b, i);
      const sin = Math.sqrt(Math.max(0, 1 - x * x)), xd = derivativeCos(x);
      // phi = cos(theta + m) = x cos m - sin sin m; d/dx = cos m + xd sin m / sin_d; d/dm = -sin(theta + m)
      let value = x * cm - sin * sm, dx = cm + (sm * xd) / Math.sqrt(1 - xd * xd), dm = -(x * sm + sin * cm);
      if (easy ? !(x > 0) : !(x > Math.cos(Math.PI - m))) {
        // easy: x; threshold: x - m sin(pi - m), d/dm = -(sin m + m cos m)
        value = easy ? x : x - m * Math.sin(Math.PI - m);
        dx = 1;
        dm = easy ? 0 : -(sm + m * cm);
      }
      target[2 * i] = b.scale * value;
      target[2 * i + 1] = passes ? b.scale * (b.constant ? 1 : dx) : 0;
      gRows[i] = a / (upper * upper) + 1 / a;
      dg[i] = inside * (1 / (upper * upper) - 1 / (a * a));
      dzy[i] = inside * b.scale * dm * slopeM;
    }
    const p = faceProblem(b, o, grad, upstream, target, undefined);
    return Object.assign(p, { lambda, gRows, dg, dzy }) as MagfaceProblem;
  },
  finish(problem, raw) {
    const p = problem as MagfaceProblem;
    const ceRows = raw.rows[0];
    const r = finishHardLabel(p, ceRows, raw.grads.logits);
    const g = v.reduce(p.gRows, p.reduction, p.denominator);
    const loss = v.reduce(ceRows.map((x, i) => x + p.lambda * p.gRows[i]), p.reduction, p.denominator);
    if (!p.grad) return { loss, ce: r.loss, g, grads: { cos: r.grads.logits, norms: new Float32Array(0) } };
    // d loss_i / d norm_i = s_i ((p_y - 1) d z_y / d norm + lambda d g / d norm), 1 - p_y = -expm1(-nll_i)
    const norms = Float32Array.from(
      { length: p.n },
      (_, i) => p.scales[i] * (Math.expm1(-ceRows[i]) * p.dzy[i] + p.lambda * p.dg[i]),
    );
    return { loss, ce: r.loss, g, grads: { cos: r.grads.logits, norms } };
  },
});
