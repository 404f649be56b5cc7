// centerRegularization (docs/LOSSES.md): L_center + prototypeWeight * L_proto over
// normalised centres and the row-normalised rule graph without its diagonal.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { backends, lossOf, missing } from "./helpers/backends.ts";
import { assertFinite, assertLossClose } from "./helpers/assert.ts";
import { commonOptionErrors, labelErrors, matrixErrors, numberOptionErrors } from "./helpers/errors.ts";
import { randomLabels, randomMatrix, Rng } from "./helpers/random.ts";
import { centerRegularizationSpec as spec, randomRule, unitRows } from "./helpers/specs_moe.ts";
import { agreementSuite, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

const small = () => ({
  f: unitRows(new Rng(1), 3, 4),
  centers: randomMatrix(new Rng(2), 4, 4),
  labels: [0, 3, 1],
  rule: randomRule(new Rng(3), 4),
});

describe("centerRegularization", () => {
  existenceTest(spec);
  fixtureSuite(spec);
  agreementSuite(spec);
  fdSuite(spec, () => {
    const rng = new Rng(14);
    const p = {
      f: unitRows(rng, 6, 3),
      centers: randomMatrix(rng, 5, 3),
      labels: randomLabels(rng, 6, 5),
      rule: randomRule(rng, 5),
    };
    return [{ name: "defaults", inputs: p }, {
      name: "prototypeWeight 3, upstream -2",
      inputs: p,
      options: { prototypeWeight: 3 },
      upstream: -2,
    }];
  });

  describe("identities and edge cases", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing("centerRegularization", [b]);
        it("the test's own formula, with a zero rule row and a class with no samples", { skip }, async () => {
          const loss = lossOf(b, "centerRegularization")!;
          const rng = new Rng(41);
          const c = 5, d = 3, n = 6;
          const f = unitRows(rng, n, d), centers = randomMatrix(rng, c, d);
          const labels = [0, 0, 1, 1, 2, 2]; // classes 3 and 4 have no samples
          const rule = randomRule(rng, c);
          for (let j = 0; j < c; j++) rule.data[3 * c + j] = 0; // a zero row: class 3's prototype term is 1
          const ch = Array.from({ length: c }, (_, j) => {
            const row = Array.from(centers.data.subarray(j * d, j * d + d));
            const norm = Math.hypot(...row);
            return row.map((x) => x / norm);
          });
          let center = 0;
          for (let i = 0; i < n; i++) center += 1 - ch[labels[i]].reduce((s, x, k) => s + x * f.data[i * d + k], 0);
          center /= n;
          let proto = 0;
          for (let i = 0; i < c; i++) {
            let sum = 0;
            for (let j = 0; j < c; j++) if (j !== i) sum += rule.data[i * c + j];
            let dot = 0;
            for (let j = 0; j < c; j++) {
              if (j === i || sum === 0) continue;
              dot += (rule.data[i * c + j] / sum) * ch[i].reduce((s, x, k) => s + x * ch[j][k], 0);
            }
            proto += 1 - dot;
          }
          proto /= c;
          const r = await loss.valueAndGrad({ f, centers, labels, rule }, { prototypeWeight: 0.7 });
          assertLossClose(r.center as number, center, "center");
          assertLossClose(r.proto as number, proto, "proto");
          assertLossClose(r.loss as number, center + 0.7 * proto, "loss");
          assertFinite(r.grads.centers.data, "grads.centers");
        });
        it("a zero centre stays finite (F.normalize's 1e-12)", { skip }, async () => {
          const loss = lossOf(b, "centerRegularization")!;
          const p = small();
          p.centers.data.fill(0, 0, 4);
          const r = await loss.valueAndGrad(p);
          assertFinite(r.loss as number, "loss");
          assertFinite(r.grads.centers.data, "grads.centers");
          assert.ok(r.grads.f.data.every((x: number) => Number.isFinite(x)));
        });
      });
    }
  });

  errorSuite(spec, [
    ...matrixErrors(small, "f", true, "f"),
    ...labelErrors(small).filter((e) => !e.name.includes("ignoreIndex")),
    {
      name: "rule of the wrong size",
      inputs: () => ({ ...small(), rule: randomRule(new Rng(3), 3) }),
      type: RangeError,
      includes: ["rule.shape[0]", "3"],
    },
    {
      name: "rule value below 0",
      inputs: () => ({ ...small(), rule: { data: new Float32Array(16).fill(-0.5), shape: [4, 4] } }),
      type: RangeError,
      includes: ["rule[0, 0]", "-0.5"],
    },
    ...numberOptionErrors(small, "prototypeWeight", [NaN, "1"]),
    ...commonOptionErrors(small, "f", false),
  ]);
});
