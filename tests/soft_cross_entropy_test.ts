// softCrossEntropy (docs/LOSSES.md): -sum_c t_c log_softmax(z)_c per row, gradients w.r.t.
// the logits ((sum t) softmax(z) - t) and the target (-log_softmax(z)).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { assertFinite, assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { backends, lossOf, missing } from "./helpers/backends.ts";
import { commonOptionErrors, matrixErrors, upstreamErrors } from "./helpers/errors.ts";
import { logSoftmaxOf, type Mat, randomLabels, randomMatrix, randomProbabilities, Rng } from "./helpers/random.ts";
import { softCrossEntropySpec as spec } from "./helpers/specs.ts";
import { agreementSuite, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const small = () => ({ logits: randomMatrix(new Rng(9), 3, 4, 1), target: randomProbabilities(new Rng(10), 3, 4) });

function oneHot(labels: Int32Array, c: number): Mat {
  const data = new Float32Array(labels.length * c);
  labels.forEach((y, i) => (data[i * c + y] = 1));
  return { data, shape: [labels.length, c] };
}

describe("softCrossEntropy", () => {
  existenceTest(spec);
  fixtureSuite(spec);

  fdSuite(spec, () => {
    const rng = new Rng(13);
    return [
      {
        name: "mean, N 4, C 5",
        inputs: { logits: randomMatrix(rng, 4, 5, 1.5), target: randomProbabilities(rng, 4, 5, true) },
      },
      {
        name: "sum, unnormalised target, upstream -0.75",
        inputs: { logits: randomMatrix(rng, 3, 4, 1), target: randomMatrix(rng, 3, 4, 1) },
        options: { reduction: "sum" },
        upstream: -0.75,
      },
      {
        name: "none, upstream vector",
        inputs: { logits: randomMatrix(rng, 3, 4, 1), target: randomProbabilities(rng, 3, 4) },
        options: { reduction: "none" },
        upstream: new Float32Array([0.5, -1.5, 2]),
        atol: 2e-5,
        h: 2 ** -4,
      },
      {
        name: "C = 1",
        inputs: { logits: randomMatrix(rng, 2, 1, 1), target: { data: new Float32Array([1, 0.5]), shape: [2, 1] } },
      },
    ];
  });

  agreementSuite(spec);

  describe("identities", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const rng = new Rng(41);
        const n = 7, c = 9;
        const logits = randomMatrix(rng, n, c, 3);
        const labels = randomLabels(rng, n, c);

        it("a one-hot target is crossEntropy (loss and logits gradient), for every reduction", {
          skip: missing(["softCrossEntropy", "crossEntropy"], [b]),
        }, async () => {
          const soft = lossOf(b, "softCrossEntropy")!, ce = lossOf(b, "crossEntropy")!;
          for (const reduction of ["mean", "sum", "none"]) {
            const s = await soft.valueAndGrad({ logits, target: oneHot(labels, c) }, { reduction });
            const e = await ce.valueAndGrad({ logits, labels }, { reduction });
            assertLossClose(s.loss as Any, e.loss as Any, `${reduction} loss`);
            assertGradClose(s.grads.logits, e.grads.logits.data, `${reduction} logits grad`);
          }
        });

        it("the target gradient is -log_softmax(logits), scaled by the reduction", {
          skip: missing("softCrossEntropy", [b]),
        }, async () => {
          const soft = lossOf(b, "softCrossEntropy")!;
          const target = randomProbabilities(rng, n, c, true);
          const logp = logSoftmaxOf(logits).data;
          for (const [reduction, scale] of [["mean", 1 / n], ["sum", 1]] as const) {
            const g = await soft.backward({ logits, target }, { reduction });
            assertGradClose(g.target, logp.map((v) => -v * scale), `${reduction} target grad`);
          }
        });

        it("the logits gradient is (sum t) softmax(z) - t, and a shift of a row changes nothing", {
          skip: missing("softCrossEntropy", [b]),
        }, async () => {
          const soft = lossOf(b, "softCrossEntropy")!;
          const target = randomMatrix(rng, n, c, 0.5); // any target, not only probabilities
          const logp = logSoftmaxOf(logits).data;
          const expected = new Float64Array(n * c);
          for (let i = 0; i < n; i++) {
            let t = 0;
            for (let j = 0; j < c; j++) t += target.data[i * c + j];
            for (let j = 0; j < c; j++) expected[i * c + j] = t * Math.exp(logp[i * c + j]) - target.data[i * c + j];
          }
          const g = await soft.backward({ logits, target }, { reduction: "sum" });
          assertGradClose(g.logits, expected, "logits grad");
          const shifted = {
            data: logits.data.map((v, k) => v + [100, -50, 0, 7, 1000, -3, 12][Math.floor(k / c)]),
            shape: logits.shape,
          };
          const a = await soft.forward({ logits, target }, { reduction: "none" });
          const s = await soft.forward({ logits: shifted, target }, { reduction: "none" });
          assertLossClose(s.loss as Any, a.loss as Any, "shifted", 2e-4);
        });
      });
    }
  });

  describe("edge cases", () => {
    for (const b of backends) {
      describe(b.name, () => {
        it(
          "rows of +-1e4 and zero targets give finite values",
          { skip: missing("softCrossEntropy", [b]) },
          async () => {
            const soft = lossOf(b, "softCrossEntropy")!;
            const c = 5;
            const logits = {
              data: new Float32Array([1e4, -1e4, 1e4, -1e4, 1e4, -1e4, -1e4, 1e4, -1e4, -1e4]),
              shape: [2, c],
            };
            // A target of 1 at a -1e4 logit: loss 2e4 + log(3), not Inf.
            const target = { data: new Float32Array([0, 1, 0, 0, 0, 0, 0, 0, 0.5, 0.5]), shape: [2, c] };
            const r = await soft.valueAndGrad({ logits, target }, { reduction: "none" });
            assertFinite(r.loss as Float32Array, "loss");
            assertFinite(r.grads.logits.data, "logits grad");
            assertFinite(r.grads.target.data, "target grad");
            assertLossClose((r.loss as Float32Array)[0], 2e4 + Math.log(3), "row 0");
            assertLossClose((r.loss as Float32Array)[1], 2e4, "row 1");
          },
        );

        it(
          "an all-zero target row has loss 0 and zero logits gradient",
          { skip: missing("softCrossEntropy", [b]) },
          async () => {
            const soft = lossOf(b, "softCrossEntropy")!;
            const r = await soft.valueAndGrad({
              logits: randomMatrix(new Rng(1), 2, 3, 2),
              target: { data: new Float32Array(6), shape: [2, 3] },
            });
            assert.equal(r.loss, 0);
            assert.ok(r.grads.logits.data.every((v: number) => v === 0));
          },
        );
      });
    }
  });

  errorSuite(spec, [
    ...matrixErrors(small, "logits", true),
    ...matrixErrors(small, "target", false),
    ...commonOptionErrors(small, "logits"),
    ...commonOptionErrors(small, "target").filter((e) => e.name.startsWith("checkFinite: NaN")),
    ...upstreamErrors(small),
  ]);
});
