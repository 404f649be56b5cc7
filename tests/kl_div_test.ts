// klDiv (docs/LOSSES.md): torch.nn.functional.kl_div(logInput, target). Element loss
// t (log t - x) (0 where t = 0), or e^t (t - x) with logTarget; "batchmean" (default)
// divides the sum by N, "mean" by N*C, "none" gives one value per row (the row sum).
// The target gradient at t = 0 (logTarget false) is defined as 0 (torch: NaN).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { assertFinite, assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { backends, lossOf, missing } from "./helpers/backends.ts";
import { commonOptionErrors, matrixErrors, upstreamErrors } from "./helpers/errors.ts";
import { logSoftmaxOf, type Mat, randomMatrix, randomProbabilities, Rng } from "./helpers/random.ts";
import { klDivSpec as spec } from "./helpers/specs.ts";
import { agreementSuite, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const small = () => ({
  logInput: logSoftmaxOf(randomMatrix(new Rng(9), 3, 4, 1)),
  target: randomProbabilities(new Rng(10), 3, 4),
});

/** Positive values in [lo, hi) (not normalised: kl_div does not need it). */
function positive(rng: Rng, n: number, c: number, lo: number, hi: number): Mat {
  const data = new Float32Array(n * c);
  for (let i = 0; i < data.length; i++) data[i] = rng.uniform(lo, hi);
  return { data, shape: [n, c] };
}

/** The element losses' sum, in float64: the test's own reference. */
function klSum(x: Mat, t: Mat, logTarget: boolean): number {
  let s = 0;
  for (let i = 0; i < x.data.length; i++) {
    const xi = x.data[i], ti = t.data[i];
    s += logTarget ? Math.exp(ti) * (ti - xi) : ti === 0 ? 0 : ti * (Math.log(ti) - xi);
  }
  return s;
}

describe("klDiv", () => {
  existenceTest(spec);
  fixtureSuite(spec);

  fdSuite(spec, () => {
    const rng = new Rng(14);
    // d2/dt2 of t log t is 1/t: targets in [0.3, 1) and a step of 2^-9 keep the differences exact to ~1e-8.
    return [
      {
        name: "batchmean, positive target",
        inputs: { logInput: logSoftmaxOf(randomMatrix(rng, 3, 4, 1)), target: positive(rng, 3, 4, 0.3, 1) },
        h: 2 ** -9,
      },
      {
        name: "sum, arbitrary logInput, upstream -0.75",
        inputs: { logInput: randomMatrix(rng, 3, 5, 2), target: positive(rng, 3, 5, 0.3, 1) },
        options: { reduction: "sum" },
        upstream: -0.75,
        h: 2 ** -9,
      },
      {
        name: "mean, logTarget",
        inputs: {
          logInput: logSoftmaxOf(randomMatrix(rng, 4, 3, 1)),
          target: logSoftmaxOf(randomMatrix(rng, 4, 3, 1)),
        },
        options: { reduction: "mean", logTarget: true },
      },
      {
        name: "none, logTarget, upstream vector",
        inputs: { logInput: randomMatrix(rng, 3, 4, 1), target: randomMatrix(rng, 3, 4, 1) },
        options: { reduction: "none", logTarget: true },
        upstream: new Float32Array([0.5, -1.5, 2]),
        atol: 2e-5,
        h: 2 ** -4,
      },
      {
        name: "logInput only, target with zeros",
        inputs: { logInput: randomMatrix(rng, 3, 4, 1), target: randomProbabilities(rng, 3, 4, true) },
        wrt: ["logInput"],
      },
    ];
  });

  agreementSuite(spec);

  describe("identities", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing("klDiv", [b]);
        const rng = new Rng(51);
        const n = 6, c = 7;
        const target = randomProbabilities(rng, n, c, true);
        const logInput = logSoftmaxOf(randomMatrix(rng, n, c, 2));

        it("KL(p, p) = 0, for probabilities and for log-probabilities (logTarget)", { skip }, async () => {
          const kl = lossOf(b, "klDiv")!;
          const p = randomProbabilities(rng, n, c, false); // no zeros: log 0 would be a non-finite input
          const logp = { data: p.data.map((v) => Math.log(v)), shape: p.shape };
          // logInput = fround(log p): the loss is 0 up to that rounding (~1e-7 per element).
          for (const reduction of ["batchmean", "sum", "mean"]) {
            const r = await kl.forward({ logInput: logp, target: p }, { reduction });
            assert.ok(Math.abs(r.loss as number) < 1e-6, `${reduction}: ${r.loss}`);
          }
          const lt = await kl.forward({ logInput, target: logInput }, { logTarget: true, reduction: "none" });
          assert.ok((lt.loss as Float32Array).every((v) => Math.abs(v) < 1e-6), `logTarget: ${lt.loss}`);
          // Its logInput gradient is -t / N (batchmean), the target gradient 1/N where t > 0.
          const g = await kl.backward({ logInput: logp, target: p });
          assertGradClose(g.logInput, p.data.map((v) => -v / n), "logInput grad at p = t");
          assertGradClose(g.target, p.data.map(() => 1 / n), "target grad at p = t");
        });

        it(
          "batchmean = sum / N, mean = sum / (N C), none = row sums; values match the element formula",
          { skip },
          async () => {
            const kl = lossOf(b, "klDiv")!;
            for (const logTarget of [false, true]) {
              const t = logTarget ? logSoftmaxOf(randomMatrix(rng, n, c, 1)) : target;
              const sum = klSum(logInput, t, logTarget);
              const r = async (reduction?: string) =>
                (await kl.forward({ logInput, target: t }, reduction ? { reduction, logTarget } : { logTarget })).loss;
              assertLossClose(await r("sum") as number, sum, `logTarget ${logTarget} sum`);
              assertLossClose(await r() as number, sum / n, `logTarget ${logTarget} default (batchmean)`);
              assertLossClose(await r("batchmean") as number, sum / n, `logTarget ${logTarget} batchmean`);
              assertLossClose(await r("mean") as number, sum / (n * c), `logTarget ${logTarget} mean`);
              const rows = await r("none") as Float32Array;
              assert.ok(rows instanceof Float32Array && rows.length === n, "none: one value per row");
              assertLossClose(rows.reduce((a, v) => a + v, 0), sum, `logTarget ${logTarget} sum of rows`, 1e-5);
            }
          },
        );

        it("logTarget with log t is the same as t", { skip }, async () => {
          const kl = lossOf(b, "klDiv")!;
          const t = randomProbabilities(rng, n, c, false);
          const logT = { data: t.data.map((v) => Math.log(v)), shape: t.shape };
          const a = await kl.valueAndGrad({ logInput, target: t });
          const l = await kl.valueAndGrad({ logInput, target: logT }, { logTarget: true });
          // exp(fround(log t)) differs from t by ~1e-7 relative.
          assertLossClose(l.loss as number, a.loss as number, "loss", 2e-5);
          assertGradClose(l.grads.logInput, a.grads.logInput.data, "logInput grad", 1e-5);
        });

        it("the target gradient at t = 0 is 0 (logTarget false), and finite everywhere", { skip }, async () => {
          const kl = lossOf(b, "klDiv")!;
          for (const reduction of ["batchmean", "sum", "mean", "none"]) {
            const r = await kl.valueAndGrad({ logInput, target }, { reduction });
            assertFinite(r.grads.target.data, `${reduction} target grad`);
            for (let i = 0; i < target.data.length; i++) {
              if (target.data[i] === 0) assert.equal(r.grads.target.data[i], 0, `${reduction} target grad at ${i}`);
            }
          }
        });
      });
    }
  });

  describe("edge cases", () => {
    for (const b of backends) {
      describe(b.name, () => {
        it("log-probabilities of -1e4 and -2e4 give finite values", { skip: missing("klDiv", [b]) }, async () => {
          const kl = lossOf(b, "klDiv")!;
          const logInput = logSoftmaxOf(randomMatrix(new Rng(3), 4, 5, 1e4));
          const target = randomProbabilities(new Rng(4), 4, 5, true);
          for (const logTarget of [false, true]) {
            const t = logTarget
              ? {
                data: new Float32Array([-1e4, 0, -1e4, -1e4, -1e4, ...randomMatrix(new Rng(5), 3, 5, 1).data]),
                shape: [4, 5],
              }
              : target;
            const r = await kl.valueAndGrad({ logInput, target: t }, { logTarget });
            assertFinite(r.loss as number, "loss");
            assertFinite(r.grads.logInput.data, "logInput grad");
            assertFinite(r.grads.target.data, "target grad");
          }
        });
      });
    }
  });

  errorSuite(spec, [
    ...matrixErrors(small, "logInput", true, "logInput"),
    ...matrixErrors(small, "target", false, "logInput"),
    ...commonOptionErrors(small, "logInput"),
    ...commonOptionErrors(small, "target").filter((e) => e.name.startsWith("checkFinite: NaN")),
    {
      name: "logTarget not a boolean",
      inputs: small,
      options: { logTarget: "yes" },
      type: TypeError,
      includes: ["options.logTarget", '"yes"'],
    },
    ...upstreamErrors(small),
  ]);
});
