/**
 * Values a loss's `finish` step forms from per-row values that stay on the GPU (a WebGPU
 * call with `readback: false`, SPEC §10): a kernel's per-row values are then a
 * `Deferred` vector (a strided column of a GPU buffer) instead of a `Float64Array`, and
 * the reductions and combinations of `finish` ({@linkcode reduceRows}, {@linkcode lin},
 * {@linkcode total}, {@linkcode recip}, {@linkcode first}) build a small expression that
 * the WebGPU backend evaluates on the GPU into `[1, 1]` (or `[N, 1]`) buffers, in the same
 * command encoder as the kernel (src/webgpu/finish.ts). On host values the same helpers
 * compute in float64, so one `finish` serves every backend. Arithmetic operators on a
 * `Deferred` (`+`, `*`, a loop over it) throw a `TypeError`: a `finish` step must use
 * these helpers for anything it computes from per-row values.
 *
 * Imports nothing (the bottom layer, with `src/types.ts`).
 *
 * @module
 */

/** How a `Deferred` is computed. */
export type DeferredNode =
  /** A column of a GPU buffer: element `offset + i * stride` for row i. */
  | { readonly op: "rows"; readonly buffer: GPUBuffer; readonly offset: number; readonly stride: number }
  /** The sum of a vector (a scalar). */
  | { readonly op: "sum"; readonly of: Deferred }
  /** `c + sum_k coef_k x_k` (all terms of this value's kind: scalars, or vectors of its length). */
  | { readonly op: "lin"; readonly c: number; readonly terms: readonly (readonly [Deferred, number])[] }
  /** `1 / x`, elementwise. */
  | { readonly op: "recip"; readonly of: Deferred };

const misuse = () =>
  new TypeError(
    "Expected a loss's finish step to combine GPU-resident per-row values with the helpers of " +
      "src/kernels/deferred.ts (reduceRows, lin, total, recip, first), got arithmetic on one (readback: false)",
  );

/**
 * A value to be computed on the GPU: a scalar (`length` undefined) or a vector of `n`
 * values (one per row). Passed where `finish` expects a `Float64Array` or a number.
 */
export class Deferred {
  constructor(readonly n: number, readonly vector: boolean, readonly node: DeferredNode) {}
  /** Arithmetic on it is a `TypeError` (see the module's documentation). */
  valueOf(): never {
    throw misuse();
  }
  /** Iterating over it is a `TypeError`. */
  [Symbol.iterator](): never {
    throw misuse();
  }
  /** Its length is not known on the host: a `TypeError`. */
  get length(): never {
    throw misuse();
  }
}

/** Whether `x` is a value computed on the GPU. */
export const isDeferred = (x: unknown): x is Deferred => x instanceof Deferred;

/** A column `col` of `n` rows of `k` values in `buffer` from element `offset` (row i at `offset + i * k + col`). */
export function deferredColumn(buffer: GPUBuffer, n: number, k: number, col: number, offset = 0): Float64Array {
  return new Deferred(n, true, { op: "rows", buffer, offset: offset + col, stride: k }) as unknown as Float64Array;
}

/** The sum of per-row values. */
export function total(rows: Float64Array | Deferred): number {
  if (isDeferred(rows)) return new Deferred(1, false, { op: "sum", of: rows }) as unknown as number;
  let s = 0;
  for (let i = 0; i < rows.length; i++) s += rows[i];
  return s;
}

/**
 * `c + sum_k coef_k x_k`: numbers give a number; host vectors (all of one length) a
 * `Float32Array` (summed in float64); any GPU value a GPU value (vectors of one length,
 * or scalars). A term of coefficient 0 is dropped.
 */
export function lin(c: number, ...terms: (readonly [number, number])[]): number;
export function lin(c: number, ...terms: (readonly [ArrayLike<number> | number, number])[]): Float32Array;
export function lin(c: number, ...terms: (readonly [number | ArrayLike<number>, number])[]): number | Float32Array {
  type T = number | Float32Array;
  const kept = terms.filter(([, k]) => k !== 0);
  const gpu = kept.filter(([x]) => isDeferred(x)) as unknown as [Deferred, number][];
  if (gpu.length > 0) {
    // Host numbers join the constant (added to every row of a vector).
    let c0 = c;
    for (const [x, k] of kept) {
      if (typeof x === "number") c0 += k * x;
      else if (!isDeferred(x)) throw new TypeError("Expected every vector term of lin to be on the GPU, got a mix");
    }
    const { n, vector } = gpu[0][0];
    if (gpu.some(([x]) => x.vector !== vector || (vector && x.n !== n))) {
      throw new TypeError("Expected the GPU terms of lin to be all scalars or all vectors of one length");
    }
    return new Deferred(n, vector, { op: "lin", c: c0, terms: gpu }) as unknown as T;
  }
  // (GPU terms left here have the factor 0: a GPU vector's only gives the result's length.)
  const vec = terms.find(([x]) => typeof x !== "number" && !(isDeferred(x) && !(x as unknown as Deferred).vector));
  if (!vec) return (kept as [number, number][]).reduce((s, [x, k]) => s + k * x, c) as T;
  // Vectors elementwise; a number term is the same for every row.
  const at = (x: number | ArrayLike<number>, i: number) => (typeof x === "number" ? x : x[i]);
  const n = isDeferred(vec[0]) ? (vec[0] as unknown as Deferred).n : (vec[0] as ArrayLike<number>).length;
  return Float32Array.from({ length: n }, (_, i) => kept.reduce((s, [x, k]) => s + k * at(x, i), c)) as T;
}

/** `1 / x` (a number, or a GPU scalar). */
export function recip(x: number): number {
  if (isDeferred(x)) return new Deferred(1, false, { op: "recip", of: x as Deferred }) as unknown as number;
  return 1 / x;
}

/** The first value of per-row values (a kernel's scalar written as one row). */
export function first(rows: Float64Array): number {
  if (isDeferred(rows)) return new Deferred(1, false, { ...(rows as Deferred).node }) as unknown as number;
  return rows[0];
}

/**
 * Combines per-row losses by the reduction: `"none"` the values (float32), `"sum"` their
 * sum, `"mean"` their sum over `denominator` (0 when it is 0). GPU values stay on the GPU.
 */
export function reduceRows(
  rows: Float64Array,
  reductionName: "mean" | "sum" | "none",
  denominator: number,
): number | Float32Array {
  if (isDeferred(rows)) {
    if (reductionName === "none") return rows as unknown as Float32Array;
    const s = total(rows);
    return reductionName === "sum" ? s : lin(0, [s, denominator === 0 ? 0 : 1 / denominator]);
  }
  if (reductionName === "none") return Float32Array.from(rows);
  const s = total(rows);
  if (reductionName === "sum") return s;
  return denominator === 0 ? 0 : s / denominator;
}

/** A value as per-row values of one row (a kernel's scalar result, read back by {@linkcode first}). */
export function one(x: number): Float64Array {
  return isDeferred(x) ? (x as unknown as Float64Array) : Float64Array.of(x);
}
