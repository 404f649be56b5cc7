// physicsContrastive (docs/LOSSES.md): supervised contrastive loss with a class-similarity
// rule: positives are same-class pairs and pairs whose rule similarity is above the
// threshold; every other pair enters the denominator weighted by 1 - R.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { backends, lossOf, missing } from "./helpers/backends.ts";
import { assertFinite, assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { commonOptionErrors, labelErrors, matrixErrors, numberOptionErrors } from "./helpers/errors.ts";
import { randomLabels, Rng } from "./helpers/random.ts";
import { physicsContrastiveSpec as spec, randomRule, unitRows } from "./helpers/specs_moe.ts";
import { agreementSuite, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/**
 * Supervised contrastive loss as Khosla et al. (2020) wrote it (their SupConLoss with
 * base_temperature = temperature): log_prob_ij = S_ij - log sum_{k != i} e^S_ik, the
 * anchor's loss -mean over its positives, averaged over anchors that have a positive.
 */
function supCon(f: Float32Array, labels: ArrayLike<number>, b: number, d: number, tau: number): number {
  let total = 0, anchors = 0;
  for (let i = 0; i < b; i++) {
    const S = Array.from({ length: b }, (_, j) => {
      let s = 0;
      for (let k = 0; k < d; k++) s += f[i * d + k] * f[j * d + k];
      return s / tau;
    });
    const m = Math.max(...S.filter((_, j) => j !== i));
    let den = 0;
    for (let j = 0; j < b; j++) if (j !== i) den += Math.exp(S[j] - m);
    let sum = 0, count = 0;
    for (let j = 0; j < b; j++) {
      if (j === i || labels[j] !== labels[i]) continue;
      sum += S[j] - m - Math.log(den);
      count++;
    }
    if (count === 0) continue;
    total += -sum / count;
    anchors++;
  }
  return anchors ? total / anchors : 0;
}

const small = () => ({ f: unitRows(new Rng(3), 3, 4), labels: [0, 1, 1], rule: randomRule(new Rng(5), 2) });

describe("physicsContrastive", () => {
  existenceTest(spec);
  fixtureSuite(spec);
  agreementSuite(spec);
  fdSuite(spec, () => {
    const rng = new Rng(12);
    const f = unitRows(rng, 7, 3), labels = randomLabels(rng, 7, 3);
    const rule = randomRule(rng, 3);
    return [
      { name: "no rule", inputs: { f, labels }, options: { temperature: 0.5 } },
      { name: "rule, threshold 0.5", inputs: { f, labels, rule }, options: { temperature: 0.3, threshold: 0.5 } },
      {
        name: "sum, upstream -1.5",
        inputs: { f, labels, rule },
        options: { reduction: "sum", temperature: 0.2 },
        upstream: -1.5,
      },
      // The default temperature (0.07): steep, so a smaller step.
      { name: "default temperature", inputs: { f, labels, rule }, h: 2 ** -10 },
    ];
  });

  describe("identities and edge cases", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing("physicsContrastive", [b]);
        it("without a rule it is the supervised contrastive loss of Khosla et al. (2020)", { skip }, async () => {
          const loss = lossOf(b, "physicsContrastive")!;
          const rng = new Rng(21);
          for (const [n, d, k, tau] of [[8, 4, 3, 0.1], [33, 16, 5, 0.07], [5, 2, 2, 1]]) {
            const f = unitRows(rng, n, d), labels = randomLabels(rng, n, k);
            const r = await loss.forward({ f, labels }, { temperature: tau });
            assertLossClose(r.loss as number, supCon(f.data, labels, n, d, tau), `n ${n} tau ${tau}`);
          }
        });
        it("a rule of zeros changes nothing; a rule above the threshold makes cross-class positives", {
          skip,
        }, async () => {
          const loss = lossOf(b, "physicsContrastive")!;
          const rng = new Rng(22);
          const f = unitRows(rng, 6, 4), labels = [0, 0, 1, 1, 2, 2];
          const zeros = { data: new Float32Array(9), shape: [3, 3] };
          const plain = await loss.valueAndGrad({ f, labels });
          const zero = await loss.valueAndGrad({ f, labels, rule: zeros });
          assert.equal(zero.loss, plain.loss);
          assert.deepEqual(zero.grads.f.data, plain.grads.f.data);
          // classes 0 and 1 similar (0.9 > 0.8): with R the loss differs from plain SupCon.
          const rule = { data: new Float32Array([1, 0.9, 0, 0.9, 1, 0, 0, 0, 1]), shape: [3, 3] };
          const r = await loss.forward({ f, labels, rule });
          assert.notEqual(r.loss, plain.loss);
        });
        it("no positives in the batch: loss 0, gradient 0", { skip }, async () => {
          const loss = lossOf(b, "physicsContrastive")!;
          const f = unitRows(new Rng(23), 4, 3);
          const r = await loss.valueAndGrad({ f, labels: [0, 1, 2, 3] });
          assert.equal(r.loss, 0);
          assert.ok(r.grads.f.data.every((x: number) => x === 0));
        });
        it("a temperature of 1e-4 and coincident embeddings stay finite", { skip }, async () => {
          const loss = lossOf(b, "physicsContrastive")!;
          const f = unitRows(new Rng(24), 6, 3);
          f.data.copyWithin(3, 0, 3); // rows 0 and 1 coincide
          const labels = [0, 0, 1, 1, 2, 0];
          for (const rule of [undefined, randomRule(new Rng(25), 3)]) {
            const r = await loss.valueAndGrad({ f, labels, ...(rule ? { rule } : {}) }, { temperature: 1e-4 });
            assertFinite(r.loss as number, "loss");
            assertFinite(r.grads.f.data, "grads.f");
            if (b.name !== "js") {
              const ref = await lossOf(backends[0], "physicsContrastive")!.valueAndGrad(
                { f, labels, ...(rule ? { rule } : {}) },
                { temperature: 1e-4 },
              );
              assertLossClose(r.loss as number, ref.loss as number, "loss vs js");
              assertGradClose(r.grads.f, ref.grads.f.data, "grads.f vs js");
            }
          }
        });
        // The kernels' B x B passes (S's lower triangle from its upper, A + A^T) go by 64 x 64
        // tiles of 4 x 4 blocks: B = 130 and 131 span three tiles and leave rows of a last block.
        it("batches of several tiles agree with js", { skip: skip || b.name === "js" }, async () => {
          const loss = lossOf(b, "physicsContrastive")!, ref = lossOf(backends[0], "physicsContrastive")!;
          const rng = new Rng(26);
          for (const n of [130, 131]) {
            const inputs = { f: unitRows(rng, n, 8), labels: randomLabels(rng, n, 6), rule: randomRule(rng, 6) };
            const r = await loss.valueAndGrad(inputs, { temperature: 0.2 });
            const want = await ref.valueAndGrad(inputs, { temperature: 0.2 });
            assertLossClose(r.loss as number, want.loss as number, `n ${n} loss vs js`);
            assertGradClose(r.grads.f, want.grads.f.data, `n ${n} grads.f vs js`);
          }
        });
      });
    }
  });

  errorSuite(spec, [
    ...matrixErrors(small, "f", true, "f"),
    ...labelErrors(small).filter((e) => !e.name.includes("ignoreIndex") && !e.name.includes(">= C")),
    {
      name: "label outside the rule's classes",
      inputs: () => ({ ...small(), labels: [0, 1, 2] }),
      type: RangeError,
      includes: ["labels[2]", "2"],
    },
    {
      name: "rule not square",
      inputs: () => ({ ...small(), rule: { data: new Float32Array(6), shape: [2, 3] } }),
      type: RangeError,
      includes: ["rule", "3"],
    },
    {
      name: "rule value above 1",
      inputs: () => ({ ...small(), rule: { data: new Float32Array([1, 1.5, 0, 1]), shape: [2, 2] } }),
      type: RangeError,
      includes: ["rule[0, 1]", "1.5"],
    },
    {
      name: "rule value NaN",
      inputs: () => ({ ...small(), rule: { data: new Float32Array([1, 0, NaN, 1]), shape: [2, 2] } }),
      type: RangeError,
      includes: ["rule[1, 0]", "NaN"],
    },
    ...numberOptionErrors(small, "temperature", [0, -1, NaN, Infinity, "0.1"]),
    ...numberOptionErrors(small, "threshold", [NaN, "0.8"]),
    ...commonOptionErrors(small, "f").map((e) => e as Any),
  ]);
});
