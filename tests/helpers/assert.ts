/**
 * Assertions of the test suite, on top of `node:assert/strict` (so they run
 * unchanged under `deno test` and `bun test`).
 *
 * The accuracy bound of SPEC.md ("Conventions") is built in:
 * - a loss value is within `1e-5 * max(1, |ref|)` of the float64 reference;
 * - every gradient element is within `1e-5 * max(1e-3, max|ref grad|)`, where the
 *   maximum runs over the whole reference tensor (the fixture's `maxAbs` when it
 *   is only sampled).
 *
 * @module
 */
import assert from "node:assert/strict";
import type { ExpectedTensor } from "./fixtures.ts";

/** Relative tolerance of SPEC.md's accuracy bound. */
export const SPEC_TOL = 1e-5;

/** Anything that holds numbers in order. */
export type Numbers = ArrayLike<number>;

/** A matrix-like value (the library's `{ data, shape }`). */
export interface MatrixLike {
  readonly data: Numbers;
  readonly shape: readonly number[];
}

/** An expected value: a number, a plain array, or a decoded fixture tensor (dense or sampled). */
export type Expected = number | Numbers | ExpectedTensor;

function isExpectedTensor(e: unknown): e is ExpectedTensor {
  return typeof e === "object" && e !== null && "kind" in e &&
    ((e as ExpectedTensor).kind === "dense" || (e as ExpectedTensor).kind === "sampled");
}

function isMatrixLike(v: unknown): v is MatrixLike {
  return typeof v === "object" && v !== null && "data" in v && "shape" in v;
}

/** `[row, col]` of a flat index when a shape is known, for messages. */
export function where(flat: number, shape?: readonly number[]): string {
  if (!shape || shape.length < 2) return `[${flat}]`;
  const cols = shape[shape.length - 1];
  return `[${Math.floor(flat / cols)}, ${flat % cols}]`;
}

/** The (index, expected value) pairs to check: every element, or a sampled tensor's sample. */
function pairs(expected: Numbers | ExpectedTensor): { idx: ArrayLike<number> | null; values: Numbers } {
  if (isExpectedTensor(expected)) {
    return expected.kind === "dense"
      ? { idx: null, values: expected.data }
      : { idx: expected.idx, values: expected.data };
  }
  return { idx: null, values: expected };
}

function expectedShape(expected: Expected): readonly number[] | undefined {
  return isExpectedTensor(expected) ? expected.shape : undefined;
}

function expectedLength(expected: Numbers | ExpectedTensor): number {
  if (isExpectedTensor(expected)) return expected.shape.reduce((a, b) => a * b, 1);
  return expected.length;
}

/** The largest |value| of an expected tensor or array (the fixture's `maxAbs` when sampled). */
export function maxAbsOf(expected: Numbers | ExpectedTensor): number {
  if (isExpectedTensor(expected) && expected.kind === "sampled") return expected.maxAbs;
  const { values } = pairs(expected);
  let m = 0;
  for (let i = 0; i < values.length; i++) m = Math.max(m, Math.abs(values[i]));
  return m;
}

/** Fails naming the first non-finite element of `data`. */
export function assertFinite(data: Numbers | number, label: string, shape?: readonly number[]): void {
  if (typeof data === "number") {
    assert.ok(Number.isFinite(data), `${label}: expected a finite value, got ${data}`);
    return;
  }
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) {
      assert.fail(`${label}: expected finite values, got ${data[i]} at ${where(i, shape)}`);
    }
  }
}

/**
 * Elementwise closeness `|a - e| <= atol + rtol * |e|` of a result against an
 * expected array or tensor. Returns the worst element (largest error over its
 * allowance) so callers can report it; `ok` is false when any element fails or
 * the lengths differ.
 */
