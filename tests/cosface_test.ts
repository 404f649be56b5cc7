// cosface (docs/LOSSES.md; CosFace / LMCL, AM-Softmax): cosines clamped to [-1, 1], logits
// s*cos except the label's, s*(cos_y - m), then cross-entropy; gradient w.r.t. cos.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { assertFinite, assertGradClose, assertLossClose, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { type AnyLoss, backends, lossOf, missing, reference } from "./helpers/backends.ts";
import { commonOptionErrors, labelErrors, matrixErrors, numberOptionErrors, upstreamErrors } from "./helpers/errors.ts";
import { randomLabels, randomVector, Rng } from "./helpers/random.ts";
import { cosfaceSpec as spec, randomCosines } from "./helpers/specs.ts";
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

/**
 * crossEntropy on `backend` of the logits s*cos (clamped) with the label's replaced by
 * s*(cos_y - m); its gradient times s is the expected gradient w.r.t. cos (phi' = 1).
 */
async function viaCrossEntropy(
  ce: AnyLoss,
  inputs: { cos: { data: Float32Array; shape: [number, number] }; labels: ArrayLike<number> },
  s: number,
  m: number,
  options: Record<string, Any> = {},
) {
  const [n, c] = inputs.cos.shape;
  const ignoreIndex = options.ignoreIndex ?? -100;
  const logits = new Float32Array(n * c);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < c; j++) logits[i * c + j] = s * Math.max(-1, Math.min(1, inputs.cos.data[i * c + j]));
    const y = inputs.labels[i];
    if (y !== ignoreIndex) logits[i * c + y] = s * (Math.max(-1, Math.min(1, inputs.cos.data[i * c + y])) - m);
  }
  const r = await ce.valueAndGrad({ logits: { data: logits, shape: [n, c] }, labels: inputs.labels }, options);
  return { loss: r.loss, grad: Float64Array.from(r.grads.logits.data, (g: number) => s * g) };
}

