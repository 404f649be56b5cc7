/**
 * The embedding heads `marginHead`, `sphereface` and `lsoftmax`: logits from
 * embeddings `x [N, D]` and class weights `W [C, D]`, then cross-entropy, with
 * gradients w.r.t. `x` and `W`. What they share is defined here; each differs by
 * which side is normalised and by the label's logit (its "target").
 *
 * With `a_i = 1/max(||x_i||, 1e-12)` when x is normalised (else 1) and
 * `b_j = 1/max(||W_j||, 1e-12)` when W is (else 1), `u_ij = (x_i . W_j) a_i b_j`, every
 * logit is `s * u_ij` (clamped to [-1, 1] first for `marginHead`) except the label's,
 * `T_i(u_iy, ||x_i||, ||W_y||)`.
 *
 * @module
 */
import type { LossDef, Prepared, Raw } from "../loss.ts";
import { result } from "../loss.ts";
import type { CommonOptions, Labels, Matrix, Reduction, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { ARCFACE_KEYS, arcfaceTarget } from "./arcface.ts";
import { COMBINED_MARGIN_KEYS, combinedMarginTarget } from "./combined_margin.ts";
import { COSFACE_KEYS, cosfaceTarget } from "./cosface.ts";
import { outBuffer } from "./cross_entropy.ts";
import type { MarginOptions, MarginTarget, Phi } from "./margin.ts";
import { normfaceTarget } from "./normface.ts";

/** Inputs of the embedding heads. */
export interface HeadInputs {
  /** Embeddings `[N, D]`. */
  x: Tensor;
  /** Class weights `[C, D]`, one row per class (as `nn.Linear`). */
  W: Tensor;
  /** One class index per row, in `[0, C)` or `ignoreIndex`. */
  labels: Labels;
}

/** Gradients of the embedding heads. */
export interface HeadGrads {
  /** Gradient w.r.t. the embeddings `[N, D]`. */
  x: Matrix;
  /** Gradient w.r.t. the class weights `[C, D]`. */
  W: Matrix;
}

/** Row i's `[||x_i||, ||W_y||, x_i . W_y]` (the last two 0 for an ignored row). */
export type RowStats = (row: number) => [number, number, number];

/** The label's logit and its partial derivatives w.r.t. `u`, `||x||` and `||W_y||`. */
export type Target = (u: number, nx: number, nw: number) => [number, number, number, number];

/**
 * A head's target as data, for kernels that evaluate it themselves (the WebGPU backend,
 * gpu/margin.wgsl): `marginHead`'s margin, or SphereFace's / L-Softmax's `psi` with the
 * integer margin `m` and the annealing weight (`lambda`, `beta`).
 */
export type TargetSpec = MarginTarget | {
  readonly kind: "sphereface" | "lsoftmax";
  readonly m: number;
  readonly weight: number;
};

/** The prepared problem of an embedding head. */
export interface HeadProblem extends Prepared {
  readonly n: number;
  readonly c: number;
  readonly d: number;
  readonly x: Float32Array;
  readonly W: Float32Array;
  readonly labels: Int32Array;
  readonly normX: boolean;
  readonly normW: boolean;
  /** The logit scale s of the non-label logits. */
  readonly scale: number;
  readonly clamp: boolean;
  /**
   * Per row: T, dT/du, dT/d||x||, dT/d||W_y|| (float64, [N, 4]); empty for GPU-resident
   * inputs (the WebGPU kernels evaluate `spec` themselves).
   */
  readonly target: Float64Array;
  /** ||x_i|| and ||W_{y_i}|| per row (empty as `target`). */
  readonly nx: Float64Array;
  readonly nw: Float64Array;
  /** The target as data. */
  readonly spec: TargetSpec;
  readonly scales: Float64Array;
  readonly reduction: Reduction;
  readonly denominator: number;
  readonly outX: Matrix | null;
  readonly outW: Matrix | null;
}

/** Options every head takes. */
export interface HeadOptions extends CommonOptions {
  /** Rows with this label are ignored. @default -100 */
  ignoreIndex?: number;
  /** `"mean"`, `"sum"` or `"none"`. @default "mean" */
  reduction?: Reduction;
}

/**
 * Per-row statistics of a softmax over a range of classes (a head's phase 1, one shard's
 * share of a class-sharded softmax), float64 `[N]` each: `max`, the reference the sum is
 * taken against (the range's largest logit, the label's included where the range holds
 * it), and `sum`, `sum_j e^(z_j - max)` over the range's classes other than the label.
 * Ranges merge exactly: `max = max_k max_k`, `sum = sum_k sum_k e^(max_k - max)`.
 */
export interface HeadStats {
  readonly max: Float64Array;
  readonly sum: Float64Array;
}

/** What the gradient phase needs per row: the row loss (nll), the log-sum-exp and `1 - p_y`. */
export interface HeadRowTerms {
  readonly rows: Float64Array;
  readonly lse: Float64Array;
  readonly om: Float64Array;
}

/**
 * One row's softmax terms from its label's logit `t` and the statistics of every class
 * (`max` over all of them, `sum` of `e^(z - max)` over the non-label ones):
 * `nll = log(1 + sum / e^(t - max))`, `lse = t + nll`, `1 - p_y = sum / (sum + e^(t - max))`.
 * Keeping the label out of `sum` keeps `1 - p_y` and a small `nll` accurate as `p_y -> 1`.
 */
export function labelTerms(t: number, max: number, sum: number): [nll: number, lse: number, om: number] {
  const ey = Math.exp(t - max);
  const nll = t - max < -700 ? max - t + Math.log(sum) : Math.log1p(sum / ey);
  return [nll, t + nll, sum / (sum + ey)];
}

/** The row terms of every row from the merged statistics (`target` [N, 4]: T first; ignored rows 0). */
export function headRowTerms(target: Float64Array, labels: Int32Array, stats: HeadStats): HeadRowTerms {
  const n = labels.length;
  const rows = new Float64Array(n), lse = new Float64Array(n), om = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    if (labels[i] < 0) continue;
    [rows[i], lse[i], om[i]] = labelTerms(target[4 * i], stats.max[i], stats.sum[i]);
  }
  return { rows, lse, om };
}

