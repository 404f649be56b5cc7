/**
 * State functions: pure, synchronous bookkeeping between training steps, exported by
 * `mod.ts` and `cpu.ts` beside the losses (not members of `Losses`). Each takes plain
 * data and returns new plain data; none changes its inputs (optax's `init` / `update`
 * shape). The centre update of the centre loss (Wen et al. 2016) and the state of
 * hard-negative mining: class prototypes and a class confusion matrix.
 *
 * @module
 */
import type { Labels, Matrix } from "./types.ts";
import * as v from "./validate.ts";
import type { IntMatrix } from "./losses/hnm_contrastive.ts";

/** Checks a host class matrix `[C, D]` (centres, prototypes) with C >= 1 and D >= 1. */
function classMatrix(name: string, m: unknown): [number, number, Float32Array] {
  const [c, d, data] = v.hostMatrix(name, m);
  if (c === 0 || d === 0) throw new RangeError(`Expected ${name} to be [C, D] with C, D >= 1, got [${c}, ${d}]`);
  return [c, d, data];
}

/** Options of {@linkcode centerUpdate}. */
export interface CenterUpdateOptions {
  /** Learning rate of the centres, in [0, 1]. @default 0.5 */
  alpha?: number;
}

/**
 * The centre update of the centre loss (Wen et al. 2016, "A Discriminative Feature
 * Learning Approach for Deep Face Recognition"): for each class j with `n_j` samples in
 * the batch, `c_j - alpha * sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)`; other centres are
 * unchanged.
 *
 * @param centers Class centres `[C, D]`.
 * @param x Embeddings `[N, D]`.
 * @param labels One class per row, in `[0, C)`.
 * @param options `alpha` (0.5).
 * @returns New centres `[C, D]` (a fresh matrix).
 *
 * @example One step
 * ```ts
 * import { centerUpdate } from "@softmargin/softmargin";
 * const centers = { data: new Float32Array([0, 0, 1, 1]), shape: [2, 2] as const };
 * const x = { data: new Float32Array([2, 0]), shape: [1, 2] as const };
 * console.log(centerUpdate(centers, x, [0]).data); // [0.5, 0, 1, 1]
 * ```
 */
export function centerUpdate(centers: Matrix, x: Matrix, labels: Labels, options: CenterUpdateOptions = {}): Matrix {
  v.keys("options of centerUpdate", v.options(options), ["alpha"]);
  const [c, d, cs] = classMatrix("centers", centers);
  const [n, , xs] = v.hostMatrix("x", x, undefined, d);
  const y = v.integers("labels", labels, n, c);
  const alpha = v.number("options.alpha", options.alpha, 0.5, { min: 0, max: 1 });
  const delta = new Float64Array(c * d), count = new Int32Array(c);
  for (let i = 0; i < n; i++) {
    count[y[i]]++;
    for (let k = 0; k < d; k++) delta[y[i] * d + k] += cs[y[i] * d + k] - xs[i * d + k];
  }
  const out = cs.slice();
  for (let j = 0; j < c; j++) {
    if (count[j] === 0) continue;
    for (let k = 0; k < d; k++) out[j * d + k] = cs[j * d + k] - (alpha * delta[j * d + k]) / (1 + count[j]);
  }
  return { data: out, shape: [c, d] };
}

/** The state of hard-negative mining: class prototypes and a class confusion matrix. */
export interface HnmState {
  /** Running class prototypes `[C, D]`. */
  readonly prototypes: Matrix;
  /** Decayed counts `[C, C]`: row y, column c counts samples of class y predicted as c. */
  readonly confusion: Matrix;
}

function state(s: unknown): [number, number, Float32Array, Float32Array] {
  if (typeof s !== "object" || s === null) {
    throw new TypeError(`Expected state to be { prototypes, confusion } (hnmInit), got ${v.show(s)}`);
  }
  const { prototypes, confusion } = s as HnmState;
  const [c, d, p] = classMatrix("state.prototypes", prototypes);
  const [, , m] = v.hostMatrix("state.confusion", confusion, c, c);
  return [c, d, p, m];
}

/**
 * A fresh hard-negative-mining state: zero prototypes `[C, D]` and confusion `[C, C]`.
 *
 * @param classes C, at least 1.
 * @param dim D, at least 1.
 * @returns `{ prototypes, confusion }`.
 *
 * @example
 * ```ts
 * import { hnmInit } from "@softmargin/softmargin";
 * console.log(hnmInit(230, 64).confusion.shape); // [230, 230]
 * ```
 */
export function hnmInit(classes: number, dim: number): HnmState {
  const c = v.size("classes", v.required("classes", classes)), d = v.size("dim", v.required("dim", dim));
  if (c === 0 || d === 0) throw new RangeError(`Expected classes and dim to be at least 1, got ${c} and ${d}`);
  return {
    prototypes: { data: new Float32Array(c * d), shape: [c, d] },
    confusion: { data: new Float32Array(c * c), shape: [c, c] },
  };
}

/** Options of {@linkcode hnmUpdatePrototypes} and {@linkcode hnmDecay}. */
export interface HnmMomentumOptions {
  /** In [0, 1]. @default 0.9 */
  momentum?: number;
}

/**
 * Moves each class present in the batch towards the mean of its embeddings:
 * `p_c = momentum * p_c + (1 - momentum) * mean(f of class c)`; absent classes keep
 * their prototype.
 *
 * @param s The state.
 * @param f Embeddings `[B, D]`.
 * @param labels One class per row, in `[0, C)`.
 * @param options `momentum` (0.9).
 * @returns The new state (the confusion matrix copied unchanged).
 *
 * @example
 * ```ts
 * import { hnmInit, hnmUpdatePrototypes } from "@softmargin/softmargin";
 * const f = { data: new Float32Array([1, 0]), shape: [1, 2] as const };
 * console.log(hnmUpdatePrototypes(hnmInit(2, 2), f, [1]).prototypes.data); // [0, 0, 0.1, 0]
 * ```
 */
