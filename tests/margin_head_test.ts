// marginHead (docs/LOSSES.md): cos = normalize(x) normalize(W)^T (dividing by max(||v||, 1e-12)),
// then the §2 loss of options.kind (arcface default, cosface, normface, combinedMargin) with
// that kind's options; gradients w.r.t. x [N, D] and W [C, D]. The wasm kernel streams W in
// chunks of 128 classes, so class counts around multiples of 128 matter.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { assertFinite, assertGradClose, assertLossClose, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { backends, lossOf, missing, reference } from "./helpers/backends.ts";
import { commonOptionErrors, labelErrors, matrixErrors, numberOptionErrors, upstreamErrors } from "./helpers/errors.ts";
import { type Mat, randomLabels, randomMatrix, randomVector, Rng } from "./helpers/random.ts";
import {
  alignedRows,
  GRID,
  HEAD_GRID,
  marginHeadSpec as spec,
  randomClassRows,
  unitRows,
  withWidth,
} from "./helpers/specs.ts";
import { checkAgreement, type ErrorCase, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/** A fresh problem for the error cases: x [3, 4], W [4, 4] (C = 4), labels of 3 rows. */
const small = () => ({ x: randomMatrix(new Rng(8), 3, 4, 1), W: randomMatrix(new Rng(9), 4, 4, 1), labels: [0, 3, 1] });

/**
 * x [n, d] with each labelled row at cosine `label()` to its class row (norms in [1, 3]),
 * W [c, d] random: the label cosines stay where the test wants them.
 */
function headProblem(rng: Rng, n: number, d: number, c: number, label: () => number, ignore = 0, ignoreIndex = -100) {
  // Norms of W in [0.6, 4] and of x in [1, 3]: a finite-difference step of 2^-6 stays small beside them.
  const W = randomClassRows(rng, c, d);
  for (let i = 0; i < W.data.length; i++) W.data[i] *= 2;
  const labels = randomLabels(rng, n, c, ignore, ignoreIndex);
  const targets = Array.from({ length: n }, label);
  const x = alignedRows(rng, W, labels, targets, randomVector(rng, n, 1, 3));
  return { x, W, labels };
}

/** cos = normalize(x) normalize(W)^T, computed here in float64 and rounded to float32. */
function cosines(x: Mat, W: Mat): Mat {
  const [n, d] = x.shape, c = W.shape[0];
  const xn = unitRows(x).u, wn = unitRows(W).u;
  const data = new Float32Array(n * c);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < c; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += xn[i * d + k] * wn[j * d + k];
      data[i * c + j] = s;
    }
  }
  return { data, shape: [n, c] };
}

/**
 * The chain rule through cos = normalize(x) normalize(W)^T: from G = dL/dcos, dL/dx_i =
 * (v_i - (v_i . x^_i) x^_i) / ||x_i|| with v = G W^, and the same for W with G^T x^.
 */
function throughNormalize(x: Mat, W: Mat, G: ArrayLike<number>): { dx: Float64Array; dW: Float64Array } {
  const [n, d] = x.shape, c = W.shape[0];
  const X = unitRows(x), V = unitRows(W);
  const vx = new Float64Array(n * d), vw = new Float64Array(c * d);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < c; j++) {
      const g = G[i * c + j];
      for (let k = 0; k < d; k++) {
        vx[i * d + k] += g * V.u[j * d + k];
        vw[j * d + k] += g * X.u[i * d + k];
      }
    }
  }
  const project = (v: Float64Array, u: Float64Array, norms: Float64Array, rows: number) => {
    for (let i = 0; i < rows; i++) {
      let dot = 0;
      for (let k = 0; k < d; k++) dot += v[i * d + k] * u[i * d + k];
      for (let k = 0; k < d; k++) v[i * d + k] = (v[i * d + k] - dot * u[i * d + k]) / Math.max(norms[i], 1e-12);
    }
    return v;
  };
  return { dx: project(vx, X.u, X.norms, n), dW: project(vw, V.u, V.norms, c) };
}

/** The §2 loss of each kind. */
const KIND_LOSS = {
  arcface: "arcface",
  cosface: "cosface",
  normface: "normface",
  combinedMargin: "combinedMargin",
} as const;

