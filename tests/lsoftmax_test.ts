// lsoftmax (docs/LOSSES.md; L-Softmax): logits x W^T (no normalisation), the label's
// (||W_y|| ||x|| psi(theta_y) + beta z_y) / (1 + beta) with psi = (-1)^k cos(m theta) - 2k,
// k = floor(m theta / pi) (no gradient through k); gradients w.r.t. x and W. And lSoftmaxBeta,
// its annealing schedule (a pure function of the step).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as cpu from "../cpu.ts";
import * as mod from "../mod.ts";
import {
  assertFinite,
  assertGradClose,
  assertLossClose,
  assertThrowsNamed,
  assertUnchanged,
  snapshot,
} from "./helpers/assert.ts";
import { type AnyLoss, backends, lossOf, missing, reference } from "./helpers/backends.ts";
import { commonOptionErrors, labelErrors, matrixErrors, numberOptionErrors, upstreamErrors } from "./helpers/errors.ts";
import { type Mat, randomLabels, randomMatrix, randomVector, Rng } from "./helpers/random.ts";
import { alignedRows, GRID, HEAD_GRID, lsoftmaxSpec as spec, randomClassRows, withWidth } from "./helpers/specs.ts";
import { checkAgreement, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/** A fresh problem for the error cases: x [3, 4], W [4, 4] (C = 4), labels of 3 rows. */
const small = () => ({ x: randomMatrix(new Rng(8), 3, 4, 1), W: randomMatrix(new Rng(9), 4, 4, 1), labels: [0, 3, 1] });

/** A label cosine in (-0.95, 0.95) at least 0.1 away from every k boundary cos(j pi / m). */
function labelCos(rng: Rng, m: number): number {
  for (;;) {
    const t = rng.uniform(-0.95, 0.95);
    let ok = true;
    for (let j = 0; j <= m; j++) if (Math.abs(t - Math.cos((j * Math.PI) / m)) < 0.1) ok = false;
    if (ok) return t;
  }
}

/** x [n, d] at label cosines away from the k boundaries of m, norms in [lo, hi]; W random. */
function headProblem(rng: Rng, n: number, d: number, c: number, m: number, ignore = 0, lo = 0.5, hi = 2) {
  const W = randomClassRows(rng, c, d);
  const labels = randomLabels(rng, n, c, ignore);
  const x = alignedRows(
    rng,
    W,
    labels,
    Array.from({ length: n }, () => labelCos(rng, m)),
    randomVector(rng, n, lo, hi),
  );
  return { x, W, labels };
}

/** psi(theta) = (-1)^k cos(m theta) - 2k, k = floor(m theta / pi), written from docs/LOSSES.md (cos(m theta) directly). */
function psiOf(m: number, c: number): number {
  const theta = Math.acos(Math.max(-1, Math.min(1, c)));
  const k = Math.floor((m * theta) / Math.PI);
  return (k % 2 === 0 ? 1 : -1) * Math.cos(m * theta) - 2 * k;
}

const rowNorms = (m: Mat) =>
  Float64Array.from({ length: m.shape[0] }, (_, i) => {
    let s = 0;
    for (let k = 0; k < m.shape[1]; k++) s += m.data[i * m.shape[1] + k] ** 2;
    return Math.sqrt(s);
  });

/**
 * crossEntropy on `ce` of the logits z = x W^T computed here in float64 (rounded to float32
 * once), the label's replaced by `target(z_y, ||x||, ||W_y||)` when given.
 */
async function viaCrossEntropy(
  ce: AnyLoss,
  inputs: { x: Mat; W: Mat; labels: ArrayLike<number> },
  options: Record<string, Any>,
  target?: (zy: number, nx: number, nw: number) => number,
) {
  const [n, d] = inputs.x.shape, c = inputs.W.shape[0];
  const nx = rowNorms(inputs.x), nw = rowNorms(inputs.W);
  const logits = new Float32Array(n * c);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < c; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += inputs.x.data[i * d + k] * inputs.W.data[j * d + k];
      logits[i * c + j] = s;
    }
    const y = inputs.labels[i];
    if (target && y >= 0) logits[i * c + y] = target(logits[i * c + y], nx[i], nw[y]);
  }
  return await ce.valueAndGrad({ logits: { data: logits, shape: [n, c] }, labels: inputs.labels }, options);
}

