// sphereface (docs/LOSSES.md; A-Softmax): rows of W normalised, x not; logits ||x|| cos_j, the
// label's ||x|| (lambda cos + psi(theta)) / (1 + lambda) with psi = (-1)^k cos(m theta) - 2k,
// k = floor(m theta / pi) (no gradient through k), cos(m theta) = T_m(cos); gradients w.r.t.
// x and W. And sphereFaceLambda, its annealing schedule (a pure function of the step).
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
import { alignedRows, GRID, HEAD_GRID, randomClassRows, spherefaceSpec as spec, withWidth } from "./helpers/specs.ts";
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

/** Norms and unit rows of W (float64). */
function unitRows(W: Mat): { u: Float64Array; norms: Float64Array } {
  const [c, d] = W.shape;
  const u = new Float64Array(c * d), norms = new Float64Array(c);
  for (let j = 0; j < c; j++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += W.data[j * d + k] ** 2;
    norms[j] = Math.sqrt(s);
    for (let k = 0; k < d; k++) u[j * d + k] = W.data[j * d + k] / Math.max(norms[j], 1e-12);
  }
  return { u, norms };
}

/**
 * crossEntropy on `ce` of the logits z = x normalize(W)^T computed here in float64 (rounded to
 * float32 once), the label's replaced by `target(z_y, ||x||)` when given.
 */
async function viaCrossEntropy(
  ce: AnyLoss,
  inputs: { x: Mat; W: Mat; labels: ArrayLike<number> },
  options: Record<string, Any>,
  target?: (zy: number, nx: number) => number,
) {
  const [n, d] = inputs.x.shape, c = inputs.W.shape[0];
  const wn = unitRows(inputs.W).u;
  const logits = new Float32Array(n * c);
  for (let i = 0; i < n; i++) {
    let nx = 0;
    for (let k = 0; k < d; k++) nx += inputs.x.data[i * d + k] ** 2;
    for (let j = 0; j < c; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += inputs.x.data[i * d + k] * wn[j * d + k];
      logits[i * c + j] = s;
    }
    const y = inputs.labels[i];
    if (target && y >= 0) logits[i * c + y] = target(logits[i * c + y], Math.sqrt(nx));
  }
  return await ce.valueAndGrad({ logits: { data: logits, shape: [n, c] }, labels: inputs.labels }, options);
}

