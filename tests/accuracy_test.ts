// accuracy (docs/LOSSES.md): the share of non-ignored rows whose label is among the k largest
// logits (in the top k when fewer than k logits are strictly greater than the label's);
// 0 when every row is ignored. A metric: `compute` only, no gradient, no `out`.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { backends, lossOf, missing } from "./helpers/backends.ts";
import { commonOptionErrors, labelErrors, matrixErrors, numberOptionErrors } from "./helpers/errors.ts";
import { type Mat, randomLabels, randomMatrix, Rng } from "./helpers/random.ts";
import { accuracySpec as spec } from "./helpers/specs.ts";
import { agreementSuite, errorSuite, existenceTest, fixtureSuite } from "./helpers/suite.ts";

const small = () => ({ logits: randomMatrix(new Rng(8), 3, 4, 1), labels: [0, 3, 1] });

/** The test's own reference: hits / non-ignored rows. */
function topk(m: Mat, labels: ArrayLike<number>, k: number, ignoreIndex = -100): number {
  const [n, c] = m.shape;
  let hits = 0, valid = 0;
  for (let i = 0; i < n; i++) {
    if (labels[i] === ignoreIndex) continue;
    valid++;
    const v = m.data[i * c + labels[i]];
    let greater = 0;
    for (let j = 0; j < c; j++) if (m.data[i * c + j] > v) greater++;
    if (greater < k) hits++;
  }
  return valid ? hits / valid : 0;
}

const mat = (rows: number, cols: number, values: number[]): Mat => ({
  data: new Float32Array(values),
  shape: [rows, cols],
});

describe("accuracy", () => {
  existenceTest(spec);
  fixtureSuite(spec);
  agreementSuite(spec);

  describe("semantics", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing("accuracy", [b]);

        it("ties: a label counts as in the top k when fewer than k logits are strictly greater", { skip }, async () => {
          const acc = lossOf(b, "accuracy")!;
          const logits = mat(4, 4, [
            1,
            2,
            2,
            0, // label 1 ties the max: a top-1 hit
            1,
            2,
            2,
            0, // label 0: two greater, a hit only from k = 3
            5,
            5,
            5,
            5, // all equal: every label is a top-1 hit
            3,
            1,
            3,
            3, // label 1: three greater, a hit only at k = 4
          ]);
          const labels = [1, 0, 2, 1];
          const expected = [0.5, 0.5, 0.75, 1];
          for (let k = 1; k <= 4; k++) {
            const r = await acc.forward({ logits, labels }, { k });
            assert.equal(r.loss, expected[k - 1], `k ${k}`);
            assert.equal(r.loss, topk(logits, labels, k), `k ${k} vs the test's reference`);
          }
        });

        it("the default k is 1, ignored rows do not count, all ignored is 0", { skip }, async () => {
          const acc = lossOf(b, "accuracy")!;
          const logits = mat(3, 3, [3, 1, 2, 0, 5, 1, 1, 1, 9]);
          assert.equal((await acc.forward({ logits, labels: [0, 0, 2] })).loss, 2 / 3);
          assert.equal((await acc.forward({ logits, labels: [0, -100, 1] })).loss, 0.5);
          assert.equal((await acc.forward({ logits, labels: [0, 2, 1] }, { ignoreIndex: 2 })).loss, 0.5);
          assert.equal((await acc.forward({ logits, labels: [-100, -100, -100] })).loss, 0);
          assert.equal((await acc.forward({ logits, labels: [0, 0, 2] }, { k: 3 })).loss, 1);
        });

        it("is a metric: compute only (no backward, valueAndGrad or gradient), out refused", { skip }, async () => {
          const acc = (b.losses as Record<string, Record<string, unknown>>).accuracy;
          assert.deepEqual(Object.keys(acc), ["compute"]);
          const rng = new Rng(5);
          const inputs = { logits: randomMatrix(rng, 5, 6, 3), labels: randomLabels(rng, 5, 6, 0.2) };
          const compute = acc.compute as (i: unknown, o?: unknown) => number | Promise<number>;
          assert.equal(await compute(inputs, { k: 2 }), topk(inputs.logits, inputs.labels, 2));
          const out = { logits: { data: new Float32Array(30), shape: [5, 6] } };
          await assert.rejects(async () => await compute(inputs, { out }), (e: Error) => {
            assert.ok(e instanceof TypeError && /unknown key "out"/.test(e.message), e.message);
            return true;
          });
        });

        it(
          "matches the test's reference on random problems (including 1e4 logits and C = 4099)",
          { skip },
          async () => {
            const acc = lossOf(b, "accuracy")!;
            const rng = new Rng(6);
            for (const [n, c, scale] of [[33, 5, 1], [17, 1000, 30], [9, 4099, 1e4], [4, 1, 1]]) {
              const logits = randomMatrix(rng, n, c, scale);
              const labels = randomLabels(rng, n, c, 0.2);
              for (const k of [1, 2, 5]) {
                if (k > c) continue;
                const r = await acc.forward({ logits, labels }, { k });
                assert.equal(r.loss, topk(logits, labels, k), `N ${n} C ${c} scale ${scale} k ${k}`);
              }
            }
          },
        );
      });
    }
  });

  errorSuite(spec, [
    ...matrixErrors(small, "logits", true),
    ...labelErrors(small),
    ...numberOptionErrors(small, "k", [0, -1, 1.5, NaN, Infinity, "1"], true),
    ...commonOptionErrors(small, "logits", false, false),
  ]);
});
