// The heads' GEMM kernel (assembly/gemm.ts, `gemm`) in both builds (plain SIMD: 4-row
// tiles; relaxed SIMD: 6-row tiles, then 4-row tiles, then single rows) at sizes that are
// not multiples of the blocking (rows, columns and depth odd, below and above a tile), in
// the three stride forms the heads call (X W^T, dX += G W, dW = H^T X read by columns):
//  - against a float64 product, within depth float32 roundings of the sum of |terms|;
//  - position independence: every entry is one chain of multiply-adds over k in order, so
//    a block computed alone (other rows, other columns, through offset pointers) equals
//    the same entries of the whole product bit for bit;
//  - nothing outside `out`'s rows x n block is written.
// And the peak probe of the benchmarks (`fma_peak`) against its recurrence.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { runtime, useWasmVariant, type WasmVariant, wasmVariant } from "../src/wasm/runtime.ts";

const original: WasmVariant = wasmVariant();
after(() => useWasmVariant(original));

/** Whether a build compiles on this engine. */
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

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
  };
}

/** One call: out [rows, ldo] (n used), coef read at m sm + k sk, src [depth, lds] (n used). */
interface Call {
  rows: number;
  n: number;
  depth: number;
  sm: number;
  sk: number;
  lds: number;
  ldo: number;
  accumulate: boolean;
}

/** The call's form: "xw" coef [rows, depth] by rows (X W^T, dX += G W), "tn" coef [depth, rows] read by columns (dW). */
function call(form: "xw" | "tn", rows: number, n: number, depth: number, accumulate: boolean): Call {
  const lds = n + 3, ldo = n + 5; // strides wider than the block: writes beyond n would show
  return form === "xw"
    ? { rows, n, depth, sm: depth, sk: 1, lds, ldo, accumulate }
    : { rows, n, depth, sm: 1, sk: rows, lds, ldo, accumulate };
}

/** Runs the call in WebAssembly memory on random operands; returns out (whole [rows, ldo] buffer) and the operands. */
function product(c: Call, seed: number) {
  const rt = runtime(), rand = rng(seed);
  const coef = Float32Array.from({ length: c.rows * c.depth }, rand);
  const src = Float32Array.from({ length: c.depth * c.lds }, rand);
  const init = Float32Array.from({ length: c.rows * c.ldo }, rand);
  const [pc, ps, po] = [coef, src, init].map((a) => {
    const p = rt.malloc(a.length * 4);
    rt.put(p, a);
    return p;
  });
  const run = (rows: number, n: number, m0: number, j0: number) =>
    rt.k.gemm(
      po + (m0 * c.ldo + j0) * 4,
      c.ldo,
      rows,
      n,
      c.depth,
      pc + m0 * c.sm * 4,
      c.sm,
      c.sk,
      ps + j0 * 4,
      c.lds,
      c.accumulate ? 1 : 0,
    );
  const read = () => rt.f32.slice(po >>> 2, (po >>> 2) + c.rows * c.ldo);
  run(c.rows, c.n, 0, 0);
  const whole = read();
  // The lower-right block alone, from row m0 and column j0, on a fresh copy of init.
  const m0 = Math.floor(c.rows / 2), j0 = Math.floor(c.n / 3);
  rt.put(po, init);
  run(c.rows - m0, c.n - j0, m0, j0);
  const block = read();
  [pc, ps, po].forEach((p) => rt.free(p));
  return { whole, block, m0, j0, coef, src, init };
}

const FORMS = ["xw", "tn"] as const;
const ROWS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 17];
const COLS = [1, 3, 7, 8, 9, 15, 17, 33];
const DEPTHS = [1, 5, 16, 37];
const U = 2 ** -24;

for (const variant of ["simd", "relaxed"] as const) {
  describe(
    `gemm, ${variant} build`,
    { skip: compiles(variant) ? false : `the ${variant} build does not compile here` },
    () => {
      it("matches a float64 product at sizes off the blocking; blocks equal the whole bit for bit; nothing else written", () => {
        useWasmVariant(variant);
        try {
          let seed = 1, checked = 0;
          for (const form of FORMS) {
            for (const rows of ROWS) {
              for (const n of COLS) {
                for (const depth of DEPTHS) {
                  const c = call(form, rows, n, depth, (rows + n + depth) % 2 === 0);
                  const { whole, block, m0, j0, coef, src, init } = product(c, seed++);
                  const what = `${form} rows ${rows} n ${n} depth ${depth} accumulate ${c.accumulate}`;
                  for (let m = 0; m < rows; m++) {
                    for (let j = 0; j < c.ldo; j++) {
                      const at = m * c.ldo + j;
                      if (j >= n) {
                        assert.equal(whole[at], init[at], `${what}: (${m}, ${j}) outside the block was written`);
                        continue;
                      }
                      let s = c.accumulate ? init[at] : 0, mag = Math.abs(s);
                      for (let k = 0; k < depth; k++) {
                        const t = coef[m * c.sm + k * c.sk] * src[k * c.lds + j];
                        s += t;
                        mag += Math.abs(t);
                      }
                      const tol = 2 * (depth + 1) * U * mag + 1e-30;
                      assert.ok(Math.abs(whole[at] - s) <= tol, `${what}: (${m}, ${j}) = ${whole[at]}, float64 ${s}`);
                      const inBlock = m >= m0 && j >= j0;
                      assert.ok(
                        Object.is(block[at], inBlock ? whole[at] : init[at]),
                        `${what}: (${m}, ${j}) of the block from (${m0}, ${j0}) is ${block[at]}, expected ${
                          inBlock ? whole[at] : init[at]
                        }`,
                      );
                      checked++;
                    }
                  }
                }
              }
            }
          }
          assert.ok(checked > 10000);
        } finally {
          useWasmVariant(original);
        }
      });

      it("fma_peak follows its recurrence (12 chains a <- a m + x from a = (i + 1) x)", () => {
        useWasmVariant(variant);
        try {
          const x = 1e-3, m = 0.999, iters = 1000;
          let want = 0;
          for (let i = 0; i < 12; i++) {
            let a = Math.fround((i + 1) * x);
            for (let t = 0; t < iters; t++) a = a * m + x;
            want += 2 * a; // lanes 0 and 3 of the sum of the chains
          }
          const got = runtime().k.fma_peak(iters, x, m);
          assert.ok(Math.abs(got - want) <= 1e-4 * Math.abs(want), `fma_peak ${got}, float64 ${want}`);
        } finally {
          useWasmVariant(original);
        }
      });
    },
  );
}
