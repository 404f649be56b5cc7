// mixOutputs (docs/LOSSES.md): sum_e CE(z_e + log prior, y) + distillWeight * sum_{i != j}
// KL_batchmean(softmax(z_j) || softmax(z_i)) + parallelWeight * E / sum_e 1/(ce_e + eps).
import { describe, it } from "node:test";
import { backends, lossOf, missing } from "./helpers/backends.ts";
import { assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { commonOptionErrors, labelErrors, numberOptionErrors, vectorOptionErrors } from "./helpers/errors.ts";
import { randomLabels, randomMatrix, Rng } from "./helpers/random.ts";
import { mixOutputsSpec as spec } from "./helpers/specs_moe.ts";
import { agreementSuite, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

const small = () => ({
  expertLogits: [randomMatrix(new Rng(1), 3, 4), randomMatrix(new Rng(2), 3, 4)],
  labels: [0, 3, 1],
});

describe("mixOutputs", () => {
  existenceTest(spec);
  fixtureSuite(spec);
  agreementSuite(spec);
  fdSuite(spec, () => {
    const rng = new Rng(16);
    const p = {
      expertLogits: [randomMatrix(rng, 4, 5), randomMatrix(rng, 4, 5), randomMatrix(rng, 4, 5)],
      labels: randomLabels(rng, 4, 5),
    };
    return [
      { name: "every term", inputs: p, options: { distillWeight: 0.7, parallelWeight: 0.4 } },
      {
        name: "prior, upstream 2",
        inputs: p,
        options: { prior: [0.5, 0.2, 0.1, 0.1, 0.1], parallelWeight: 1, eps: 0.01 },
        upstream: 2,
      },
    ];
  });

  describe("identities", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing(["mixOutputs", "crossEntropy", "klDiv"], [b]);
        it("one expert and zero weights is crossEntropy", { skip }, async () => {
          const mix = lossOf(b, "mixOutputs")!, ce = lossOf(b, "crossEntropy")!;
          const rng = new Rng(61);
          const logits = randomMatrix(rng, 7, 9, 4), labels = randomLabels(rng, 7, 9);
          const r = await mix.valueAndGrad({ expertLogits: [logits], labels });
          const e = await ce.valueAndGrad({ logits, labels });
          assertLossClose(r.loss as number, e.loss as number, "loss");
          assertGradClose(r.grads.expertLogits[0], e.grads.logits.data, "grad");
          assertLossClose(r.meanLogits, logits.data, "meanLogits");
        });
        it("the parts against crossEntropy and klDiv, the prior as logit adjustment", { skip }, async () => {
          const mix = lossOf(b, "mixOutputs")!, ce = lossOf(b, "crossEntropy")!, kl = lossOf(b, "klDiv")!;
          const rng = new Rng(62);
          const z = [randomMatrix(rng, 5, 6, 2), randomMatrix(rng, 5, 6, 2), randomMatrix(rng, 5, 6, 2)];
          const labels = randomLabels(rng, 5, 6);
          const prior = [0.4, 0.3, 0.1, 0.1, 0.05, 0.05];
          const r = await mix.forward({ expertLogits: z, labels }, { prior, distillWeight: 0.5, parallelWeight: 2 });
          const ces: number[] = [];
          for (const m of z) {
            const shifted = { data: m.data.map((x, i) => x + Math.log(prior[i % 6])), shape: m.shape };
            ces.push((await ce.forward({ logits: shifted, labels })).loss as number);
          }
          const logSoftmax = (m: { data: Float32Array }) => {
            const out = new Float32Array(m.data.length);
            for (let i = 0; i < 5; i++) {
              const row = m.data.subarray(i * 6, i * 6 + 6);
              const mx = Math.max(...row);
              const lse = mx + Math.log(row.reduce((s, x) => s + Math.exp(x - mx), 0));
              for (let j = 0; j < 6; j++) out[i * 6 + j] = row[j] - lse;
            }
            return { data: out, shape: [5, 6] };
          };
          let distill = 0;
          for (let i = 0; i < 3; i++) {
            for (let j = 0; j < 3; j++) {
              if (i === j) continue;
              const target = { data: logSoftmax(z[j]).data.map(Math.exp), shape: [5, 6] };
              distill += (await kl.forward({ logInput: logSoftmax(z[i]), target })).loss as number;
            }
          }
          const parallel = 3 / ces.reduce((s, x) => s + 1 / (x + 1e-6), 0);
          const ceSum = ces.reduce((s, x) => s + x, 0);
          assertLossClose(r.ce as number, ceSum, "ce");
          assertLossClose(r.distill as number, distill, "distill");
          assertLossClose(r.parallel as number, parallel, "parallel");
          assertLossClose(r.loss as number, ceSum + 0.5 * distill + 2 * parallel, "loss");
        });
      });
    }
  });

  errorSuite(spec, [
    {
      name: "expertLogits not a list",
      inputs: () => ({ ...small(), expertLogits: small().expertLogits[0] }),
      type: TypeError,
      includes: ["expertLogits"],
    },
    {
      name: "experts of different shapes",
      inputs: () => ({ ...small(), expertLogits: [randomMatrix(new Rng(1), 3, 4), randomMatrix(new Rng(2), 3, 5)] }),
      type: RangeError,
      includes: ["expertLogits[1].shape[1]", "5"],
    },
    ...labelErrors(small).filter((e) => !e.name.includes("ignoreIndex")),
    ...vectorOptionErrors(small, "prior"),
    {
      name: "prior with a 0",
      inputs: small,
      options: { prior: [0.5, 0, 0.25, 0.25] },
      type: RangeError,
      includes: ["options.prior", "0"],
    },
    ...numberOptionErrors(small, "eps", [0, -1, NaN]),
    ...numberOptionErrors(small, "distillWeight", [NaN, "1"]),
    ...commonOptionErrors(small, "expertLogits", false).filter((e) => !e.name.startsWith("checkFinite: NaN")),
  ]);
});
