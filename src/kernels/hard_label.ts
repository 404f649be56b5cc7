/**
 * The `hardLabel` family: the fused softmax cross-entropy with a label logit (crossEntropy, focal and the margin
 * losses on cosines).
 *
 * @module
 */
import type { Prepared } from "./core.ts";
import type { Matrix, Reduction } from "../types.ts";

/**
 * The problem the fused softmax cross-entropy kernel solves, row by row. The logits
 * are `z_j = scale * x_j` (`x_j` clamped to [-1, 1] first with `clamp`), the label's
 * logit replaced by `target[2i]` (derivative w.r.t. `x_y`: `target[2i+1]`) when
 * `target` is given (the margin losses). `nll_i = logsumexp(z_i) - z_{i,y}`; with
 * smoothing `eps` the target is `q = (1-eps) w_y onehot(y) + (eps/C) w` and the row
 * loss `-sum_c q_c log p_c`; with `gamma != 0` (focal) it is `w_y (1 - e^-nll)^gamma nll`.
 * The gradient row is `scales[i]` times the derivative of the row loss w.r.t. `x`.
 *
 * crossEntropy's `softcap` and `zLoss` (scale 1, no clamp, no target, gamma 0): with
 * `softcap` c > 0 every logit is `c tanh(x_j / c)` first (derivative `1 - tanh^2`); with
 * `zLoss` k > 0 each non-ignored row also has the term `k lse_i^2` (`lse` over the capped
 * logits), returned as a second row array (`Raw.rows[1]`), whose gradient
 * `zScales[i] 2 k lse_i p_ij` joins the row's.
 */
export interface HardLabelProblem extends Prepared {
  readonly n: number;
  readonly c: number;
  readonly logits: Float32Array;
  /** Labels with ignored rows set to -1. */
  readonly labels: Int32Array;
  /** Class weights (cross-entropy) or per-class alpha (focal), or null for all 1. */
  readonly weight: Float32Array | null;
  readonly smoothing: number;
  /** Focal exponent; 0 for cross-entropy. */
  readonly gamma: number;
  /** Logit scale (1 for cross-entropy, `s` for the margin losses). */
  readonly scale: number;
  /** Clamp the inputs to [-1, 1] first (cosines). */
  readonly clamp: boolean;
  /**
   * Per row: the label's replaced logit and its derivative w.r.t. the input, or null
   * (null too for GPU-resident cosines: the WebGPU kernel evaluates `margin` itself).
   */
  readonly target: Float64Array | null;
  /** The margin losses: the label's target as data (what `target` holds, for kernels that evaluate it). */
  readonly margin?: MarginTarget;
  /** With `margin`: each row's own target (a per-row margin; m1 and the branch are `margin`'s), or absent. */
  readonly rowMargins?: readonly MarginSpec[];
  /**
   * interTopK's k on GPU-resident cosines (with `margin` and `nonTarget`, whose `rows` are then null): the
   * WebGPU kernel finds each row's threshold and tie itself (0 < k < C - 1), or absent.
   */
  readonly interTopK?: number;
  /** Per-row gradient scale (upstream and reduction folded in); ignored rows 0. */
  readonly scales: Float64Array;
  /** Caller's buffer for the gradient, or null. */
  readonly out: Matrix | null;
  readonly reduction: Reduction;
  /** What `"mean"` divides the summed row losses by. */
  readonly denominator: number;
  /** crossEntropy's logit softcap c (`c tanh(x / c)`), 0 or absent for none. */
  readonly softcap?: number;
  /** crossEntropy's z-loss coefficient k (row term `k lse^2`), 0 or absent for none. */
  readonly zLoss?: number;
  /** With `zLoss` and a gradient: per-row gradient scale of the z term (ignored rows 0). */
  readonly zScales?: Float64Array;
  /** The margin losses' transform of the non-target cosines (with `clamp` and a `target`), or absent for none. */
  readonly nonTarget?: NonTarget;
  /**
   * The margin losses' sub-centres K (SPEC §7; absent: 1): `logits` (and the gradient) is `[N, c K]`,
   * columns `j K .. j K + K - 1` are class j's, and the class cosine is their maximum after the clamp
   * ({@linkcode subcenter}); every rule above acts on the `c` class cosines, and the gradient of
   * a class goes to its winning column alone (the other K - 1 get 0).
   */
  readonly subcenters?: number;
  /** The face margin losses on GPU-resident cosines (`target` null): their rows as data, or absent. */
  readonly face?: FaceTarget;
}

/**
 * The winning column of a class of K sub-centre columns `x[at .. at + K)`: the largest cosine
 * clamped to [-1, 1], ties to the smaller column (the first NaN wins: a NaN class); its offset
 * in `[0, K)`. The class cosine is that column's value (clamping it gives the class maximum).
 */
export function subcenter(x: ArrayLike<number>, at: number, k: number): number {
  let q = 0, best = Math.min(1, Math.max(-1, x[at]));
  for (let r = 1; r < k; r++) {
    const v = Math.min(1, Math.max(-1, x[at + r]));
    if (v > best || (v !== v && best === best)) [q, best] = [r, v];
  }
  return q;
}

