// iclMoe (docs/LOSSES.md): L_dol (focal for the tail experts, CE for the others) +
// L_col = sum_e KL_batchmean(softmax(ensemble) || softmax(z_e)), the gated ensemble a constant.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { backends, lossOf, missing } from "./helpers/backends.ts";
import { assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { commonOptionErrors, labelErrors, matrixErrors, numberOptionErrors } from "./helpers/errors.ts";
import { randomLabels, randomMatrix, Rng } from "./helpers/random.ts";
import { iclMoeSpec as spec, randomGating } from "./helpers/specs_moe.ts";
import { agreementSuite, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

const small = () => ({
  expertLogits: [randomMatrix(new Rng(1), 3, 4), randomMatrix(new Rng(2), 3, 4)],
  gating: randomGating(new Rng(3), 3, 2),
  labels: [0, 3, 1],
});

describe("iclMoe", () => {
  existenceTest(spec);
  fixtureSuite(spec);
  agreementSuite(spec);
  fdSuite(spec, () => {
    const rng = new Rng(17);
    const z = [randomMatrix(rng, 4, 5, 2), randomMatrix(rng, 4, 5, 2), randomMatrix(rng, 4, 5, 2)];
    // The ensemble is a constant target (no gradient flows into it), which finite
    // differences cannot see unless it is constant: a zero gating makes it 0 (uniform).
    const p = {
      expertLogits: z,
      gating: { data: new Float32Array(12), shape: [4, 3] },
      labels: randomLabels(rng, 4, 5),
    };
    return [
      { name: "tail experts 1 and 2", inputs: p, options: { tailExperts: [1, 2] } },
      { name: "gamma 0.5, upstream -1", inputs: p, options: { tailExperts: [0], gamma: 0.5 }, upstream: -1 },
    ];
  });

  describe("identities", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing(["iclMoe", "crossEntropy", "focal"], [b]);
        it("no tail experts and a one-hot gating of one expert: collaboration 0, dol the cross-entropy", {
          skip,
        }, async () => {
          const icl = lossOf(b, "iclMoe")!, ce = lossOf(b, "crossEntropy")!;
          const rng = new Rng(71);
          const z = randomMatrix(rng, 6, 5, 3), labels = randomLabels(rng, 6, 5);
          const gating = { data: new Float32Array(6).fill(1), shape: [6, 1] };
          const r = await icl.valueAndGrad({ expertLogits: [z], gating, labels });
          const e = await ce.valueAndGrad({ logits: z, labels });
          assert.equal(r.col, 0);
          assertLossClose(r.dol as number, e.loss as number, "dol");
          assertGradClose(r.grads.expertLogits[0], e.grads.logits.data, "grad");
        });
        it("focal with gamma 0 is cross-entropy; the tail experts' terms are focal's", { skip }, async () => {
          const icl = lossOf(b, "iclMoe")!, ce = lossOf(b, "crossEntropy")!, focal = lossOf(b, "focal")!;
          const rng = new Rng(72);
          const z = [randomMatrix(rng, 5, 4, 2), randomMatrix(rng, 5, 4, 2)];
          const inputs = { expertLogits: z, gating: randomGating(rng, 5, 2), labels: randomLabels(rng, 5, 4) };
          const plain = await icl.valueAndGrad(inputs);
          const zero = await icl.valueAndGrad(inputs, { tailExperts: [0, 1], gamma: 0 });
          assertLossClose(zero.loss as number, plain.loss as number, "loss");
          assertGradClose(zero.grads.expertLogits[1], plain.grads.expertLogits[1].data, "grad");
          const tail = await icl.forward(inputs, { tailExperts: [1], gamma: 2 });
          const want = ((await ce.forward({ logits: z[0], labels: inputs.labels })).loss as number) +
            ((await focal.forward({ logits: z[1], labels: inputs.labels }, { gamma: 2 })).loss as number);
          assertLossClose(tail.dol as number, want, "dol");
        });
      });
    }
  });

  errorSuite(spec, [
    ...matrixErrors(small, "gating", false, "expertLogits").filter((e) => !e.name.includes("columns")),
    ...labelErrors(small).filter((e) => !e.name.includes("ignoreIndex")),
    {
      name: "tail expert out of range",
      inputs: small,
      options: { tailExperts: [2] },
      type: RangeError,
      includes: ["options.tailExperts[0]", "2"],
    },
    {
      name: "tail expert twice",
      inputs: small,
      options: { tailExperts: [1, 1] },
      type: RangeError,
      includes: ["options.tailExperts", "1"],
    },
    {
      name: "tailExperts not a list",
      inputs: small,
      options: { tailExperts: 1 },
      type: TypeError,
      includes: ["options.tailExperts", "1"],
    },
    ...numberOptionErrors(small, "gamma", [-1, NaN, "2"]),
    ...commonOptionErrors(small, "expertLogits", false).filter((e) => !e.name.startsWith("checkFinite: NaN")),
  ]);
});
