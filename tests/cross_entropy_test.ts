// crossEntropy (docs/LOSSES.md): torch.nn.functional.cross_entropy with class weights,
// ignoreIndex, label smoothing, softcap and z-loss (SPEC §9) and the three reductions, on every backend.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { alloc } from "../cpu.ts";
import {
  assertAllClose,
  assertFinite,
  assertGradClose,
  assertLossClose,
  assertUnchanged,
  snapshot,
} from "./helpers/assert.ts";
import { backends, lossOf, missing, reference } from "./helpers/backends.ts";
import { gradCheck } from "./helpers/numeric.ts";
import { randomLabels, randomMatrix, randomVector, Rng } from "./helpers/random.ts";
import { crossEntropySpec as spec } from "./helpers/specs.ts";
import { agreementSuite, type ErrorCase, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";
import { numberOptionErrors } from "./helpers/errors.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const mat = (rows: number, cols: number, values: number[]) => ({
  data: new Float32Array(values),
  shape: [rows, cols] as [number, number],
});

/** A fresh 3 x 4 problem for the error cases. */
const small = () => ({ logits: randomMatrix(new Rng(7), 3, 4, 1), labels: [0, 3, 1] });

describe("crossEntropy", () => {
  existenceTest(spec);
  fixtureSuite(spec);

  fdSuite(spec, () => {
    const rng = new Rng(11);
    const problem = (n: number, c: number, ignore = 0, ignoreIndex = -100) => ({
      logits: randomMatrix(rng, n, c, 1.5),
      labels: randomLabels(rng, n, c, ignore, ignoreIndex),
    });
    return [
      { name: "mean, N 4, C 5", inputs: problem(4, 5) },
      {
        name: "weight, labelSmoothing 0.1, ignored rows, mean",
        inputs: { logits: randomMatrix(rng, 5, 4, 1.5), labels: [0, -100, 3, 2, -100] },
        options: { weight: [0.5, 2, 1.25, 0.75], labelSmoothing: 0.1 },
      },
      {
        name: "sum, labelSmoothing 0.3, ignoreIndex 1, upstream -0.75",
        inputs: { logits: randomMatrix(rng, 4, 3, 1), labels: [1, 0, 2, 1] },
        options: { reduction: "sum", labelSmoothing: 0.3, ignoreIndex: 1 },
        upstream: -0.75,
      },
      {
        // Per-row losses come back in float32, so the differences carry ~1e-7/h of noise.
        name: "none, weight with a zero, upstream vector",
        inputs: problem(3, 4),
        options: { reduction: "none", weight: [1, 0, 2, 0.5], labelSmoothing: 0.2 },
        upstream: new Float32Array([0.5, -1.5, 2]),
        atol: 2e-5,
        h: 2 ** -4,
      },
      { name: "C = 1 (constant loss, zero gradient)", inputs: problem(3, 1) },
      { name: "N = 1, C = 17 (a SIMD tail)", inputs: problem(1, 17), options: { labelSmoothing: 0.05 } },
      // SPEC §9: the cap and the z-loss, alone and with every other option.
      { name: "softcap 1 (most logits beyond the cap)", inputs: problem(4, 5), options: { softcap: 1 } },
      { name: "zLoss 0.1, mean over the non-ignored rows", inputs: problem(5, 6, 2), options: { zLoss: 0.1 } },
      {
        name: "softcap 2, zLoss 0.05, weight, labelSmoothing 0.2, ignored rows, mean",
        inputs: { logits: randomMatrix(rng, 5, 4, 3), labels: [0, -100, 3, 2, 1] },
        options: { softcap: 2, zLoss: 0.05, weight: [0.5, 2, 1.25, 0.75], labelSmoothing: 0.2 },
      },
      {
        name: "softcap 3, zLoss 0.2, sum, ignoreIndex 1, upstream -0.75",
        inputs: { logits: randomMatrix(rng, 4, 3, 4), labels: [1, 0, 2, 1] },
        options: { reduction: "sum", softcap: 3, zLoss: 0.2, ignoreIndex: 1 },
        upstream: -0.75,
      },
      {
        name: "softcap 1.5, zLoss 0.1, none, upstream vector",
        inputs: problem(3, 4),
        options: { reduction: "none", softcap: 1.5, zLoss: 0.1, weight: [1, 0, 2, 0.5] },
        upstream: new Float32Array([0.5, -1.5, 2]),
        atol: 2e-5,
        h: 2 ** -4,
      },
      {
        name: "zLoss 0.01 with a weighted mean of total weight 0 (only the z-loss has a gradient)",
        inputs: { logits: randomMatrix(rng, 3, 4, 2), labels: [0, 1, 1] },
        options: { zLoss: 0.01, weight: [0, 0, 1, 1] },
      },
    ];
  });

  it("finite-difference check fails on a wrong gradient (the check is able to fail)", async () => {
    const loss = lossOf(reference, "crossEntropy")!;
    const inputs = { logits: randomMatrix(new Rng(3), 2, 3, 1), labels: [1, 2] };
    const { worst } = await gradCheck({ loss, inputs, wrt: ["logits"] });
    assert.ok(worst < 0.5, `the correct gradient is comfortably inside the tolerance (worst ratio ${worst})`);
    // One element off by 1e-4 (a relative error of ~1e-3 of the largest element) must be caught.
    await assert.rejects(
      gradCheck({ loss, inputs, wrt: ["logits"], corrupt: (_, g) => (g[4] += 1e-4) }),
      /finite differences/,
    );
    // A gradient missing the 1/N of "mean" must be caught.
    await assert.rejects(
      gradCheck({ loss, inputs, wrt: ["logits"], corrupt: (_, g) => g.forEach((v, i) => (g[i] = 2 * v)) }),
    );
  });

  agreementSuite(spec);

  describe("identities", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing("crossEntropy", [b]);
        const rng = new Rng(21);
        const inputs = { logits: randomMatrix(rng, 6, 7, 2), labels: randomLabels(rng, 6, 7, 0.3) };

        // WebAssembly takes a row's maximum in the pass that finishes the row before it (rowAffineMax):
        // a batch whose rows sit at levels far apart (a neighbour's maximum would overflow e^(x - m) or
        // change its rounding) gives each row's values exactly as that row alone.
        it("a batch is its rows one by one (bit for bit), rows at levels far apart, focal too", { skip }, async () => {
          const r = new Rng(5), n = 9, c = 37, m = randomMatrix(r, n, c, 3), labels = randomLabels(r, n, c, 0.2);
          for (let i = 0; i < n; i++) for (let j = 0; j < c; j++) m.data[i * c + j] += [0, 90, -90, 4000, 0.5][i % 5];
          for (
            const [name, options] of [["crossEntropy", { reduction: "none" }], ["focal", {
              reduction: "none",
              gamma: 2,
            }]]
          ) {
            const f = lossOf(b, name as string)!, all: Any = await f.valueAndGrad({ logits: m, labels }, options);
            for (let i = 0; i < n; i++) {
              const row = { data: m.data.slice(i * c, (i + 1) * c), shape: [1, c] as [number, number] };
              const one: Any = await f.valueAndGrad({ logits: row, labels: [labels[i]] }, options);
              assert.ok(Object.is(one.loss[0], all.loss[i]), `${name} row ${i}: ${one.loss[0]} != ${all.loss[i]}`);
              assert.deepEqual(
                one.grads.logits.data,
                all.grads.logits.data.slice(i * c, (i + 1) * c),
                `${name} row ${i}`,
              );
            }
          }
        });

        it("labelSmoothing 0 is the same as no option (bit for bit)", { skip }, async () => {
          const ce = lossOf(b, "crossEntropy")!;
          for (const reduction of ["mean", "sum", "none"]) {
            const a = await ce.valueAndGrad(inputs, { reduction });
            const z = await ce.valueAndGrad(inputs, { reduction, labelSmoothing: 0 });
            assert.deepEqual(z.loss, a.loss, reduction);
            assert.deepEqual(z.grads.logits.data, a.grads.logits.data, reduction);
          }
        });

        it("all-ones weight is the same as no weight", { skip }, async () => {
          const ce = lossOf(b, "crossEntropy")!;
          for (const reduction of ["mean", "sum", "none"]) {
            const a = await ce.valueAndGrad(inputs, { reduction, labelSmoothing: 0.1 });
            const w = await ce.valueAndGrad(inputs, { reduction, labelSmoothing: 0.1, weight: new Array(7).fill(1) });
            assertLossClose(w.loss as Any, a.loss as Any, `${reduction} loss`, 1e-6);
            assertGradClose(w.grads.logits, a.grads.logits.data, `${reduction} grad`, 1e-6);
          }
        });

        it("mean is sum divided by the summed weight of the non-ignored rows", { skip }, async () => {
          const ce = lossOf(b, "crossEntropy")!;
          const weight = [0.5, 1, 1.5, 2, 0.25, 3, 1];
          let total = 0;
          for (const y of inputs.labels) if (y >= 0) total += weight[y];
          const mean = await ce.valueAndGrad(inputs, { weight, labelSmoothing: 0.1 });
          const sum = await ce.valueAndGrad(inputs, { weight, labelSmoothing: 0.1, reduction: "sum" });
          assertLossClose(mean.loss as number, (sum.loss as number) / total, "loss", 1e-6);
          assertGradClose(mean.grads.logits, sum.grads.logits.data.map((v: number) => v / total), "grad", 1e-6);
        });

        it("softcap 1e9 and zLoss 0 are today's crossEntropy (part z 0)", { skip }, async () => {
          const ce = lossOf(b, "crossEntropy")!;
          for (const reduction of ["mean", "sum", "none"]) {
            const o = { reduction, labelSmoothing: 0.1, weight: randomVector(new Rng(4), 7, 0.5, 2) };
            const a = await ce.valueAndGrad(inputs, o);
            const z0 = await ce.valueAndGrad(inputs, { ...o, zLoss: 0 });
            assert.deepEqual(z0.loss, a.loss, `${reduction}: zLoss 0 bit for bit`);
            assert.deepEqual(z0.grads.logits.data, a.grads.logits.data, `${reduction}: zLoss 0 grad`);
            if (reduction === "none") assert.ok(a.z.every((v: number) => v === 0), "part z 0 per row");
            else assert.equal(a.z, 0, "part z 0");
            const big = await ce.valueAndGrad(inputs, { ...o, softcap: 1e9 });
            assertLossClose(big.loss as Any, a.loss as Any, `${reduction}: softcap 1e9 loss`, 1e-6);
            assertGradClose(big.grads.logits, a.grads.logits.data, `${reduction}: softcap 1e9 grad`, 1e-6);
          }
        });

        it(
          "zLoss alone adds exactly zLoss lse^2 (mean over the non-ignored rows, weight or not)",
          { skip },
          async () => {
            const ce = lossOf(b, "crossEntropy")!;
            const k = 0.03, c = 7, weight = randomVector(new Rng(5), c, 0.5, 2);
            // lse and softmax of each row in float64, independently of the library.
            const lse: number[] = [], p: number[][] = [];
            for (let i = 0; i < 6; i++) {
              const row = [...inputs.logits.data.subarray(i * c, (i + 1) * c)];
              const m = Math.max(...row), s = row.reduce((t, x) => t + Math.exp(x - m), 0);
              lse.push(m + Math.log(s));
              p.push(row.map((x) => Math.exp(x - m) / s));
            }
            const kept = [...inputs.labels.keys()].filter((i) => inputs.labels[i] >= 0);
            for (const reduction of ["mean", "sum"]) {
              const o = { reduction, weight, labelSmoothing: 0.1 };
              const a = await ce.valueAndGrad(inputs, o);
              const z = await ce.valueAndGrad(inputs, { ...o, zLoss: k });
              const div = reduction === "mean" ? kept.length : 1;
              const term = kept.reduce((t, i) => t + k * lse[i] ** 2, 0) / div;
              assertLossClose(z.z, term, `${reduction} part z`);
              assertLossClose(z.loss as number, (a.loss as number) + term, `${reduction} loss`);
              const want = a.grads.logits.data.map((g: number, q: number) => {
                const i = Math.floor(q / c);
                return g + (inputs.labels[i] >= 0 ? (2 * k * lse[i] * p[i][q % c]) / div : 0);
              });
              assertGradClose(z.grads.logits, want, `${reduction} grad`);
            }
            const none: Any = await ce.forward(inputs, { reduction: "none", zLoss: k });
            const plain = (await ce.forward(inputs, { reduction: "none" })).loss as Float32Array;
            inputs.labels.forEach((y: number, i: number) => {
              const term = y >= 0 ? k * lse[i] ** 2 : 0;
              assertLossClose(none.z[i], term, `none: row ${i} z`);
              assertLossClose(none.loss[i], plain[i] + term, `none: row ${i} loss`);
            });
          },
        );

        it("labels as a plain array give the same result as an Int32Array", { skip }, async () => {
          const ce = lossOf(b, "crossEntropy")!;
          const a = await ce.valueAndGrad(inputs);
          const p = await ce.valueAndGrad({ logits: inputs.logits, labels: [...inputs.labels] });
          assert.deepEqual(p.loss, a.loss);
          assert.deepEqual(p.grads.logits.data, a.grads.logits.data);
        });

        it("backward() = backward(1) = valueAndGrad().grads, and backward(u) = u * backward()", { skip }, async () => {
          const ce = lossOf(b, "crossEntropy")!;
          const o = { labelSmoothing: 0.1 };
          const g = await ce.backward(inputs, o);
          const g1 = await ce.backward(inputs, o, 1);
          const vg = await ce.valueAndGrad(inputs, o);
          assert.deepEqual(g1.logits.data, g.logits.data);
          assert.deepEqual(vg.grads.logits.data, g.logits.data);
          const g25 = await ce.backward(inputs, o, 2.5);
          assertGradClose(g25.logits, g.logits.data.map((v: number) => 2.5 * v), "upstream 2.5", 1e-6);
          const g0 = await ce.backward(inputs, o, 0);
          assertGradClose(g0.logits, new Float64Array(g0.logits.data.length), "upstream 0");
        });

        it("a constant added to a row changes nothing (max-subtracted softmax)", { skip }, async () => {
          const ce = lossOf(b, "crossEntropy")!;
          const shifted = {
            logits: { data: inputs.logits.data.slice(), shape: inputs.logits.shape },
            labels: inputs.labels,
          };
          for (let i = 0; i < 6; i++) {
            for (let j = 0; j < 7; j++) shifted.logits.data[i * 7 + j] += [-1000, 0, 64, 100, -3, 512][i];
          }
          const a = await ce.valueAndGrad(inputs, { labelSmoothing: 0.2, reduction: "none" });
          const s = await ce.valueAndGrad(shifted, { labelSmoothing: 0.2, reduction: "none" });
          // The shifted logits are rounded to float32 (ulp(1000) = 6e-5), hence the looser bound.
          assertLossClose(s.loss as Any, a.loss as Any, "loss", 2e-4);
          assertGradClose(s.grads.logits, a.grads.logits.data, "grad", 2e-4);
        });
      });
    }
  });

  describe("edge cases", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing("crossEntropy", [b]);

        it("reduction none with an upstream vector scales each row's gradient", { skip }, async () => {
          const ce = lossOf(b, "crossEntropy")!;
          const rng = new Rng(5);
          const n = 9, c = 6;
          const inputs = { logits: randomMatrix(rng, n, c, 3), labels: randomLabels(rng, n, c, 0.25) };
          const o = { reduction: "none", weight: randomVector(rng, c, 0.2, 2), labelSmoothing: 0.1 };
          const up = randomVector(rng, n, -2, 2);
          const f = await ce.forward(inputs, o);
          assert.ok(f.loss instanceof Float32Array && f.loss.length === n, "one loss per row");
          const gu = await ce.backward(inputs, o, up);
          const g1 = await ce.backward(inputs, { ...o, reduction: "sum" });
          const expected = new Float64Array(n * c);
          for (let i = 0; i < n; i++) {
            for (let j = 0; j < c; j++) expected[i * c + j] = up[i] * g1.logits.data[i * c + j];
          }
          assertGradClose(gu.logits, expected, "none + upstream vs rows of sum");
          // An upstream given as a plain array is the same.
          const ga = await ce.backward(inputs, o, [...up]);
          assert.deepEqual(ga.logits.data, gu.logits.data);
          // Ignored rows: loss 0, gradient 0.
          for (let i = 0; i < n; i++) {
            if (inputs.labels[i] !== -100) continue;
            assert.equal((f.loss as Float32Array)[i], 0, `row ${i} loss`);
            for (let j = 0; j < c; j++) assert.equal(Math.abs(gu.logits.data[i * c + j]), 0, `row ${i} grad`);
          }
        });

        it("an all-ignored batch has loss 0 and zero gradients, whatever the options", { skip }, async () => {
          const ce = lossOf(b, "crossEntropy")!;
          const inputs = { logits: randomMatrix(new Rng(9), 4, 5, 30), labels: [-100, -100, -100, -100] };
          for (
            const o of [{}, { weight: [1, 2, 3, 4, 5], labelSmoothing: 0.5 }, { reduction: "sum" }, {
              reduction: "none",
            }]
          ) {
            const r = await ce.valueAndGrad(inputs, o);
            if (typeof r.loss === "number") assert.equal(r.loss, 0, JSON.stringify(o));
            else assert.deepEqual([...r.loss as Float32Array], [0, 0, 0, 0]);
            assert.ok(r.grads.logits.data.every((v: number) => v === 0), `zero gradient for ${JSON.stringify(o)}`);
          }
          // A weighted mean whose total weight is 0 is 0 too, and so is its gradient.
          const zero = await ce.valueAndGrad({ logits: inputs.logits, labels: [0, 1, -100, 1] }, {
            weight: [0, 0, 1, 1, 1],
          });
          assert.equal(zero.loss, 0);
          assert.ok(zero.grads.logits.data.every((v: number) => v === 0));
        });

        it("C = 1: loss 0 and gradient 0, with or without smoothing, even at 1e4", { skip }, async () => {
          const ce = lossOf(b, "crossEntropy")!;
          const inputs = { logits: mat(3, 1, [1e4, -1e4, 0.5]), labels: [0, 0, 0] };
          for (const o of [{}, { labelSmoothing: 0.1 }, { labelSmoothing: 1, reduction: "sum" }]) {
            const r = await ce.valueAndGrad(inputs, o);
            assertLossClose(r.loss as number, 0, `loss ${JSON.stringify(o)}`);
            assertGradClose(r.grads.logits, [0, 0, 0], `grad ${JSON.stringify(o)}`);
          }
        });

        it("rows of +-1e4 give finite values that match the reference", { skip }, async () => {
          const ce = lossOf(b, "crossEntropy")!;
          const ref = lossOf(reference, "crossEntropy")!;
          const c = 37;
          const rows = [
            Array.from({ length: c }, (_, j) => (j % 2 ? -1e4 : 1e4)), // tied maxima
            Array.from({ length: c }, (_, j) => (j === 20 ? 1e4 : -1e4)), // a single maximum
            Array.from({ length: c }, () => 1e4), // all equal
            Array.from({ length: c }, () => -1e4),
            Array.from({ length: c }, (_, j) => (j === 0 ? -1e4 : 1e4)),
          ];
          const inputs = { logits: mat(5, c, rows.flat()), labels: [1, 20, 3, 36, 0] };
          for (
            const o of [{}, { labelSmoothing: 0.1, weight: randomVector(new Rng(1), c, 0.1, 2) }, { reduction: "none" }]
          ) {
            const r = await ce.valueAndGrad(inputs, o);
            const e = await ref.valueAndGrad(inputs, o);
            assertFinite(r.loss as Any, "loss");
            assertFinite(r.grads.logits.data, "grad", [5, c]);
            assertLossClose(r.loss as Any, e.loss as Any, `loss ${JSON.stringify(Object.keys(o))}`);
            assertGradClose(r.grads.logits, e.grads.logits.data, `grad ${JSON.stringify(Object.keys(o))}`);
          }
          // Row 1, label at the single maximum: loss exactly 0 at float32 resolution, row 4 (label at
          // the single minimum): loss 2e4.
          const none = (await ce.forward(inputs, { reduction: "none" })).loss as Float32Array;
          assert.ok(Math.abs(none[1]) < 1e-6, `row 1 loss ${none[1]}`);
          assertLossClose(none[4], 2e4 + Math.log(c - 1), "row 4 loss");
        });

        it(
          "softcap and zLoss on logits of 1e4: finite, and within SPEC's bound of the reference",
          { skip },
          async () => {
            const ce = lossOf(b, "crossEntropy")!;
            const ref = lossOf(reference, "crossEntropy")!;
            const c = 37;
            const rows = [
              Array.from({ length: c }, (_, j) => (j === 20 ? 1e4 : 1e4 - 3 * j)), // the label near the maximum
              Array.from({ length: c }, (_, j) => (j % 2 ? -1e4 : 1e4)),
              Array.from({ length: c }, (_, j) => 9000 + j), // a cap far above: the capped values differ by less than 1
              Array.from({ length: c }, () => -1e4),
            ];
            const inputs = { logits: mat(4, c, rows.flat()), labels: [20, 1, 36, 5] };
            for (
              const o of [
                { softcap: 30, zLoss: 1e-4 },
                { softcap: 1e5, zLoss: 1e-3, labelSmoothing: 0.1 },
                { softcap: 2e4, reduction: "none" },
                { softcap: 1e9, zLoss: 1e-6, reduction: "sum" },
              ]
            ) {
              const r = await ce.valueAndGrad(inputs, o);
              const e = await ref.valueAndGrad(inputs, o);
              assertFinite(r.loss as Any, "loss");
              assertFinite(r.grads.logits.data, "grad", [4, c]);
              // The GPU path rounds each capped logit to float32 (an error of min(c, |x|) 2^-24, not
              // relative to the logits' differences as on wasm): SPEC's bound there needs a cap of
              // at most ~1000 (docs/LOSSES.md); Gemma-2's 30 is checked.
              if (b.name === "webgpu" && o.softcap > 1000) continue;
              const label = JSON.stringify(o);
              assertLossClose(r.loss as Any, e.loss as Any, `loss ${label}`);
              assertLossClose(r.z as Any, e.z as Any, `z ${label}`);
              assertGradClose(r.grads.logits, e.grads.logits.data, `grad ${label}`);
            }
          },
        );

        it(
          "NaN in the logits propagates (no checkFinite), and checkFinite names the first bad index",
          { skip },
          async () => {
            const ce = lossOf(b, "crossEntropy")!;
            const inputs = { logits: mat(2, 3, [0, 1, 2, 3, 4, NaN]), labels: [0, 1] };
            const r = await ce.forward(inputs);
            assert.ok(Number.isNaN(r.loss), `loss ${r.loss}`);
            const none = (await ce.forward(inputs, { reduction: "none" })).loss as Float32Array;
            assert.ok(Number.isFinite(none[0]) && Number.isNaN(none[1]), `rows ${none}`);
            // checkFinite: false is the default behaviour.
            assert.ok(Number.isNaN((await ce.forward(inputs, { checkFinite: false })).loss));
          },
        );
      });
    }
  });

  describe("options.out", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing("crossEntropy", [b]);
        const rng = new Rng(77);
        const n = 7, c = 19;
        const logits = randomMatrix(rng, n, c, 4);
        const labels = randomLabels(rng, n, c, 0.3);
        labels[0] = -100;
        const options = { labelSmoothing: 0.1, weight: randomVector(rng, c, 0.5, 1.5) };

        it("an ordinary matrix: written in place, returned as is, equal to the normal path", { skip }, async () => {
          const ce = lossOf(b, "crossEntropy")!;
          const normal = await ce.valueAndGrad({ logits, labels }, options);
          const out = { data: new Float32Array(n * c).fill(NaN), shape: [n, c] as [number, number] };
          const r = await ce.valueAndGrad({ logits, labels }, { ...options, out: { logits: out } });
          assert.equal(r.grads.logits, out, "the same object");
          assert.equal(r.loss, normal.loss);
          assert.deepEqual(out.data, normal.grads.logits.data, "every element written (ignored rows zeroed)");
          out.data.fill(NaN);
          const g = await ce.backward({ logits, labels }, { ...options, out: { logits: out } }, 2);
          assert.equal(g.logits, out);
          assertGradClose(out, normal.grads.logits.data.map((v: number) => 2 * v), "backward(2) into out", 1e-6);
        });

        it("alloc matrices: zero-copy input and output give the normal path's result", { skip }, async () => {
          const ce = lossOf(b, "crossEntropy")!;
          const normal = await ce.valueAndGrad({ logits, labels }, options);
          const x = alloc([n, c]);
          const out = alloc([n, c]);
          try {
            x.data.set(logits.data);
            out.data.fill(NaN);
            const before = snapshot({ x, labels, options });
            const r = await ce.valueAndGrad({ logits: x, labels }, { ...options, out: { logits: out } });
            assertUnchanged(before, { x, labels, options });
            assert.equal(r.grads.logits, out, "the same object");
            assert.equal(r.loss, normal.loss);
            assert.deepEqual(out.data, normal.grads.logits.data);
            // alloc input, ordinary output; ordinary input, alloc output; alloc input, no output.
            const plain = { data: new Float32Array(n * c), shape: [n, c] as [number, number] };
            const r2 = await ce.valueAndGrad({ logits: x, labels }, { ...options, out: { logits: plain } });
            assert.equal(r2.grads.logits, plain);
            assert.deepEqual(plain.data, normal.grads.logits.data);
            out.data.fill(NaN);
            await ce.valueAndGrad({ logits, labels }, { ...options, out: { logits: out } });
            assert.deepEqual(out.data, normal.grads.logits.data);
            const r3 = await ce.valueAndGrad({ logits: x, labels }, options);
            assert.deepEqual(r3.grads.logits.data, normal.grads.logits.data);
            assert.equal((await ce.forward({ logits: x, labels }, options)).loss, normal.loss);
            assertUnchanged(before, { x, labels, options });
          } finally {
            x.free();
            out.free();
          }
        });

        it("alloc matrices stay valid when WebAssembly memory grows between calls", { skip }, async () => {
          const ce = lossOf(b, "crossEntropy")!;
          const normal = await ce.valueAndGrad({ logits, labels }, options);
          const x = alloc([n, c]);
          const out = alloc([n, c]);
          x.data.set(logits.data);
          // 48 MiB more than anything before: memory must grow, detaching earlier views.
          const big = alloc([3 * 1024, 4096]);
          try {
            const r = await ce.valueAndGrad({ logits: x, labels }, { ...options, out: { logits: out } });
            assert.equal(r.loss, normal.loss);
            assert.deepEqual(out.data, normal.grads.logits.data);
            assert.deepEqual(x.data, logits.data, "input unchanged after growth");
            // alloc gives zero-filled memory: a slice of the big one is a uniform problem.
            const rows = { data: big.data.subarray(0, 4 * 4096), shape: [4, 4096] as [number, number] };
            const rb = await ce.forward({ logits: rows, labels: [0, 4095, 7, 100] });
            assertLossClose(rb.loss as number, Math.log(4096), "uniform rows");
          } finally {
            big.free();
            x.free();
            out.free();
          }
        });
      });
    }
  });

  const errors: ErrorCase[] = [
    ...[0, -1, NaN, Infinity].map((bad): ErrorCase => ({
      name: `softcap ${bad}`,
      inputs: small,
      options: { softcap: bad },
      type: RangeError,
      includes: ["options.softcap", String(bad), "(0, 1000000000]"],
    })),
    ...numberOptionErrors(small, "softcap", ["30", null]),
    ...[-1e-4, NaN, -Infinity].map((bad): ErrorCase => ({
      name: `zLoss ${bad}`,
      inputs: small,
      options: { zLoss: bad },
      type: RangeError,
      includes: ["options.zLoss", String(bad), "[0, 1000000]"],
    })),
    ...numberOptionErrors(small, "zLoss", ["0.1"]),
    {
      name: "inputs.logits missing",
      inputs: () => ({ labels: [0] }),
      type: TypeError,
      includes: ["logits", "undefined"],
    },
    {
      name: "logits.data not a Float32Array",
      inputs: () => ({ logits: { data: new Float64Array(6), shape: [2, 3] }, labels: [0, 1] }),
      type: TypeError,
      includes: ["logits.data", "Float64Array"],
    },
    {
      name: "logits.data length does not match the shape",
      inputs: () => ({ logits: { data: new Float32Array(5), shape: [2, 3] }, labels: [0, 1] }),
      type: RangeError,
      includes: ["logits.data", "5"],
    },
    {
      name: "negative size",
      inputs: () => ({ logits: { data: new Float32Array(3), shape: [-1, 3] }, labels: [0] }),
      type: RangeError,
      includes: ["logits.shape[0]", "-1"],
    },
    {
      name: "non-integer size",
      inputs: () => ({ logits: { data: new Float32Array(3), shape: [2, 1.5] }, labels: [0, 0] }),
      type: RangeError,
      includes: ["logits.shape[1]", "1.5"],
    },
    {
      name: "N = 0 (empty batch)",
      inputs: () => ({ logits: { data: new Float32Array(0), shape: [0, 3] }, labels: [] }),
      type: RangeError,
      includes: ["logits", "0"],
    },
    {
      name: "C = 0",
      inputs: () => ({ logits: { data: new Float32Array(0), shape: [2, 0] }, labels: [0, 0] }),
      type: RangeError,
      includes: ["logits", "0"],
    },
    {
      name: "labels length does not match N",
      inputs: () => ({ ...small(), labels: [0, 1] }),
      type: RangeError,
      includes: ["labels", "3", "2"],
    },
    {
      name: "label >= C",
      inputs: () => ({ ...small(), labels: [0, 1, 4] }),
      type: RangeError,
      includes: ["labels[2]", "4"],
    },
    {
      name: "negative label that is not ignoreIndex",
      inputs: () => ({ ...small(), labels: [0, -1, 2] }),
      type: RangeError,
      includes: ["labels[1]", "-1"],
    },
    {
      name: "label equal to the default ignoreIndex with another ignoreIndex set",
      inputs: () => ({ ...small(), labels: [-100, 1, 2] }),
      options: { ignoreIndex: -1 },
      type: RangeError,
      includes: ["labels[0]", "-100"],
    },
    {
      name: "non-integer label",
      inputs: () => ({ ...small(), labels: [1.5, 1, 2] }),
      type: RangeError,
      includes: ["labels[0]", "1.5"],
    },
    {
      name: "NaN label",
      inputs: () => ({ ...small(), labels: [0, NaN, 2] }),
      type: RangeError,
      includes: ["labels[1]", "NaN"],
    },
    {
      name: "labels of the wrong type",
      inputs: () => ({ ...small(), labels: new Float32Array([0, 1, 2]) }),
      type: TypeError,
      includes: ["labels", "Float32Array"],
    },
    { name: "options not an object", inputs: small, options: 42, type: TypeError, includes: ["options", "42"] },
    {
      name: "ignoreIndex not an integer",
      inputs: small,
      options: { ignoreIndex: "x" },
      type: TypeError,
      includes: ["options.ignoreIndex", '"x"'],
    },
    {
      name: "labelSmoothing above 1",
      inputs: small,
      options: { labelSmoothing: 1.5 },
      type: RangeError,
      includes: ["options.labelSmoothing", "1.5"],
    },
    {
      name: "labelSmoothing below 0",
      inputs: small,
      options: { labelSmoothing: -0.1 },
      type: RangeError,
      includes: ["options.labelSmoothing", "-0.1"],
    },
    {
      name: "labelSmoothing NaN",
      inputs: small,
      options: { labelSmoothing: NaN },
      type: RangeError,
      includes: ["options.labelSmoothing", "NaN"],
    },
    {
      name: "labelSmoothing a string",
      inputs: small,
      options: { labelSmoothing: "0.1" },
      type: TypeError,
      includes: ["options.labelSmoothing", '"0.1"'],
    },
    {
      name: "weight of the wrong length",
      inputs: small,
      options: { weight: [1, 2] },
      type: RangeError,
      includes: ["options.weight", "2"],
    },
    {
      name: "negative weight",
      inputs: small,
      options: { weight: [1, -1, 1, 1] },
      type: RangeError,
      includes: ["options.weight[1]", "-1"],
    },
    {
      name: "non-finite weight",
      inputs: small,
      options: { weight: new Float32Array([1, 1, Infinity, 1]) },
      type: RangeError,
      includes: ["options.weight[2]", "Infinity"],
    },
    {
      name: "weight of the wrong type",
      inputs: small,
      options: { weight: "1,1,1,1" },
      type: TypeError,
      includes: ["options.weight", '"1,1,1,1"'],
    },
    {
      name: "unknown reduction",
      inputs: small,
      options: { reduction: "avg" },
      type: RangeError,
      includes: ["options.reduction", '"avg"'],
    },
    {
      name: "reduction batchmean (klDiv only)",
      inputs: small,
      options: { reduction: "batchmean" },
      type: RangeError,
      includes: ["options.reduction", '"batchmean"'],
    },
    {
      name: "checkFinite not a boolean",
      inputs: small,
      options: { checkFinite: "yes" },
      type: TypeError,
      includes: ["options.checkFinite", '"yes"'],
    },
    {
      name: "checkFinite: NaN in the logits",
      inputs: () => ({ logits: mat(2, 3, [0, 1, 2, 3, 4, NaN]), labels: [0, 1] }),
      options: { checkFinite: true },
      type: RangeError,
      includes: ["logits", "[1, 2]", "NaN"],
    },
    {
      name: "checkFinite: infinity in the logits",
      inputs: () => ({ logits: mat(2, 3, [0, -Infinity, 2, 3, Infinity, 5]), labels: [0, 1] }),
      options: { checkFinite: true },
      type: RangeError,
      includes: ["logits", "[0, 1]", "-Infinity"],
    },
    {
      name: "upstream vector for a reduced loss",
      inputs: small,
      upstream: new Float32Array(3),
      methods: ["backward"],
      type: TypeError,
      includes: ["upstream", "Float32Array"],
    },
    {
      name: "upstream number for reduction none",
      inputs: small,
      options: { reduction: "none" },
      upstream: 2,
      methods: ["backward"],
      type: TypeError,
      includes: ["upstream", "2"],
    },
    {
      name: "upstream vector of the wrong length",
      inputs: small,
      options: { reduction: "none" },
      upstream: new Float32Array(2),
      methods: ["backward"],
      type: RangeError,
      includes: ["upstream", "3", "2"],
    },
    {
      name: "options.out.logits of the wrong shape",
      inputs: small,
      options: { out: { logits: { data: new Float32Array(12), shape: [4, 3] } } },
      methods: ["backward", "valueAndGrad"],
      type: RangeError,
      includes: ["options.out.logits", "4"],
    },
    {
      name: "options.out.logits not a matrix",
      inputs: small,
      options: { out: { logits: new Float32Array(12) } },
      methods: ["backward", "valueAndGrad"],
      type: TypeError,
      includes: ["options.out.logits"],
    },
  ];
  errorSuite(spec, errors);

  describe("inputs", () => {
    it("inputs and options are unchanged by every call on every backend", async () => {
      // The fixture, agreement and error suites check this after every call; here the
      // cases they do not reach: out buffers, alloc inputs and plain arrays.
      for (const b of backends) {
        const ce = lossOf(b, "crossEntropy");
        if (!ce) continue;
        const inputs = { logits: randomMatrix(new Rng(4), 3, 5, 1), labels: [4, -100, 0] };
        const options = {
          weight: [1, 2, 3, 4, 5],
          labelSmoothing: 0.2,
          out: { logits: { data: new Float32Array(15), shape: [3, 5] } },
        };
        const snap = snapshot({ inputs, options });
        await ce.forward(inputs, options);
        await ce.backward(inputs, options, 3);
        await ce.valueAndGrad(inputs, options);
        assertUnchanged(snap, { inputs, options }, `${b.name}: `);
        assertAllClose(
          options.out.logits.data.subarray(5, 10),
          new Float64Array(5),
          { atol: 0 },
          `${b.name}: ignored row of out`,
        );
      }
    });
  });
});
