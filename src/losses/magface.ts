/**
 * `magface`: the magnitude-aware margin and its regulariser (MagFace, Meng et al. 2021).
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { GpuMatrix, Matrix, Reduction } from "../types.ts";
import { lin } from "../kernels/deferred.ts";
import * as v from "../validate.ts";
import { derivativeCos, type MarginOptions } from "./margin.ts";
import {
  clampCos,
  FACE_KEYS,
  faceBase,
  type FaceData,
  type FaceInputs,
  faceOnGpu,
  faceProblem,
  type FaceRows,
  gpuNorms,
  normGrads,
  type NormTerms,
  type RowsIn,
  rowsIn,
  rowVector,
} from "./face_margin.ts";
import { finishHardLabel } from "./cross_entropy.ts";
import type { HardLabelProblem } from "../kernels/hard_label.ts";

/** Inputs of `magface`. */
export interface MagfaceInputs extends FaceInputs {
  /** Feature norms `||x_i||` `[N]` (differentiable); with a GPU-resident `cos` also a GPU matrix `[N, 1]`. */
  norms: Float32Array | readonly number[] | GpuMatrix;
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
  /**
   * Gradient w.r.t. the norms `[N]` (0 where a norm is outside `[lowerNorm, upperNorm]`); with
   * a GPU-resident `cos` a GPU matrix `[N, 1]`.
   */
  norms: Float32Array;
}

/** The parts of `magface`, reduced as the loss is. */
export interface MagfaceParts {
  /** The cross-entropy with the adaptive margin. */
  ce: number;
  /** The regulariser `a / u_a^2 + 1 / a`. */
  g: number;
}

/**
 * MagFace's rows (shared with `marginHead`'s kind): each row's margin from its clamped norm,
 * its target, and the norm terms (`g`, its derivative, the target's derivative in the norm).
 */
export function magfaceRows(o: MagfaceOptions, r: RowsIn): FaceRows {
  const { lower, upper, lm, lambda, easy, slopeM } = magfaceOptions(o);
  const n = r.labels.length, target = new Float64Array(2 * n);
  const g = new Float64Array(n), dg = new Float64Array(n), dzy = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    if (r.labels[i] < 0) continue;
    const norm = r.norms![i], a = Math.min(upper, Math.max(lower, norm));
    const inside = a === norm || Number.isNaN(norm) ? 1 : 0;
    const m = slopeM * (a - lower) + lm, cm = Math.cos(m), sm = Math.sin(m);
    const [x, passes] = clampCos(r.cosY(i));
    const sin = Math.sqrt(Math.max(0, 1 - x * x)), xd = derivativeCos(x);
    // phi = cos(theta + m) = x cos m - sin sin m; d/dx = cos m + xd sin m / sin_d; d/dm = -sin(theta + m)
    let value = x * cm - sin * sm, dx = cm + (sm * xd) / Math.sqrt(1 - xd * xd), dm = -(x * sm + sin * cm);
    if (easy ? !(x > 0) : !(x > Math.cos(Math.PI - m))) {
      // easy: x; threshold: x - m sin(pi - m), d/dm = -(sin m + m cos m)
      value = easy ? x : x - m * Math.sin(Math.PI - m);
      dx = 1;
      dm = easy ? 0 : -(sm + m * cm);
    }
    target[2 * i] = r.scale * value;
    target[2 * i + 1] = passes ? r.scale * (r.constant ? 1 : dx) : 0;
    g[i] = a / (upper * upper) + 1 / a;
    dg[i] = inside * (1 / (upper * upper) - 1 / (a * a));
    dzy[i] = inside * r.scale * dm * slopeM;
  }
  return { target, parts: {}, norm: { lambda, g, dg, dzy } };
}

/** MagFace's checked options. */
function magfaceOptions(o: MagfaceOptions) {
  const lower = v.number("options.lowerNorm", o.lowerNorm, 10, { min: 0, minExclusive: true, max: 1e6 });
  const upper = v.number("options.upperNorm", o.upperNorm, 110, { min: lower, minExclusive: true, max: 1e6 });
  const angle = { min: 0, max: Math.PI, maxExclusive: true };
  const lm = v.number("options.lowerMargin", o.lowerMargin, 0.45, angle);
  const um = v.number("options.upperMargin", o.upperMargin, 0.8, angle);
  const lambda = v.weight("options.lambda", o.lambda, 35, 0);
  const easy = v.boolean("options.easyMargin", o.easyMargin, true);
  return { lower, upper, lm, lambda, easy, slopeM: (um - lm) / (upper - lower) };
}

