// Determinism: the same call twice gives bit-identical results (the loss, every part,
// the output and every gradient element compared as bit patterns), on the js reference
// and on both WebAssembly builds, for every member of tests/helpers/arbitraries.ts's
// table, on the fresh path (a new result array), the out= path (the caller's buffers,
// filled with different garbage each time) and, on wasm, the alloc path (inputs and
// out buffers in WebAssembly memory). Between the two calls another problem runs on the
// same backend, so the scratch arena holds other values and memory may have grown. The
// three paths must also agree with each other bit for bit: where the result lands is not
// allowed to change what it is.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import fc from "fast-check";
import { alloc, js, wasm, type WasmMatrix } from "../cpu.ts";
import { runtime, useWasmVariant, type WasmVariant, wasmVariant } from "../src/wasm/runtime.ts";
import {
  call,
  type Case,
  garbage,
  type Mat,
  type Method,
  methodsOf,
  type Outcome,
  outcome,
  outKeysFor,
  outShape,
  PROPERTY_LOSSES,
  type PropertyLoss,
} from "./helpers/arbitraries.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const SEED = 20261123;
/** Random cases per member, then one larger one (past the SIMD widths, a 1024-block and the heads' class chunk of 128). */
const CASES = 8;

/** Bun stops a test after 5 s unless told otherwise. */
const TIMEOUT = { timeout: 120_000 };

const original: WasmVariant = wasmVariant();
after(() => useWasmVariant(original));

/** Whether a build compiles here (an engine without relaxed SIMD refuses that one). */
function compiles(v: WasmVariant): boolean {
  try {
    useWasmVariant(v);
    runtime();
    return true;
  } catch {
    return false;
  } finally {
    useWasmVariant(original);
  }
}

const BACKENDS: { name: string; losses: object; variant?: WasmVariant }[] = [
  { name: "js", losses: js },
  ...(["simd", "relaxed"] as const).filter(compiles).map((variant) => ({
    name: `wasm ${variant}`,
    losses: wasm,
    variant,
  })),
];

/** The bit pattern of a number (float64) or of every element of a Float32Array. */
function bits(v: number | Float32Array): string {
  if (typeof v === "number") {
    const b = new BigUint64Array(new Float64Array([v]).buffer);
    return b[0].toString(16);
  }
  return Array.from(new Uint32Array(v.buffer, v.byteOffset, v.length), (u) => u.toString(16)).join(",");
}

/** Everything a result holds, as bit patterns, keyed by what it is. */
function fingerprint(r: Outcome): Record<string, string> {
  const f: Record<string, string> = {};
  if (r.value !== undefined) f.value = bits(r.value);
  for (const [k, v] of Object.entries(r.parts)) f[`parts.${k}`] = bits(v);
  for (const [k, g] of Object.entries(r.grads ?? {})) f[`grads.${k}`] = bits(g.data);
  return f;
}

function assertSameBits(a: Record<string, string>, b: Record<string, string>, label: string): void {
  assert.deepEqual(Object.keys(b).sort(), Object.keys(a).sort(), `${label}: different results`);
  for (const key of Object.keys(a)) {
    if (a[key] !== b[key]) {
      const x = a[key].split(","), y = b[key].split(",");
      const i = x.findIndex((v, j) => v !== y[j]);
      assert.fail(`${label}: ${key} differs in its bits at element ${i} (0x${x[i]} then 0x${y[i]})`);
    }
  }
}

/** Another problem on the same backend: fills the scratch arena with other values (and may grow memory). */
function disturb(losses: Any): void {
  const n = 8, c = 2500;
  const logits = { data: Float32Array.from({ length: n * c }, (_, i) => Math.sin(i) * 30), shape: [n, c] as const };
  losses.crossEntropy.valueAndGrad({ logits, labels: Array.from({ length: n }, (_, i) => i % c) }, {
    labelSmoothing: 0.1,
  });
  const x = { data: Float32Array.from({ length: 8 * 16 }, (_, i) => Math.cos(i)), shape: [8, 16] as const };
  const W = { data: Float32Array.from({ length: 300 * 16 }, (_, i) => Math.sin(i * 7)), shape: [300, 16] as const };
  losses.marginHead.valueAndGrad({ x, W, labels: [0, 1, 2, 3, 4, 5, 6, 7] });
}

