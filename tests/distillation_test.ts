// distillation (docs/LOSSES.md): alpha T^2 KL_batchmean(softmax(t/T) || softmax(s/T)) + (1-alpha) CE(s, y),
// parts kl and ce (members of the result) reduced before weighting, gradient w.r.t. the student only.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { assertFinite, assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { backends, lossOf, missing } from "./helpers/backends.ts";
import { commonOptionErrors, labelErrors, matrixErrors, numberOptionErrors, upstreamErrors } from "./helpers/errors.ts";
import { logSoftmaxOf, type Mat, randomLabels, randomMatrix, Rng } from "./helpers/random.ts";
import { distillationSpec as spec } from "./helpers/specs.ts";
import { agreementSuite, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const small = () => ({
  student: randomMatrix(new Rng(9), 3, 4, 1),
  teacher: randomMatrix(new Rng(10), 3, 4, 1),
  labels: [0, 3, 1],
});

const scaled = (m: Mat, f: number): Mat => ({ data: m.data.map((v) => v * f), shape: m.shape });

/**
 * The test's own float64 reference (reductions mean and sum): value, parts and
 * student gradient, written from the formula:
 *   d/ds [alpha T^2 KL(p_t || p_s)] = alpha T (p_s - p_t) with p = softmax(./T),
 *   d/ds [(1-alpha) CE] = (1-alpha) (softmax(s) - onehot(y)).
 */
function distill(s: Mat, t: Mat, y: ArrayLike<number>, T: number, alpha: number, reduction: "mean" | "sum") {
  const [n, c] = s.shape;
  const grad = new Float64Array(n * c);
  let kl = 0, ce = 0, count = 0;
  for (let i = 0; i < n; i++) if (y[i] !== -100) count++;
  const klScale = reduction === "mean" ? 1 / n : 1;
  const ceScale = reduction === "mean" ? (count ? 1 / count : 0) : 1;
  for (let i = 0; i < n; i++) {
    const row = (m: Mat, f: number) => {
      const z = Array.from(m.data.subarray(i * c, (i + 1) * c), (v) => v / f);
      const mx = Math.max(...z);
      const lse = mx + Math.log(z.reduce((a, v) => a + Math.exp(v - mx), 0));
      return z.map((v) => v - lse);
    };
    const ls = row(s, T), lt = row(t, T), l1 = row(s, 1);
    for (let j = 0; j < c; j++) {
      const pt = Math.exp(lt[j]);
      kl += pt * (lt[j] - ls[j]);
      grad[i * c + j] = alpha * T * (Math.exp(ls[j]) - pt) * klScale;
    }
    if (y[i] === -100) continue;
    ce -= l1[y[i]];
    for (let j = 0; j < c; j++) grad[i * c + j] += (1 - alpha) * (Math.exp(l1[j]) - (j === y[i] ? 1 : 0)) * ceScale;
  }
  kl *= klScale;
  ce *= ceScale;
  return { loss: alpha * T * T * kl + (1 - alpha) * ce, kl, ce, grad };
}

describe("distillation", () => {
  existenceTest(spec);
  fixtureSuite(spec);

  fdSuite(spec, () => {
    const rng = new Rng(15);
    const problem = (n: number, c: number, ignore = 0, ignoreIndex = -100) => ({
      student: randomMatrix(rng, n, c, 1.5),
      teacher: randomMatrix(rng, n, c, 1.5),
      labels: randomLabels(rng, n, c, ignore, ignoreIndex),
    });
    return [
      { name: "defaults (T 4, alpha 0.9, mean)", inputs: problem(4, 5) },
      {
        name: "T 1, alpha 0.5, sum, upstream 2.5",
        inputs: problem(3, 4),
        options: { temperature: 1, alpha: 0.5, reduction: "sum" },
        upstream: 2.5,
      },
      {
        name: "T 0.5, alpha 0.3, ignored rows",
        inputs: { ...problem(4, 3), labels: [0, -100, 2, -100] },
        options: { temperature: 0.5, alpha: 0.3 },
        h: 2 ** -8,
      },
      {
        name: "T 2, none, ignoreIndex -1, upstream vector",
        inputs: { ...problem(3, 4), labels: [1, -1, 3] },
        options: { temperature: 2, reduction: "none", ignoreIndex: -1 },
        upstream: new Float32Array([0.5, -1.5, 2]),
        atol: 2e-5,
        h: 2 ** -4,
      },
    ];
  });

  agreementSuite(spec);

  describe("identities", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const rng = new Rng(61);
        const n = 6, c = 5;
        const student = randomMatrix(rng, n, c, 2), teacher = randomMatrix(rng, n, c, 2);
        const labels = randomLabels(rng, n, c, 0.3);
        labels[0] = -100;
        labels[1] = 3;

        it(
          "alpha 0 is crossEntropy, for every reduction",
          { skip: missing(["distillation", "crossEntropy"], [b]) },
          async () => {
            const d = lossOf(b, "distillation")!, ce = lossOf(b, "crossEntropy")!;
            for (const reduction of ["mean", "sum", "none"]) {
              const r = await d.valueAndGrad({ student, teacher, labels }, { alpha: 0, reduction });
              const e = await ce.valueAndGrad({ logits: student, labels }, { reduction });
              assertLossClose(r.loss as Any, e.loss as Any, `${reduction} loss`);
              assertGradClose(r.grads.student, e.grads.logits.data, `${reduction} grad`);
            }
          },
        );

        it("alpha 1 is T^2 klDiv(log_softmax(s/T), softmax(t/T)), batchmean", {
          skip: missing(["distillation", "klDiv"], [b]),
        }, async () => {
          const d = lossOf(b, "distillation")!, kl = lossOf(b, "klDiv")!;
          for (const T of [1, 4]) {
            const r = await d.forward({ student, teacher, labels }, { alpha: 1, temperature: T });
            const logInput = logSoftmaxOf(scaled(student, 1 / T));
            const target = { data: logSoftmaxOf(scaled(teacher, 1 / T)).data.map(Math.exp), shape: student.shape };
            const k = await kl.forward({ logInput, target });
            assertLossClose(r.loss as number, T * T * (k.loss as number), `T ${T}`);
            assertLossClose(r.kl, k.loss as number, `T ${T} parts.kl`);
          }
        });

        it("value, parts and student gradient match the closed form (mean and sum)", {
          skip: missing("distillation", [b]),
        }, async () => {
          const d = lossOf(b, "distillation")!;
          for (const [T, alpha, reduction] of [[4, 0.9, "mean"], [2, 0.5, "sum"], [0.7, 0.25, "mean"]] as const) {
            const e = distill(student, teacher, labels, T, alpha, reduction);
            const r = await d.valueAndGrad({ student, teacher, labels }, { temperature: T, alpha, reduction });
            const label = `T ${T} alpha ${alpha} ${reduction}`;
            assertLossClose(r.loss as number, e.loss, `${label} loss`);
            assertLossClose(r.kl, e.kl, `${label} parts.kl`);
            assertLossClose(r.ce, e.ce, `${label} parts.ce`);
            assertLossClose(
              r.loss as number,
              alpha * T * T * r.kl + (1 - alpha) * r.ce,
              `${label} loss from parts`,
            );
            assertGradClose(r.grads.student, e.grad, `${label} grad`);
            assert.deepEqual(Object.keys(r.grads), ["student"], "a gradient w.r.t. the student only");
          }
        });

        it(
          "reduction none: one value per row, summing to the sum reduction",
          { skip: missing("distillation", [b]) },
          async () => {
            const d = lossOf(b, "distillation")!;
            const none = (await d.forward({ student, teacher, labels }, { reduction: "none" })).loss as Float32Array;
            const sum = (await d.forward({ student, teacher, labels }, { reduction: "sum" })).loss as number;
            assert.ok(none instanceof Float32Array && none.length === n);
            assertLossClose(none.reduce((a, v) => a + v, 0), sum, "sum of rows", 1e-5);
          },
        );

        it("a teacher equal to the student with alpha 1 gives loss 0 and gradient 0", {
          skip: missing("distillation", [b]),
        }, async () => {
          const d = lossOf(b, "distillation")!;
          const r = await d.valueAndGrad({ student, teacher: student, labels }, { alpha: 1 });
          assert.ok(Math.abs(r.loss as number) < 1e-6, `loss ${r.loss}`);
          assertGradClose(r.grads.student, new Float64Array(n * c), "grad");
        });
      });
    }
  });

  describe("edge cases", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing("distillation", [b]);

        it("all rows ignored: the CE part is 0, the KL part still counts", { skip }, async () => {
          const d = lossOf(b, "distillation")!;
          const rng = new Rng(71);
          const student = randomMatrix(rng, 3, 4, 1), teacher = randomMatrix(rng, 3, 4, 1);
          const labels = [-100, -100, -100];
          const e = distill(student, teacher, labels, 4, 0.9, "mean");
          const r = await d.valueAndGrad({ student, teacher, labels });
          assert.equal(r.ce, 0);
          assertLossClose(r.loss as number, e.loss, "loss");
          assertGradClose(r.grads.student, e.grad, "grad");
        });

        it("tiny temperatures (1e-4) and logits of 1e4 give finite values", { skip }, async () => {
          const d = lossOf(b, "distillation")!;
          const rng = new Rng(72);
          const inputs = {
            student: randomMatrix(rng, 4, 7, 1e4),
            teacher: randomMatrix(rng, 4, 7, 1e4),
            labels: randomLabels(rng, 4, 7),
          };
          for (const temperature of [1e-4, 1, 100]) {
            for (const reduction of ["mean", "none"]) {
              const r = await d.valueAndGrad(inputs, { temperature, reduction });
              assertFinite(r.loss as Any, `T ${temperature} ${reduction} loss`);
              assertFinite(r.grads.student.data, `T ${temperature} ${reduction} grad`);
            }
          }
        });
      });
    }
  });

  errorSuite(spec, [
    ...matrixErrors(small, "student", true, "student"),
    ...matrixErrors(small, "teacher", false, "student"),
    ...labelErrors(small),
    ...numberOptionErrors(small, "temperature", [0, -1, NaN, Infinity, "4"]),
    ...numberOptionErrors(small, "alpha", [-0.1, 1.5, NaN, "0.5"]),
    ...commonOptionErrors(small, "student"),
    ...commonOptionErrors(small, "teacher").filter((e) => e.name.startsWith("checkFinite: NaN")),
    ...upstreamErrors(small),
  ]);
});
