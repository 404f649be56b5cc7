// normface (docs/LOSSES.md; NormFace): cosines clamped to [-1, 1], every logit s*cos (no margin),
// then cross-entropy; gradient w.r.t. cos. Default scale 16.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { assertFinite, assertGradClose, assertLossClose, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { backends, lossOf, missing, reference } from "./helpers/backends.ts";
import { commonOptionErrors, labelErrors, matrixErrors, numberOptionErrors, upstreamErrors } from "./helpers/errors.ts";
import { randomLabels, randomVector, Rng } from "./helpers/random.ts";
import { normfaceSpec as spec, randomCosines } from "./helpers/specs.ts";
import { agreementSuite, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const mat = (rows: number, cols: number, values: number[]) => ({
  data: new Float32Array(values),
  shape: [rows, cols] as [number, number],
});

/** A fresh 3 x 4 problem for the error cases. */
const small = () => ({ cos: randomCosines(new Rng(8), 3, 4, 1), labels: [0, 3, 1] });

/** Cosines uniform in [-0.9, 0.9] (away from the clamp). */
function cosProblem(rng: Rng, n: number, c: number, ignore = 0, ignoreIndex = -100) {
  const cos = randomCosines(rng, n, c, 1);
  for (let i = 0; i < cos.data.length; i++) cos.data[i] *= 0.9;
  return { cos, labels: randomLabels(rng, n, c, ignore, ignoreIndex) };
}

/** s * clamp(cos) as float32 logits. */
function scaled(cos: { data: Float32Array; shape: [number, number] }, s: number) {
  return { data: cos.data.map((v) => s * Math.max(-1, Math.min(1, v))), shape: cos.shape };
}

describe("normface", () => {
  existenceTest(spec);
  fixtureSuite(spec);

  fdSuite(spec, () => {
    const rng = new Rng(15);
    return [
      { name: "s 8, mean", inputs: cosProblem(rng, 4, 5), options: { scale: 8 } },
      { name: "defaults (s 16), h 2^-9", inputs: cosProblem(rng, 3, 4), h: 2 ** -9 },
      {
        name: "s 4, sum, upstream 2.5, ignored rows",
        inputs: cosProblem(rng, 5, 4, 0.3),
        options: { scale: 4, reduction: "sum" },
        upstream: 2.5,
      },
      {
        name: "s 6, ignoreIndex 0",
        inputs: { ...cosProblem(rng, 4, 3), labels: [0, 1, 2, 0] },
        options: { scale: 6, ignoreIndex: 0 },
      },
      {
        name: "s 2, none, upstream vector",
        inputs: cosProblem(rng, 3, 4),
        options: { scale: 2, reduction: "none" },
        upstream: new Float32Array([0.5, -1.5, 2]),
        atol: 2e-5,
        h: 2 ** -4,
      },
      { name: "C = 1 (zero gradient)", inputs: cosProblem(rng, 3, 1), options: { scale: 8 } },
    ];
  });

  agreementSuite(spec);

  describe("identities", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing(["normface", "crossEntropy"], [b]);
        const rng = new Rng(43);
        const n = 12, c = 9;
        const edges = { cos: randomCosines(rng, n, c, 1e4), labels: randomLabels(rng, n, c, 0.2) };
        const interior = cosProblem(rng, n, c, 0.2);

        it("is crossEntropy of s*clamp(cos), with gradient s*dCE/dz (0 at out-of-range cosines)", {
          skip,
        }, async () => {
          const nf = lossOf(b, "normface")!, ce = lossOf(b, "crossEntropy")!;
          for (const inputs of [edges, interior]) {
            for (const reduction of ["mean", "sum", "none"]) {
              for (const scale of [16, 30, 64, 1]) {
                const r = await nf.valueAndGrad(inputs, { scale, reduction });
                const e = await ce.valueAndGrad({ logits: scaled(inputs.cos, scale), labels: inputs.labels }, {
                  reduction,
                });
                const expected = Float64Array.from(
                  e.grads.logits.data,
                  (g: number, i) => (Math.abs(inputs.cos.data[i]) > 1 ? 0 : scale * g),
                );
                assertLossClose(r.loss as Any, e.loss as Any, `s ${scale} ${reduction} loss`, 1e-6);
                assertGradClose(r.grads.cos, expected, `s ${scale} ${reduction} grad`, 1e-6);
              }
            }
          }
        });

        it('marginGrad "constant" is the same as "exact", bit for bit', { skip }, async () => {
          const nf = lossOf(b, "normface")!;
          for (const reduction of ["mean", "none"]) {
            const e = await nf.valueAndGrad(edges, { reduction });
            const k = await nf.valueAndGrad(edges, { reduction, marginGrad: "constant" });
            assert.deepEqual(k.loss, e.loss);
            assert.deepEqual(k.grads.cos.data, e.grads.cos.data);
          }
        });

        it("the defaults are scale 16, mean", { skip }, async () => {
          const nf = lossOf(b, "normface")!;
          const d = await nf.valueAndGrad(edges);
          const e = await nf.valueAndGrad(edges, { scale: 16, reduction: "mean", ignoreIndex: -100 });
          assert.equal(d.loss, e.loss);
          assert.deepEqual(d.grads.cos.data, e.grads.cos.data);
        });

        it("a constant added to every cosine of a row changes nothing (while inside [-1, 1])", {
          skip,
        }, async () => {
          const nf = lossOf(b, "normface")!;
          const shifted = {
            cos: { data: interior.cos.data.slice(), shape: interior.cos.shape },
            labels: interior.labels,
          };
          for (let i = 0; i < n; i++) {
            for (let j = 0; j < c; j++) shifted.cos.data[i * c + j] += [0.05, -0.1, 0.0625][i % 3];
          }
          const a = await nf.valueAndGrad(interior, { reduction: "none", scale: 30 });
          const s = await nf.valueAndGrad(shifted, { reduction: "none", scale: 30 });
          // The shifted cosines are rounded to float32: 30 * 6e-8 in the logits.
          assertLossClose(s.loss as Any, a.loss as Any, "loss", 1e-5);
          assertGradClose(s.grads.cos, a.grads.cos.data, "grad", 1e-5);
        });
      });
    }
  });

  describe("edge cases", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing("normface", [b]);

        it("an all-ignored batch has loss 0 and zero gradients", { skip }, async () => {
          const nf = lossOf(b, "normface")!;
          const inputs = { cos: randomCosines(new Rng(2), 3, 4, 1e4), labels: [-100, -100, -100] };
          for (const o of [{}, { scale: 1 }, { reduction: "sum" }, { reduction: "none" }]) {
            const r = await nf.valueAndGrad(inputs, o);
            if (typeof r.loss === "number") assert.equal(r.loss, 0);
            else assert.deepEqual([...r.loss as Float32Array], [0, 0, 0]);
            assert.ok(r.grads.cos.data.every((v: number) => v === 0), JSON.stringify(o));
            const g = await nf.backward(inputs, o, o.reduction === "none" ? [1, 2, 3] : 2);
            assert.ok(g.cos.data.every((v: number) => v === 0), `backward ${JSON.stringify(o)}`);
          }
        });

        it("cosines of exactly +-1 (label and others) give finite values that match the reference", {
          skip,
        }, async () => {
          const nf = lossOf(b, "normface")!, ref = lossOf(reference, "normface")!;
          const inputs = {
            cos: mat(5, 4, [1, 0.2, -1, 0.5, -1, 1, 0.3, -0.2, 1, -1, -1, -1, -1, 1, 1, 1, 1, 1, 1, 1]),
            labels: [0, 0, 0, 0, 2],
          };
          for (const o of [{}, { scale: 64, reduction: "none" }, { scale: 1, reduction: "sum" }]) {
            const r = await nf.valueAndGrad(inputs, o);
            const e = await ref.valueAndGrad(inputs, o);
            assertFinite(r.loss as Any, `${JSON.stringify(o)} loss`);
            assertFinite(r.grads.cos.data, `${JSON.stringify(o)} grad`, [5, 4]);
            assertLossClose(r.loss as Any, e.loss as Any, `${JSON.stringify(o)} loss`);
            assertGradClose(r.grads.cos, e.grads.cos.data, `${JSON.stringify(o)} grad`);
          }
          // Every cosine +1: a uniform row, loss log(C).
          const uniform = await nf.forward(inputs, { reduction: "none" });
          assertLossClose((uniform.loss as Float32Array)[4], Math.log(4), "all +1 row");
        });

        it("cosines just outside [-1, 1] are clamped: the loss of +-1, and gradient exactly 0 there", {
          skip,
        }, async () => {
          const nf = lossOf(b, "normface")!;
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
          for (const o of [{}, { scale: 64 }, { reduction: "none" }]) {
            const r = await nf.valueAndGrad({ cos: out, labels }, o);
            const e = await nf.valueAndGrad({ cos: clamped, labels }, o);
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
    ...numberOptionErrors(small, "scale", [0, -1e-9, NaN, -Infinity, "16"]),
    {
      name: "unknown marginGrad",
      inputs: small,
      options: { marginGrad: "Constant" },
      type: [RangeError, TypeError],
      includes: ["options.marginGrad", '"Constant"'],
    },
    ...commonOptionErrors(small, "cos"),
    ...upstreamErrors(small),
  ]);

  describe("inputs", () => {
    it("inputs and options are unchanged by every call on every backend", async () => {
      for (const b of backends) {
        const nf = lossOf(b, "normface");
        if (!nf) continue;
        const inputs = { cos: randomCosines(new Rng(4), 3, 5, 1e4), labels: [4, -100, 0] };
        for (const options of [{ scale: 30 }, { reduction: "none" }]) {
          const up = options.reduction === "none" ? randomVector(new Rng(1), 3, -1, 1) : 3;
          const snap = snapshot({ inputs, options, up });
          await nf.forward(inputs, options);
          await nf.backward(inputs, options, up);
          await nf.valueAndGrad(inputs, options);
          assertUnchanged(snap, { inputs, options, up }, `${b.name}: `);
        }
      }
    });
  });
});
