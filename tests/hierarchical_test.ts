// hierarchical (docs/LOSSES.md): CE over the coarse classes plus CE over only the fine
// classes of the true coarse class (the others excluded, their gradient exactly 0).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { backends, lossOf, missing } from "./helpers/backends.ts";
import { assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { commonOptionErrors, labelErrors, matrixErrors } from "./helpers/errors.ts";
import { randomLabels, randomMatrix, Rng } from "./helpers/random.ts";
import { hierarchicalSpec as spec, randomGroups } from "./helpers/specs_moe.ts";
import { agreementSuite, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

const small = () => ({
  coarse: randomMatrix(new Rng(1), 3, 4),
  fine: randomMatrix(new Rng(2), 3, 4),
  labels: [0, 3, 1],
  fineToCoarse: [0, 0, 1, 3],
});

describe("hierarchical", () => {
  existenceTest(spec);
  fixtureSuite(spec);
  agreementSuite(spec);
  fdSuite(spec, () => {
    const rng = new Rng(15);
    const p = {
      coarse: randomMatrix(rng, 5, 3),
      fine: randomMatrix(rng, 5, 7),
      labels: randomLabels(rng, 5, 7),
      fineToCoarse: randomGroups(rng, 7, 3),
    };
    return [{ name: "mean", inputs: p }, {
      name: "sum, upstream 0.5",
      inputs: p,
      options: { reduction: "sum" },
      upstream: 0.5,
    }];
  });

  describe("identities", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing(["hierarchical", "crossEntropy"], [b]);
        it("one coarse class: the fine term is the fine cross-entropy, the coarse term 0", { skip }, async () => {
          const loss = lossOf(b, "hierarchical")!, ce = lossOf(b, "crossEntropy")!;
          const rng = new Rng(51);
          const fine = randomMatrix(rng, 9, 6, 3), labels = randomLabels(rng, 9, 6);
          const coarse = { data: new Float32Array(9), shape: [9, 1] };
          const r = await loss.valueAndGrad({ coarse, fine, labels, fineToCoarse: new Int32Array(6) });
          const e = await ce.valueAndGrad({ logits: fine, labels });
          assert.equal(r.coarse, 0);
          assertLossClose(r.fine as number, e.loss as number, "fine vs crossEntropy");
          assertGradClose(r.grads.fine, e.grads.logits.data, "grads.fine vs crossEntropy");
        });
        it("classes outside the true group are not read: their gradient is exactly 0", { skip }, async () => {
          const loss = lossOf(b, "hierarchical")!;
          const fine = { data: new Float32Array([0, 0, 1e30, -1e30]), shape: [1, 4] };
          const coarse = { data: new Float32Array([0, 0]), shape: [1, 2] };
          const r = await loss.valueAndGrad({ coarse, fine, labels: [1], fineToCoarse: [0, 0, 1, 1] });
          assertLossClose(r.loss as number, 2 * Math.log(2), "loss");
          assert.deepEqual([...r.grads.fine.data.subarray(2)], [0, 0]);
        });
      });
    }
  });

  errorSuite(spec, [
    ...matrixErrors(small, "coarse", true, "coarse"),
    ...labelErrors(small).filter((e) => !e.name.includes("ignoreIndex")),
    {
      name: "fineToCoarse outside the coarse classes",
      inputs: () => ({ ...small(), fineToCoarse: [0, 0, 1, 4] }),
      type: RangeError,
      includes: ["fineToCoarse[3]", "4"],
    },
    {
      name: "fineToCoarse of the wrong length",
      inputs: () => ({ ...small(), fineToCoarse: [0, 0, 1] }),
      type: RangeError,
      includes: ["fineToCoarse", "3"],
    },
    {
      name: "fine with other rows",
      inputs: () => ({ ...small(), fine: randomMatrix(new Rng(2), 2, 4) }),
      type: RangeError,
      includes: ["fine.shape[0]", "2"],
    },
    ...commonOptionErrors(small, "coarse"),
  ]);
});