/**
 * A backend's head in two phases over a range of classes (the rows of `W`, a slice of the
 * head's W whose first class is `first`): `stats`, per row the online (max, non-label sum)
 * over the range; `grads`, given every class's merged statistics and their row terms, the
 * range's rows of dW and its share of dx (into `outX` / `outW` when given).
 */
export interface HeadPhases {
  stats(p: HeadProblem, W: Float32Array, first: number): HeadStats;
  grads(
    p: HeadProblem,
    W: Float32Array,
    first: number,
    stats: HeadStats,
    terms: HeadRowTerms,
    outX?: Float32Array | null,
    outW?: Float32Array | null,
  ): { x: Float32Array; W: Float32Array };
}

/** The head kernel from its two phases: both over every class, the row terms in between. */
export function headOf(phases: HeadPhases): (p: HeadProblem) => Raw {
  return (p) => {
    const stats = phases.stats(p, p.W, 0);
    const terms = headRowTerms(p.target, p.labels, stats);
    if (!p.grad) return { rows: [terms.rows], grads: {} };
    return { rows: [terms.rows], grads: phases.grads(p, p.W, 0, stats, terms, p.outX?.data, p.outW?.data) };
  };
}

/** L2 norm of `len` floats at `off`, in float64. */
export function norm(data: Float32Array, off: number, len: number): number {
  let s = 0;
  for (let k = 0; k < len; k++) s += data[off + k] * data[off + k];
  return Math.sqrt(s);
}

/**
 * Above this bound on the logits (`max ||x|| max ||W_j||`, x not normalised) every backend
 * takes the heads' dot products "precisely": float64 on the CPU, float pairs on the GPU,
 * held relative to each row's maximum.
 */
export const PRECISE_ABOVE = 256;

/** The largest row norm of a `[rows, d]` matrix, in float64. */
export function maxNorm(data: Float32Array, rows: number, d: number): number {
  let best = 0;
  for (let r = 0; r < rows; r++) best = Math.max(best, norm(data, r * d, d));
  return best;
}

/** How a head is built: which sides are normalised, the scale, and its target. */
export interface HeadKind<O> {
  normX: boolean;
  normW: boolean;
  clamp: boolean;
  /** The options it takes besides `ignoreIndex` and `reduction` (a function when they depend on `kind`). */
  options: readonly string[] | ((o: O) => readonly string[]);
  /** Checks the options and returns the scale and the target function (as a function and as data). */
  parse(o: O): { scale: number; target: Target; spec: TargetSpec };
}