export function allClose(
  actual: Numbers,
  expected: Numbers | ExpectedTensor,
  { rtol = 0, atol = 0 }: { rtol?: number; atol?: number } = {},
): { ok: boolean; index: number; actual: number; expected: number; error: number; allowed: number } {
  const { idx, values } = pairs(expected);
  const worst = { ok: true, index: -1, actual: NaN, expected: NaN, error: 0, allowed: 0 };
  if (actual.length !== expectedLength(expected)) return { ...worst, ok: false };
  let worstRatio = -1;
  for (let k = 0; k < values.length; k++) {
    const i = idx ? idx[k] : k;
    const a = actual[i];
    const e = values[k];
    const allowed = atol + rtol * Math.abs(e);
    const error = Math.abs(a - e);
    // Equal infinities pass; NaN (in either) fails and counts as the worst element.
    const pass = a === e || error <= allowed;
    const ratio = a === e
      ? 0
      : Number.isNaN(error)
      ? Infinity
      : allowed === 0
      ? (error === 0 ? 0 : Infinity)
      : error / allowed;
    if (!pass) worst.ok = false;
    if (ratio > worstRatio) {
      worstRatio = ratio;
      Object.assign(worst, { index: i, actual: a, expected: e, error, allowed });
    }
  }
  return worst;
}

/** Asserts `allClose`, naming the worst element. */
export function assertAllClose(
  actual: Numbers | MatrixLike,
  expected: Numbers | ExpectedTensor,
  tol: { rtol?: number; atol?: number },
  label = "values",
): void {
  const data = isMatrixLike(actual) ? actual.data : actual;
  const shape = isMatrixLike(actual) ? actual.shape : expectedShape(expected);
  assert.equal(
    data.length,
    expectedLength(expected),
    `${label}: expected ${expectedLength(expected)} values, got ${data.length}`,
  );
  const r = allClose(data, expected, tol);
  if (!r.ok) {
    assert.fail(
      `${label}: worst element ${where(r.index, shape)} is ${r.actual}, expected ${r.expected} ` +
        `(error ${r.error.toExponential(3)} > allowed ${r.allowed.toExponential(3)}; rtol ${tol.rtol ?? 0}, atol ${
          tol.atol ?? 0
        })`,
    );
  }
}

/**
 * Asserts a loss value against the reference: within `tol * max(1, |ref|)`, elementwise
 * for a per-row (`reduction: "none"`) loss or a matrix output. Non-finite results fail.
 */
export function assertLossClose(
  actual: number | Numbers | MatrixLike,
  expected: Expected,
  label = "loss",
  tol = SPEC_TOL,
): void {
  if (typeof expected === "number") {
    if (typeof actual !== "number") assert.fail(`${label}: expected a number, got ${describe(actual)}`);
    const a = actual as number;
    const bound = tol * Math.max(1, Math.abs(expected));
    assert.ok(
      Number.isFinite(a) && Math.abs(a - expected) <= bound,
      `${label}: got ${a}, expected ${expected} (error ${Math.abs(a - expected).toExponential(3)} > ${
        bound.toExponential(3)
      })`,
    );
    return;
  }
  if (typeof actual !== "object" || actual === null) {
    assert.fail(`${label}: expected an array of values, got ${describe(actual)}`);
  }
  const data = isMatrixLike(actual) ? actual.data : actual as Numbers;
  const shape = isMatrixLike(actual) ? actual.shape : expectedShape(expected);
  if (isMatrixLike(actual) && isExpectedTensor(expected)) {
    assert.deepEqual([...actual.shape], expected.shape, `${label}: shape`);
  }
  assertFinite(data, label, shape);
  assert.equal(
    data.length,
    expectedLength(expected),
    `${label}: expected ${expectedLength(expected)} values, got ${data.length}`,
  );
  const { idx, values } = pairs(expected);
  for (let k = 0; k < values.length; k++) {
    const i = idx ? idx[k] : k;
    const bound = tol * Math.max(1, Math.abs(values[k]));
    if (!(Math.abs(data[i] - values[k]) <= bound)) {
      // Report the worst element, not the first.
      let worst = k, worstRatio = 0;
      for (let q = 0; q < values.length; q++) {
        const j = idx ? idx[q] : q;
        const ratio = Math.abs(data[j] - values[q]) / (tol * Math.max(1, Math.abs(values[q])));
        if (!(ratio <= worstRatio)) [worst, worstRatio] = [q, Number.isNaN(ratio) ? Infinity : ratio];
      }
      const j = idx ? idx[worst] : worst;
      assert.fail(
        `${label}: worst element ${where(j, shape)} is ${data[j]}, expected ${values[worst]} ` +
          `(error ${(worstRatio * tol).toExponential(3)} relative to max(1, |ref|) > ${tol})`,
      );
    }
  }
}