describe("lsoftmax", () => {
  existenceTest(spec);
  fixtureSuite(spec);

  fdSuite(spec, () => {
    const rng = new Rng(19);
    return [
      { name: "defaults (m 4, beta 0), mean, N 4, D 5, C 6", inputs: headProblem(rng, 4, 5, 6, 4) },
      {
        name: "m 1, beta 0, sum, upstream 2.5",
        inputs: headProblem(rng, 4, 4, 5, 1),
        options: { m: 1, beta: 0, reduction: "sum" },
        upstream: 2.5,
      },
      {
        name: "m 2, beta 1, ignored rows",
        inputs: headProblem(rng, 6, 5, 4, 2, 0.3),
        options: { m: 2, beta: 1 },
      },
      {
        name: "m 3, beta 5, ignoreIndex 1",
        inputs: { ...headProblem(rng, 4, 5, 3, 3), labels: [1, 0, 2, 1] },
        options: { m: 3, beta: 5, ignoreIndex: 1 },
      },
      {
        name: "m 5, beta 0, none, upstream vector",
        inputs: headProblem(rng, 3, 6, 4, 5),
        options: { m: 5, reduction: "none" },
        upstream: new Float32Array([0.5, -1.5, 2]),
        atol: 2e-5,
        h: 2 ** -5,
      },
      { name: "m 4, beta 100", inputs: headProblem(rng, 4, 5, 5, 4), options: { m: 4, beta: 100 } },
      {
        name: "m 4, norms of x in [2, 4] (logits of order 5), h 2^-8",
        inputs: headProblem(rng, 3, 5, 4, 4, 0, 2, 4),
        h: 2 ** -8,
      },
      { name: "C = 1 (zero gradient)", inputs: headProblem(rng, 3, 5, 1, 4), options: { m: 3 } },
    ];
  });

  describe("agrees with the float64 reference on random shapes", () => {
    for (const b of backends) {
      if (b === reference) continue;
      describe(b.name, () => {
        const skip = missing(spec.name, [reference, b]);
        for (const d of spec.widths) {
          for (const c of HEAD_GRID.classes) {
            it(`D = ${d}, C = ${c}, N in ${GRID.rows.join("/")}, x norms up to ${GRID.scales.join("/")} (capped)`, {
              skip,
            }, async () => {
              await checkAgreement(withWidth(spec, d), b, c);
            });
          }
        }
      });
    }
  });

  describe("identities", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing(["lsoftmax", "crossEntropy"], [b]);
        const rng = new Rng(47);
        const n = 9, d = 8, c = 13;

        it("m 1, beta 0 is crossEntropy on x W^T; grads.x = G W, grads.W = G^T x", { skip }, async () => {
          const ls = lossOf(b, "lsoftmax")!, ce = lossOf(b, "crossEntropy")!;
          const inputs = headProblem(rng, n, d, c, 1, 0.2);
          for (const o of [{}, { reduction: "sum" }, { reduction: "none" }] as Record<string, Any>[]) {
            const e = await viaCrossEntropy(ce, inputs, o);
            const r = await ls.valueAndGrad(inputs, { ...o, m: 1, beta: 0 });
            const G = e.grads.logits.data as Float32Array;
            const dx = new Float64Array(n * d), dW = new Float64Array(c * d);
            for (let i = 0; i < n; i++) {
              for (let j = 0; j < c; j++) {
                for (let k = 0; k < d; k++) {
                  dx[i * d + k] += G[i * c + j] * inputs.W.data[j * d + k];
                  dW[j * d + k] += G[i * c + j] * inputs.x.data[i * d + k];
                }
              }
            }
            assertLossClose(r.loss as Any, e.loss as Any, `${JSON.stringify(o)} loss`);
            assertGradClose(r.grads.x, dx, `${JSON.stringify(o)} grads.x`);
            assertGradClose(r.grads.W, dW, `${JSON.stringify(o)} grads.W`);
          }
        });

        it("each row's loss is crossEntropy with the label's logit (||W_y|| ||x|| psi + beta z_y) / (1 + beta)", {
          skip,
        }, async () => {
          const ls = lossOf(b, "lsoftmax")!, ce = lossOf(b, "crossEntropy")!;
          for (const m of [1, 2, 3, 4, 5]) {
            // Any label cosine: psi is continuous, so the k chosen at a boundary does not matter.
            const W = randomClassRows(rng, c, d);
            const labels = randomLabels(rng, n, c, 0.2);
            const x = alignedRows(rng, W, labels, randomVector(rng, n, -1, 1), randomVector(rng, n, 0.2, 4));
            for (const beta of [0, 1, 5, 100]) {
              const target = (zy: number, nx: number, nw: number) =>
                (nw * nx * psiOf(m, zy / Math.max(nx * nw, 1e-12)) + beta * zy) / (1 + beta);
              const e = await viaCrossEntropy(ce, { x, W, labels }, { reduction: "none" }, target);
              const r = await ls.forward({ x, W, labels }, { m, beta, reduction: "none" });
              assertLossClose(r.loss as Any, e.loss as Any, `m ${m} beta ${beta}`);
            }
          }
        });

        it("the label's logit decreases with theta (psi is monotone), so the loss increases", { skip }, async () => {
          const ls = lossOf(b, "lsoftmax")!;
          // W_0 = 1.5 e_0 is the label; W_1 = e_2 is orthogonal to the plane x turns in (its logit stays 0).
          const W = { data: new Float32Array([1.5, 0, 0, 0, 0, 1]), shape: [2, 3] as [number, number] };
          for (const m of [1, 2, 3, 4, 5]) {
            for (const beta of [0, 5]) {
              let last = -Infinity;
              for (let a = 1; a < 200; a++) {
                const angle = (a * Math.PI) / 200;
                const x = { data: new Float32Array([2 * Math.cos(angle), 2 * Math.sin(angle), 0]), shape: [1, 3] };
                const l = (await ls.forward({ x, W, labels: [0] }, { m, beta, reduction: "sum" })).loss as number;
                assert.ok(l >= last - 1e-12 * Math.abs(last), `m ${m} beta ${beta} theta ${angle}: ${l} < ${last}`);
                last = l;
              }
            }
          }
        });

        it("x * 2 and W / 2 give the same logits: the same loss, grads.x halved and grads.W doubled", {
          skip,
        }, async () => {
          const ls = lossOf(b, "lsoftmax")!;
          const inputs = headProblem(rng, n, d, c, 4, 0.2);
          const scaled = {
            x: { data: inputs.x.data.map((v) => 2 * v), shape: inputs.x.shape },
            W: { data: inputs.W.data.map((v) => v / 2), shape: inputs.W.shape },
            labels: inputs.labels,
          };
          for (const o of [{}, { m: 3, beta: 5, reduction: "none" }]) {
            const a = await ls.valueAndGrad(inputs, o);
            const s = await ls.valueAndGrad(scaled, o);
            assertLossClose(s.loss as Any, a.loss as Any, `${JSON.stringify(o)} loss`, 1e-6);
            assertGradClose(s.grads.x, a.grads.x.data.map((v: number) => v / 2), `${JSON.stringify(o)} grads.x`, 1e-6);
            assertGradClose(s.grads.W, a.grads.W.data.map((v: number) => v * 2), `${JSON.stringify(o)} grads.W`, 1e-6);
          }
        });

        it("a very large beta approaches m 1 (the plain softmax of x W^T)", { skip }, async () => {
          const ls = lossOf(b, "lsoftmax")!;
          const inputs = headProblem(rng, n, d, c, 4, 0.2);
          const one = await ls.valueAndGrad(inputs, { m: 1 });
          const big = await ls.valueAndGrad(inputs, { m: 4, beta: 1e8 });
          assertLossClose(big.loss as Any, one.loss as Any, "loss");
          assertGradClose(big.grads.x, one.grads.x.data, "grads.x");
          assertGradClose(big.grads.W, one.grads.W.data, "grads.W");
        });

        it("the defaults are m 4, beta 0, mean", { skip }, async () => {
          const ls = lossOf(b, "lsoftmax")!;
          const inputs = headProblem(rng, n, d, c, 4, 0.2);
          const a = await ls.valueAndGrad(inputs);
          const e = await ls.valueAndGrad(inputs, { m: 4, beta: 0, reduction: "mean", ignoreIndex: -100 });
          assert.equal(a.loss, e.loss);
          assert.deepEqual(a.grads.x.data, e.grads.x.data);
          assert.deepEqual(a.grads.W.data, e.grads.W.data);
        });
      });
    }
  });

  describe("edge cases", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing("lsoftmax", [b]);

        it("an all-ignored batch has loss 0 and zero gradients", { skip }, async () => {
          const ls = lossOf(b, "lsoftmax")!;
          const rng = new Rng(2);
          const inputs = { x: randomMatrix(rng, 3, 5, 2), W: randomMatrix(rng, 4, 5, 1), labels: [-100, -100, -100] };
          for (const o of [{}, { m: 1 }, { beta: 5, reduction: "sum" }, { m: 2, reduction: "none" }]) {
            const r = await ls.valueAndGrad(inputs, o);
            if (typeof r.loss === "number") assert.equal(r.loss, 0);
            else assert.deepEqual([...r.loss as Float32Array], [0, 0, 0]);
            assert.ok(r.grads.x.data.every((v: number) => v === 0), `x ${JSON.stringify(o)}`);
            assert.ok(r.grads.W.data.every((v: number) => v === 0), `W ${JSON.stringify(o)}`);
          }
        });

        it(
          "label cosines of exactly +-1 (D = 1), at the k boundaries, zero rows and norms of 30..60: finite, as the reference",
          { skip },
          async () => {
            const ls = lossOf(b, "lsoftmax")!, ref = lossOf(reference, "lsoftmax")!;
            const rng = new Rng(3);
            const d1 = { x: randomMatrix(rng, 6, 1, 2), W: randomMatrix(rng, 5, 1, 1), labels: [0, 1, 2, 3, 4, 0] };
            // D = 2, W_0 = e_0: x at theta = j pi / m for m = 2..5 (float32-rounded), the k boundaries.
            const angles = [
              Math.PI / 2,
              Math.PI / 3,
              (2 * Math.PI) / 3,
              Math.PI / 4,
              (3 * Math.PI) / 4,
              Math.PI / 5,
              Math.PI,
            ];
            const boundary = {
              x: {
                data: new Float32Array(angles.flatMap((t) => [1.5 * Math.cos(t), 1.5 * Math.sin(t)])),
                shape: [7, 2],
              },
              W: { data: new Float32Array([1, 0, 0.3, -0.8, -0.5, 0.5]), shape: [3, 2] },
              labels: [0, 0, 0, 0, 0, 0, 0],
            };
            const zero = headProblem(rng, 4, 6, 5, 4);
            zero.x.data.fill(0, 6, 12); // a labelled zero row
            zero.W.data.fill(0, zero.labels[2] * 6, zero.labels[2] * 6 + 6); // another row's class
            const large = headProblem(rng, 5, 8, 7, 4, 0, 30, 60);
            for (
              const [what, inputs] of [["D 1", d1], ["boundaries", boundary], ["zero rows", zero], ["large", large]]
            ) {
              for (const o of [{}, { m: 1 }, { m: 2, beta: 0.5, reduction: "none" }, { m: 3 }, { m: 5, beta: 100 }]) {
                const r = await ls.valueAndGrad(inputs, o);
                const e = await ref.valueAndGrad(inputs, o);
                const label = `${what} ${JSON.stringify(o)}`;
                assertFinite(r.loss as Any, `${label} loss`);
                assertFinite(r.grads.x.data, `${label} grads.x`, r.grads.x.shape);
                assertFinite(r.grads.W.data, `${label} grads.W`, r.grads.W.shape);
                assertLossClose(r.loss as Any, e.loss as Any, `${label} loss`);
                assertGradClose(r.grads.x, e.grads.x.data, `${label} grads.x`);
                assertGradClose(r.grads.W, e.grads.W.data, `${label} grads.W`);
              }
            }
          },
        );
      });
    }
  });

  describe("large logits agree with the float64 reference", () => {
    for (const b of backends) {
      if (b === reference) continue;
      describe(b.name, () => {
        it("logits up to ~1e4: finite, and within SPEC's bound of the reference", {
          skip: missing("lsoftmax", [reference, b]),
        }, async () => {
          // Logits this large are summed in float64 and held relative to each row's maximum, with
          // the column scale 1/||W_j|| in float64 too (rounded to float32 it moved a logit of 5000 by
          // 3e-4 and the gradients up to 4x past SPEC's bound).
          const ls = lossOf(b, "lsoftmax")!, ref = lossOf(reference, "lsoftmax")!;
          const rng = new Rng(10000);
          for (const [n, d, c] of [[9, 3, 300], [5, 16, 37], [2, 8, 300]]) {
            const W = randomClassRows(rng, c, d);
            const labels = randomLabels(rng, n, c, 0.2);
            const x = alignedRows(rng, W, labels, randomVector(rng, n, -1, 1), randomVector(rng, n, 100, 5e3));
            for (const o of [{}, { m: 1 }, { m: 3, beta: 5, reduction: "none" }, { m: 2, beta: 100 }]) {
              const r = await ls.valueAndGrad({ x, W, labels }, o);
              const e = await ref.valueAndGrad({ x, W, labels }, o);
              const label = `D ${d} C ${c} ${JSON.stringify(o)}`;
              assertFinite(r.grads.x.data, `${label} grads.x`, r.grads.x.shape);
              assertFinite(r.grads.W.data, `${label} grads.W`, r.grads.W.shape);
              assertLossClose(r.loss as Any, e.loss as Any, `${label} loss`);
              assertGradClose(r.grads.x, e.grads.x.data, `${label} grads.x`);
              assertGradClose(r.grads.W, e.grads.W.data, `${label} grads.W`);
            }
          }
        });
      });
    }
  });

  errorSuite(spec, [
    // "C = 0" of matrixErrors empties D here; both are below, named for what they are.
    ...matrixErrors(small, "x", true, "x").filter((e) => e.name !== "C = 0"),
    ...matrixErrors(small, "W", false, "x").slice(0, 6),
    {
      name: "W of another width D than x",
      inputs: () => ({ ...small(), W: { data: new Float32Array(24), shape: [4, 6] } }),
      type: RangeError,
      includes: ["W.shape[1]", "6"],
    },
    {
      name: "W with no rows (C = 0)",
      inputs: () => ({ ...small(), W: { data: new Float32Array(0), shape: [0, 4] } }),
      type: RangeError,
      includes: [/(^|[^\w.])W($|[^\w])/, "0"],
    },
    {
      name: "D = 0",
      inputs: () => ({
        x: { data: new Float32Array(0), shape: [3, 0] },
        W: { data: new Float32Array(0), shape: [4, 0] },
        labels: [0, 3, 1],
      }),
      type: RangeError,
      includes: [/(^|[^\w.])x($|[^\w])/, "0"],
    },
    ...labelErrors(small),
    ...numberOptionErrors(small, "m", [0, 2.5, -3, NaN, -Infinity, "4"], true),
    ...numberOptionErrors(small, "beta", [-1, -1e-9, NaN, Infinity, "0"]),
    ...commonOptionErrors(small, "x"),
    {
      name: "checkFinite: NaN in W",
      inputs: () => {
        const p = small();
        p.W.data[6] = NaN; // [1, 2]
        return p;
      },
      options: { checkFinite: true },
      type: RangeError,
      includes: [/(^|[^\w.])W($|[^\w])/, "[1, 2]", "NaN"],
    },
    ...upstreamErrors(small),
  ]);

  describe("inputs", () => {
    it("inputs and options are unchanged by every call on every backend", async () => {
      for (const b of backends) {
        const ls = lossOf(b, "lsoftmax");
        if (!ls) continue;
        const rng = new Rng(4);
        const inputs = { x: randomMatrix(rng, 3, 5, 1), W: randomMatrix(rng, 130, 5, 1), labels: [129, -100, 0] };
        for (const options of [{ m: 3, beta: 2 }, { reduction: "none" }]) {
          const up = options.reduction === "none" ? randomVector(rng, 3, -1, 1) : 3;
          const snap = snapshot({ inputs, options, up });
          await ls.forward(inputs, options);
          await ls.backward(inputs, options, up);
          await ls.valueAndGrad(inputs, options);
          assertUnchanged(snap, { inputs, options, up }, `${b.name}: `);
        }
      }
    });
  });
});