export function hnmUpdatePrototypes(
  s: HnmState,
  f: Matrix,
  labels: Labels,
  options: HnmMomentumOptions = {},
): HnmState {
  v.keys("options of hnmUpdatePrototypes", v.options(options), ["momentum"]);
  const [c, d, p, m] = state(s);
  const [b, , fs] = v.hostMatrix("f", f, undefined, d);
  const y = v.integers("labels", labels, b, c);
  const momentum = v.number("options.momentum", options.momentum, 0.9, { min: 0, max: 1 });
  const mean = new Float64Array(c * d), count = new Int32Array(c);
  for (let i = 0; i < b; i++) {
    count[y[i]]++;
    for (let k = 0; k < d; k++) mean[y[i] * d + k] += fs[i * d + k];
  }
  const out = p.slice();
  for (let j = 0; j < c; j++) {
    if (count[j] === 0) continue;
    for (let k = 0; k < d; k++) {
      out[j * d + k] = momentum * p[j * d + k] + ((1 - momentum) * mean[j * d + k]) / count[j];
    }
  }
  return { prototypes: { data: out, shape: [c, d] }, confusion: { data: m.slice(), shape: [c, c] } };
}

/**
 * Counts each sample in the confusion matrix: `confusion[y_i, predicted_i] += 1`.
 *
 * @param s The state.
 * @param labels True classes `[B]`, in `[0, C)`.
 * @param predicted Predicted classes `[B]`, in `[0, C)`.
 * @returns The new state (the prototypes copied unchanged).
 *
 * @example
 * ```ts
 * import { hnmInit, hnmUpdateConfusion } from "@softmargin/softmargin";
 * console.log(hnmUpdateConfusion(hnmInit(2, 1), [0, 0], [1, 1]).confusion.data); // [0, 2, 0, 0]
 * ```
 */
export function hnmUpdateConfusion(s: HnmState, labels: Labels, predicted: Labels): HnmState {
  const [c, d, p, m] = state(s);
  const n = Array.isArray(labels) || labels instanceof Int32Array ? labels.length : 0;
  const y = v.integers("labels", labels, n, c), q = v.integers("predicted", predicted, n, c);
  const out = m.slice();
  for (let i = 0; i < n; i++) out[y[i] * c + q[i]] += 1;
  return { prototypes: { data: p.slice(), shape: [c, d] }, confusion: { data: out, shape: [c, c] } };
}

/**
 * Decays the confusion matrix: `confusion * (1 - momentum)`.
 *
 * @param s The state.
 * @param options `momentum` (0.9).
 * @returns The new state.
 *
 * @example
 * ```ts
 * import { hnmDecay, hnmInit, hnmUpdateConfusion } from "@softmargin/softmargin";
 * const s = hnmUpdateConfusion(hnmInit(2, 1), [0], [1]);
 * console.log(hnmDecay(s, { momentum: 0.5 }).confusion.data); // [0, 0.5, 0, 0]
 * ```
 */
export function hnmDecay(s: HnmState, options: HnmMomentumOptions = {}): HnmState {
  v.keys("options of hnmDecay", v.options(options), ["momentum"]);
  const [c, d, p, m] = state(s);
  const momentum = v.number("options.momentum", options.momentum, 0.9, { min: 0, max: 1 });
  return {
    prototypes: { data: p.slice(), shape: [c, d] },
    confusion: { data: m.map((x) => x * (1 - momentum)), shape: [c, c] },
  };
}

/**
 * The hard negatives of each row: the `k` classes `c != y_i` with the largest
 * `confusion[y_i, c]`, ties to the smaller class index, most confused first.
 *
 * @param s The state.
 * @param labels True classes `[B]`, in `[0, C)`.
 * @param k How many per row, in `[1, C - 1]`.
 * @returns `hard`: `{ data: Int32Array, shape: [B, k] }` (the input of `hnmContrastive`).
 *
 * @example
 * ```ts
 * import { hnmHardNegatives, hnmInit, hnmUpdateConfusion } from "@softmargin/softmargin";
 * const s = hnmUpdateConfusion(hnmInit(4, 1), [0, 0], [2, 2]);
 * console.log(hnmHardNegatives(s, [0], 2).data); // [2, 1]
 * ```
 */
export function hnmHardNegatives(s: HnmState, labels: Labels, k: number): IntMatrix {
  const [c, , , m] = state(s);
  const n = Array.isArray(labels) || labels instanceof Int32Array ? labels.length : 0;
  const y = v.integers("labels", labels, n, c);
  const kk = v.number("k", v.required("k", k), 1, { min: 1, max: c - 1 });
  if (!Number.isInteger(kk)) throw new RangeError(`Expected k to be an integer in [1, ${c - 1}], got ${kk}`);
  const out = new Int32Array(n * kk);
  const order = new Int32Array(c);
  for (let i = 0; i < n; i++) {
    const row = y[i] * c;
    let len = 0;
    for (let j = 0; j < c; j++) if (j !== y[i]) order[len++] = j;
    // Stable by class index: larger counts first, ties to the smaller index.
    const sorted = Array.from(order.subarray(0, len)).sort((a, b) => m[row + b] - m[row + a] || a - b);
    out.set(sorted.slice(0, kk), i * kk);
  }
  return { data: out, shape: [n, kk] };
}