/**
 * Asserts a gradient against the reference: every element within
 * `tol * max(1e-3, max|ref|)`. `expected` may be a sampled fixture tensor, then only
 * its sample is compared but every element of `actual` must be finite.
 */
export function assertGradClose(
  actual: MatrixLike | Numbers | undefined,
  expected: Numbers | ExpectedTensor,
  label = "gradient",
  tol = SPEC_TOL,
): void {
  assert.ok(actual !== undefined && actual !== null, `${label}: missing`);
  const data = isMatrixLike(actual) ? actual.data : actual as Numbers;
  const shape = isMatrixLike(actual) ? actual.shape : expectedShape(expected);
  if (isMatrixLike(actual) && isExpectedTensor(expected)) {
    assert.deepEqual([...actual.shape], expected.shape, `${label}: shape`);
  }
  assert.equal(
    data.length,
    expectedLength(expected),
    `${label}: expected ${expectedLength(expected)} values, got ${data.length}`,
  );
  assertFinite(data, label, shape);
  const bound = tol * Math.max(1e-3, maxAbsOf(expected));
  const r = allClose(data, expected, { atol: bound });
  if (!r.ok) {
    assert.fail(
      `${label}: worst element ${where(r.index, shape)} is ${r.actual}, expected ${r.expected} ` +
        `(error ${r.error.toExponential(3)} > ${bound.toExponential(3)} = ${tol} * max(1e-3, max|ref| = ${
          maxAbsOf(expected).toExponential(3)
        }))`,
    );
  }
}

