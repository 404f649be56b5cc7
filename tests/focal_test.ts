// focal (docs/LOSSES.md): alpha_y (1 - p_t)^gamma CE_i, p_t = exp(-CE_i); "mean" divides by
// the number of non-ignored rows (not by the summed alpha, unlike a weighted crossEntropy).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { assertFinite, assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { backends, lossOf, missing } from "./helpers/backends.ts";
import {
  commonOptionErrors,
  labelErrors,
  matrixErrors,
  numberOptionErrors,
  upstreamErrors,
  vectorOptionErrors,
} from "./helpers/errors.ts";
import { randomLabels, randomMatrix, randomVector, Rng } from "./helpers/random.ts";
import { focalSpec as spec } from "./helpers/specs.ts";
import { agreementSuite, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const small = () => ({ logits: randomMatrix(new Rng(8), 3, 4, 1), labels: [0, 3, 1] });

describe("focal", () => {
  existenceTest(spec);
  fixtureSuite(spec);

  fdSuite(spec, () => {
    const rng = new Rng(12);
    const problem = (n: number, c: number, ignore = 0, ignoreIndex = -100) => ({
      logits: randomMatrix(rng, n, c, 1.5),
      labels: randomLabels(rng, n, c, ignore, ignoreIndex),
    });
    return [
      { name: "defaults (gamma 2, mean)", inputs: problem(4, 5) },
      {
        name: "gamma 0.5, alpha, sum, upstream 2.5",
        inputs: problem(4, 3),
        options: { gamma: 0.5, alpha: [0.25, 1, 0.5], reduction: "sum" },
        upstream: 2.5,
      },
      {
        name: "gamma 3.5, ignored rows, mean",
        inputs: { logits: randomMatrix(rng, 5, 4, 1), labels: [0, -100, 3, 2, -100] },
        options: { gamma: 3.5 },
      },
      {
        name: "gamma 1, ignoreIndex 2",
        inputs: { logits: randomMatrix(rng, 4, 3, 1), labels: [2, 0, 1, 2] },
        options: { gamma: 1, ignoreIndex: 2 },
      },
      {
        name: "gamma 2, none, upstream vector",
        inputs: problem(3, 4),
        options: { reduction: "none", alpha: [1, 0.5, 2, 0.25] },
        upstream: new Float32Array([0.5, -1.5, 2]),
        atol: 2e-5,
        h: 2 ** -4,
      },
      { name: "C = 1 (zero gradient)", inputs: problem(2, 1), options: { gamma: 0.5 } },
    ];
  });

  agreementSuite(spec);

  describe("identities", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing(["focal", "crossEntropy"], [b]);
        const rng = new Rng(31);
        const n = 8, c = 6;
        const inputs = { logits: randomMatrix(rng, n, c, 2), labels: randomLabels(rng, n, c, 0.3) };
        inputs.labels[0] = -100;
        inputs.labels[1] = 2;
        const alpha = randomVector(rng, c, 0.1, 1);

        it("gamma 0 without alpha is crossEntropy, for every reduction", { skip }, async () => {
          const focal = lossOf(b, "focal")!, ce = lossOf(b, "crossEntropy")!;
          for (const reduction of ["mean", "sum", "none"]) {
            const f = await focal.valueAndGrad(inputs, { gamma: 0, reduction });
            const e = await ce.valueAndGrad(inputs, { reduction });
            assertLossClose(f.loss as Any, e.loss as Any, `${reduction} loss`, 1e-6);
            assertGradClose(f.grads.logits, e.grads.logits.data, `${reduction} grad`, 1e-6);
          }
        });

        it("gamma 0 with alpha = weight is crossEntropy for sum and none", { skip }, async () => {
          const focal = lossOf(b, "focal")!, ce = lossOf(b, "crossEntropy")!;
          for (const reduction of ["sum", "none"]) {
            const f = await focal.valueAndGrad(inputs, { gamma: 0, alpha, reduction });
            const e = await ce.valueAndGrad(inputs, { weight: alpha, reduction });
            assertLossClose(f.loss as Any, e.loss as Any, `${reduction} loss`, 1e-6);
            assertGradClose(f.grads.logits, e.grads.logits.data, `${reduction} grad`, 1e-6);
          }
        });

        it("gamma 0 with alpha, mean: the weighted sum over the count of non-ignored rows (not the summed weight)", {
          skip,
        }, async () => {
          const focal = lossOf(b, "focal")!, ce = lossOf(b, "crossEntropy")!;
          const count = inputs.labels.filter((y) => y !== -100).length;
          let total = 0;
          for (const y of inputs.labels) if (y !== -100) total += alpha[y];
          assert.ok(Math.abs(total - count) > 0.1, "the two denominators differ, so the test can tell them apart");
          const f = await focal.valueAndGrad(inputs, { gamma: 0, alpha });
          const sum = await ce.valueAndGrad(inputs, { weight: alpha, reduction: "sum" });
          assertLossClose(f.loss as number, (sum.loss as number) / count, "loss", 1e-6);
          assertGradClose(f.grads.logits, sum.grads.logits.data.map((v: number) => v / count), "grad", 1e-6);
          // ... which is the weighted crossEntropy mean times total / count.
          const mean = await ce.forward(inputs, { weight: alpha });
          assertLossClose(f.loss as number, (mean.loss as number) * total / count, "vs weighted mean", 1e-6);
        });

        it("alpha of all ones is the same as no alpha", { skip }, async () => {
          const focal = lossOf(b, "focal")!;
          for (const reduction of ["mean", "none"]) {
            const a = await focal.valueAndGrad(inputs, { gamma: 1.5, reduction });
            const o = await focal.valueAndGrad(inputs, { gamma: 1.5, reduction, alpha: new Array(c).fill(1) });
            assertLossClose(o.loss as Any, a.loss as Any, `${reduction} loss`, 1e-6);
            assertGradClose(o.grads.logits, a.grads.logits.data, `${reduction} grad`, 1e-6);
          }
        });

        it("each row's loss is (1 - p_t)^gamma times its cross-entropy, so never larger", { skip }, async () => {
          const focal = lossOf(b, "focal")!, ce = lossOf(b, "crossEntropy")!;
          const rows = (await ce.forward(inputs, { reduction: "none" })).loss as Float32Array;
          for (const gamma of [0.5, 2, 3.5]) {
            const f = (await focal.forward(inputs, { gamma, reduction: "none" })).loss as Float32Array;
            const expected = Array.from(rows, (l) => (-Math.expm1(-l)) ** gamma * l);
            assertLossClose(f, expected, `gamma ${gamma}`);
            for (let i = 0; i < n; i++) assert.ok(f[i] <= rows[i] * (1 + 1e-6), `row ${i}: ${f[i]} > ${rows[i]}`);
          }
        });
      });
    }
  });

  describe("edge cases", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing("focal", [b]);

        it("an all-ignored batch has loss 0 and zero gradients", { skip }, async () => {
          const focal = lossOf(b, "focal")!;
          const inputs = { logits: randomMatrix(new Rng(2), 3, 4, 5), labels: [-100, -100, -100] };
          for (const o of [{}, { gamma: 0.5, alpha: [1, 2, 3, 4] }, { reduction: "sum" }, { reduction: "none" }]) {
            const r = await focal.valueAndGrad(inputs, o);
            if (typeof r.loss === "number") assert.equal(r.loss, 0);
            else assert.deepEqual([...r.loss as Float32Array], [0, 0, 0]);
            assert.ok(r.grads.logits.data.every((v: number) => v === 0), JSON.stringify(o));
          }
        });

        it("p_t = 1 exactly with gamma < 1: finite, loss and gradient of that row 0", { skip }, async () => {
          const focal = lossOf(b, "focal")!;
          // Row 0: label at the single +1e4, so p_t = 1 in float64 too, where d/dp (1-p)^gamma is
          // unbounded; the gradient is the one-sided limit 0. A kernel may clamp tiny
          // exponentials (e^-64), leaving ~1e-35 instead of 0: the SPEC bound, not exact 0.
          const inputs = {
            logits: { data: new Float32Array([-1e4, 1e4, -1e4, -1e4, 0.5, 1, 2, -1]), shape: [2, 4] },
            labels: [1, 2],
          };
          for (const gamma of [0.25, 0.5, 0.99]) {
            const r = await focal.valueAndGrad(inputs, { gamma, reduction: "none" });
            assertFinite(r.loss as Float32Array, `gamma ${gamma} loss`);
            assertFinite(r.grads.logits.data, `gamma ${gamma} grad`);
            assertLossClose((r.loss as Float32Array)[0], 0, `gamma ${gamma} row 0 loss`);
            assertGradClose(r.grads.logits.data.subarray(0, 4), [0, 0, 0, 0], `gamma ${gamma} row 0 grad`);
          }
          const c1 = await focal.valueAndGrad({
            logits: { data: new Float32Array([3, -2]), shape: [2, 1] },
            labels: [0, 0],
          }, { gamma: 0.5 });
          assertLossClose(c1.loss as number, 0, "C = 1 loss");
          assertGradClose(c1.grads.logits, [0, 0], "C = 1 grad");
        });

        it("logits of magnitude 1e4 give finite values", { skip }, async () => {
          const focal = lossOf(b, "focal")!;
          const rng = new Rng(4);
          const inputs = { logits: randomMatrix(rng, 5, 33, 1e4), labels: randomLabels(rng, 5, 33) };
          for (const gamma of [0, 0.5, 2]) {
            const r = await focal.valueAndGrad(inputs, { gamma });
            assertFinite(r.loss as number, "loss");
            assertFinite(r.grads.logits.data, "grad");
          }
        });
      });
    }
  });

  errorSuite(spec, [
    ...matrixErrors(small, "logits", true),
    ...labelErrors(small),
    ...numberOptionErrors(small, "gamma", [-1, -1e-9, NaN, Infinity, "2"]),
    ...vectorOptionErrors(small, "alpha"),
    ...commonOptionErrors(small, "logits"),
    ...upstreamErrors(small),
  ]);
});