/** Row i's `[||x_i||, ||W_y||, x_i . W_y]` with W's rows of class `first` on (the last two 0 without a label there). */
export function labelStats(x: Float32Array, W: Float32Array, d: number, labels: Int32Array, first: number): RowStats {
  return (i) => {
    const y = labels[i] - first;
    if (labels[i] < 0 || y < 0 || y >= W.length / d) return [norm(x, i * d, d), 0, 0];
    let dot = 0;
    for (let k = 0; k < d; k++) dot += x[i * d + k] * W[y * d + k];
    return [norm(x, i * d, d), norm(W, y * d, d), dot];
  };
}

/**
 * Per row: ||x_i||, ||W_y|| and x_i . W_y (`stats`), then the label's logit and its
 * derivatives `[N, 4]` (rows with a negative label, or whose label `owns` says is not
 * here, are left 0).
 */
export function headTargets(
  kind: { readonly normX: boolean; readonly normW: boolean },
  fn: Target,
  labels: Int32Array,
  stats: RowStats,
  owns: (row: number) => boolean = () => true,
): { target: Float64Array; nx: Float64Array; nw: Float64Array } {
  const n = labels.length;
  const target = new Float64Array(4 * n), nx = new Float64Array(n), nw = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const [normX, normW, dot] = stats(i);
    nx[i] = normX;
    if (labels[i] < 0 || !owns(i)) continue;
    nw[i] = normW;
    const a = kind.normX ? 1 / Math.max(nx[i], 1e-12) : 1;
    const b = kind.normW ? 1 / Math.max(nw[i], 1e-12) : 1;
    target.set(fn(dot * a * b, nx[i], nw[i]), 4 * i);
  }
  return { target, nx, nw };
}

/** Defines an embedding head. */
export function headLoss<O extends HeadOptions>(
  name: string,
  kind: HeadKind<O>,
): LossDef<HeadInputs, O, HeadGrads, "head"> {
  const own = kind.options;
  return {
    name,
    kernel: "head",
    inputs: ["x", "W", "labels"],
    options: (o) => [...(typeof own === "function" ? own(o) : own), "ignoreIndex", "reduction"],
    grads: ["x", "W"],
    prepare(inputs, options, grad, upstream) {
      const o = v.options(options);
      v.inputs(inputs);
      const [n, d] = v.batch("x", inputs.x);
      const [c] = v.matrix("W", inputs.W, undefined, d);
      if (c === 0) throw new RangeError("Expected W to have at least one row (one per class), got 0");
      const ignoreIndex = v.integer("options.ignoreIndex", o.ignoreIndex, -100);
      const labels = v.labels("labels", inputs.labels, n, c, ignoreIndex);
      const x = v.values(inputs.x), W = v.values(inputs.W);
      if (o.checkFinite) {
        v.finite("x", x, d);
        v.finite("W", W, d);
      }
      const { scale, target: fn, spec } = kind.parse(o);
      const reduction = v.reduction(o.reduction);
      let count = 0;
      for (let i = 0; i < n; i++) if (labels[i] >= 0) count++;
      // (for host inputs; the WebGPU kernels evaluate `spec` themselves)
      const host = v.onDevice(x) || v.onDevice(W)
        ? null
        : headTargets(kind, fn, labels, labelStats(x, W, d, labels, 0));
      const empty = new Float64Array(0);
      const scales = grad ? v.rowScales(reduction, upstream, n, count, (i) => labels[i] < 0) : new Float64Array(0);
      return {
        grad,
        n,
        c,
        d,
        x,
        W,
        labels,
        normX: kind.normX,
        normW: kind.normW,
        scale,
        clamp: kind.clamp,
        target: host?.target ?? empty,
        nx: host?.nx ?? empty,
        nw: host?.nw ?? empty,
        spec,
        scales,
        reduction,
        denominator: count,
        outX: grad ? outBuffer(o, "x", n, d) : null,
        outW: grad ? outBuffer(o, "W", c, d) : null,
      };
    },
    finish: (p, raw) => ({
      loss: v.reduce(raw.rows[0], p.reduction, p.denominator),
      grads: {
        x: p.outX ?? result(raw.grads.x, p.n, p.d),
        W: p.outW ?? result(raw.grads.W, p.c, p.d),
      },
    }),
  };
}