/** A short description of a value for a message (never the contents of a large array). */
function describe(v: unknown): string {
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name} of length ${(v as Float32Array).length}`;
  if (v !== null && typeof v === "object") return `an object with keys ${Object.keys(v).join(", ")}`;
  return String(v);
}

// ------------------------------------------------------------------------------------------------
// Inputs are never modified (SPEC "Edge cases").

/** A deep copy of an inputs or options object (typed arrays, arrays, matrices, nested objects). */
export interface Snapshot {
  readonly value: unknown;
  readonly except: readonly string[];
}

function deepCopy(v: unknown, except: readonly string[], seen: Map<unknown, unknown>): unknown {
  if (v === null || typeof v !== "object") return v;
  if (seen.has(v)) return seen.get(v);
  if (ArrayBuffer.isView(v)) {
    const copy = (v as unknown as { slice(): unknown }).slice();
    seen.set(v, copy);
    return copy;
  }
  if (Array.isArray(v)) {
    const copy: unknown[] = [];
    seen.set(v, copy);
    for (const x of v) copy.push(deepCopy(x, except, seen));
    return copy;
  }
  const copy: Record<string, unknown> = {};
  seen.set(v, copy);
  // Own enumerable keys, plus `data`/`shape` getters (a WasmMatrix keeps its data behind a getter).
  const keys = new Set(Object.keys(v));
  for (const k of ["data", "shape"]) if (k in (v as object)) keys.add(k);
  for (const k of keys) {
    if (except.includes(k)) continue;
    copy[k] = deepCopy((v as Record<string, unknown>)[k], except, seen);
  }
  return copy;
}

/**
 * Deep copies of every typed array, array and matrix in `value` (an inputs or options
 * object). Keys in `except` are skipped: by default `out`, the caller's output buffers,
 * which a call is meant to write.
 */
export function snapshot(value: unknown, except: readonly string[] = ["out"]): Snapshot {
  return { value: deepCopy(value, except, new Map()), except };
}

/** The index of the first element whose bytes differ, or -1. */
function firstDifference(a: ArrayBufferView, b: ArrayBufferView): number {
  const size = (a as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT ?? 1;
  const n = a.byteLength;
  if (a.byteOffset % 4 === 0 && b.byteOffset % 4 === 0 && n % 4 === 0) {
    const x = new Int32Array(a.buffer, a.byteOffset, n / 4), y = new Int32Array(b.buffer, b.byteOffset, n / 4);
    for (let k = 0; k < x.length; k++) if (x[k] !== y[k]) return Math.floor((4 * k) / size);
    return -1;
  }
  const x = new Uint8Array(a.buffer, a.byteOffset, n), y = new Uint8Array(b.buffer, b.byteOffset, n);
  for (let k = 0; k < n; k++) if (x[k] !== y[k]) return Math.floor(k / size);
  return -1;
}

function compare(before: unknown, now: unknown, path: string, except: readonly string[]): void {
  // Messages are built only on failure: String() of a large typed array is expensive.
  if (before === null || typeof before !== "object") {
    if (!Object.is(before, now)) assert.fail(`${path} changed: was ${String(before)}, now ${describe(now)}`);
    return;
  }
  if (typeof now !== "object" || now === null) assert.fail(`${path} changed: was an object, now ${String(now)}`);
  if (ArrayBuffer.isView(before)) {
    assert.ok(ArrayBuffer.isView(now), `${path} changed type`);
    const a = before as unknown as ArrayLike<number>, b = now as unknown as ArrayLike<number>;
    assert.equal(b.length, a.length, `${path} changed length`);
    assert.equal(now.constructor, before.constructor, `${path} changed type`);
    // Bit for bit (so -0 stays -0 and NaN stays the same NaN), through 32-bit views: one
    // monomorphic loop whatever the element type, fast enough to run after every call.
    const i = firstDifference(before, now);
    if (i >= 0) assert.fail(`${path}[${i}] was modified: was ${a[i]}, now ${b[i]}`);
    return;
  }
  if (Array.isArray(before)) {
    assert.ok(Array.isArray(now), `${path} changed type`);
    assert.equal((now as unknown[]).length, before.length, `${path} changed length`);
    before.forEach((x, i) => compare(x, (now as unknown[])[i], `${path}[${i}]`, except));
    return;
  }
  for (const k of Object.keys(before)) {
    if (except.includes(k)) continue;
    compare((before as Record<string, unknown>)[k], (now as Record<string, unknown>)[k], `${path}.${k}`, except);
  }
}

/** Asserts that nothing `snapshot` copied has changed since. */
export function assertUnchanged(snap: Snapshot, value: unknown, label = "inputs"): void {
  compare(snap.value, value, label, snap.except);
}

// ------------------------------------------------------------------------------------------------
// Errors

// deno-lint-ignore no-explicit-any
type ErrorClass = new (...args: any[]) => Error;

/**
 * Asserts that `fn` throws (or returns a Promise that rejects with) an instance of
 * `ErrorType` (or of one of several) whose message contains every substring (or matches
 * every RegExp). Always
 * `await` it: it also covers asynchronous backends.
 */
export async function assertThrowsNamed(
  fn: () => unknown,
  ErrorType: ErrorClass | readonly ErrorClass[],
  ...substrings: (string | RegExp)[]
): Promise<Error> {
  const types = Array.isArray(ErrorType) ? ErrorType as readonly ErrorClass[] : [ErrorType as ErrorClass];
  let error: unknown = undefined;
  let threw = false;
  try {
    await fn();
  } catch (e) {
    threw = true;
    error = e;
  }
  const names = types.map((t) => t.name).join(" or ");
  assert.ok(
    threw,
    `expected a ${names} mentioning ${
      substrings.map((s) => typeof s === "string" ? JSON.stringify(s) : String(s)).join(", ")
    }, nothing was thrown`,
  );
  assert.ok(
    types.some((t) => error instanceof t),
    `expected a ${names}, got ${(error as Error)?.constructor?.name}: ${(error as Error)?.message ?? String(error)}`,
  );
  const message = (error as Error).message;
  for (const s of substrings) {
    const found = typeof s === "string" ? message.includes(s) : s.test(message);
    assert.ok(
      found,
      `expected the message to contain ${typeof s === "string" ? JSON.stringify(s) : s}, got: ${message}`,
    );
  }
  return error as Error;
}
