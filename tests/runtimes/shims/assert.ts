/**
 * Stands in for `node:assert/strict` in the browser bundle of the fixture suite: the
 * assertions the shared helpers and tests/tfjs_webgpu_test.ts use (`ok`, `equal`, `deepEqual`,
 * `fail`, `throws`), with
 * strict semantics (`Object.is`; `deepEqual` compares prototypes, array and typed-array
 * elements and own keys). A value it cannot compare (a Map, a Set, a Date) throws rather
 * than passing unchecked.
 *
 * @module
 */

/** The error of a failed assertion. */
export class AssertionError extends Error {
  override name = "AssertionError";
}

function show(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${(v as unknown as ArrayLike<number>).length})`;
  if (Array.isArray(v)) return `[${v.map(show).join(", ")}]`;
  return String(v);
}

function fail(message?: string | Error): never {
  if (message instanceof Error) throw message;
  throw new AssertionError(message ?? "Failed");
}

function ok(value: unknown, message?: string | Error): void {
  if (!value) fail(message ?? `Expected a truthy value, got ${show(value)}`);
}

function equal(actual: unknown, expected: unknown, message?: string | Error): void {
  if (!Object.is(actual, expected)) fail(message ?? `Expected ${show(expected)}, got ${show(actual)}`);
}

/** Where `a` and `e` first differ, or null when they are deeply equal. */
function difference(a: unknown, e: unknown, at: string): string | null {
  if (Object.is(a, e)) return null;
  if (typeof a !== "object" || typeof e !== "object" || a === null || e === null) {
    return `${at}: expected ${show(e)}, got ${show(a)}`;
  }
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(e)) return `${at}: expected ${show(e)}, got ${show(a)}`;
  if (Array.isArray(a) || ArrayBuffer.isView(a)) {
    const x = a as ArrayLike<unknown>, y = e as ArrayLike<unknown>;
    if (x.length !== y.length) return `${at}: expected length ${y.length}, got ${x.length}`;
    for (let i = 0; i < x.length; i++) {
      const d = difference(x[i], y[i], `${at}[${i}]`);
      if (d) return d;
    }
    return null;
  }
  if (Object.getPrototypeOf(a) !== Object.prototype && Object.getPrototypeOf(a) !== null) {
    throw new TypeError(`deepEqual (browser shim) cannot compare ${a.constructor?.name} values at ${at}`);
  }
  const ka = Object.keys(a).sort(), ke = Object.keys(e).sort();
  const keys = difference(ka, ke, `${at} keys`);
  if (keys) return keys;
  for (const k of ka) {
    const d = difference((a as Record<string, unknown>)[k], (e as Record<string, unknown>)[k], `${at}.${k}`);
    if (d) return d;
  }
  return null;
}

function deepEqual(actual: unknown, expected: unknown, message?: string | Error): void {
  const d = difference(actual, expected, "value");
  if (d) fail(message ?? d);
}

/**
 * `fn` must throw: an error that is an instance of `expected` (an error class), matches it
 * (a RegExp, on `String(error)`) or passes it (a validator returning true), as Node's.
 */
function throws(fn: () => unknown, expected?: unknown, message?: string | Error): void {
  try {
    fn();
  } catch (e) {
    if (expected === undefined) return;
    if (expected instanceof RegExp) return ok(expected.test(String(e)), message ?? `${e} does not match ${expected}`);
    const f = expected as (new (...a: unknown[]) => unknown) & ((e: unknown) => unknown);
    if (f.prototype instanceof Error || f === Error) {
      return ok(e instanceof f, message ?? `Expected a ${f.name}, got ${e}`);
    }
    return ok(f(e) === true, message ?? `The validator refused ${e}`);
  }
  fail(message ?? "Expected the function to throw");
}

const assert = { ok, equal, deepEqual, fail, throws, AssertionError };
export default assert;
export { deepEqual, equal, fail, ok, throws };