/** Options of `marginHead`: the margin's kind and that kind's options. */
export interface MarginHeadOptions extends HeadOptions, Omit<MarginOptions, "out"> {
  /** Which margin: `"arcface"`, `"cosface"`, `"normface"` or `"combinedMargin"`. @default "arcface" */
  kind?: "arcface" | "cosface" | "normface" | "combinedMargin";
  /** Logit scale s, finite, in (0, 1e6] (float32 logits `s cos`). @default 16 for normface, else 64 */
  scale?: number;
  /** ArcFace's angular margin (0.5) or CosFace's cosine margin (0.35). */
  margin?: number;
  /** ArcFace: apply the margin only where cos > 0. @default false */
  easyMargin?: boolean;
  /** combinedMargin's multiplicative angular margin m1. @default 1 */
  m1?: number;
  /** combinedMargin's additive angular margin m2. @default 0.5 */
  m2?: number;
  /** combinedMargin's additive cosine margin m3. @default 0 */
  m3?: number;
}

/** Each kind's default scale and target function (shared with the losses on cosines). */
const KINDS = {
  arcface: [64, arcfaceTarget, ARCFACE_KEYS],
  cosface: [64, cosfaceTarget, COSFACE_KEYS],
  normface: [16, normfaceTarget, []],
  combinedMargin: [64, combinedMarginTarget, COMBINED_MARGIN_KEYS],
} as const;

function marginKind(o: MarginHeadOptions): keyof typeof KINDS {
  return v.oneOf("options.kind", o.kind, ["arcface", "cosface", "normface", "combinedMargin"] as const, "arcface");
}

function marginPhi(o: MarginHeadOptions): { phi: Phi; scale: number } {
  const [fallback, target] = KINDS[marginKind(o)];
  return {
    scale: v.scale(o.scale, fallback),
    phi: target(o),
  };
}

/** The definition of `marginHead`: cos = normalize(x) normalize(W)^T, then the margin loss. */
export const marginHead = headLoss<MarginHeadOptions>("marginHead", marginHeadKind());

/** How `marginHead` is built (shared with its class-sharded form). */
export function marginHeadKind(): HeadKind<MarginHeadOptions> {
  return {
    normX: true,
    normW: true,
    clamp: true,
    // The options of the kind given (an option of another kind is refused, not ignored).
    options: (o) => ["kind", "scale", "marginGrad", ...KINDS[marginKind(o)][2]],
    parse(o) {
      const { phi, scale } = marginPhi(o);
      const constant = v.oneOf("options.marginGrad", o.marginGrad, ["exact", "constant"] as const, "exact") ===
        "constant";
      return {
        scale,
        target: (u) => {
          const x = Math.min(1, Math.max(-1, u));
          const [value, slope] = phi(x);
          return [scale * value, x === u ? scale * (constant ? 1 : slope) : 0, 0, 0];
        },
        spec: { kind: "margin", phi: phi.spec, constant },
      };
    },
  };
}

/**
 * `psi(theta) = (-1)^k cos(m theta) - 2k`, `k = floor(m theta / pi)` (a constant: no
 * gradient), `cos(m theta) = T_m(cos theta)` by the Chebyshev recurrence; returns
 * `[psi, d psi / d cos]`.
 */
export function psi(m: number, cos: number): [number, number] {
  const k = Math.floor((m * Math.acos(cos)) / Math.PI);
  // T_0 = 1, T_1 = c, T_{n+1} = 2c T_n - T_{n-1}; and the derivatives alongside.
  let t0 = 1, t1 = cos, d0 = 0, d1 = 1;
  if (m === 0) [t1, d1] = [1, 0];
  for (let j = 1; j < m; j++) {
    [t0, t1, d0, d1] = [t1, 2 * cos * t1 - t0, d1, 2 * t1 + 2 * cos * d1 - d0];
  }
  const sign = k % 2 === 0 ? 1 : -1;
  return [sign * t1 - 2 * k, sign * d1];
}

/** Checks SphereFace's and L-Softmax's integer margin m >= 1. */
export function integerMargin(value: unknown): number {
  const m = v.number("options.m", value, 4, { min: 1 });
  if (!Number.isInteger(m)) throw new RangeError(`Expected options.m to be an integer >= 1, got ${m}`);
  return m;
}
