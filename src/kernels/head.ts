/**
 * The `head` family: the class-chunked GEMM with an online log-sum-exp (`marginHead`, `sphereface`, `lsoftmax`),
 * and the math every backend shares for it (the per-row terms, the head from its two phases, norms).
 *
 * @module
 */
import type { Prepared, Raw } from "./core.ts";
import type { Matrix, Reduction } from "../types.ts";
import type { FaceTarget, MarginSpec, MarginTarget, NonTarget } from "./hard_label.ts";

/** Row i's `[||x_i||, ||W_y||, x_i . W_y]` (the last two 0 for an ignored row). */
export type RowStats = (row: number) => [number, number, number];

/** The label's logit of row `row` and its partial derivatives w.r.t. `u`, `||x||` and `||W_y||`. */
export type Target = (u: number, nx: number, nw: number, row: number) => [number, number, number, number];

/**
 * A head's target as data, for kernels that evaluate it themselves (the WebGPU backend,
 * src/webgpu/margin.wgsl): `marginHead`'s margin, or SphereFace's / L-Softmax's `psi` with the
 * integer margin `m` and the annealing weight (`lambda`, `beta`).
 */
export type TargetSpec = MarginTarget | {
  readonly kind: "sphereface" | "lsoftmax";
  readonly m: number;
  readonly weight: number;
} | {
  /** The face margin kinds: targets per row from the host only (`target`), no spec to evaluate. */
  readonly kind: "host";
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
  /** The margin losses' non-target transform of the cosines (src/kernels/hard_label.ts), or absent. */
  readonly nonTarget?: NonTarget;
  /**
   * `marginHead`'s face kinds as data (norms `||x_i||` from the kernel), for the WebGPU head,
   * which computes their rows itself (src/webgpu/margin_head_face.wgsl); the CPU heads take
   * the host's `target` and `nonTarget`.
   */
  readonly face?: FaceTarget;
  /**
   * `marginHead`'s sub-centres K (absent: 1): class j's rows of W are `j*K .. j*K+K-1`, its cosine
   * the largest of theirs (clamped first; ties to the smaller row), its gradient to that row alone.
   */
  readonly subcenters?: number;
  /**
   * `marginHead`'s `classes` (PartialFC): local class j of the softmax is the class block `rows[j]`
   * of the W a phase is given (its rows `rows[j]*K ..`); `c` is their count and the labels are
   * local (a label at or above `c`: on another shard). Absent: class j is block j.
   */
  readonly rows?: Int32Array | null;
  /**
   * `marginHead`'s `interTopK` k > 0 (SPEC §7): `nonTarget.rows` (each row's threshold and tie) are
   * found by the backend's kernel from the class cosines, in a first pass over W
   * ({@linkcode withInterTopK}). Absent: 0.
   */
  readonly interTopK?: number;
  /**
   * `marginHead`'s margin per row (SPEC §7, ElasticFace: `margin`, `m2`, `m3` as arrays): each row's target
   * as data, for the WebGPU head (src/webgpu/margin_head_inter.ts); the CPU heads take the host's `target`.
   * `spec` then holds the kind's shared fields (m1, the branch). Absent: none.
   */
  readonly rowMargins?: readonly MarginSpec[];
}

/** The local classes of a phase over `W` (`rows`' count, else W's rows over K). */
export function headClasses(p: HeadProblem, W: Float32Array): number {
  return p.rows ? p.rows.length : W.length / (p.d * (p.subcenters ?? 1));
}

/**
 * W's rows of the local classes (`[cols*K, D]`): `W` itself without `rows`, else a gathered copy
 * (the reference kernels; the WebAssembly ones gather per chunk).
 */
export function headRows(p: HeadProblem, W: Float32Array): Float32Array {
  if (!p.rows) return W;
  const span = (p.subcenters ?? 1) * p.d, out = new Float32Array(p.rows.length * span);
  p.rows.forEach((r, j) => out.set(W.subarray(r * span, (r + 1) * span), j * span));
  return out;
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

/**
 * Per row, the k largest non-target class cosines offered (clamped and filtered as the
 * non-target transform takes them), in class order (a later class with an equal value is not
 * taken: ties to the smaller class), as `interTopK` needs (k small: an insertion per value that
 * beats the row's k-th).
 */
export class RowTopK {
  readonly vals: Float64Array;
  readonly cols: Int32Array;
  readonly size: Int32Array;
  /** Per row the value to beat: the k-th largest so far, -inf while fewer than k. */
  readonly kth: Float64Array;
  constructor(readonly n: number, readonly k: number) {
    this.vals = new Float64Array(n * k);
    this.cols = new Int32Array(n * k);
    this.size = new Int32Array(n);
    this.kth = new Float64Array(n).fill(-Infinity);
  }
  /** Offers row i's class j with value v (call in increasing j; a value not above `kth[i]` may be skipped). */
  offer(i: number, j: number, v: number): void {
    const { k, vals, cols } = this, o = i * k;
    if (!(v > this.kth[i])) return;
    let q = Math.min(this.size[i], k - 1);
    while (q > 0 && vals[o + q - 1] < v) {
      vals[o + q] = vals[o + q - 1];
      cols[o + q] = cols[o + q - 1];
      q--;
    }
    vals[o + q] = v;
    cols[o + q] = j;
    if (this.size[i] < k) this.size[i]++;
    if (this.size[i] === k) this.kth[i] = vals[o + k - 1];
  }
  /**
   * The non-target transform's rows `[N, 2]`: row i's threshold (its k-th largest) and tie (the
   * last class taken at it); `-inf, -1` (every non-target hard) for ignored rows, for a row with
   * fewer than k non-targets (k >= C - 1), or one with NaN cosines.
   */
  rows(labels: Int32Array): Float64Array {
    const { n, k } = this, out = new Float64Array(2 * n);
    for (let i = 0; i < n; i++) {
      const full = labels[i] >= 0 && this.size[i] === k;
      out[2 * i] = full ? this.vals[i * k + k - 1] : -Infinity;
      out[2 * i + 1] = full ? this.cols[i * k + k - 1] : -1;
    }
    return out;
  }
}

/**
 * A head kernel that finds `interTopK`'s rows first: `cosines(p, top)` offers every row's
 * non-target class cosines (as the backend's kernels compute and transform them, so that the
 * thresholds compare exactly) to `top`; then the head runs with `nonTarget.rows` filled in.
 */
export function withInterTopK(
  head: (p: HeadProblem) => Raw,
  cosines: (p: HeadProblem, top: RowTopK) => void,
): (p: HeadProblem) => Raw {
  return (p) => {
    const k = p.interTopK ?? 0;
    if (k === 0 || !p.nonTarget || p.nonTarget.rows) return head(p);
    const top = new RowTopK(p.n, k);
    if (k < p.c - 1) cosines(p, top);
    return head({ ...p, nonTarget: { ...p.nonTarget, rows: top.rows(p.labels) } });
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