describe("lSoftmaxBeta", () => {
  const formula = (step: number, o: { start?: number; decay?: number; min?: number } = {}) => {
    const { start = 100, decay = 0.99, min = 0 } = o;
    return Math.max(min, start * decay ** step);
  };
  const close = (a: number, e: number, label: string) =>
    assert.ok(Math.abs(a - e) <= 1e-12 * Math.abs(e), `${label}: got ${a}, expected ${e}`);

  it("mod.ts and cpu.ts export the same function", () => {
    assert.equal(typeof mod.lSoftmaxBeta, "function");
    assert.equal(mod.lSoftmaxBeta, cpu.lSoftmaxBeta);
  });

  it("is max(min, start decay^step), defaults start 100, decay 0.99, min 0", () => {
    for (const step of [0, 1, 2.5, 10, 100, 1000, 1e4, 1e5]) {
      close(mod.lSoftmaxBeta(step), formula(step), `step ${step}`);
      close(mod.lSoftmaxBeta(step, {}), formula(step), `step ${step}, {}`);
    }
    assert.equal(mod.lSoftmaxBeta(0), 100);
    close(mod.lSoftmaxBeta(100), 100 * 0.99 ** 100, "step 100 (36.60...)");
    assert.ok(Math.abs(mod.lSoftmaxBeta(100) - 36.6032) < 1e-4, `step 100: ${mod.lSoftmaxBeta(100)}`);
    for (
      const o of [
        { start: 10, decay: 0.5, min: 0.01 },
        { decay: 1 },
        { min: 50 },
        { start: 1000, decay: 0.9 },
        { decay: 0 },
      ]
    ) {
      for (const step of [0, 3, 50, 777]) {
        close(mod.lSoftmaxBeta(step, o), formula(step, o), `${JSON.stringify(o)} ${step}`);
      }
    }
    assert.equal(mod.lSoftmaxBeta(1e6, { min: 2 }), 2, "the floor");
  });

  it("is a pure function: the same value on every call, its options unchanged", () => {
    const o = { start: 50, decay: 0.95, min: 1 };
    const snap = snapshot(o);
    const first = [0, 10, 20].map((s) => mod.lSoftmaxBeta(s, o));
    const again = [0, 10, 20].map((s) => cpu.lSoftmaxBeta(s, o));
    assert.deepEqual(again, first);
    assertUnchanged(snap, o, "options");
  });

  it("rejects a negative or non-finite step and non-finite options, naming the argument", async () => {
    for (const step of [-1, -0.5, NaN, Infinity]) {
      await assertThrowsNamed(() => mod.lSoftmaxBeta(step), RangeError, /(^|[^\w.])step($|[^\w])/, String(step));
    }
    await assertThrowsNamed(() => mod.lSoftmaxBeta(null as Any), TypeError, "step", "null");
    for (const [k, v] of [["start", NaN], ["decay", Infinity], ["decay", -0.5], ["min", NaN]] as const) {
      await assertThrowsNamed(() => mod.lSoftmaxBeta(1, { [k]: v }), RangeError, `options.${k}`, String(v));
    }
    await assertThrowsNamed(() => mod.lSoftmaxBeta(1, { start: "100" as Any }), TypeError, "options.start", '"100"');
    await assertThrowsNamed(() => mod.lSoftmaxBeta(undefined as Any), TypeError, "step", "undefined");
    await assertThrowsNamed(() => mod.lSoftmaxBeta(1, { floor: 5 } as Any), TypeError, "options", '"floor"');
  });
});
