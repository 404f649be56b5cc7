// featureDiversity (docs/LOSSES.md): -lambda * the mean Euclidean distance between the
// features of every ordered pair of different experts, per sample.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { backends, lossOf, missing } from "./helpers/backends.ts";
import { assertLossClose } from "./helpers/assert.ts";
import { commonOptionErrors, numberOptionErrors } from "./helpers/errors.ts";
import { randomMatrix, Rng } from "./helpers/random.ts";
import { featureDiversitySpec as spec } from "./helpers/specs_moe.ts";
import { agreementSuite, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

const small = () => ({ features: [randomMatrix(new Rng(1), 3, 4), randomMatrix(new Rng(2), 3, 4)] });

describe("featureDiversity", () => {
  existenceTest(spec);
  fixtureSuite(spec);
  agreementSuite(spec);
  fdSuite(spec, () => {
    const rng = new Rng(13);
    const features = [randomMatrix(rng, 4, 3), randomMatrix(rng, 4, 3), randomMatrix(rng, 4, 3)];
    return [{ name: "three experts", inputs: { features }, options: { lambda: 0.7 } }, {
      name: "two experts, upstream 3",
      inputs: { features: features.slice(0, 2) },
      upstream: 3,
    }];
  });

  describe("identities and edge cases", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing("featureDiversity", [b]);
        it("the test's own formula: -lambda * mean over b and ordered pairs", { skip }, async () => {
          const loss = lossOf(b, "featureDiversity")!;
          const rng = new Rng(31);
          const features = [randomMatrix(rng, 5, 6), randomMatrix(rng, 5, 6), randomMatrix(rng, 5, 6)];
          let total = 0;
          for (let i = 0; i < 5; i++) {
            for (let s = 0; s < 3; s++) {
              for (let t = 0; t < 3; t++) {
                if (s === t) continue;
                let sq = 0;
                for (let k = 0; k < 6; k++) sq += (features[s].data[i * 6 + k] - features[t].data[i * 6 + k]) ** 2;
                total += Math.sqrt(sq);
              }
            }
          }
          const r = await loss.forward({ features }, { lambda: 0.25 });
          assertLossClose(r.loss as number, (-0.25 * total) / (5 * 3 * 2), "loss");
        });
        it("one expert: 0; coincident features: finite, gradient 0", { skip }, async () => {
          const loss = lossOf(b, "featureDiversity")!;
          const a = randomMatrix(new Rng(32), 3, 4);
          const one = await loss.valueAndGrad({ features: [a] });
          assert.equal(one.loss, 0);
          assert.ok(one.grads.features[0].data.every((x: number) => x === 0));
          const same = await loss.valueAndGrad({ features: [a, { data: a.data.slice(), shape: [3, 4] }] });
          assert.equal(same.loss, 0);
          for (const g of same.grads.features) assert.ok(g.data.every((x: number) => x === 0));
        });
      });
    }
  });

  errorSuite(spec, [
    {
      name: "features not a list",
      inputs: () => ({ features: small().features[0] }),
      type: TypeError,
      includes: ["features"],
    },
    { name: "features empty", inputs: () => ({ features: [] }), type: RangeError, includes: ["features", "0"] },
    {
      name: "features of different shapes",
      inputs: () => ({ features: [randomMatrix(new Rng(1), 3, 4), randomMatrix(new Rng(2), 3, 5)] }),
      type: RangeError,
      includes: ["features[1].shape[1]", "5"],
    },
    ...numberOptionErrors(small, "lambda", [NaN, Infinity, "0.1"]),
    {
      name: "unknown option key",
      inputs: small,
      options: { weight: 1 },
      type: TypeError,
      includes: ['"weight"', "lambda"],
    },
    {
      name: "out of the wrong length",
      inputs: small,
      options: { out: { features: [small().features[0]] } },
      methods: ["backward", "valueAndGrad"],
      type: RangeError,
      includes: ["options.out.features", "1"],
    },
    ...commonOptionErrors(small, "features", false).filter((e) => e.name.includes("unknown input")),
  ]);
});