/** MagFace's rows as data (shared with `marginHead`'s kind): its constants. */
export function magfaceData(o: MagfaceOptions): FaceData {
  const { lower, upper, lm, lambda, easy, slopeM } = magfaceOptions(o);
  return {
    kind: "magface",
    params: { p_m: lm, p_h: slopeM, p_lo: lower, p_hi: upper, p_iu2: 1 / (upper * upper), lambda, easy: +easy },
  };
}

/** MagFace's value and parts from the row cross-entropies: `loss = ce + lambda g` and `g`, reduced. */
export function magfaceParts(t: NormTerms, ce: Float64Array, reduction: Reduction, denominator: number) {
  return {
    loss: v.reduce(ce.map((x, i) => x + t.lambda * t.g[i]), reduction, denominator),
    g: v.reduce(t.g, reduction, denominator),
  };
}

/** The options of `magface` beyond those every margin loss takes (also `marginHead`'s kind's). */
export const MAGFACE_KEYS = ["lowerNorm", "upperNorm", "lowerMargin", "upperMargin", "lambda", "easyMargin"] as const;

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
 * w.r.t. its cosine (`s`). On WebGPU `cos` may be GPU-resident: the targets and norm terms are
 * then computed on the GPU, `norms` may be a GPU matrix `[N, 1]` and `grads.norms` is one.
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
  options: [...FACE_KEYS, ...MAGFACE_KEYS],
  grads: ["cos", "norms"],
  prepare(inputs, options, grad, upstream) {
    const o = v.options(options);
    const b = faceBase(inputs, o, 64);
    if (v.onDevice(b.cos)) {
      if (o.out?.norms !== undefined) {
        throw new TypeError(
          `Expected options.out.norms to be absent with a GPU-resident cos, got ${v.show(o.out.norms)}`,
        );
      }
      const norms = gpuNorms("norms", inputs.norms, b.n);
      return faceOnGpu(b, o, grad, upstream, { ...magfaceData(o), norms, state: null }, undefined);
    }
    const r = magfaceRows(o, rowsIn(b, rowVector("norms", inputs.norms, b.n), undefined));
    // `out.norms`: a Float32Array [N] for the norms' gradient.
    const outNorms = o.out?.norms as unknown;
    if (outNorms !== undefined && !(outNorms instanceof Float32Array && outNorms.length === b.n)) {
      throw new TypeError(`Expected options.out.norms to be a Float32Array of ${b.n} values, got ${v.show(outNorms)}`);
    }
    return Object.assign(faceProblem(b, o, grad, upstream, r.target, undefined), { norm: r.norm!, outNorms });
  },
  finish(problem, raw) {
    const p = problem as HardLabelProblem & { norm: NormTerms; outNorms?: Float32Array };
    const r = finishHardLabel(p, raw.rows[0], raw.grads.logits);
    if (p.face) {
      // The WebGPU kernel's rows (GPU-resident cosines): the row losses, g, and the norms' gradient.
      const [ce, g] = raw.rows, lambda = p.face.params.lambda;
      const loss = v.reduce(lin(0, [ce, 1], [g, lambda]) as unknown as Float64Array, p.reduction, p.denominator);
      const grads = { cos: r.grads.logits, norms: p.grad ? raw.grads.norms : new Float32Array(0) };
      return { loss, ce: r.loss, g: v.reduce(g, p.reduction, p.denominator), grads };
    }
    const parts = magfaceParts(p.norm, raw.rows[0], p.reduction, p.denominator);
    let norms = p.grad ? normGrads(p.norm, p.scales, raw.rows[0]) : new Float32Array(0);
    if (p.grad && p.outNorms) norms = (p.outNorms.set(norms), p.outNorms);
    return { ...parts, ce: r.loss, grads: { cos: r.grads.logits, norms } };
  },
});