describe("cosface", () => {
  existenceTest(spec);
  fixtureSuite(spec);

  fdSuite(spec, () => {
    const rng = new Rng(14);
    const label = () => rng.uniform(-0.9, 0.9);
    return [
      { name: "s 8, m 0.35, mean", inputs: cosProblem(rng, 4, 5, label), options: { scale: 8 } },
      { name: "defaults (s 64, m 0.35), h 2^-11", inputs: cosProblem(rng, 3, 4, label), h: 2 ** -11 },
      {
        name: "s 4, m 0.2, sum, upstream -1.5, ignored rows",
        inputs: cosProblem(rng, 5, 4, label, 0.3),
        options: { scale: 4, margin: 0.2, reduction: "sum" },
        upstream: -1.5,
      },
      {
        name: "s 6, negative margin -0.1, ignoreIndex 1",
        inputs: { ...cosProblem(rng, 4, 3, label), labels: [1, 0, 2, 1] },
        options: { scale: 6, margin: -0.1, ignoreIndex: 1 },
      },
      {
        name: "s 2, m 0.5, none, upstream vector",
        inputs: cosProblem(rng, 3, 4, label),
        options: { scale: 2, margin: 0.5, reduction: "none" },
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
        const skip = missing(["cosface", "normface", "crossEntropy"], [b]);
        const rng = new Rng(42);
        const n = 12, c = 9;
        const edges = { cos: randomCosines(rng, n, c, 1e4), labels: randomLabels(rng, n, c, 0.2) };
        const interior = cosProblem(rng, n, c, () => rng.uniform(-0.6, 0.98), 0.2);

        it("margin 0 is normface at the same scale, for every reduction", { skip }, async () => {
          const cf = lossOf(b, "cosface")!, norm = lossOf(b, "normface")!;
          for (const inputs of [edges, interior]) {
            for (const reduction of ["mean", "sum", "none"]) {
              for (const scale of [64, 16, 1]) {
                const a = await cf.valueAndGrad(inputs, { margin: 0, scale, reduction });
                const z = await norm.valueAndGrad(inputs, { scale, reduction });
                assertLossClose(a.loss as Any, z.loss as Any, `s ${scale} ${reduction} loss`, 1e-6);
                assertGradClose(a.grads.cos, z.grads.cos.data, `s ${scale} ${reduction} grad`, 1e-6);
              }
            }
          }
        });

        it("equals crossEntropy on s*cos with the label's logit s*(cos_y - m), gradient s*dCE/dz", {
          skip,
        }, async () => {
          const cf = lossOf(b, "cosface")!, ce = lossOf(b, "crossEntropy")!;
          for (const inputs of [edges, interior]) {
            for (
              const o of [
                {},
                { scale: 30, margin: 0.2, reduction: "sum" },
                { scale: 1, margin: 0.5, reduction: "none" },
                { scale: 16, margin: -0.25, marginGrad: "constant" },
              ] as Record<string, Any>[]
            ) {
              const ref = await viaCrossEntropy(ce, inputs, o.scale ?? 64, o.margin ?? 0.35, {
                reduction: o.reduction,
              });
              const r = await cf.valueAndGrad(inputs, o);
              assertLossClose(r.loss as Any, ref.loss as Any, `${JSON.stringify(o)} loss`);
              // At out-of-range cosines cosface's gradient is 0 (the clamp), crossEntropy's is not.
              const expected = ref.grad.map((g, i) => (Math.abs(inputs.cos.data[i]) > 1 ? 0 : g));
              assertGradClose(r.grads.cos, expected, `${JSON.stringify(o)} grad`);
            }
          }
        });

        it("cosface(m) is normface of the cosines with the label's lowered by m", { skip }, async () => {
          const cf = lossOf(b, "cosface")!, norm = lossOf(b, "normface")!;
          for (const m of [0.35, 0.1]) {
            const shifted = {
              cos: { data: interior.cos.data.slice(), shape: interior.cos.shape },
              labels: interior.labels,
            };
            for (let i = 0; i < n; i++) {
              if (interior.labels[i] >= 0) shifted.cos.data[i * c + interior.labels[i]] -= m;
            }
            for (const reduction of ["mean", "none"]) {
              const a = await cf.valueAndGrad(interior, { margin: m, scale: 30, reduction });
              const z = await norm.valueAndGrad(shifted, { scale: 30, reduction });
              // The shifted cosines are rounded to float32: 30 * 6e-8 in the logits.
              assertLossClose(a.loss as Any, z.loss as Any, `m ${m} ${reduction} loss`, 1e-5);
              assertGradClose(a.grads.cos, z.grads.cos.data, `m ${m} ${reduction} grad`, 1e-5);
            }
          }
        });

        it('marginGrad "constant" is the same as "exact" (phi\' = 1), bit for bit', { skip }, async () => {
          const cf = lossOf(b, "cosface")!;
          for (const inputs of [edges, interior]) {
            for (const reduction of ["mean", "none"]) {
              const e = await cf.valueAndGrad(inputs, { reduction, marginGrad: "exact" });
              const k = await cf.valueAndGrad(inputs, { reduction, marginGrad: "constant" });
              assert.deepEqual(k.loss, e.loss);
              assert.deepEqual(k.grads.cos.data, e.grads.cos.data);
            }
          }
        });

        it("the defaults are scale 64, margin 0.35, mean", { skip }, async () => {
          const cf = lossOf(b, "cosface")!;
          const d = await cf.valueAndGrad(edges);
          const e = await cf.valueAndGrad(edges, { scale: 64, margin: 0.35, reduction: "mean", ignoreIndex: -100 });
          assert.equal(d.loss, e.loss);
          assert.deepEqual(d.grads.cos.data, e.grads.cos.data);
        });

        it("each row's loss grows with the margin", { skip }, async () => {
          const cf = lossOf(b, "cosface")!;
          let last: Float32Array | null = null;
          for (const margin of [-0.2, 0, 0.1, 0.35, 0.8]) {
            const r = (await cf.forward(interior, { margin, scale: 30, reduction: "none" })).loss as Float32Array;
            if (last) {
              for (let i = 0; i < n; i++) {
                if (interior.labels[i] >= 0) assert.ok(r[i] > last[i], `m ${margin} row ${i}: ${r[i]} <= ${last[i]}`);
              }
            }
            last = r;
          }
        });
      });
    }
  });

  describe("edge cases", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing("cosface", [b]);

        it("an all-ignored batch has loss 0 and zero gradients", { skip }, async () => {
          const cf = lossOf(b, "cosface")!;
          const inputs = { cos: randomCosines(new Rng(2), 3, 4, 1e4), labels: [-100, -100, -100] };
          for (const o of [{}, { margin: 0.2, scale: 1 }, { reduction: "sum" }, { reduction: "none" }]) {
            const r = await cf.valueAndGrad(inputs, o);
            if (typeof r.loss === "number") assert.equal(r.loss, 0);
            else assert.deepEqual([...r.loss as Float32Array], [0, 0, 0]);
            assert.ok(r.grads.cos.data.every((v: number) => v === 0), JSON.stringify(o));
            const g = await cf.backward(inputs, o, o.reduction === "none" ? [1, 2, 3] : 2);
            assert.ok(g.cos.data.every((v: number) => v === 0), `backward ${JSON.stringify(o)}`);
          }
        });

        it("cosines of exactly +-1 (label and others) give finite values that match the reference", {
          skip,
        }, async () => {
          const cf = lossOf(b, "cosface")!, ref = lossOf(reference, "cosface")!;
          const inputs = {
            cos: mat(5, 4, [1, 0.2, -1, 0.5, -1, 1, 0.3, -0.2, 1, -1, -1, -1, -1, 1, 1, 1, 1, 1, 1, 1]),
            labels: [0, 0, 0, 0, 2],
          };
          for (const o of [{}, { margin: 0.2, scale: 30, reduction: "none" }, { margin: 2, reduction: "sum" }]) {
            const r = await cf.valueAndGrad(inputs, o);
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
          const cf = lossOf(b, "cosface")!;
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
          for (const o of [{}, { scale: 16, margin: 0.1 }, { reduction: "none" }]) {
            const r = await cf.valueAndGrad({ cos: out, labels }, o);
            const e = await cf.valueAndGrad({ cos: clamped, labels }, o);
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
    ...numberOptionErrors(small, "margin", [NaN, Infinity, "0.35"]),
    {
      name: "unknown marginGrad",
      inputs: small,
      options: { marginGrad: "none" },
      type: [RangeError, TypeError],
      includes: ["options.marginGrad", '"none"'],
    },
    ...commonOptionErrors(small, "cos"),
    ...upstreamErrors(small),
  ]);

  describe("inputs", () => {
    it("inputs and options are unchanged by every call on every backend", async () => {
      for (const b of backends) {
        const cf = lossOf(b, "cosface");
        if (!cf) continue;
        const inputs = { cos: randomCosines(new Rng(4), 3, 5, 1e4), labels: [4, -100, 0] };
        for (const options of [{ margin: 0.2 }, { reduction: "none", marginGrad: "constant" }]) {
          const up = options.reduction === "none" ? randomVector(new Rng(1), 3, -1, 1) : 3;
          const snap = snapshot({ inputs, options, up });
          await cf.forward(inputs, options);
          await cf.backward(inputs, options, up);
          await cf.valueAndGrad(inputs, options);
          assertUnchanged(snap, { inputs, options, up }, `${b.name}: `);
        }
      }
    });
  });
});
