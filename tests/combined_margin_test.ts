// combinedMargin (docs/LOSSES.md; insightface's combined margin): cosines clamped to [-1, 1],
// logits s*cos except the label's, s*(cos(m1 theta + m2) - m3), theta = acos(cos_y), no
// threshold branch; then cross-entropy; gradient w.r.t. cos.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { assertFinite, assertGradClose, assertLossClose, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { type AnyLoss, backends, lossOf, missing, reference } from "./helpers/backends.ts";
import { commonOptionErrors, labelErrors, matrixErrors, numberOptionErrors, upstreamErrors } from "./helpers/errors.ts";
import { randomLabels, randomVector, Rng } from "./helpers/random.ts";
import { combinedMarginSpec as spec, randomCosines } from "./helpers/specs.ts";
import { agreementSuite, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const mat = (rows: number, cols: number, values: number[]) => ({
  data: new Float32Array(values),
  shape: [rows, cols] as [number, number],
});

/** A fresh 3 x 4 problem for the error cases. */
const small = () => ({ cos: randomCosines(new Rng(8), 3, 4, 1), labels: [0, 3, 1] });

/** Cosines uniform in [-0.9, 0.9], each labelled row's label cosine drawn by `label`. */
function cosProblem(rng: Rng, n: number, c: number, label: () => number, ignore = 0, ignoreIndex = -100) {
  const cos = randomCosines(rng, n, c, 1);
  for (let i = 0; i < cos.data.length; i++) cos.data[i] *= 0.9;
  const labels = randomLabels(rng, n, c, ignore, ignoreIndex);
  for (let i = 0; i < n; i++) if (labels[i] >= 0) cos.data[i * c + labels[i]] = label();
  return { cos, labels };
}

/** phi = cos(m1 theta + m2) - m3 and d phi / d cos = m1 sin(m1 theta + m2) / sin(theta), from docs/LOSSES.md. */
function phiOf(m1: number, m2: number, m3: number): (x: number) => [number, number] {
  return (x) => {
    const theta = Math.acos(x);
    return [Math.cos(m1 * theta + m2) - m3, (m1 * Math.sin(m1 * theta + m2)) / Math.sin(theta)];
  };
}

/**
 * crossEntropy on `backend` of the logits s*cos with the label's replaced by s*phi(cos_y); the
 * expected gradient w.r.t. cos is s dCE/dz, times phi'(cos_y) at the label unless `constant`.
 */
async function viaCrossEntropy(
  ce: AnyLoss,
  inputs: { cos: { data: Float32Array; shape: [number, number] }; labels: ArrayLike<number> },
  s: number,
  phi: (x: number) => [number, number],
  options: Record<string, Any> = {},
  constant = false,
) {
  const [n, c] = inputs.cos.shape;
  const logits = new Float32Array(n * c);
  const slope = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < c; j++) logits[i * c + j] = s * inputs.cos.data[i * c + j];
    const y = inputs.labels[i];
    if (y < 0) continue;
    const [value, d] = phi(inputs.cos.data[i * c + y]);
    logits[i * c + y] = s * value;
    slope[i] = constant ? 1 : d;
  }
  const r = await ce.valueAndGrad({ logits: { data: logits, shape: [n, c] }, labels: inputs.labels }, options);
  const grad = new Float64Array(n * c);
  for (let i = 0; i < n * c; i++) {
    const row = Math.floor(i / c);
    grad[i] = s * r.grads.logits.data[i] * (i % c === inputs.labels[row] ? slope[row] : 1);
  }
  return { loss: r.loss, grad };
}