describe("marginHead", () => {
  existenceTest(spec);
  fixtureSuite(spec);

  fdSuite(spec, () => {
    const rng = new Rng(17);
    // Label cosines away from +-1, from arcface's threshold cos(pi - 0.5) = -0.878 and easyMargin's 0;
    // the other cosines of random directions in D >= 5 stay away from +-1.
    const above = () => rng.uniform(-0.75, 0.9);
    return [
      { name: "arcface s 8, mean, N 4, D 5, C 6", inputs: headProblem(rng, 4, 5, 6, above), options: { scale: 8 } },
      {
        name: "arcface defaults (s 64, m 0.5), h 2^-11",
        inputs: headProblem(rng, 3, 6, 4, above),
        h: 2 ** -11,
      },
      {
        name: "arcface s 4, label cosines below cos(pi - m) (the linear branch)",
        inputs: headProblem(rng, 4, 5, 5, () => rng.uniform(-0.98, -0.92)),
        options: { scale: 4 },
      },
      {
        name: "arcface s 8, m 0.3, easyMargin, ignored rows",
        inputs: headProblem(rng, 6, 5, 4, () => (rng.next() < 0.5 ? -1 : 1) * rng.uniform(0.15, 0.85), 0.3),
        options: { scale: 8, margin: 0.3, easyMargin: true },
      },
      {
        name: "cosface s 8, sum, upstream -0.75",
        inputs: headProblem(rng, 4, 6, 5, above),
        options: { kind: "cosface", scale: 8, reduction: "sum" },
        upstream: -0.75,
      },
      {
        // Per-row losses come back in float32, so the differences carry ~1e-7/h of noise.
        name: "normface s 2, none, upstream vector",
        inputs: headProblem(rng, 3, 5, 4, above),
        options: { kind: "normface", scale: 2, reduction: "none" },
        upstream: new Float32Array([0.5, -1.5, 2]),
        atol: 2e-5,
        h: 2 ** -5,
      },
      {
        name: "combinedMargin s 6, m1 1.2, m2 0.3, m3 0.1, ignoreIndex 1",
        inputs: { ...headProblem(rng, 4, 5, 3, () => rng.uniform(-0.7, 0.7)), labels: [1, 0, 2, 1] },
        options: { kind: "combinedMargin", scale: 6, m1: 1.2, m2: 0.3, m3: 0.1, ignoreIndex: 1 },
      },
      {
        name: "normface C = 1 (zero gradient)",
        inputs: headProblem(rng, 3, 5, 1, above),
        options: { kind: "normface" },
      },
    ];
  });

  describe("agrees with the float64 reference on random shapes", () => {
    for (const b of backends) {
      if (b === reference) continue;
      describe(b.name, () => {
        const skip = missing(spec.name, [reference, b]);
        for (const d of spec.widths) {
          for (const c of HEAD_GRID.classes) {
            it(`D = ${d}, C = ${c}, N in ${GRID.rows.join("/")}, x scales ${GRID.scales.join("/")}`, {
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
        const skip = missing(["marginHead", ...Object.values(KIND_LOSS)], [b]);
        const rng = new Rng(45);
        const n = 9, d = 8, c = 13;
        // Label cosines away from arcface's threshold (so float32 and float64 cosines take the same branch).
        const inputs = headProblem(rng, n, d, c, () => rng.uniform(-0.8, 0.97), 0.2);
        const cos = cosines(inputs.x, inputs.W);

        it("kind k is the §2 loss k of cos = normalize(x) normalize(W)^T; gradients by the chain rule", {
          skip,
        }, async () => {
          const head = lossOf(b, "marginHead")!;
          for (
            const o of [
              {},
              { kind: "arcface", scale: 30, margin: 0.3, easyMargin: true, reduction: "sum" },
              { kind: "arcface", marginGrad: "constant", reduction: "none" },
              { kind: "cosface", reduction: "none" },
              { kind: "cosface", scale: 30, margin: 0.2 },
              { kind: "normface" },
              { kind: "normface", scale: 64, reduction: "sum" },
              { kind: "combinedMargin", m1: 1.2, m2: 0.3, m3: 0.1 },
              { kind: "combinedMargin", scale: 16, marginGrad: "constant", reduction: "none" },
            ] as Record<string, Any>[]
          ) {
            const { kind = "arcface", ...rest } = o;
            const loss = lossOf(b, KIND_LOSS[kind as keyof typeof KIND_LOSS])!;
            const e = await loss.valueAndGrad({ cos, labels: inputs.labels }, rest);
            const r = await head.valueAndGrad(inputs, o);
            const { dx, dW } = throughNormalize(inputs.x, inputs.W, e.grads.cos.data);
            // SPEC's bound, although the cosines given to the §2 loss are rounded to float32 (s * 6e-8 in the logits).
            assertLossClose(r.loss as Any, e.loss as Any, `${JSON.stringify(o)} loss`, 1e-5);
            assertGradClose(r.grads.x, dx, `${JSON.stringify(o)} grads.x`, 1e-5);
            assertGradClose(r.grads.W, dW, `${JSON.stringify(o)} grads.W`, 1e-5);
          }
        });

        it("the defaults: kind arcface; scale 16 for normface, 64 for the other kinds", { skip }, async () => {
          const head = lossOf(b, "marginHead")!;
          const same = async (a: Record<string, Any>, e: Record<string, Any>) => {
            const ra = await head.valueAndGrad(inputs, a), re = await head.valueAndGrad(inputs, e);
            assert.equal(ra.loss, re.loss, `${JSON.stringify(a)} vs ${JSON.stringify(e)}`);
            assert.deepEqual(ra.grads.x.data, re.grads.x.data);
            assert.deepEqual(ra.grads.W.data, re.grads.W.data);
          };
          await same({}, { kind: "arcface", scale: 64, margin: 0.5, easyMargin: false, marginGrad: "exact" });
          await same({ kind: "normface" }, { kind: "normface", scale: 16, reduction: "mean", ignoreIndex: -100 });
          await same({ kind: "cosface" }, { kind: "cosface", scale: 64, margin: 0.35 });
          await same({ kind: "combinedMargin" }, { kind: "combinedMargin", scale: 64, m1: 1, m2: 0.5, m3: 0 });
        });

        it("normface is arcface and cosface with margin 0 (same scale)", { skip }, async () => {
          const head = lossOf(b, "marginHead")!;
          for (const reduction of ["mean", "none"]) {
            const z = await head.valueAndGrad(inputs, { kind: "normface", scale: 30, reduction });
            for (const k of ["arcface", "cosface"]) {
              const r = await head.valueAndGrad(inputs, { kind: k, scale: 30, margin: 0, reduction });
              assertLossClose(r.loss as Any, z.loss as Any, `${k} ${reduction} loss`, 1e-6);
              assertGradClose(r.grads.x, z.grads.x.data, `${k} ${reduction} grads.x`, 1e-6);
              assertGradClose(r.grads.W, z.grads.W.data, `${k} ${reduction} grads.W`, 1e-6);
            }
          }
        });

        it("rows of x and W scaled by powers of 2: the same loss, gradients divided by the factor", {
          skip,
        }, async () => {
          const head = lossOf(b, "marginHead")!;
          const fx = [4, 0.5, 2, 1, 8, 0.25, 1, 2, 16], fw = Array.from({ length: c }, (_, j) => 2 ** ((j % 5) - 2));
          const scaleRows = (m: Mat, f: number[]) => {
            const [r, w] = m.shape;
            return { data: m.data.map((v, i) => v * f[Math.floor(i / w)]), shape: [r, w] as [number, number] };
          };
          const scaled = { x: scaleRows(inputs.x, fx), W: scaleRows(inputs.W, fw), labels: inputs.labels };
          for (const o of [{}, { kind: "cosface", reduction: "none" }, { kind: "combinedMargin", m1: 1.2 }]) {
            const a = await head.valueAndGrad(inputs, o);
            const s = await head.valueAndGrad(scaled, o);
            assertLossClose(s.loss as Any, a.loss as Any, `${JSON.stringify(o)} loss`, 1e-6);
            const gx = a.grads.x.data.map((v: number, i: number) => v / fx[Math.floor(i / d)]);
            const gw = a.grads.W.data.map((v: number, i: number) => v / fw[Math.floor(i / d)]);
            assertGradClose(s.grads.x, gx, `${JSON.stringify(o)} grads.x`, 1e-5);
            assertGradClose(s.grads.W, gw, `${JSON.stringify(o)} grads.W`, 1e-5);
          }
        });
      });
    }
  });

  describe("edge cases", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing("marginHead", [b]);

        it("an all-ignored batch has loss 0 and zero gradients", { skip }, async () => {
          const head = lossOf(b, "marginHead")!;
          const rng = new Rng(2);
          const inputs = { x: randomMatrix(rng, 3, 5, 2), W: randomMatrix(rng, 4, 5, 1), labels: [-100, -100, -100] };
          for (
            const o of [{}, { kind: "normface", scale: 1 }, { kind: "cosface", reduction: "sum" }, {
              kind: "combinedMargin",
              reduction: "none",
            }]
          ) {
            const r = await head.valueAndGrad(inputs, o);
            if (typeof r.loss === "number") assert.equal(r.loss, 0);
            else assert.deepEqual([...r.loss as Float32Array], [0, 0, 0]);
            assert.ok(r.grads.x.data.every((v: number) => v === 0), `x ${JSON.stringify(o)}`);
            assert.ok(r.grads.W.data.every((v: number) => v === 0), `W ${JSON.stringify(o)}`);
          }
        });

        it(
          "D = 1 (every cosine exactly +-1) and x parallel to its class row give finite values matching the reference",
          {
            skip,
          },
          async () => {
            const head = lossOf(b, "marginHead")!, ref = lossOf(reference, "marginHead")!;
            const rng = new Rng(3);
            const W1 = randomMatrix(rng, 5, 1, 1);
            const d1 = { x: randomMatrix(rng, 6, 1, 2), W: W1, labels: [0, 1, 2, 3, 4, 0] };
            const W8 = randomClassRows(rng, 5, 8);
            const labels = [0, 2, 4, 1];
            const parallel = {
              x: {
                data: new Float32Array(4 * 8).map((_, i) => 1.5 * W8.data[labels[i >> 3] * 8 + (i & 7)]),
                shape: [4, 8],
              },
              W: W8,
              labels,
            };
            for (const inputs of [d1, parallel]) {
              for (
                const o of [{}, { kind: "cosface", reduction: "none" }, { kind: "combinedMargin", m1: 1.3 }, {
                  kind: "arcface",
                  easyMargin: true,
                  marginGrad: "constant",
                }, { kind: "normface", scale: 64, reduction: "sum" }]
              ) {
                const r = await head.valueAndGrad(inputs, o);
                const e = await ref.valueAndGrad(inputs, o);
                const label = `D ${inputs.x.shape[1]} ${JSON.stringify(o)}`;
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

        it("zero rows of x or W give finite values; an ignored zero row of x gets gradient 0", { skip }, async () => {
          const head = lossOf(b, "marginHead")!;
          const rng = new Rng(6);
          const inputs = { x: randomMatrix(rng, 4, 6, 1), W: randomMatrix(rng, 5, 6, 1), labels: [0, 3, -100, 3] };
          inputs.x.data.fill(0, 6, 12); // row 1, labelled
          inputs.x.data.fill(0, 12, 18); // row 2, ignored
          inputs.W.data.fill(0, 18, 24); // class 3, a label of rows 1 and 3
          for (const o of [{}, { kind: "normface", reduction: "none" }, { kind: "cosface" }]) {
            const r = await head.valueAndGrad(inputs, o);
            assertFinite(r.loss as Any, `${JSON.stringify(o)} loss`);
            assertFinite(r.grads.x.data, `${JSON.stringify(o)} grads.x`, [4, 6]);
            assertFinite(r.grads.W.data, `${JSON.stringify(o)} grads.W`, [5, 6]);
            assert.ok(r.grads.x.data.subarray(12, 18).every((v: number) => v === 0), "ignored zero row");
          }
        });
      });
    }
  });

  describe("a large head agrees with the float64 reference", () => {
    for (const b of backends) {
      if (b === reference) continue;
      describe(b.name, () => {
        it("N = 8, D = 16, C = 20000 (157 class chunks): the same as the reference", {
          skip: missing("marginHead", [reference, b]),
        }, async () => {
          const head = lossOf(b, "marginHead")!, ref = lossOf(reference, "marginHead")!;
          const rng = new Rng(20000);
          const W = randomClassRows(rng, 20000, 16);
          const labels = Int32Array.from([0, 127, 128, 19999, 5000, -100, 12345, 19872]);
          const x = alignedRows(rng, W, labels, randomVector(rng, 8, -0.9, 0.95), randomVector(rng, 8, 0.5, 3));
          const inputs = { x, W, labels };
          const snap = snapshot(inputs);
          for (
            const [o, up] of [[{}, undefined], [
              { kind: "cosface", scale: 30, reduction: "none" },
              randomVector(rng, 8, -2, 2),
            ]] as [
              Record<string, Any>,
              Any,
            ][]
          ) {
            const r = await head.valueAndGrad(inputs, o);
            const e = await ref.valueAndGrad(inputs, o);
            assertLossClose(r.loss as Any, e.loss as Any, `${JSON.stringify(o)} loss`);
            assertGradClose(r.grads.x, e.grads.x.data, `${JSON.stringify(o)} grads.x`);
            assertGradClose(r.grads.W, e.grads.W.data, `${JSON.stringify(o)} grads.W`);
            const g = await head.backward(inputs, o, up);
            const eg = await ref.backward(inputs, o, up);
            assertGradClose(g.x, eg.x.data, `${JSON.stringify(o)} backward grads.x`);
            assertGradClose(g.W, eg.W.data, `${JSON.stringify(o)} backward grads.W`);
            assertUnchanged(snap, inputs);
          }
        });
      });
    }
  });

  const withKind = (kind: string, cases: ErrorCase[]): ErrorCase[] =>
    cases.map((e) => ({ ...e, name: `kind ${kind}: ${e.name}`, options: { kind, ...e.options } }));
  errorSuite(spec, [
    // "C = 0" of matrixErrors empties D here; both are below, named for what they are.
    ...matrixErrors(small, "x", true, "x").filter((e) => e.name !== "C = 0"),
    ...matrixErrors(small, "W", false, "x").slice(0, 6),
    {
      name: "W of another width D than x",
      inputs: () => ({ ...small(), W: { data: new Float32Array(20), shape: [4, 5] } }),
      type: RangeError,
      includes: ["W.shape[1]", "5"],
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
    {
      name: "unknown kind",
      inputs: small,
      options: { kind: "sphereface" },
      type: RangeError,
      includes: ["options.kind", '"sphereface"'],
    },
    {
      name: "kind not a string",
      inputs: small,
      options: { kind: 1 },
      type: [RangeError, TypeError],
      includes: ["options.kind", "1"],
    },
    ...numberOptionErrors(small, "scale", [0, -1, NaN, Infinity, "64"]),
    ...numberOptionErrors(small, "margin", [-0.1, Math.PI, NaN, "0.5"]),
    ...withKind("normface", numberOptionErrors(small, "scale", [0, NaN])),
    ...withKind("cosface", numberOptionErrors(small, "margin", [NaN, Infinity])),
    ...withKind("combinedMargin", [
      ...numberOptionErrors(small, "m1", [NaN]),
      ...numberOptionErrors(small, "m2", [Infinity]),
      ...numberOptionErrors(small, "m3", [NaN, "0"]),
    ]),
    {
      name: "options.easyMargin not a boolean",
      inputs: small,
      options: { easyMargin: "yes" },
      type: TypeError,
      includes: ["options.easyMargin", '"yes"'],
    },
    {
      name: "unknown marginGrad",
      inputs: small,
      options: { marginGrad: "approx" },
      type: [RangeError, TypeError],
      includes: ["options.marginGrad", '"approx"'],
    },
    ...commonOptionErrors(small, "x"),
    {
      name: "checkFinite: Infinity in W",
      inputs: () => {
        const p = small();
        p.W.data[6] = Infinity; // [1, 2]
        return p;
      },
      options: { checkFinite: true },
      type: RangeError,
      includes: [/(^|[^\w.])W($|[^\w])/, "[1, 2]", "Infinity"],
    },
    ...upstreamErrors(small),
  ]);

  describe("inputs", () => {
    it("inputs and options are unchanged by every call on every backend", async () => {
      for (const b of backends) {
        const head = lossOf(b, "marginHead");
        if (!head) continue;
        const rng = new Rng(4);
        const inputs = { x: randomMatrix(rng, 3, 5, 1), W: randomMatrix(rng, 130, 5, 1), labels: [129, -100, 0] };
        for (const options of [{ kind: "arcface", easyMargin: true }, { kind: "cosface", reduction: "none" }]) {
          const up = options.reduction === "none" ? randomVector(rng, 3, -1, 1) : 3;
          const snap = snapshot({ inputs, options, up });
          await head.forward(inputs, options);
          await head.backward(inputs, options, up);
          await head.valueAndGrad(inputs, options);
          assertUnchanged(snap, { inputs, options, up }, `${b.name}: `);
        }
      }
    });
  });
});