describe("sphereface", () => {
  existenceTest(spec);
  fixtureSuite(spec);

  fdSuite(spec, () => {
    const rng = new Rng(18);
    return [
      { name: "defaults (m 4, lambda 0), mean, N 4, D 5, C 6", inputs: headProblem(rng, 4, 5, 6, 4) },
      {
        name: "m 1, lambda 0, sum, upstream 2.5",
        inputs: headProblem(rng, 4, 4, 5, 1),
        options: { m: 1, lambda: 0, reduction: "sum" },
        upstream: 2.5,
      },
      {
        name: "m 2, lambda 0.5, ignored rows",
        inputs: headProblem(rng, 6, 5, 4, 2, 0.3),
        options: { m: 2, lambda: 0.5 },
      },
      {
        name: "m 3, lambda 5, ignoreIndex 1",
        inputs: { ...headProblem(rng, 4, 5, 3, 3), labels: [1, 0, 2, 1] },
        options: { m: 3, lambda: 5, ignoreIndex: 1 },
      },
      {
        name: "m 5, lambda 0, none, upstream vector",
        inputs: headProblem(rng, 3, 6, 4, 5),
        options: { m: 5, reduction: "none" },
        upstream: new Float32Array([0.5, -1.5, 2]),
        atol: 2e-5,
        h: 2 ** -5,
      },
      { name: "m 4, lambda 1000", inputs: headProblem(rng, 4, 5, 5, 4), options: { m: 4, lambda: 1000 } },
      {
        name: "m 4, norms in [3, 6] (logits of order 5), h 2^-8",
        inputs: headProblem(rng, 3, 5, 4, 4, 0, 3, 6),
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
        const skip = missing(["sphereface", "crossEntropy"], [b]);
        const rng = new Rng(46);
        const n = 9, d = 8, c = 13;

        it("m 1, lambda 0 is crossEntropy on x normalize(W)^T; gradients by the chain rule", { skip }, async () => {
          const sf = lossOf(b, "sphereface")!, ce = lossOf(b, "crossEntropy")!;
          const inputs = headProblem(rng, n, d, c, 1, 0.2);
          const { u: wn, norms } = unitRows(inputs.W);
          for (const o of [{}, { reduction: "sum" }, { reduction: "none" }] as Record<string, Any>[]) {
            const e = await viaCrossEntropy(ce, inputs, o);
            const r = await sf.valueAndGrad(inputs, { ...o, m: 1, lambda: 0 });
            // z = x W^T: dx = G W^, dW_j = (t_j - (t_j . W^_j) W^_j) / ||W_j|| with t = G^T x.
            const G = e.grads.logits.data as Float32Array;
            const dx = new Float64Array(n * d), t = new Float64Array(c * d);
            for (let i = 0; i < n; i++) {
              for (let j = 0; j < c; j++) {
                for (let k = 0; k < d; k++) {
                  dx[i * d + k] += G[i * c + j] * wn[j * d + k];
                  t[j * d + k] += G[i * c + j] * inputs.x.data[i * d + k];
                }
              }
            }
            for (let j = 0; j < c; j++) {
              let dot = 0;
              for (let k = 0; k < d; k++) dot += t[j * d + k] * wn[j * d + k];
              for (let k = 0; k < d; k++) t[j * d + k] = (t[j * d + k] - dot * wn[j * d + k]) / norms[j];
            }
            assertLossClose(r.loss as Any, e.loss as Any, `${JSON.stringify(o)} loss`);
            assertGradClose(r.grads.x, dx, `${JSON.stringify(o)} grads.x`);
            assertGradClose(r.grads.W, t, `${JSON.stringify(o)} grads.W`);
          }
        });

        it("each row's loss is crossEntropy with the label's logit ||x|| (lambda cos + psi) / (1 + lambda)", {
          skip,
        }, async () => {
          const sf = lossOf(b, "sphereface")!, ce = lossOf(b, "crossEntropy")!;
          for (const m of [1, 2, 3, 4, 5]) {
            // Any label cosine: psi is continuous, so the k chosen at a boundary does not matter.
            const W = randomClassRows(rng, c, d);
            const labels = randomLabels(rng, n, c, 0.2);
            const x = alignedRows(rng, W, labels, randomVector(rng, n, -1, 1), randomVector(rng, n, 0.2, 4));
            for (const lambda of [0, 0.5, 5, 1000]) {
              const target = (zy: number, nx: number) => {
                const cos = zy / Math.max(nx, 1e-12);
                return (nx * (lambda * cos + psiOf(m, cos))) / (1 + lambda);
              };
              const e = await viaCrossEntropy(ce, { x, W, labels }, { reduction: "none" }, target);
              const r = await sf.forward({ x, W, labels }, { m, lambda, reduction: "none" });
              assertLossClose(r.loss as Any, e.loss as Any, `m ${m} lambda ${lambda}`);
            }
          }
        });

        it("the label's logit decreases with theta (psi is monotone), so the loss increases", { skip }, async () => {
          const sf = lossOf(b, "sphereface")!;
          // W_0 = e_0 is the label; W_1 = e_2 is orthogonal to the plane x turns in (its logit stays 0).
          const W = { data: new Float32Array([1, 0, 0, 0, 0, 1]), shape: [2, 3] as [number, number] };
          for (const m of [1, 2, 3, 4, 5]) {
            for (const lambda of [0, 5]) {
              let last = -Infinity;
              for (let a = 1; a < 200; a++) {
                const angle = (a * Math.PI) / 200;
                const x = { data: new Float32Array([2 * Math.cos(angle), 2 * Math.sin(angle), 0]), shape: [1, 3] };
                const l = (await sf.forward({ x, W, labels: [0] }, { m, lambda, reduction: "sum" })).loss as number;
                assert.ok(l >= last - 1e-12 * Math.abs(last), `m ${m} lambda ${lambda} theta ${angle}: ${l} < ${last}`);
                last = l;
              }
            }
          }
        });

        it("rows of W scaled by powers of 2: the same loss and grads.x, grads.W divided by the factor", {
          skip,
        }, async () => {
          const sf = lossOf(b, "sphereface")!;
          const inputs = headProblem(rng, n, d, c, 4, 0.2);
          const f = Array.from({ length: c }, (_, j) => 2 ** ((j % 5) - 2));
          const W = { data: inputs.W.data.map((v, i) => v * f[Math.floor(i / d)]), shape: inputs.W.shape };
          for (const o of [{}, { m: 3, lambda: 5, reduction: "none" }]) {
            const a = await sf.valueAndGrad(inputs, o);
            const s = await sf.valueAndGrad({ ...inputs, W }, o);
            assertLossClose(s.loss as Any, a.loss as Any, `${JSON.stringify(o)} loss`, 1e-6);
            assertGradClose(s.grads.x, a.grads.x.data, `${JSON.stringify(o)} grads.x`, 1e-5);
            const gw = a.grads.W.data.map((v: number, i: number) => v / f[Math.floor(i / d)]);
            assertGradClose(s.grads.W, gw, `${JSON.stringify(o)} grads.W`, 1e-5);
          }
        });

        it("a very large lambda approaches m 1 (the plain normalised-weight softmax)", { skip }, async () => {
          const sf = lossOf(b, "sphereface")!;
          const inputs = headProblem(rng, n, d, c, 4, 0.2);
          const one = await sf.valueAndGrad(inputs, { m: 1 });
          const big = await sf.valueAndGrad(inputs, { m: 4, lambda: 1e8 });
          assertLossClose(big.loss as Any, one.loss as Any, "loss");
          assertGradClose(big.grads.x, one.grads.x.data, "grads.x");
          assertGradClose(big.grads.W, one.grads.W.data, "grads.W");
        });

        it("the defaults are m 4, lambda 0, mean", { skip }, async () => {
          const sf = lossOf(b, "sphereface")!;
          const inputs = headProblem(rng, n, d, c, 4, 0.2);
          const a = await sf.valueAndGrad(inputs);
          const e = await sf.valueAndGrad(inputs, { m: 4, lambda: 0, reduction: "mean", ignoreIndex: -100 });
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
        const skip = missing("sphereface", [b]);

        it("an all-ignored batch has loss 0 and zero gradients", { skip }, async () => {
          const sf = lossOf(b, "sphereface")!;
          const rng = new Rng(2);
          const inputs = { x: randomMatrix(rng, 3, 5, 2), W: randomMatrix(rng, 4, 5, 1), labels: [-100, -100, -100] };
          for (const o of [{}, { m: 1 }, { lambda: 5, reduction: "sum" }, { m: 2, reduction: "none" }]) {
            const r = await sf.valueAndGrad(inputs, o);
            if (typeof r.loss === "number") assert.equal(r.loss, 0);
            else assert.deepEqual([...r.loss as Float32Array], [0, 0, 0]);
            assert.ok(r.grads.x.data.every((v: number) => v === 0), `x ${JSON.stringify(o)}`);
            assert.ok(r.grads.W.data.every((v: number) => v === 0), `W ${JSON.stringify(o)}`);
          }
        });

        it(
          "label cosines of exactly +-1 (D = 1), at the k boundaries, zero rows and large norms: finite, as the reference",
          {
            skip,
          },
          async () => {
            const sf = lossOf(b, "sphereface")!, ref = lossOf(reference, "sphereface")!;
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
              for (
                const o of [{}, { m: 1 }, { m: 2, lambda: 0.5, reduction: "none" }, { m: 3 }, { m: 5, lambda: 1000 }]
              ) {
                const r = await sf.valueAndGrad(inputs, o);
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
          skip: missing("sphereface", [reference, b]),
        }, async () => {
          // Logits this large are summed in float64 and held relative to each row's maximum, with
          // the column scale 1/||W_j|| in float64 too (rounded to float32 it moved a logit of 5000 by
          // 3e-4 and the gradients up to 4x past SPEC's bound).
          const sf = lossOf(b, "sphereface")!, ref = lossOf(reference, "sphereface")!;
          const rng = new Rng(10000);
          for (const [n, d, c] of [[9, 3, 300], [5, 16, 37], [2, 8, 300]]) {
            const W = randomClassRows(rng, c, d);
            const labels = randomLabels(rng, n, c, 0.2);
            const x = alignedRows(rng, W, labels, randomVector(rng, n, -1, 1), randomVector(rng, n, 100, 1e4));
            for (const o of [{}, { m: 1 }, { m: 3, lambda: 5, reduction: "none" }, { m: 2, lambda: 1000 }]) {
              const r = await sf.valueAndGrad({ x, W, labels }, o);
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
      inputs: () => ({ ...small(), W: { data: new Float32Array(12), shape: [4, 3] } }),
      type: RangeError,
      includes: ["W.shape[1]", "3"],
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
    ...numberOptionErrors(small, "m", [0, 2.5, -1, NaN, Infinity, "4"], true),
    ...numberOptionErrors(small, "lambda", [-1, -1e-9, NaN, Infinity, "0"]),
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
        const sf = lossOf(b, "sphereface");
        if (!sf) continue;
        const rng = new Rng(4);
        const inputs = { x: randomMatrix(rng, 3, 5, 1), W: randomMatrix(rng, 130, 5, 1), labels: [129, -100, 0] };
        for (const options of [{ m: 3, lambda: 2 }, { reduction: "none" }]) {
          const up = options.reduction === "none" ? randomVector(rng, 3, -1, 1) : 3;
          const snap = snapshot({ inputs, options, up });
          await sf.forward(inputs, options);
          await sf.backward(inputs, options, up);
          await sf.valueAndGrad(inputs, options);
          assertUnchanged(snap, { inputs, options, up }, `${b.name}: `);
        }
      }
    });
  });
});

describe("sphereFaceLambda", () => {
  const formula = (step: number, o: { base?: number; gamma?: number; power?: number; min?: number } = {}) => {
    const { base = 1000, gamma = 0.12, power = 1, min = 5 } = o;
    return Math.max(min, base * (1 + gamma * step) ** -power);
  };
  const close = (a: number, e: number, label: string) =>
    assert.ok(Math.abs(a - e) <= 1e-12 * Math.abs(e), `${label}: got ${a}, expected ${e}`);

  it("mod.ts and cpu.ts export the same function", () => {
    assert.equal(typeof mod.sphereFaceLambda, "function");
    assert.equal(mod.sphereFaceLambda, cpu.sphereFaceLambda);
  });

  it("is max(min, base (1 + gamma step)^-power), defaults base 1000, gamma 0.12, power 1, min 5", () => {
    for (const step of [0, 1, 2.5, 10, 100, 1000, 1658, 1659, 1e4, 1e6]) {
      close(mod.sphereFaceLambda(step), formula(step), `step ${step}`);
      close(mod.sphereFaceLambda(step, {}), formula(step), `step ${step}, {}`);
    }
    assert.equal(mod.sphereFaceLambda(0), 1000);
    close(mod.sphereFaceLambda(100), 1000 / 13, "step 100");
    assert.equal(mod.sphereFaceLambda(1e6), 5, "the floor");
    for (
      const o of [
        { base: 10, gamma: 0.5, power: 2, min: 0.01 },
        { power: 0.5 },
        { min: 0 },
        { gamma: 0 },
        { base: 1, min: 2 },
      ]
    ) {
      for (const step of [0, 3, 50, 7777]) {
        close(mod.sphereFaceLambda(step, o), formula(step, o), `${JSON.stringify(o)} ${step}`);
      }
    }
  });

  it("is a pure function: the same value on every call, its options unchanged", () => {
    const o = { base: 500, gamma: 0.2, power: 1.5, min: 1 };
    const snap = snapshot(o);
    const first = [0, 10, 20].map((s) => mod.sphereFaceLambda(s, o));
    const again = [0, 10, 20].map((s) => cpu.sphereFaceLambda(s, o));
    assert.deepEqual(again, first);
    assertUnchanged(snap, o, "options");
  });

  it("rejects a negative or non-finite step and non-finite options, naming the argument", async () => {
    for (const step of [-1, -1e-9, NaN, Infinity]) {
      await assertThrowsNamed(() => mod.sphereFaceLambda(step), RangeError, /(^|[^\w.])step($|[^\w])/, String(step));
    }
    await assertThrowsNamed(() => mod.sphereFaceLambda("3" as Any), TypeError, "step", '"3"');
    for (
      const [k, v] of [["base", NaN], ["gamma", Infinity], ["gamma", -0.1], ["power", NaN], ["min", -Infinity]] as const
    ) {
      await assertThrowsNamed(() => mod.sphereFaceLambda(1, { [k]: v }), RangeError, `options.${k}`, String(v));
    }
    await assertThrowsNamed(() => mod.sphereFaceLambda(1, { min: "5" as Any }), TypeError, "options.min", '"5"');
    await assertThrowsNamed(() => mod.sphereFaceLambda(undefined as Any), TypeError, "step", "undefined");
    await assertThrowsNamed(() => mod.sphereFaceLambda(1, { floor: 5 } as Any), TypeError, "options", '"floor"');
  });
});