describe("combinedMargin", () => {
  existenceTest(spec);
  fixtureSuite(spec);

  fdSuite(spec, () => {
    const rng = new Rng(16);
    // acos's k-th derivative grows as (1 - cos^2)^(1/2 - k): label cosines well inside (-1, 1).
    const label = () => rng.uniform(-0.8, 0.8);
    return [
      { name: "s 8, defaults m1 1, m2 0.5, m3 0, mean", inputs: cosProblem(rng, 4, 5, label), options: { scale: 8 } },
      { name: "defaults (s 64), h 2^-11", inputs: cosProblem(rng, 3, 4, label), h: 2 ** -11 },
      {
        name: "s 4, m1 1.35, m2 0.2, m3 0.1, sum, upstream -1.5, ignored rows",
        inputs: cosProblem(rng, 5, 4, label, 0.3),
        options: { scale: 4, m1: 1.35, m2: 0.2, m3: 0.1, reduction: "sum" },
        upstream: -1.5,
      },
      {
        name: "s 6, m1 2 (SphereFace-like), m2 0, ignoreIndex 1",
        inputs: { ...cosProblem(rng, 4, 3, label), labels: [1, 0, 2, 1] },
        options: { scale: 6, m1: 2, m2: 0, ignoreIndex: 1 },
      },
      {
        name: "s 8, m1 0.9, m2 0.4, m3 0.15",
        inputs: cosProblem(rng, 4, 6, label),
        options: { scale: 8, m1: 0.9, m2: 0.4, m3: 0.15 },
      },
      {
        name: "s 2, none, upstream vector",
        inputs: cosProblem(rng, 3, 4, label),
        options: { scale: 2, m2: 0.3, m3: 0.2, reduction: "none" },
        upstream: new Float32Array([0.5, -1.5, 2]),
        atol: 2e-5,
        h: 2 ** -4,
      },
      { name: "C = 1 (zero gradient)", inputs: cosProblem(rng, 3, 1, label), options: { scale: 8 } },
    ];
  });

  agreementSuite(spec);

  describe("identities", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing(["combinedMargin", "arcface", "cosface", "normface", "crossEntropy"], [b]);
        const rng = new Rng(44);
        const n = 12, c = 9;
        const edges = { cos: randomCosines(rng, n, c, 1e4), labels: randomLabels(rng, n, c, 0.2) };
        // Label cosines inside (-1, 1): the identities below are about the formula, and at
        // exactly +-1 each loss uses its own documented derivative rule.
        const interior = cosProblem(rng, n, c, () => rng.uniform(-0.99, 0.99), 0.2);

        it("(m1 1, m2 m, m3 0) is arcface(m) where the label cosine is above cos(pi - m)", { skip }, async () => {
          const cm = lossOf(b, "combinedMargin")!, arc = lossOf(b, "arcface")!;
          for (const [m, s] of [[0.5, 64], [0.2, 30], [1.2, 16], [0, 8]]) {
            const th = Math.cos(Math.PI - m);
            const inputs = cosProblem(rng, 10, 7, () => rng.uniform(th + 0.01, 0.999), 0.2);
            for (const reduction of ["mean", "none"]) {
              const o = { scale: s, reduction };
              const r = await cm.valueAndGrad(inputs, { ...o, m1: 1, m2: m, m3: 0 });
              const a = await arc.valueAndGrad(inputs, { ...o, margin: m });
              assertLossClose(r.loss as Any, a.loss as Any, `m ${m} ${reduction} loss`, 1e-6);
              assertGradClose(r.grads.cos, a.grads.cos.data, `m ${m} ${reduction} grad`, 1e-6);
            }
          }
        });

        it("(m1 1, m2 0, m3) is cosface(m3), and (1, 0, 0) is normface", { skip }, async () => {
          const cm = lossOf(b, "combinedMargin")!, cf = lossOf(b, "cosface")!, nf = lossOf(b, "normface")!;
          for (const reduction of ["mean", "sum", "none"]) {
            for (const [m3, s] of [[0.35, 64], [0.2, 30], [-0.1, 1]]) {
              const r = await cm.valueAndGrad(interior, { scale: s, m1: 1, m2: 0, m3, reduction });
              const e = await cf.valueAndGrad(interior, { scale: s, margin: m3, reduction });
              assertLossClose(r.loss as Any, e.loss as Any, `m3 ${m3} ${reduction} loss`, 1e-6);
              assertGradClose(r.grads.cos, e.grads.cos.data, `m3 ${m3} ${reduction} grad`, 1e-6);
            }
            const r = await cm.valueAndGrad(interior, { scale: 16, m1: 1, m2: 0, m3: 0, reduction });
            const e = await nf.valueAndGrad(interior, { scale: 16, reduction });
            assertLossClose(r.loss as Any, e.loss as Any, `normface ${reduction} loss`, 1e-6);
            assertGradClose(r.grads.cos, e.grads.cos.data, `normface ${reduction} grad`, 1e-6);
          }
        });

        it("equals crossEntropy on s*cos with the label's logit s*phi(cos_y), gradient s*phi'(cos_y) at the label", {
          skip,
        }, async () => {
          const cm = lossOf(b, "combinedMargin")!, ce = lossOf(b, "crossEntropy")!;
          for (
            const o of [
              {},
              { scale: 30, m1: 1, m2: 0.3, m3: 0.2, reduction: "sum" },
              { scale: 16, m1: 1.35, m2: 0.2, m3: 0.1, reduction: "none" },
              { scale: 30, m1: 2, m2: 0, m3: 0 }, // cos(2 theta) = 2 cos^2 - 1
              { scale: 64, m1: 0.9, m2: 0.4, m3: 0.15 },
            ] as Record<string, Any>[]
          ) {
            const phi = phiOf(o.m1 ?? 1, o.m2 ?? 0.5, o.m3 ?? 0);
            const ref = await viaCrossEntropy(ce, interior, o.scale ?? 64, phi, { reduction: o.reduction });
            const r = await cm.valueAndGrad(interior, o);
            assertLossClose(r.loss as Any, ref.loss as Any, `${JSON.stringify(o)} loss`);
            assertGradClose(r.grads.cos, ref.grad, `${JSON.stringify(o)} grad`);
          }
          // m1 = 2, m2 = 0: phi = T_2(cos) = 2 cos^2 - 1 exactly, phi' = 4 cos.
          const cheb = await viaCrossEntropy(ce, interior, 30, (x) => [2 * x * x - 1 - 0.1, 4 * x]);
          const r = await cm.valueAndGrad(interior, { scale: 30, m1: 2, m2: 0, m3: 0.1 });
          assertLossClose(r.loss as Any, cheb.loss as Any, "Chebyshev loss");
          assertGradClose(r.grads.cos, cheb.grad, "Chebyshev grad");
        });

        it('marginGrad "constant": the label column gets s*(p - 1) (phi\' taken as 1)', { skip }, async () => {
          const cm = lossOf(b, "combinedMargin")!, ce = lossOf(b, "crossEntropy")!;
          for (
            const o of [
              { scale: 64, m1: 1, m2: 0.5, m3: 0 },
              { scale: 30, m1: 1.35, m2: 0.25, m3: 0.1, reduction: "none" },
            ] as Record<string, Any>[]
          ) {
            const ref = await viaCrossEntropy(ce, interior, o.scale, phiOf(o.m1, o.m2, o.m3), {
              reduction: o.reduction,
            }, true);
            const r = await cm.valueAndGrad(interior, { ...o, marginGrad: "constant" });
            assertLossClose(r.loss as Any, ref.loss as Any, `${JSON.stringify(o)} loss`);
            assertGradClose(r.grads.cos, ref.grad, `${JSON.stringify(o)} grad`);
          }
        });

        it("the defaults are scale 64, m1 1, m2 0.5, m3 0, marginGrad exact, mean", { skip }, async () => {
          const cm = lossOf(b, "combinedMargin")!;
          const d = await cm.valueAndGrad(edges);
          const e = await cm.valueAndGrad(edges, {
            scale: 64,
            m1: 1,
            m2: 0.5,
            m3: 0,
            marginGrad: "exact",
            reduction: "mean",
            ignoreIndex: -100,
          });
          assert.equal(d.loss, e.loss);
          assert.deepEqual(d.grads.cos.data, e.grads.cos.data);
        });
      });
    }
  });

  describe("edge cases", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing("combinedMargin", [b]);

        it("an all-ignored batch has loss 0 and zero gradients", { skip }, async () => {
          const cm = lossOf(b, "combinedMargin")!;
          const inputs = { cos: randomCosines(new Rng(2), 3, 4, 1e4), labels: [-100, -100, -100] };
          for (const o of [{}, { m1: 2, scale: 1 }, { reduction: "sum" }, { reduction: "none" }]) {
            const r = await cm.valueAndGrad(inputs, o);
            if (typeof r.loss === "number") assert.equal(r.loss, 0);
            else assert.deepEqual([...r.loss as Float32Array], [0, 0, 0]);
            assert.ok(r.grads.cos.data.every((v: number) => v === 0), JSON.stringify(o));
            const g = await cm.backward(inputs, o, o.reduction === "none" ? [1, 2, 3] : 2);
            assert.ok(g.cos.data.every((v: number) => v === 0), `backward ${JSON.stringify(o)}`);
          }
        });

        it("cosines of exactly +-1 (label and others) give finite values that match the reference", {
          skip,
        }, async () => {
          const cm = lossOf(b, "combinedMargin")!, ref = lossOf(reference, "combinedMargin")!;
          const inputs = {
            cos: mat(5, 4, [1, 0.2, -1, 0.5, -1, 1, 0.3, -0.2, 1, -1, -1, -1, -1, 1, 1, 1, 1, 1, 1, 1]),
            labels: [0, 0, 0, 0, 2],
          };
          for (
            const o of [{}, { m1: 1.35, m2: 0.2, m3: 0.1, scale: 30, reduction: "none" }, { m1: 2, m2: 0 }, {
              m1: 1,
              m2: 0,
              m3: 0.35,
              reduction: "sum",
            }, { marginGrad: "constant" }]
          ) {
            const r = await cm.valueAndGrad(inputs, o);
            const e = await ref.valueAndGrad(inputs, o);
            assertFinite(r.loss as Any, `${JSON.stringify(o)} loss`);
            assertFinite(r.grads.cos.data, `${JSON.stringify(o)} grad`, [5, 4]);
            assertLossClose(r.loss as Any, e.loss as Any, `${JSON.stringify(o)} loss`);
            assertGradClose(r.grads.cos, e.grads.cos.data, `${JSON.stringify(o)} grad`);
          }
        });

        it("cosines just outside [-1, 1] are clamped: the loss of +-1, and gradient exactly 0 there", {
          skip,
        }, async () => {
          const cm = lossOf(b, "combinedMargin")!;
          const out = mat(3, 4, [
            1.0000001,
            0.3,
            -1.0000001,
            0.1,
            0.2,
            -1.0000001,
            1.0000001,
            0.5,
            -1.0000001,
            0.4,
            0,
            0.9,
          ]);
          const clamped = { data: out.data.map((v) => Math.max(-1, Math.min(1, v))), shape: out.shape };
          const labels = [0, 1, 0];
          for (const o of [{}, { m1: 1.35, scale: 16 }, { marginGrad: "constant", reduction: "none" }]) {
            const r = await cm.valueAndGrad({ cos: out, labels }, o);
            const e = await cm.valueAndGrad({ cos: clamped, labels }, o);
            assert.deepEqual(r.loss, e.loss, `${JSON.stringify(o)}: the loss of the clamped cosines`);
            for (let i = 0; i < 12; i++) {
              const v = r.grads.cos.data[i];
              if (Math.abs(out.data[i]) > 1) assert.ok(Object.is(Math.abs(v), 0), `${JSON.stringify(o)} [${i}] ${v}`);
              else assert.ok(v !== 0 && Number.isFinite(v), `${JSON.stringify(o)} [${i}] ${v}`);
            }
          }
        });
      });
    }
  });

  errorSuite(spec, [
    ...matrixErrors(small, "cos", true, "cos"),
    ...labelErrors(small),
    ...numberOptionErrors(small, "scale", [0, -1, NaN, Infinity, "64"]),
    ...numberOptionErrors(small, "m1", [NaN, Infinity, "1"]),
    ...numberOptionErrors(small, "m2", [NaN, -Infinity, "0.5"]),
    ...numberOptionErrors(small, "m3", [NaN, Infinity, "0"]),
    {
      name: "unknown marginGrad",
      inputs: small,
      options: { marginGrad: true },
      type: [RangeError, TypeError],
      includes: ["options.marginGrad", "true"],
    },
    ...commonOptionErrors(small, "cos"),
    ...upstreamErrors(small),
  ]);

  describe("inputs", () => {
    it("inputs and options are unchanged by every call on every backend", async () => {
      for (const b of backends) {
        const cm = lossOf(b, "combinedMargin");
        if (!cm) continue;
        const inputs = { cos: randomCosines(new Rng(4), 3, 5, 1e4), labels: [4, -100, 0] };
        for (const options of [{ m1: 1.2, m2: 0.3, m3: 0.1 }, { reduction: "none", marginGrad: "constant" }]) {
          const up = options.reduction === "none" ? randomVector(new Rng(1), 3, -1, 1) : 3;
          const snap = snapshot({ inputs, options, up });
          await cm.forward(inputs, options);
          await cm.backward(inputs, options, up);
          await cm.valueAndGrad(inputs, options);
          assertUnchanged(snap, { inputs, options, up }, `${b.name}: `);
        }
      }
    });
  });
});
