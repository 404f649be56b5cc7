// softmax and logSoftmax (docs/LOSSES.md): row-wise, max-subtracted. forward -> { output },
// backward(inputs, options, upstream [N, C]) -> { x } (the vector-Jacobian product),
// valueAndGrad(inputs, options, upstream) -> { output, grads: { x } }.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { assertAllClose, assertFinite, assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { backends, lossOf, missing } from "./helpers/backends.ts";
import { commonOptionErrors, matrixErrors } from "./helpers/errors.ts";
import { type Mat, randomMatrix, Rng } from "./helpers/random.ts";
import { logSoftmaxSpec, type LossSpec, softmaxSpec } from "./helpers/specs.ts";
import { agreementSuite, type ErrorCase, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const small = () => ({ x: randomMatrix(new Rng(8), 3, 4, 1) });

/** A valid upstream for the inputs of an error case (ones of x's shape when that shape is usable). */
function upstreamFor(inputs: Record<string, Any>): Mat {
  const s = inputs.x?.shape;
  const ok = Array.isArray(s) && s.length === 2 && s.every((v: unknown) => Number.isInteger(v) && (v as number) >= 0);
  const [n, c] = ok ? s : [3, 4];
  return { data: new Float32Array(n * c).fill(1), shape: [n, c] };
}

/** The test's own float64 reference: output and vector-Jacobian product. */
function reference(x: Mat, u: Mat, log: boolean): { output: Float64Array; vjp: Float64Array } {
  const [n, c] = x.shape;
  const output = new Float64Array(n * c), vjp = new Float64Array(n * c);
  for (let i = 0; i < n; i++) {
    let m = -Infinity;
    for (let j = 0; j < c; j++) m = Math.max(m, x.data[i * c + j]);
    let s = 0;
    for (let j = 0; j < c; j++) s += Math.exp(x.data[i * c + j] - m);
    const lse = m + Math.log(s);
    let up = 0, sumU = 0;
    for (let j = 0; j < c; j++) {
      const lp = x.data[i * c + j] - lse;
      output[i * c + j] = log ? lp : Math.exp(lp);
      up += u.data[i * c + j] * Math.exp(lp);
      sumU += u.data[i * c + j];
    }
    for (let j = 0; j < c; j++) {
      const p = Math.exp(x.data[i * c + j] - lse);
      // softmax: J^T u = p (u - <u, p>); logSoftmax: J^T u = u - p sum(u)
      vjp[i * c + j] = log ? u.data[i * c + j] - p * sumU : p * (u.data[i * c + j] - up);
    }
  }
  return { output, vjp };
}

function suite(spec: LossSpec, log: boolean): void {
  describe(spec.name, () => {
    existenceTest(spec);
    fixtureSuite(spec);

    fdSuite(spec, () => {
      const rng = new Rng(log ? 17 : 16);
      const problem = (n: number, c: number, scale = 1) => ({
        inputs: { x: randomMatrix(rng, n, c, scale) },
        upstream: randomMatrix(rng, n, c, 1),
      });
      // The outputs come back in float32: sum(U * output) carries ~1e-7 * C of rounding.
      return [
        { name: "N 3, C 4", ...problem(3, 4), atol: 2e-5, h: 2 ** -4 },
        { name: "N 1, C 17", ...problem(1, 17, 2), atol: 2e-5, h: 2 ** -4 },
        { name: "N 2, C 1", ...problem(2, 1), atol: 2e-5, h: 2 ** -4 },
      ];
    });

    agreementSuite(spec);

    describe("identities", () => {
      for (const b of backends) {
        describe(b.name, () => {
          const skip = missing(spec.name, [b]);
          const rng = new Rng(log ? 91 : 90);

          it("output and vector-Jacobian product match the closed form", { skip }, async () => {
            const f = lossOf(b, spec.name)!;
            for (const [n, c, scale] of [[5, 7, 3], [2, 33, 30], [3, 1000, 1], [2, 4099, 1e4]]) {
              const x = randomMatrix(rng, n, c, scale);
              const u = randomMatrix(rng, n, c, 1);
              const e = reference(x, u, log);
              const r = await f.valueAndGrad({ x }, {}, u);
              const label = `N ${n} C ${c} scale ${scale}`;
              assertLossClose(r.output!, e.output, `${label} output`);
              assertGradClose(r.grads.x, e.vjp, `${label} vjp`);
              const fw = await f.forward({ x });
              assert.deepEqual(fw.output!.data, r.output!.data, `${label}: forward = valueAndGrad's output`);
              const g = await f.backward({ x }, {}, u);
              assert.deepEqual(g.x.data, r.grads.x.data, `${label}: backward = valueAndGrad's grads`);
              assert.deepEqual([...fw.output!.shape], [n, c]);
            }
          });

          it("a constant added to a row changes nothing", { skip }, async () => {
            const f = lossOf(b, spec.name)!;
            const x = randomMatrix(rng, 4, 9, 2);
            const shifted = { data: x.data.map((v, k) => v + [-512, 0, 100, 1000][Math.floor(k / 9)]), shape: x.shape };
            const a = await f.forward({ x });
            const s = await f.forward({ x: shifted });
            // ulp(1000) = 6e-5 in float32: the shifted logits carry that rounding.
            if (log) assertAllClose(s.output!.data, a.output!.data, { atol: 2e-4 }, "shifted");
            else assertAllClose(s.output!.data, a.output!.data, { atol: 2e-4, rtol: 2e-4 }, "shifted");
          });

          it(
            "a batch is its rows one by one (bit for bit), rows at levels far apart, short and long",
            { skip },
            async () => {
              // Rows take their maximum in the pass that finishes the row before (up to 16384 floats): a wrong
              // maximum moves every bit while the shift-invariant tests above stay within their tolerances.
              const f = lossOf(b, spec.name)!;
              for (const c of [37, 16385]) {
                const n = 6, x = randomMatrix(rng, n, c, 3);
                for (let i = 0; i < n; i++) {
                  for (let j = 0; j < c; j++) x.data[i * c + j] += [0, 90, -90, 4000, 0.5, -7][i];
                }
                const all = await f.forward({ x });
                for (let i = 0; i < n; i++) {
                  const one = await f.forward({ x: { data: x.data.slice(i * c, (i + 1) * c), shape: [1, c] } });
                  assert.deepEqual(one.output!.data, all.output!.data.slice(i * c, (i + 1) * c), `C ${c} row ${i}`);
                }
              }
            },
          );

          it("C = 1 gives 1 (softmax) or 0 (logSoftmax) and a zero gradient, even at 1e4", { skip }, async () => {
            const f = lossOf(b, spec.name)!;
            const x = { data: new Float32Array([1e4, -1e4, 0.5]), shape: [3, 1] };
            const r = await f.valueAndGrad({ x }, {}, { data: new Float32Array([2, -1, 3]), shape: [3, 1] });
            assertLossClose(r.output!.data, [log ? 0 : 1, log ? 0 : 1, log ? 0 : 1], "output");
            assertGradClose(r.grads.x, [0, 0, 0], "grad");
          });

          it("rows of +-1e4 give finite, exact values", { skip }, async () => {
            const f = lossOf(b, spec.name)!;
            const c = 5;
            const x = {
              data: new Float32Array([1e4, -1e4, 1e4, -1e4, 1e4, -1e4, -1e4, 1e4, -1e4, -1e4, 1e4, 1e4, 1e4, 1e4, 1e4]),
              shape: [3, c],
            };
            const u = randomMatrix(rng, 3, c, 1);
            const r = await f.valueAndGrad({ x }, {}, u);
            assertFinite(r.output!.data, "output", [3, c]);
            assertFinite(r.grads.x.data, "grad", [3, c]);
            const e = reference(x as Mat, u, log);
            assertLossClose(r.output!, e.output, "output");
            assertGradClose(r.grads.x, e.vjp, "vjp");
          });
        });
      }
    });

    const errors: ErrorCase[] = [
      ...matrixErrors(small, "x", true, "x"),
      ...commonOptionErrors(small, "x", false),
      {
        name: "upstream of the wrong shape",
        inputs: small,
        upstream: { data: new Float32Array(15), shape: [3, 5] },
        methods: ["backward", "valueAndGrad"],
        type: RangeError,
        includes: ["upstream", "5"],
      },
      {
        name: "upstream not a matrix",
        inputs: small,
        upstream: "ones",
        methods: ["backward", "valueAndGrad"],
        type: TypeError,
        includes: ["upstream", '"ones"'],
      },
    ];
    // Every other case gets a valid upstream, so only the broken argument can be blamed.
    errorSuite(spec, errors.map((e) => (e.upstream === undefined ? { ...e, upstream: upstreamFor } : e)));
  });
}

suite(softmaxSpec, false);
suite(logSoftmaxSpec, true);

describe("softmax and logSoftmax together", () => {
  for (const b of backends) {
    describe(b.name, () => {
      it(
        "logSoftmax = log(softmax) and softmax rows sum to 1",
        { skip: missing(["softmax", "logSoftmax"], [b]) },
        async () => {
          const sm = lossOf(b, "softmax")!, lsm = lossOf(b, "logSoftmax")!;
          const rng = new Rng(99);
          for (const [n, c, scale] of [[4, 7, 1], [3, 100, 5], [2, 4099, 3]]) {
            const x = randomMatrix(rng, n, c, scale);
            const p = (await sm.forward({ x })).output!.data;
            const lp = (await lsm.forward({ x })).output!.data;
            for (let i = 0; i < n; i++) {
              let s = 0;
              for (let j = 0; j < c; j++) {
                const k = i * c + j;
                s += p[k];
                assert.ok(p[k] >= 0 && p[k] <= 1, `softmax[${i}, ${j}] = ${p[k]}`);
                // log of a float32 probability: ~1e-7 absolute; skip values softmax flushes toward 0.
                if (p[k] > 1e-30) {
                  assert.ok(
                    Math.abs(Math.log(p[k]) - lp[k]) <= 1e-5 * Math.max(1, Math.abs(lp[k])),
                    `[${i}, ${j}]: log ${Math.log(p[k])} vs ${lp[k]}`,
                  );
                }
              }
              assert.ok(Math.abs(s - 1) < 1e-5, `row ${i} sums to ${s}`);
            }
          }
        },
      );
    });
  }
});