/** The options of `method` with out buffers for every key it takes, made by `make` (all of them, so every path writes out). */
function withOut(entry: PropertyLoss, method: Method, k: Case, make: (shape: [number, number]) => Mat): Any {
  const keys = outKeysFor(entry, method);
  const { out: _, ...rest } = (k.options ?? {}) as Record<string, Any>;
  if (keys.length === 0) return k.options === undefined ? undefined : rest;
  return { ...rest, out: Object.fromEntries(keys.map((key) => [key, make(outShape(k.inputs, key))])) };
}

/** The same options without out buffers (the fresh path). */
function withoutOut(k: Case): Any {
  if (k.options === undefined) return undefined;
  const { out: _, ...rest } = k.options;
  return rest;
}

/** A copy of a case whose matrix inputs live in WebAssembly memory (the alloc path), and its cleanup. */
function inWasmMemory(k: Case): { k: Case; free: () => void } {
  const made: WasmMatrix[] = [];
  const inputs: Record<string, Any> = {};
  for (const [key, v] of Object.entries(k.inputs)) {
    if (v && typeof v === "object" && "shape" in v && v.data instanceof Float32Array) {
      const m = alloc(v.shape);
      m.data.set(v.data);
      made.push(m);
      inputs[key] = m;
    } else inputs[key] = v;
  }
  let upstream = k.upstream;
  if (upstream && typeof upstream === "object" && "shape" in upstream) {
    const m = alloc(upstream.shape);
    m.data.set(upstream.data);
    made.push(m);
    upstream = m;
  }
  return { k: { inputs, options: k.options, upstream }, free: () => made.forEach((m) => m.free()) };
}

function cases(entry: PropertyLoss): Case[] {
  const sampled = fc.sample(entry.valid, { seed: SEED, numRuns: CASES });
  const large = entry.batch === "x" && entry.grads.includes("W") ? entry.sized(17, 300, 33) : entry.sized(33, 1031, 0);
  return [...sampled, ...fc.sample(large, { seed: SEED, numRuns: 1 })];
}

describe("determinism: the same call twice gives the same bits", () => {
  for (const entry of PROPERTY_LOSSES) {
    describe(entry.name, () => {
      const all = cases(entry);
      for (const b of BACKENDS) {
        it(`${b.name}: fresh, out= ${b.variant ? "and alloc paths" : "path"} (${CASES + 1} cases)`, TIMEOUT, () => {
          if (b.variant) useWasmVariant(b.variant);
          try {
            const member = (b.losses as Any)[entry.name];
            all.forEach((k, n) => {
              for (const method of methodsOf(entry.kind)) {
                const label = `${b.name} ${entry.name}.${method}, case ${n}`;
                const run = (c: Case, options: Any) =>
                  fingerprint(outcome(entry, method, call(member, entry, method, c, options)));
                const fresh = run(k, withoutOut(k));
                disturb(b.losses);
                assertSameBits(fresh, run(k, withoutOut(k)), `${label}, fresh path`);
                // out= with NaN garbage, then with other garbage: every element is written.
                const first = run(k, withOut(entry, method, k, garbage));
                disturb(b.losses);
                const other = (shape: [number, number]) => ({
                  data: new Float32Array(shape[0] * shape[1]).fill(-7.5),
                  shape,
                });
                assertSameBits(first, run(k, withOut(entry, method, k, other)), `${label}, out= path`);
                assertSameBits(fresh, first, `${label}, out= against fresh`);
                if (!b.variant) continue;
                // alloc: the inputs and the out buffers in WebAssembly memory.
                const w = inWasmMemory(k);
                const outs: WasmMatrix[] = [];
                const inMemory = (shape: [number, number]) => {
                  const m = alloc(shape);
                  m.data.fill(NaN);
                  outs.push(m);
                  return m as unknown as Mat;
                };
                try {
                  const a = run(w.k, withOut(entry, method, w.k, inMemory));
                  disturb(b.losses);
                  assertSameBits(a, run(w.k, withOut(entry, method, w.k, inMemory)), `${label}, alloc path`);
                  assertSameBits(fresh, a, `${label}, alloc against fresh`);
                  assertSameBits(fresh, run(w.k, withoutOut(w.k)), `${label}, alloc inputs, fresh outputs`);
                } finally {
                  w.free();
                  outs.forEach((m) => m.free());
                }
              }
            });
          } finally {
            useWasmVariant(original);
          }
        });
      }
    });
  }
});
