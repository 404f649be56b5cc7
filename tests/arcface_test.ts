// arcface (docs/LOSSES.md): cosines clamped to [-1, 1], logits s*cos except the label's,
// s*phi(cos_y) with phi = cos(theta + m) (easyMargin: only where cos > 0; otherwise the
// linear cos - m sin(pi - m) at and below cos(pi - m)), then cross-entropy; gradient w.r.t. cos.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { assertFinite, assertGradClose, assertLossClose, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { type AnyLoss, backends, lossOf, missing, reference } from "./helpers/backends.ts";
import { commonOptionErrors, labelErrors, matrixErrors, numberOptionErrors, upstreamErrors } from "./helpers/errors.ts";
import { randomLabels, randomVector, Rng } from "./helpers/random.ts";
import { arcfaceSpec as spec, randomCosines } from "./helpers/specs.ts";
import { agreementSuite, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const mat = (rows: number, cols: number, values: number[]) => ({
  data: new Float32Array(values),
  shape: [rows, cols] as [number, number],
});

/** A fresh 3 x 4 problem for the error cases. */
const small = () => ({ cos: randomCosines(new Rng(8), 3, 4, 1), labels: [0, 3, 1] });

/**
 * Cosines uniform in [-0.9, 0.9] with each labelled row's label cosine drawn by `label`
 * (so the problem stays away from +-1 and from the branch points of phi).
 */
function cosProblem(rng: Rng, n: number, c: number, label: () => number, ignore = 0, ignoreIndex = -100) {
  const cos = randomCosines(rng, n, c, 1);
  for (let i = 0; i < cos.data.length; i++) cos.data[i] *= 0.9;
  const labels = randomLabels(rng, n, c, ignore, ignoreIndex);
  for (let i = 0; i < n; i++) if (labels[i] >= 0) cos.data[i * c + labels[i]] = label();
  return { cos, labels };
}

/** ArcFace's phi and its derivative, written from docs/LOSSES.md (interior cosines only). */
function phiOf(m: number, easy: boolean): (x: number) => [number, number] {
  return (x) => {
    const sin = Math.sqrt(1 - x * x);
    const arc: [number, number] = [x * Math.cos(m) - sin * Math.sin(m), Math.cos(m) + (Math.sin(m) * x) / sin];
    if (easy) return x > 0 ? arc : [x, 1];
    return x > Math.cos(Math.PI - m) ? arc : [x - m * Math.sin(Math.PI - m), 1];
  };
}

/**
 * The loss and gradient w.r.t. cos built from crossEntropy on `backend`: logits s*cos with the
 * label's replaced by s*phi(cos_y) (float64, rounded to float32 once); dL/dcos = s dL/dz, times
 * phi'(cos_y) at the label unless `constant`.
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
  const ignoreIndex = options.ignoreIndex ?? -100;
  const logits = new Float32Array(n * c);
  const slope = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < c; j++) logits[i * c + j] = s * inputs.cos.data[i * c + j];
    const y = inputs.labels[i];
    if (y === ignoreIndex) continue;
    const [value, d] = phi(inputs.cos.data[i * c + y]);
    logits[i * c + y] = s * value;
    slope[i] = constant ? 1 : d;
  }
  const r = await ce.valueAndGrad({ logits: { data: logits, shape: [n, c] }, labels: inputs.labels }, options);
  const grad = new Float64Array(n * c);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < c; j++) {
      const g = s * r.grads.logits.data[i * c + j];
      grad[i * c + j] = j === inputs.labels[i] ? g * slope[i] : g;
    }
  }
  return { loss: r.loss, grad };
}

describe("arcface", () => {
  existenceTest(spec);
  fixtureSuite(spec);

  fdSuite(spec, () => {
    const rng = new Rng(13);
    // With logits s*cos the k-th derivative grows as s^k: a small scale, or a small step at s = 64.
    const above = () => rng.uniform(-0.8, 0.9); // above cos(pi - 0.5) = -0.8776
    return [
      { name: "s 8, m 0.5, mean", inputs: cosProblem(rng, 4, 5, above), options: { scale: 8 } },
      { name: "defaults (s 64, m 0.5), h 2^-11", inputs: cosProblem(rng, 3, 4, above), h: 2 ** -11 },
      {
        name: "s 4, m 0.5, label cosines below cos(pi - m) (the linear branch), sum, upstream -1.5",
        inputs: cosProblem(rng, 4, 5, () => rng.uniform(-0.99, -0.92)),
        options: { scale: 4, reduction: "sum" },
        upstream: -1.5,
      },
      {
        name: "s 8, m 0.3, easyMargin, label cosines on both sides of 0, ignored rows",
        inputs: cosProblem(rng, 6, 4, () => (rng.next() < 0.5 ? -1 : 1) * rng.uniform(0.1, 0.9), 0.3),
        options: { scale: 8, margin: 0.3, easyMargin: true },
      },
      {
        name: "s 6, m 1.2 (threshold -0.362), ignoreIndex 2, mean",
        inputs: { ...cosProblem(rng, 5, 4, () => rng.uniform(-0.25, 0.9)), labels: [2, 0, 3, 2, 1] },
        options: { scale: 6, margin: 1.2, ignoreIndex: 2 },
      },
      {
        // Per-row losses come back in float32, so the differences carry ~1e-7/h of noise.
        name: "s 2, m 0.5, none, upstream vector",
        inputs: cosProblem(rng, 3, 4, above),
        options: { scale: 2, reduction: "none" },
        upstream: new Float32Array([0.5, -1.5, 2]),
        atol: 2e-5,
        h: 2 ** -4,
      },
      { name: "C = 1 (zero gradient)", inputs: cosProblem(rng, 3, 1, above), options: { scale: 8 } },
      { name: "N = 1, C = 17", inputs: cosProblem(rng, 1, 17, above), options: { scale: 8, margin: 0.2 } },
    ];
  });

  agreementSuite(spec);

  describe("identities", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing(["arcface", "normface", "cosface", "crossEntropy"], [b]);
        const rng = new Rng(41);
        const n = 12, c = 9;
        // Every kind of cosine: exact +-1, out of range, both branches, ignored rows.
        const edges = { cos: randomCosines(rng, n, c, 1e4), labels: randomLabels(rng, n, c, 0.2) };
        const interior = cosProblem(rng, n, c, () => rng.uniform(-0.85, 0.98), 0.2);

        it("margin 0 is normface at the same scale, for every reduction, with or without easyMargin", {
          skip,
        }, async () => {
          const arc = lossOf(b, "arcface")!, norm = lossOf(b, "normface")!;
          for (const inputs of [edges, interior]) {
            for (const reduction of ["mean", "sum", "none"]) {
              for (const [scale, easyMargin] of [[64, false], [30, true], [1, false]] as const) {
                const a = await arc.valueAndGrad(inputs, { margin: 0, scale, easyMargin, reduction });
                const z = await norm.valueAndGrad(inputs, { scale, reduction });
                const label = `s ${scale} easy ${easyMargin} ${reduction}`;
                assertLossClose(a.loss as Any, z.loss as Any, `${label} loss`, 1e-6);
                assertGradClose(a.grads.cos, z.grads.cos.data, `${label} grad`, 1e-6);
              }
            }
          }
        });

        it("equals crossEntropy on s*cos with the label's logit s*phi(cos_y); grad s*phi'(cos_y) at the label", {
          skip,
        }, async () => {
          const arc = lossOf(b, "arcface")!, ce = lossOf(b, "crossEntropy")!;
          const below = cosProblem(rng, n, c, () => rng.uniform(-0.99, -0.9), 0.2);
          for (const inputs of [interior, below]) {
            for (
              const [o, easy] of [
                [{}, false],
                [{ scale: 30, margin: 0.2, reduction: "sum" }, false],
                [{ scale: 16, margin: 0.5, easyMargin: true, reduction: "none" }, true],
                [{ scale: 64, margin: 1.2, ignoreIndex: -100 }, false],
              ] as const
            ) {
              const opts: Record<string, Any> = o;
              const s = opts.scale ?? 64, m = opts.margin ?? 0.5;
              const ref = await viaCrossEntropy(ce, inputs, s, phiOf(m, easy), { reduction: opts.reduction });
              const r = await arc.valueAndGrad(inputs, opts);
              assertLossClose(r.loss as Any, ref.loss as Any, `${JSON.stringify(o)} loss`);
              assertGradClose(r.grads.cos, ref.grad, `${JSON.stringify(o)} grad`);
            }
          }
        });

        it('marginGrad "constant": the label column gets s*(p - 1) (s dCE/dz, phi\' taken as 1)', {
          skip,
        }, async () => {
          const arc = lossOf(b, "arcface")!, ce = lossOf(b, "crossEntropy")!;
          for (const [s, m, easy, reduction] of [[64, 0.5, false, "mean"], [30, 0.2, true, "none"]] as const) {
            const ref = await viaCrossEntropy(ce, interior, s, phiOf(m, easy), { reduction }, true);
            const o = { scale: s, margin: m, easyMargin: easy, reduction, marginGrad: "constant" };
            const r = await arc.valueAndGrad(interior, o);
            assertLossClose(r.loss as Any, ref.loss as Any, `s ${s} loss`);
            assertGradClose(r.grads.cos, ref.grad, `s ${s} grad`);
            // Only the label column differs from "exact"; the loss is the same.
            const exact = await arc.valueAndGrad(interior, { ...o, marginGrad: "exact" });
            assert.deepEqual(exact.loss, r.loss);
            for (let i = 0; i < n * c; i++) {
              const y = interior.labels[Math.floor(i / c)];
              if (i % c !== y) assert.equal(exact.grads.cos.data[i], r.grads.cos.data[i], `element ${i}`);
            }
          }
        });

        it("at and below cos(pi - m) a row is cosface's with margin m*sin(m) (gradient slope 1)", {
          skip,
        }, async () => {
          const arc = lossOf(b, "arcface")!, cos = lossOf(b, "cosface")!;
          for (const m of [0.5, 0.2, 1.2]) {
            const th = Math.cos(Math.PI - m);
            const inputs = cosProblem(rng, 6, 5, () => rng.uniform(-1, th), 0.2);
            const a = await arc.valueAndGrad(inputs, { margin: m, reduction: "none" });
            const f = await cos.valueAndGrad(inputs, { margin: m * Math.sin(m), reduction: "none" });
            assertLossClose(a.loss as Any, f.loss as Any, `m ${m} loss`, 1e-6);
            assertGradClose(a.grads.cos, f.grads.cos.data, `m ${m} grad`, 1e-6);
          }
        });

        it("easyMargin: rows with cos_y <= 0 are normface's, rows with cos_y > 0 are plain arcface's", {
          skip,
        }, async () => {
          const arc = lossOf(b, "arcface")!, norm = lossOf(b, "normface")!;
          const inputs = cosProblem(rng, 10, 6, () => rng.uniform(-1, 1));
          inputs.cos.data[0 * 6 + inputs.labels[0]] = 0; // exactly 0 takes the cosine
          const o = { scale: 30, margin: 0.4, reduction: "none" };
          const e = await arc.valueAndGrad(inputs, { ...o, easyMargin: true });
          const a = await arc.valueAndGrad(inputs, o);
          const z = await norm.valueAndGrad(inputs, { scale: o.scale, reduction: o.reduction }); // normface has no margin
          for (let i = 0; i < 10; i++) {
            const positive = inputs.cos.data[i * 6 + inputs.labels[i]] > 0;
            const other = positive ? a : z;
            assert.equal((e.loss as Float32Array)[i], (other.loss as Float32Array)[i], `row ${i} loss`);
            assert.deepEqual(
              e.grads.cos.data.subarray(i * 6, i * 6 + 6),
              other.grads.cos.data.subarray(i * 6, i * 6 + 6),
              `row ${i} grad`,
            );
          }
        });

        it("the defaults are scale 64, margin 0.5, easyMargin false, marginGrad exact, mean", { skip }, async () => {
          const arc = lossOf(b, "arcface")!;
          const d = await arc.valueAndGrad(edges);
          const e = await arc.valueAndGrad(edges, {
            scale: 64,
            margin: 0.5,
            easyMargin: false,
            marginGrad: "exact",
            reduction: "mean",
            ignoreIndex: -100,
          });
          assert.equal(d.loss, e.loss);
          assert.deepEqual(d.grads.cos.data, e.grads.cos.data);
        });

        it("a margin never lowers a row's loss below normface's (phi(cos) <= cos)", { skip }, async () => {
          const arc = lossOf(b, "arcface")!, norm = lossOf(b, "normface")!;
          const z = (await norm.forward(edges, { scale: 64, reduction: "none" })).loss as Float32Array;
          for (const margin of [0.1, 0.5, 1.2, 3]) {
            for (const easyMargin of [false, true]) {
              const a = (await arc.forward(edges, { margin, easyMargin, reduction: "none" })).loss as Float32Array;
              for (let i = 0; i < n; i++) {
                assert.ok(a[i] >= z[i] * (1 - 1e-6) - 1e-6, `m ${margin} row ${i}: ${a[i]} < ${z[i]}`);
              }
            }
          }
        });
      });
    }
  });

  describe("edge cases", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing("arcface", [b]);

        it("an all-ignored batch has loss 0 and zero gradients", { skip }, async () => {
          const arc = lossOf(b, "arcface")!;
          const inputs = { cos: randomCosines(new Rng(2), 3, 4, 1e4), labels: [-100, -100, -100] };
          for (
            const o of [{}, { easyMargin: true, scale: 1 }, { reduction: "sum" }, { reduction: "none" }, {
              marginGrad: "constant",
            }]
          ) {
            const r = await arc.valueAndGrad(inputs, o);
            if (typeof r.loss === "number") assert.equal(r.loss, 0);
            else assert.deepEqual([...r.loss as Float32Array], [0, 0, 0]);
            assert.ok(r.grads.cos.data.every((v: number) => v === 0), JSON.stringify(o));
            const g = await arc.backward(inputs, o, o.reduction === "none" ? [1, 2, 3] : 2);
            assert.ok(g.cos.data.every((v: number) => v === 0), `backward ${JSON.stringify(o)}`);
          }
        });

        it("cosines of exactly +-1 (label and others) give finite values that match the reference", {
          skip,
        }, async () => {
          const arc = lossOf(b, "arcface")!, ref = lossOf(reference, "arcface")!;
          // Label at +1, at -1, at +1 with every other cosine -1, at -1 with every other +1, all +1.
          const inputs = {
            cos: mat(5, 4, [1, 0.2, -1, 0.5, -1, 1, 0.3, -0.2, 1, -1, -1, -1, -1, 1, 1, 1, 1, 1, 1, 1]),
            labels: [0, 0, 0, 0, 2],
          };
          for (
            const o of [{}, { margin: 0.2, scale: 30, reduction: "none" }, { easyMargin: true }, {
              marginGrad: "constant",
              reduction: "sum",
            }, { margin: 3.1 }]
          ) {
            const r = await arc.valueAndGrad(inputs, o);
            const e = await ref.valueAndGrad(inputs, o);
            assertFinite(r.loss as Any, `${JSON.stringify(o)} loss`);
            assertFinite(r.grads.cos.data, `${JSON.stringify(o)} grad`, [5, 4]);
            assertLossClose(r.loss as Any, e.loss as Any, `${JSON.stringify(o)} loss`);
            assertGradClose(r.grads.cos, e.grads.cos.data, `${JSON.stringify(o)} grad`);
          }
          // At +1 the label's slope is finite and positive: s (p - 1) phi'(xd), xd = 1 - 1e-6.
          const r = await arc.valueAndGrad(inputs, { reduction: "none" });
          const g = r.grads.cos.data;
          assert.ok(g[0] < 0 && g[0] > -1e6, `label gradient at +1: ${g[0]}`);
        });

        it("cosines just outside [-1, 1] are clamped: the loss of +-1, and gradient exactly 0 there", {
          skip,
        }, async () => {
          const arc = lossOf(b, "arcface")!;
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
          for (const o of [{}, { easyMargin: true, scale: 16 }, { marginGrad: "constant", reduction: "none" }]) {
            const r = await arc.valueAndGrad({ cos: out, labels }, o);
            const e = await arc.valueAndGrad({ cos: clamped, labels }, o);
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
    ...numberOptionErrors(small, "margin", [-0.1, Math.PI, 4, NaN, -Infinity, "0.5"]),
    {
      name: "options.easyMargin not a boolean",
      inputs: small,
      options: { easyMargin: 1 },
      type: TypeError,
      includes: ["options.easyMargin", "1"],
    },
    {
      name: "unknown marginGrad",
      inputs: small,
      options: { marginGrad: "linear" },
      type: [RangeError, TypeError],
      includes: ["options.marginGrad", '"linear"'],
    },
    ...commonOptionErrors(small, "cos"),
    ...upstreamErrors(small),
  ]);

  describe("inputs", () => {
    it("inputs and options are unchanged by every call on every backend", async () => {
      for (const b of backends) {
        const arc = lossOf(b, "arcface");
        if (!arc) continue;
        const inputs = { cos: randomCosines(new Rng(4), 3, 5, 1e4), labels: [4, -100, 0] };
        for (const options of [{ easyMargin: true, margin: 0.3 }, { reduction: "none", marginGrad: "constant" }]) {
          const up = options.reduction === "none" ? randomVector(new Rng(1), 3, -1, 1) : 3;
          const snap = snapshot({ inputs, options, up });
          await arc.forward(inputs, options);
          await arc.backward(inputs, options, up);
          await arc.valueAndGrad(inputs, options);
          assertUnchanged(snap, { inputs, options, up }, `${b.name}: `);
        }
      }
    });
  });
});
