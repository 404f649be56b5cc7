/**
 * What every kernel shares: its raw result (`Raw`), the kernel type, the prepared
 * problem's base, and the generic helpers of results (`result`, `outBuffer`,
 * `outList`, `gradMatrix`), of GPU-resident values (`holdsDevice`, `hostOnly`) and of
 * possibly asynchronous kernels (`then`).
 *
 * @module
 */
import type { CommonOptions, Matrix } from "../types.ts";
import * as v from "../validate.ts";
import { type DeviceValues, isGpuMatrix, onDevice } from "../validate.ts";
import { deferredColumn } from "./deferred.ts";

/**
 * What a kernel returns: per-row values (one array per part), gradients by input name,
 * and values it formed that a later term of a composite may take as an input
 * (`outputs`: the experts' gated ensemble).
 */
export interface Raw {
  rows: Float64Array[];
  grads: Record<string, Float32Array>;
  /** The gradients of number inputs (CLIP's `scale`, SigLIP's `scale` and `bias`), by input name. */
  numbers?: Record<string, number>;
  outputs?: Record<string, Float32Array>;
}

/** A prepared problem: checked inputs, resolved options, per-row gradient scales. */
export interface Prepared {
  /** Whether gradients are wanted (`backward`, `valueAndGrad`). */
  readonly grad: boolean;
}

/** A backend's kernel for one family. CPU kernels return synchronously, GPU ones a Promise. */
export type Kernel<P> = (problem: P) => Raw | Promise<Raw>;

/**
 * A matrix result `{ data, shape }`, or `{ buffer, shape }` when a WebGPU kernel left
 * it on the GPU (its values are then a `DeviceValues`).
 */
export function result(data: Float32Array, rows: number, cols: number): Matrix {
  if (onDevice(data)) return { buffer: data.buffer, shape: [rows, cols] } as unknown as Matrix;
  return { data, shape: [rows, cols] };
}

/** Whether a value holds GPU-resident data at any depth (problem fields, lists, nested objects). */
export function holdsDevice(value: unknown): boolean {
  return devicePath(value) !== null;
}

/**
 * Calls `visit` with the path (`"f"`, `"logits.1"`, `"terms.0.problem.f"` in a
 * composite's problem; `""` for the value itself) and the buffer of every GPU-resident
 * value in `value` (fields, lists, nested objects), depth first, until it returns true.
 * Returns whether it did.
 */
function eachDevice(value: unknown, visit: (path: string, b: GPUBuffer) => boolean, path = "", depth = 0): boolean {
  if (onDevice(value) || isGpuMatrix(value)) return visit(path, value.buffer);
  if (typeof value !== "object" || value === null || ArrayBuffer.isView(value) || depth > 5) return false;
  return Object.entries(value).some(([k, item]) => eachDevice(item, visit, path ? `${path}.${k}` : k, depth + 1));
}

/** Where a value holds GPU-resident data first (see {@linkcode eachDevice}), or null. */
function devicePath(value: unknown): string | null {
  let at: string | null = null;
  eachDevice(value, (path) => (at = path, true));
  return at;
}

/** The GPU-resident inputs in `value` that `checkFinite` marked (their values are to be scanned). */
export function markedFinite(value: unknown): DeviceValues[] {
  const out: DeviceValues[] = [];
  const walk = (x: unknown, depth: number): void => {
    if (onDevice(x)) {
      if (x.checkFinite !== null && !out.includes(x)) out.push(x);
    } else if (typeof x === "object" && x !== null && !ArrayBuffer.isView(x) && !isGpuMatrix(x) && depth <= 5) {
      for (const item of Object.values(x)) walk(item, depth + 1);
    }
  };
  walk(value, 0);
  return out;
}

/**
 * The `k` columns of per-row values `[n, k]` from element `from` of `values` (row i's
 * column q at `from + i * k + q`), as float64 rows; when a WebGPU call left them on the
 * GPU (`readback: false`, `values` a `DeviceValues`), as GPU columns that the loss's
 * `finish` reduces on the GPU (src/kernels/deferred.ts).
 */
export function columns(values: Float32Array, n: number, k: number, from = 0): Float64Array[] {
  return Array.from(
    { length: k },
    (_, q) =>
      onDevice(values)
        ? deferredColumn(values.buffer, n, k, q, from)
        : Float64Array.from({ length: n }, (_, i) => values[from + i * k + q]),
  );
}

/** The GPU buffers of values held anywhere in `value`. */
export function buffersIn(value: unknown): Set<GPUBuffer> {
  const out = new Set<GPUBuffer>();
  eachDevice(value, (_, b) => (out.add(b), false));
  return out;
}

/**
 * Guards a CPU kernel: a problem holding GPU-resident values anywhere (a field, a list
 * of matrices, a nested object) is refused with a `TypeError` before any work.
 */
export function hostOnly<P extends object, R>(kernel: (p: P) => R, backend: string): (p: P) => R {
  return (p) => {
    const at = devicePath(p);
    if (at !== null) {
      throw new TypeError(
        `Expected every input to be a matrix { data: Float32Array, shape } on the ${backend} backend, got a GPUBuffer (${at}); ${
          backend.startsWith("webgpu")
            ? "this loss has no WebGPU kernel: give it host matrices (it then runs on the host)"
            : 'GPU-resident inputs need init({ backend: "webgpu" })'
        }`,
      );
    }
    return kernel(p);
  };
}

/** `f(r)`, or `r.then(f)` when `r` is a Promise: one code path for synchronous and asynchronous kernels. */
export const then = <T, U>(
  r: T | Promise<T>,
  f: (t: T) => U,
): U | Promise<U> => (r instanceof Promise ? r.then(f) : f(r));

/**
 * Checks a caller's output buffer for a gradient. A GPU matrix `{ buffer, shape }` is
 * returned as is (only the WebGPU kernels write it; the CPU backends refuse it).
 */
export function outBuffer(o: CommonOptions, name: string, rows: number, cols: number): Matrix | null {
  const m = o.out?.[name];
  if (m === undefined) return null;
  v.matrix(`options.out.${name}`, m, rows, cols);
  return m as Matrix;
}

/** Checks a caller's list of output buffers for the gradient of a list input (`count` matrices `[rows, cols]`). */
export function outList(o: CommonOptions, name: string, count: number, rows: number, cols: number): (Matrix | null)[] {
  const list = o.out?.[name];
  if (list === undefined) return new Array(count).fill(null);
  const [e] = v.matrixList(`options.out.${name}`, list, rows, cols);
  if (e !== count) throw new RangeError(`Expected options.out.${name} to have ${count} matrices, got ${e}`);
  return list as Matrix[];
}

/** The gradient matrix: the caller's output buffer when given (returned as is), else a fresh one. */
export function gradMatrix(out: Matrix | null, data: Float32Array | undefined, rows: number, cols: number): Matrix {
  return out ?? result(data as Float32Array, rows, cols);
}