/**
 * A face margin loss's rows as data (SPEC §7; `adaface`, `curricularFace`, `magface` on
 * GPU-resident cosines), for the WebGPU kernel that computes them itself
 * (src/webgpu/face_margin.wgsl): the batch statistic and the next state, each row's label
 * target, and what the non-target transform (`nonTarget`, whose per-row values and
 * CurricularFace's `a` the kernel fills in) and MagFace's norm terms need. The constants are
 * the kernel's uniform fields by name (`p_m`, `p_h`, ...; see the WGSL).
 */
export interface FaceTarget {
  readonly kind: "adaface" | "curricularFace" | "magface";
  readonly params: Readonly<Record<string, number>>;
  /** The norms `[N]` (adaface, magface): host values or GPU-resident; null for none. */
  readonly norms: Float32Array | null;
  /** The state input: its numbers, or a GPU-resident `[1, k]` matrix; null for none (magface). */
  readonly state: readonly number[] | Float32Array | null;
  /** CurricularFace's ArcFace target (the label's logit and the hard negatives' threshold). */
  readonly phi?: MarginSpec;
  readonly constant: boolean;
}

/**
 * The non-target transform of the margin losses (one mechanism for CurricularFace's hard
 * negatives, `interclassFilteringThreshold`, `interTopK` and AdaFace's clip): every cosine is
 * clamped to `[lo, hi]` (inside [-1, 1]; gradient 0 outside, passed at the bounds, as
 * `torch.clamp`); a non-target above `cut` is replaced by 0 (gradient 0: insightface's
 * filtering), and then a non-target class cosine `x_j` of row i is *hard* when `x_j > thr_i`, or
 * `x_j == thr_i` and `j <= tie_i` (the k-th largest's ties to the smaller class); a hard one
 * has the logit `s (a x + b x^2 + g sqrt(1 - x^2))`, derivative
 * `s (a + 2 b x - g xd / sqrt(1 - xd^2))` with `xd` the cosine clamped to
 * `[-1 + 1e-6, 1 - 1e-6]` (SPEC §2's rule); the others stay `s x_j`.
 * CurricularFace: `thr_i = phi_i`, `(a, b, g) = (t, 1, 0)`; filtering: `cut = T`; inter-top-k:
 * `thr_i` the k-th largest (filtered) non-target, `(cos m', 0, sin m')`.
 * A row whose non-target cosines are all inside `[lo, hi]` and none hard costs the plain
 * kernel one comparison (its maximum and minimum, which the kernel reads anyway).
 */
export interface NonTarget {
  readonly lo: number;
  readonly hi: number;
  /** Non-targets above it become 0 (`Infinity`: none). */
  readonly cut: number;
  readonly a: number;
  readonly b: number;
  readonly g: number;
  /** Per row `[N, 2]`: `thr_i` and `tie_i` (-1: only `x > thr` is hard); null: no hard non-target. */
  readonly rows: Float64Array | null;
}

/** Whether non-target column `j` with cosine `x` of a row with threshold `thr` and tie column `tie` is hard. */
export function isHard(x: number, j: number, thr: number, tie: number): boolean {
  return x > thr || (x === thr && j <= tie);
}

/**
 * A hard non-target's logit and derivative over the scale, `a x + b x^2 + g sqrt(1 - x^2)` and
 * `a + 2 b x - g xd / sqrt(1 - xd^2)` (`xd` clamped to `[-1 + 1e-6, 1 - 1e-6]`), for `x` in [-1, 1].
 */
export function hardLogit(nt: NonTarget, x: number): [number, number] {
  let value = nt.a * x + nt.b * x * x, slope = nt.a + 2 * nt.b * x;
  if (nt.g !== 0) {
    const xd = Math.min(1 - 1e-6, Math.max(-1 + 1e-6, x));
    value += nt.g * Math.sqrt(Math.max(0, 1 - x * x));
    slope -= (nt.g * xd) / Math.sqrt(1 - xd * xd);
  }
  return [value, slope];
}

/** The label's target of a margin loss as data: `phi` and `marginGrad: "constant"`. */
export interface MarginTarget {
  readonly kind: "margin";
  readonly phi: MarginSpec;
  readonly constant: boolean;
}

/**
 * A target function as data, for kernels that evaluate it themselves (the WebGPU
 * backend, src/webgpu/margin.wgsl): `phi = cos(m1 theta + m2) - m3`, `theta = acos(cos)`, with
 * ArcFace's `"threshold"` branch (`phi` where `cos > cos(pi - m2)`, else
 * `cos - m2 sin(pi - m2)`) or its `"easy"` margin (`phi` where `cos > 0`, else `cos`).
 */
export interface MarginSpec {
  readonly m1: number;
  readonly m2: number;
  readonly m3: number;
  readonly branch: "none" | "threshold" | "easy";
}
