/**
 * The one validation layer: every backend receives inputs checked here, so a
 * kernel never sees a bad shape, a label outside `[0, C)` or a bad parameter.
 * Messages name the argument, the expected and the actual value.
 *
 * @module
 */
import { reduceRows } from "./kernels/deferred.ts";
import type { GpuMatrix, Labels, Matrix, Reduction, Upstream } from "./types.ts";

/** Formats a value for an error message. */
export function show(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number" || typeof value === "boolean" || value == null) return String(value);
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name} of length ${(value as Float32Array).length}`;
  return `a ${(value as object).constructor?.name ?? "value"}`;
}

/** Checks a size: a number (else a `TypeError`) that is a non-negative integer (else a `RangeError`). */
export function size(name: string, value: unknown): number {
  if (typeof value !== "number") {
    throw new TypeError(`Expected ${name} to be a non-negative integer, got ${show(value)}`);
  }
  if (!Number.isInteger(value) || value < 0) {
    throw new RangeError(`Expected ${name} to be a non-negative integer, got ${show(value)}`);
  }
  return value;
}

/**
 * Whether `m` is a GPU-resident matrix `{ buffer: GPUBuffer, shape }` (and not a host
 * one): what the WebGPU backend returns for the gradients of GPU-resident inputs.
 *
 * @example Telling host and GPU results apart
 * ```ts
 * import { isGpuMatrix } from "@softmargin/softmargin";
 * console.log(isGpuMatrix({ data: new Float32Array(2), shape: [1, 2] })); // false
 * ```
 */
export function isGpuMatrix(m: unknown): m is GpuMatrix {
  if (typeof m !== "object" || m === null || (m as { data?: unknown }).data !== undefined) return false;
  const b = (m as { buffer?: { mapAsync?: unknown; size?: unknown } }).buffer;
  return typeof b === "object" && b !== null && typeof b.mapAsync === "function" && typeof b.size === "number";
}

/**
 * Checks a matrix `{ data: Float32Array, shape: [rows, cols] }` (or a GPU-resident
 * `{ buffer: GPUBuffer, shape }`) and returns its sizes.
 */
export function matrix(name: string, m: unknown, rows?: number, cols?: number): [number, number] {
  if (typeof m !== "object" || m === null) {
    throw new TypeError(`Expected ${name} to be a matrix { data: Float32Array, shape: [rows, cols] }, got ${show(m)}`);
  }
  const gpu = isGpuMatrix(m);
  const { data, shape } = m as Matrix;
  if (!gpu && !(data instanceof Float32Array)) {
    throw new TypeError(`Expected ${name}.data to be a Float32Array, got ${show(data)}`);
  }
  if (!Array.isArray(shape) || shape.length !== 2) {
    throw new TypeError(`Expected ${name}.shape to be [rows, cols], got ${show(shape)}`);
  }
  const r = size(`${name}.shape[0]`, shape[0]);
  const c = size(`${name}.shape[1]`, shape[1]);
  if (gpu) {
    const bytes = (m as GpuMatrix).buffer.size;
    if (bytes < r * c * 4) {
      throw new RangeError(
        `Expected ${name}.buffer to hold ${r} * ${c} float32 values (${r * c * 4} bytes), got ${bytes} bytes`,
      );
    }
  } else if (data.length !== r * c) {
    throw new RangeError(`Expected ${name}.data to have ${r} * ${c} = ${r * c} elements, got ${data.length}`);
  }
  if (rows !== undefined && r !== rows) {
    throw new RangeError(`Expected ${name}.shape[0] to be ${rows}, got ${r}`);
  }
  if (cols !== undefined && c !== cols) {
    throw new RangeError(`Expected ${name}.shape[1] to be ${cols}, got ${c}`);
  }
  return [r, c];
}

/**
 * Checks a rank-n float tensor `{ data: Float32Array, shape }` (or GPU-resident
 * `{ buffer, shape }`) whose shape has `dims.length` entries; an entry of `dims` that is
 * a number must match. Returns the shape.
 */
export function tensor(name: string, m: unknown, dims: readonly (number | undefined)[]): number[] {
  if (dims.length === 2) return matrix(name, m, dims[0], dims[1]);
  const rank = dims.length;
  const form = `{ data: Float32Array, shape: [${dims.map((_, i) => `d${i}`).join(", ")}] }`;
  if (typeof m !== "object" || m === null) {
    throw new TypeError(`Expected ${name} to be a tensor ${form}, got ${show(m)}`);
  }
  const { data, shape } = m as { data?: unknown; shape?: unknown };
  const gpu = isGpuMatrix(m);
  if (!gpu && !(data instanceof Float32Array)) {
    throw new TypeError(`Expected ${name}.data to be a Float32Array, got ${show(data)}`);
  }
  if (!Array.isArray(shape) || shape.length !== rank) {
    throw new TypeError(`Expected ${name}.shape to have ${rank} sizes, got ${show(shape)}`);
  }
  const sizes = shape.map((s, i) => size(`${name}.shape[${i}]`, s));
  const count = sizes.reduce((a, b) => a * b, 1);
  const have = gpu ? (m as GpuMatrix).buffer.size / 4 : (data as Float32Array).length;
  if (gpu ? have < count : have !== count) {
    throw new RangeError(`Expected ${name} to hold ${sizes.join(" * ")} = ${count} values, got ${have}`);
  }
  dims.forEach((want, i) => {
    if (want !== undefined && sizes[i] !== want) {
      throw new RangeError(`Expected ${name}.shape[${i}] to be ${want}, got ${sizes[i]}`);
    }
  });
  return sizes;
}

/**
 * Checks a list of matrices of one shape (expert logits `E x [B, C]`, expert features
 * `E x [B, D]`): a non-empty array (at least `min` entries) whose items are matrices of
 * `[rows, cols]` (the first item fixes what is not given). Returns `[count, rows, cols]`.
 */
export function matrixList(
  name: string,
  value: unknown,
  rows?: number,
  cols?: number,
  min = 1,
): [number, number, number] {
  if (!Array.isArray(value)) {
    throw new TypeError(
      `Expected ${name} to be an array of matrices { data: Float32Array, shape }, got ${show(value)}`,
    );
  }
  if (value.length < min) {
    throw new RangeError(`Expected ${name} to have at least ${min} matrices, got ${value.length}`);
  }
  let r = rows, c = cols;
  for (let e = 0; e < value.length; e++) [r, c] = matrix(`${name}[${e}]`, value[e], r, c);
  return [value.length, r ?? 0, c ?? 0];
}

/**
 * Checks an integer vector or matrix other than labels (`fineToCoarse [C]`, `hard [B, k]`):
 * an `Int32Array` or array of `length` integers, each in `[0, bound)`. Returns a fresh
 * `Int32Array` (the caller's array is never kept).
 */
export function integers(name: string, value: unknown, length: number, bound: number): Int32Array {
  if (!(value instanceof Int32Array) && !Array.isArray(value)) {
    throw new TypeError(`Expected ${name} to be an Int32Array or an array of integers, got ${show(value)}`);
  }
  const src = value as ArrayLike<unknown>;
  if (src.length !== length) throw new RangeError(`Expected ${name} to have ${length} values, got ${src.length}`);
  const out = new Int32Array(length);
  for (let i = 0; i < length; i++) {
    const k = src[i];
    if (typeof k !== "number" || !Number.isInteger(k) || k < 0 || k >= bound) {
      throw new RangeError(`Expected ${name}[${i}] to be an integer in [0, ${bound}), got ${show(k)}`);
    }
    out[i] = k;
  }
  return out;
}

/**
 * Checks that `obj` has only `accepted` keys: an unknown key is a `TypeError` naming it
 * and listing the accepted ones (as Python rejects an unexpected keyword argument).
 */
export function keys(what: string, obj: object, accepted: readonly string[]): void {
  for (const key of Object.keys(obj)) {
    if (!accepted.includes(key)) {
      throw new TypeError(
        `Expected ${what} to have only the keys ${accepted.join(", ") || "(none)"}, got an unknown key ${show(key)}`,
      );
    }
  }
}

/**
 * Checks a matrix that must be on the host (small constants such as a rule matrix or the
 * gating, and the state functions' data); returns its sizes and values.
 */
export function hostMatrix(name: string, m: unknown, rows?: number, cols?: number): [number, number, Float32Array] {
  const [r, c] = matrix(name, m, rows, cols);
  if (isGpuMatrix(m)) {
    throw new TypeError(`Expected ${name} to be a host matrix { data: Float32Array, shape }, got a GPUBuffer`);
  }
  return [r, c, (m as Matrix).data];
}

/** Checks the batch of a `[N, C]` input: N >= 1 and C >= 1. */
export function batch(name: string, m: unknown): [number, number] {
  const [n, c] = matrix(name, m);
  if (n === 0) throw new RangeError(`Expected ${name} to have at least one row (an empty batch has no loss), got 0`);
  if (c === 0) throw new RangeError(`Expected ${name} to have at least one column, got 0`);
  return [n, c];
}

/**
 * Checks labels and returns a fresh `Int32Array` in which ignored rows are -1.
 * A label must be an integer in `[0, classes)` or equal to `ignoreIndex`.
 */
export function labels(name: string, value: unknown, n: number, classes: number, ignoreIndex: number): Int32Array {
  if (!(value instanceof Int32Array) && !Array.isArray(value)) {
    throw new TypeError(`Expected ${name} to be an Int32Array or an array of integers, got ${show(value)}`);
  }
  const src = value as Labels;
  if (src.length !== n) throw new RangeError(`Expected ${name} to have ${n} labels (one per row), got ${src.length}`);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const y = src[i];
    if (y === ignoreIndex) {
      out[i] = -1;
    } else if (typeof y !== "number" || !Number.isInteger(y) || y < 0 || y >= classes) {
      throw new RangeError(
        `Expected ${name}[${i}] to be an integer in [0, ${classes}) or ignoreIndex (${ignoreIndex}), got ${show(y)}`,
      );
    } else {
      out[i] = y;
    }
  }
  return out;
}

/** Checks that a required argument is given (a `TypeError` naming it when it is `undefined`). */
export function required<T>(name: string, value: T | undefined): T {
  if (value === undefined) throw new TypeError(`Expected ${name} to be given, got undefined`);
  return value;
}

/** Checks an integer option (such as `ignoreIndex`). */
export function integer(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new TypeError(`Expected ${name} to be an integer, got ${show(value)}`);
  }
  return value;
}

/** Checks a finite number option inside `[min, max]` (bounds exclusive when asked). */
export function number(
  name: string,
  value: unknown,
  fallback: number,
  range: { min?: number; max?: number; minExclusive?: boolean; maxExclusive?: boolean } = {},
): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number") throw new TypeError(`Expected ${name} to be a number, got ${show(value)}`);
  const { min = -Infinity, max = Infinity, minExclusive = false, maxExclusive = false } = range;
  const low = minExclusive ? value <= min : value < min;
  const high = maxExclusive ? value >= max : value > max;
  if (!Number.isFinite(value) || low || high) {
    const lo = min === -Infinity ? "(-inf" : `${minExclusive ? "(" : "["}${min}`;
    const hi = max === Infinity ? "inf)" : `${max}${maxExclusive ? ")" : "]"}`;
    throw new RangeError(`Expected ${name} to be a finite number in ${lo}, ${hi}, got ${show(value)}`);
  }
  return value;
}

/**
 * Checks a number input (one with a number gradient, such as CLIP's `scale`: a key of the
 * loss's `numbers`): required, a finite number inside the range (as {@linkcode number}).
 * `name` is the input's name (`"scale"`, as a matrix input is named `"f"`).
 */
export function numberInput(
  name: string,
  value: unknown,
  range: { min?: number; max?: number; minExclusive?: boolean; maxExclusive?: boolean } = {},
): number {
  return number(name, required(name, value), NaN, range);
}

/**
 * The smallest `temperature` of every loss that takes one. The float32 kernels divide by
 * it (`z / T`, `f f^T / tau`) and multiply by its inverse; far below it (1e-38) their
 * values leave float32's range for logits of 1e4 (NaN on WebAssembly and WebGPU while the
 * float64 reference stays finite). Every value is finite on every backend at 1e-6.
 */
export const MIN_TEMPERATURE = 1e-6;

/** Checks `options.temperature`: finite, at least {@linkcode MIN_TEMPERATURE}. */
export function temperature(value: unknown, fallback: number): number {
  return number("options.temperature", value, fallback, { min: MIN_TEMPERATURE });
}

/**
 * The largest logit `scale` of the margin losses and heads: the logits `s cos` and their
 * differences, up to `2 s`, and the gradients, `s` over a norm, are float32; far above it
 * (1e20 for the heads) they leave float32's range. Every value is finite on every backend
 * at 1e6.
 */
export const MAX_SCALE = 1e6;

/** Checks `options.scale`: finite, in `(0, MAX_SCALE]`. */
export function scale(value: unknown, fallback: number): number {
  return number("options.scale", value, fallback, { min: 0, minExclusive: true, max: MAX_SCALE });
}

/**
 * The largest magnitude of a loss weight (`lambda`, `prototypeWeight`, `zLoss`, a class
 * weight): every weighted term and its gradient stays far inside float32 (past about 1e38 a
 * weight itself is infinite in float32, and 1e300 gave NaN on WebAssembly).
 */
export const MAX_WEIGHT = 1e6;

/** Checks a loss weight: finite, in `[min, MAX_WEIGHT]` (`min` is `-MAX_WEIGHT` or 0). */
export function weight(name: string, value: unknown, fallback: number, min = -MAX_WEIGHT): number {
  return number(name, value, fallback, { min, max: MAX_WEIGHT });
}

/**
 * The largest focusing exponent `gamma` (`(1 - p)^gamma`): 20 times the focal loss paper's
 * largest (5); past float32's range (1e300) it gave NaN on WebGPU.
 */
export const MAX_EXPONENT = 100;

/** Checks a focusing exponent: finite, in `[0, MAX_EXPONENT]`. */
export function exponent(name: string, value: unknown, fallback: number): number {
  return number(name, value, fallback, { min: 0, max: MAX_EXPONENT });
}

/**
 * The largest magnitude of a margin subtracted from a cosine (CosFace's `margin`,
 * `combinedMargin`'s `m3`): a cosine lies in `[-1, 1]`, so past 2 every target logit is
 * already below (or above) every other; -1e30 gave NaN on WebAssembly.
 */
export const MAX_COSINE_MARGIN = 2;

/** Checks a cosine margin: finite, in `[-MAX_COSINE_MARGIN, MAX_COSINE_MARGIN]`. */
export function cosineMargin(name: string, value: unknown, fallback: number): number {
  return number(name, value, fallback, { min: -MAX_COSINE_MARGIN, max: MAX_COSINE_MARGIN });
}

/**
 * The largest multiplicative angular margin (`cos(m theta)`: SphereFace's and L-Softmax's
 * `m`, `combinedMargin`'s `m1`): twice the papers' largest (4); the kernels' cosine of
 * `m theta` lost every digit at 1e10 on WebGPU (NaN), and an integer `m` is a loop of `m`
 * steps.
 */
export const MAX_ANGULAR_FACTOR = 8;

/** Checks a multiplicative angular margin: finite, in `[min, MAX_ANGULAR_FACTOR]`. */
export function angularFactor(name: string, value: unknown, fallback: number, min: number): number {
  return number(name, value, fallback, { min, max: MAX_ANGULAR_FACTOR });
}

/** Checks a boolean option. */
export function boolean(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") throw new TypeError(`Expected ${name} to be a boolean, got ${show(value)}`);
  return value;
}

/** Checks a string option against its allowed values. */
export function oneOf<T extends string>(name: string, value: unknown, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (!allowed.includes(value as T)) {
    throw new RangeError(`Expected ${name} to be one of ${allowed.map(show).join(", ")}, got ${show(value)}`);
  }
  return value as T;
}

/** Checks `reduction`. */
export function reduction(value: unknown): Reduction {
  return oneOf("options.reduction", value, ["mean", "sum", "none"] as const, "mean");
}

/** Checks an optional vector option of `length` finite values and returns a float32 copy. */
export function vector(
  name: string,
  value: unknown,
  length: number,
  min = -Infinity,
  max = Infinity,
): Float32Array | null {
  if (value === undefined || value === null) return null;
  if (!(value instanceof Float32Array) && !(value instanceof Float64Array) && !Array.isArray(value)) {
    throw new TypeError(`Expected ${name} to be a Float32Array or an array of numbers, got ${show(value)}`);
  }
  const src = value as ArrayLike<number>;
  if (src.length !== length) throw new RangeError(`Expected ${name} to have ${length} values, got ${src.length}`);
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) {
    const v = src[i];
    if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) {
      const range = max === Infinity ? `>= ${min}` : `in [${min}, ${max}]`;
      throw new RangeError(`Expected ${name}[${i}] to be a finite number ${range}, got ${show(v)}`);
    }
    out[i] = v;
  }
  return out;
}

/**
 * The values of a checked matrix for a prepared problem: its `data`, or for a
 * GPU-resident matrix a {@linkcode DeviceValues} standing in for them (only the WebGPU
 * kernels accept it; the CPU backends reject it before any work).
 */
export function values(m: Matrix | GpuMatrix): Float32Array {
  // A stand-in passed on as an input (a composite's term) stays itself, `checkFinite` mark included.
  if (onDevice(m)) return m as unknown as Float32Array;
  if (isGpuMatrix(m)) return new DeviceValues(m.buffer, m.shape) as unknown as Float32Array;
  return m.data;
}

/** The stand-in for the values of a GPU-resident input inside a prepared problem. */
export class DeviceValues implements GpuMatrix {
  /** Set by `finite` (`checkFinite`): the argument's name; the WebGPU backend reads the values back and scans them. */
  checkFinite: string | null = null;
  constructor(readonly buffer: GPUBuffer, readonly shape: readonly [number, number]) {}
}

/** Whether a problem's values are a GPU stand-in. */
export function onDevice(data: unknown): data is DeviceValues {
  return data instanceof DeviceValues;
}

/**
 * With `checkFinite`, throws a `RangeError` naming the first NaN or infinity of `data`
 * (GPU-resident values are marked and scanned by the WebGPU backend).
 */
export function finite(name: string, data: Float32Array, cols: number): void {
  if (onDevice(data)) {
    data.checkFinite = name;
    return;
  }
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) {
      const at = cols > 0 ? `[${Math.floor(i / cols)}, ${i % cols}]` : `[${i}]`;
      throw new RangeError(`Expected ${name}.data to be finite (checkFinite), got ${data[i]} at ${at}`);
    }
  }
}

/** Checks that the inputs argument is an object. */
export function inputs<T>(value: T): T {
  if (typeof value !== "object" || value === null) {
    throw new TypeError(`Expected inputs to be an object, got ${show(value)}`);
  }
  return value;
}

/** Checks that an options argument is an object (or absent). */
export function options<T extends object>(value: T | undefined): T {
  if (value === undefined) return {} as T;
  if (typeof value !== "object" || value === null) {
    throw new TypeError(`Expected options to be an object, got ${show(value)}`);
  }
  boolean("options.checkFinite", (value as { checkFinite?: unknown }).checkFinite, false);
  return value;
}

/**
 * Checks an upstream gradient, the one rule of every loss. A reduced loss's (`rows`
 * absent) is a finite number, default 1. With `reduction: "none"` it is one finite value
 * per row (a `Float32Array`, `Float64Array` or array of `rows` numbers), default all 1,
 * returned as a fresh `Float64Array`. Another kind of value, or an entry that is not a
 * number, is a `TypeError`; a wrong length, a NaN or an infinity is a `RangeError`.
 */
export function upstream(value: unknown): number;
export function upstream(value: unknown, rows: number): Float64Array;
export function upstream(value: unknown, rows?: number): number | Float64Array {
  if (rows === undefined) {
    if (value === undefined) return 1;
    if (typeof value !== "number") {
      throw new TypeError(`Expected upstream to be a number (the loss is reduced), got ${show(value)}`);
    }
    if (!Number.isFinite(value)) throw new RangeError(`Expected upstream to be finite, got ${value}`);
    return value;
  }
  const out = new Float64Array(rows).fill(1);
  if (value === undefined) return out;
  if (!(value instanceof Float32Array) && !(value instanceof Float64Array) && !Array.isArray(value)) {
    throw new TypeError(
      `Expected upstream to be a Float32Array of ${rows} values (one per row, reduction "none"), got ${show(value)}`,
    );
  }
  const src = value as ArrayLike<unknown>;
  if (src.length !== rows) {
    throw new RangeError(`Expected upstream to have ${rows} values (one per row), got ${src.length}`);
  }
  for (let i = 0; i < rows; i++) {
    const u = src[i];
    if (typeof u !== "number") throw new TypeError(`Expected upstream[${i}] to be a number, got ${show(u)}`);
    if (!Number.isFinite(u)) throw new RangeError(`Expected upstream[${i}] to be finite, got ${u}`);
    out[i] = u;
  }
  return out;
}

/**
 * Turns `reduction` and the upstream gradient into one gradient scale per row.
 * `denominator` is what `"mean"` divides by. Rows in `ignored` get 0.
 */
export function rowScales(
  reductionName: Reduction,
  up: Upstream | undefined,
  n: number,
  denominator: number,
  isIgnored?: (row: number) => boolean,
): Float64Array {
  let scales: Float64Array;
  if (reductionName === "none") {
    scales = upstream(up, n);
  } else {
    const u = upstream(up);
    // A weighted mean whose total weight is 0 is 0 (SPEC): its gradient is 0 too.
    scales = new Float64Array(n).fill(reductionName === "mean" ? (denominator === 0 ? 0 : u / denominator) : u);
  }
  if (isIgnored) { for (let i = 0; i < n; i++) if (isIgnored(i)) scales[i] = 0; }
  return scales;
}

/** Combines per-row losses by the reduction (GPU-resident rows stay on the GPU: src/kernels/deferred.ts). */
export const reduce = reduceRows;
