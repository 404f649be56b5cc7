// The margin losses on cosines (docs/LOSSES.md section 2) as one table. Each takes cosines
// `cos [N, C]` (clamped to [-1, 1]) and labels, makes the logits s*cos except the label's,
// s*phi(cos_y), and takes cross-entropy; the gradient is w.r.t. cos. The losses differ only
// in phi and their options:
//
// - arcface: phi = cos(theta + m), theta = acos(cos_y) (easyMargin: only where cos > 0;
//   otherwise the linear cos - m sin(pi - m) at and below cos(pi - m));
// - cosface (CosFace / LMCL, AM-Softmax): phi = cos - m;
// - combinedMargin (insightface's combined margin): phi = cos(m1 theta + m2) - m3, no
//   threshold branch;
// - normface (NormFace): phi = cos (no margin), default scale 16.
//
// An entry of MARGIN_LOSSES holds what is the loss's own (fixtures, finite-difference
// problems, phi, its identities with the others, the options of its edge cases, its bad
// options); every check is written once, below the table.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { assertFinite, assertGradClose, assertLossClose, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { type AnyLoss, type Backend, backends, lossOf, missing, reference } from "./helpers/backends.ts";
import { commonOptionErrors, labelErrors, matrixErrors, numberOptionErrors, upstreamErrors } from "./helpers/errors.ts";
import { type Mat, randomLabels, randomVector, Rng } from "./helpers/random.ts";
import {
  arcfaceSpec,
  combinedMarginSpec,
  cosfaceSpec,
  type LossSpec,
  normfaceSpec,
  randomCosines,
} from "./helpers/specs.ts";
import {
  agreementSuite,
  type ErrorCase,
  errorSuite,
  existenceTest,
  type FdProblem,
  fdSuite,
  fixtureSuite,
} from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;
type Options = Record<string, Any>;

/** A problem of the margin losses. */
interface Cos {
  cos: Mat;
  labels: ArrayLike<number>;
}

/** A margin function: phi(cos_y) and its derivative, for an interior cosine. */
type Phi = (x: number) => [number, number];

const REDUCTIONS = ["mean", "sum", "none"] as const;

const mat = (rows: number, cols: number, values: number[]): Mat => ({
  data: new Float32Array(values),
  shape: [rows, cols],
});

/** A fresh 3 x 4 problem for the error cases. */
const small = () => ({ cos: randomCosines(new Rng(8), 3, 4, 1), labels: [0, 3, 1] });

/**
 * Cosines uniform in [-0.9, 0.9] (away from the clamp), with each labelled row's label cosine
 * drawn by `label` when given (to keep a problem away from +-1 and from the branch points of phi).
 */
function cosProblem(rng: Rng, n: number, c: number, label?: () => number, ignore = 0, ignoreIndex = -100): Cos {
  const cos = randomCosines(rng, n, c, 1);
  for (let i = 0; i < cos.data.length; i++) cos.data[i] *= 0.9;
  const labels = randomLabels(rng, n, c, ignore, ignoreIndex);
  if (label) { for (let i = 0; i < n; i++) if (labels[i] >= 0) cos.data[i * c + labels[i]] = label(); }
  return { cos, labels };
}

/** A copy of `p` with `add(i, j)` added to each cosine (rounded to float32). */
function shifted(p: Cos, add: (i: number, j: number) => number): Cos {
  const [n, c] = p.cos.shape;
  const data = p.cos.data.slice();
  for (let i = 0; i < n; i++) for (let j = 0; j < c; j++) data[i * c + j] += add(i, j);
  return { cos: { data, shape: p.cos.shape }, labels: p.labels };
}

/**
 * The loss and gradient w.r.t. cos built from crossEntropy on `ce`: logits s*clamp(cos) with the
 * label's replaced by s*phi(clamp(cos_y)) (float64, rounded to float32 once); dL/dcos = s dL/dz,
 * times phi'(cos_y) at the label unless `constant`, and 0 at a cosine outside [-1, 1] (the clamp).
 */
async function viaCrossEntropy(ce: AnyLoss, inputs: Cos, s: number, phi: Phi, options: Options, constant = false) {
  const [n, c] = inputs.cos.shape;
  const clamp = (v: number) => Math.max(-1, Math.min(1, v));
  const logits = new Float32Array(n * c);
  const slope = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < c; j++) logits[i * c + j] = s * clamp(inputs.cos.data[i * c + j]);
    const y = inputs.labels[i];
    if (y < 0) continue;
    const [value, d] = phi(clamp(inputs.cos.data[i * c + y]));
    logits[i * c + y] = s * value;
    slope[i] = constant ? 1 : d;
  }
  const r = await ce.valueAndGrad({ logits: { data: logits, shape: [n, c] }, labels: inputs.labels }, options);
  const grad = new Float64Array(n * c);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < c; j++) {
      const g = s * r.grads.logits.data[i * c + j];
      grad[i * c + j] = Math.abs(inputs.cos.data[i * c + j]) > 1 ? 0 : j === inputs.labels[i] ? g * slope[i] : g;
    }
  }
  return { loss: r.loss, grad };
}

/** ArcFace's phi and its derivative (docs/LOSSES.md; interior cosines only). */
function arcPhi(m: number, easy: boolean): Phi {
  return (x) => {
    const sin = Math.sqrt(1 - x * x);
    const arc: [number, number] = [x * Math.cos(m) - sin * Math.sin(m), Math.cos(m) + (Math.sin(m) * x) / sin];
    if (easy) return x > 0 ? arc : [x, 1];
    return x > Math.cos(Math.PI - m) ? arc : [x - m * Math.sin(Math.PI - m), 1];
  };
}

/** The combined margin's phi = cos(m1 theta + m2) - m3 and d phi / d cos = m1 sin(m1 theta + m2) / sin(theta). */
function combinedPhi(m1: number, m2: number, m3: number): Phi {
  return (x) => {
    const theta = Math.acos(x);
    return [Math.cos(m1 * theta + m2) - m3, (m1 * Math.sin(m1 * theta + m2)) / Math.sin(theta)];
  };
}

/** The problems an entry's identities share, drawn per backend from the entry's seed. */
interface Problems {
  rng: Rng;
  n: number;
  c: number;
  /** Every kind of cosine: exact +-1, 0, out of range, both branches; ignored rows. */
  edges: Cos;
  /** Cosines inside (-1, 1), the label's drawn by the entry's `interiorLabel`; ignored rows. */
  interior: Cos;
}

/** "This loss with these options equals `other` with those", over problems drawn when the test runs. */
interface Equivalence {
  name: string;
  other: string;
  tol: number;
  cases(p: Problems): { inputs: Cos; otherInputs?: Cos; pairs: [Options, Options][] }[];
}

/** A margin loss: what is its own. */
interface MarginLoss {
  spec: LossSpec;
  /** Every documented default, spelled out. */
  defaults: Options;
  /** phi for options `o` (the defaults where `o` has none). */
  phi(o: Options): Phi;
  /** Finite-difference problems of the js reference. */
  fd(): FdProblem[];
  /** The seed of the identities' problems, and how their interior label cosines are drawn. */
  seed: number;
  interiorLabel?: (rng: Rng) => number;
  /** crossEntropy on s*cos with the label's logit s*phi(cos_y): on which problems, with which options. */
  crossEntropy: {
    inputs(p: Problems): Cos[];
    cases: { o: Options; phi?: Phi; name?: string }[];
    tol?: number;
  };
  /** marginGrad "constant" (phi' taken as 1) checked with these options; absent: phi' is 1, so it is "exact" bit for bit. */
  constantGrad?: Options[];
  equivalences: Equivalence[];
  /** Its own identity tests. */
  own?(b: Backend, p: Problems, skip: string | false): void;
  /** Options of the edge cases: an all-ignored batch, cosines of exactly +-1, cosines just outside [-1, 1]. */
  ignored: Options[];
  exact: Options[];
  /** A known value at +-1, beside the agreement with the reference. */
  atOne?(loss: AnyLoss, inputs: Cos): Promise<void>;
  clamped: Options[];
  /** Options of the "inputs unchanged" test. */
  unchanged: Options[];
  /** Its bad options (scale, margins, marginGrad). */
  badOptions: ErrorCase[];
}

/** The error case of a marginGrad that is neither "exact" nor "constant". */
const badMarginGrad = (value: unknown): ErrorCase => ({
  name: "unknown marginGrad",
  inputs: small,
  options: { marginGrad: value },
  type: [RangeError, TypeError],
  includes: ["options.marginGrad", JSON.stringify(value)],
});

/** Every reduction (outer) with each [self, other] option pair of `sets` (inner). */
const everyReduction = (sets: [Options, Options][]): [Options, Options][] =>
  REDUCTIONS.flatMap((reduction) =>
    sets.map(([a, b]): [Options, Options] => [{ ...a, reduction }, { ...b, reduction }])
  );

const arcface: MarginLoss = {
  spec: arcfaceSpec,
  defaults: { scale: 64, margin: 0.5, easyMargin: false, marginGrad: "exact", reduction: "mean", ignoreIndex: -100 },
  phi: (o) => arcPhi(o.margin ?? 0.5, o.easyMargin === true),
  fd: () => {
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
  },
  seed: 41,
  interiorLabel: (rng) => rng.uniform(-0.85, 0.98),
  crossEntropy: {
    inputs: (p) => [p.interior, cosProblem(p.rng, p.n, p.c, () => p.rng.uniform(-0.99, -0.9), 0.2)],
    cases: [
      { o: {} },
      { o: { scale: 30, margin: 0.2, reduction: "sum" } },
      { o: { scale: 16, margin: 0.5, easyMargin: true, reduction: "none" } },
      { o: { scale: 64, margin: 1.2, ignoreIndex: -100 } },
    ],
  },
  constantGrad: [
    { scale: 64, margin: 0.5, easyMargin: false, reduction: "mean" },
    { scale: 30, margin: 0.2, easyMargin: true, reduction: "none" },
  ],
  equivalences: [
    {
      name: "margin 0 is normface at the same scale, for every reduction, with or without easyMargin",
      other: "normface",
      tol: 1e-6,
      cases: (p) =>
        [p.edges, p.interior].map((inputs) => ({
          inputs,
          pairs: everyReduction(
            ([[64, false], [30, true], [1, false]] as const).map(([scale, easyMargin]) => [
              { margin: 0, scale, easyMargin },
              { scale },
            ]),
          ),
        })),
    },
    {
      name: "at and below cos(pi - m) a row is cosface's with margin m*sin(m) (gradient slope 1)",
      other: "cosface",
      tol: 1e-6,
      cases: (p) =>
        [0.5, 0.2, 1.2].map((m) => ({
          inputs: cosProblem(p.rng, 6, 5, () => p.rng.uniform(-1, Math.cos(Math.PI - m)), 0.2),
          pairs: [[{ margin: m, reduction: "none" }, { margin: m * Math.sin(m), reduction: "none" }]],
        })),
    },
  ],
  own: (b, p, skip) => {
    const { n, edges } = p;
    it(
      "easyMargin: rows with cos_y <= 0 are normface's, rows with cos_y > 0 are plain arcface's",
      { skip },
      async () => {
        const arc = lossOf(b, "arcface")!, norm = lossOf(b, "normface")!;
        const inputs = cosProblem(p.rng, 10, 6, () => p.rng.uniform(-1, 1));
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
      },
    );

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
  },
  ignored: [{}, { easyMargin: true, scale: 1 }, { reduction: "sum" }, { reduction: "none" }, {
    marginGrad: "constant",
  }],
  exact: [{}, { margin: 0.2, scale: 30, reduction: "none" }, { easyMargin: true }, {
    marginGrad: "constant",
    reduction: "sum",
  }, { margin: 3.1 }],
  atOne: async (arc, inputs) => {
    // At +1 the label's slope is finite and positive: s (p - 1) phi'(xd), xd = 1 - 1e-6.
    const r = await arc.valueAndGrad(inputs, { reduction: "none" });
    const g = r.grads.cos.data;
    assert.ok(g[0] < 0 && g[0] > -1e6, `label gradient at +1: ${g[0]}`);
  },
  clamped: [{}, { easyMargin: true, scale: 16 }, { marginGrad: "constant", reduction: "none" }],
  unchanged: [{ easyMargin: true, margin: 0.3 }, { reduction: "none", marginGrad: "constant" }],
  badOptions: [
    ...numberOptionErrors(small, "scale", [0, -1, NaN, Infinity, "64"]),
    ...numberOptionErrors(small, "margin", [-0.1, Math.PI, 4, NaN, -Infinity, "0.5"]),
    {
      name: "options.easyMargin not a boolean",
      inputs: small,
      options: { easyMargin: 1 },
      type: TypeError,
      includes: ["options.easyMargin", "1"],
    },
    badMarginGrad("linear"),
  ],
};

const cosface: MarginLoss = {
  spec: cosfaceSpec,
  defaults: { scale: 64, margin: 0.35, reduction: "mean", ignoreIndex: -100 },
  phi: (o) => (x) => [x - (o.margin ?? 0.35), 1],
  fd: () => {
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
  },
  seed: 42,
  interiorLabel: (rng) => rng.uniform(-0.6, 0.98),
  crossEntropy: {
    inputs: (p) => [p.edges, p.interior],
    cases: [
      { o: {} },
      { o: { scale: 30, margin: 0.2, reduction: "sum" } },
      { o: { scale: 1, margin: 0.5, reduction: "none" } },
      { o: { scale: 16, margin: -0.25, marginGrad: "constant" } },
    ],
  },
  equivalences: [
    {
      name: "margin 0 is normface at the same scale, for every reduction",
      other: "normface",
      tol: 1e-6,
      cases: (p) =>
        [p.edges, p.interior].map((inputs) => ({
          inputs,
          pairs: everyReduction([64, 16, 1].map((scale) => [{ margin: 0, scale }, { scale }])),
        })),
    },
    {
      // The shifted cosines are rounded to float32: 30 * 6e-8 in the logits.
      name: "cosface(m) is normface of the cosines with the label's lowered by m",
      other: "normface",
      tol: 1e-5,
      cases: (p) =>
        [0.35, 0.1].map((m) => ({
          inputs: p.interior,
          otherInputs: shifted(p.interior, (i, j) => (j === p.interior.labels[i] ? -m : 0)),
          pairs: (["mean", "none"] as const).map((reduction): [Options, Options] => [
            { margin: m, scale: 30, reduction },
            { scale: 30, reduction },
          ]),
        })),
    },
  ],
  own: (b, p, skip) => {
    const { n, interior } = p;
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
  },
  ignored: [{}, { margin: 0.2, scale: 1 }, { reduction: "sum" }, { reduction: "none" }],
  exact: [{}, { margin: 0.2, scale: 30, reduction: "none" }, { margin: 2, reduction: "sum" }],
  clamped: [{}, { scale: 16, margin: 0.1 }, { reduction: "none" }],
  unchanged: [{ margin: 0.2 }, { reduction: "none", marginGrad: "constant" }],
  badOptions: [
    ...numberOptionErrors(small, "scale", [0, -1, NaN, Infinity, "64"]),
    ...numberOptionErrors(small, "margin", [NaN, Infinity, "0.35"]),
    badMarginGrad("none"),
  ],
};

const combinedMargin: MarginLoss = {
  spec: combinedMarginSpec,
  defaults: { scale: 64, m1: 1, m2: 0.5, m3: 0, marginGrad: "exact", reduction: "mean", ignoreIndex: -100 },
  phi: (o) => combinedPhi(o.m1 ?? 1, o.m2 ?? 0.5, o.m3 ?? 0),
  fd: () => {
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
  },
  seed: 44,
  // Label cosines inside (-1, 1): the identities are about the formula, and at exactly +-1
  // each loss uses its own documented derivative rule.
  interiorLabel: (rng) => rng.uniform(-0.99, 0.99),
  crossEntropy: {
    inputs: (p) => [p.interior],
    cases: [
      { o: {} },
      { o: { scale: 30, m1: 1, m2: 0.3, m3: 0.2, reduction: "sum" } },
      { o: { scale: 16, m1: 1.35, m2: 0.2, m3: 0.1, reduction: "none" } },
      { o: { scale: 30, m1: 2, m2: 0, m3: 0 } }, // cos(2 theta) = 2 cos^2 - 1
      { o: { scale: 64, m1: 0.9, m2: 0.4, m3: 0.15 } },
      // m1 = 2, m2 = 0: phi = T_2(cos) = 2 cos^2 - 1 exactly, phi' = 4 cos.
      { o: { scale: 30, m1: 2, m2: 0, m3: 0.1 }, phi: (x) => [2 * x * x - 1 - 0.1, 4 * x], name: "Chebyshev" },
    ],
  },
  constantGrad: [
    { scale: 64, m1: 1, m2: 0.5, m3: 0 },
    { scale: 30, m1: 1.35, m2: 0.25, m3: 0.1, reduction: "none" },
  ],
  equivalences: [
    {
      name: "(m1 1, m2 m, m3 0) is arcface(m) where the label cosine is above cos(pi - m)",
      other: "arcface",
      tol: 1e-6,
      cases: (p) =>
        [[0.5, 64], [0.2, 30], [1.2, 16], [0, 8]].map(([m, s]) => ({
          inputs: cosProblem(p.rng, 10, 7, () => p.rng.uniform(Math.cos(Math.PI - m) + 0.01, 0.999), 0.2),
          pairs: (["mean", "none"] as const).map((reduction): [Options, Options] => [
            { scale: s, reduction, m1: 1, m2: m, m3: 0 },
            { scale: s, reduction, margin: m },
          ]),
        })),
    },
    {
      name: "(m1 1, m2 0, m3) is cosface(m3)",
      other: "cosface",
      tol: 1e-6,
      cases: (p) => [{
        inputs: p.interior,
        pairs: everyReduction(
          [[0.35, 64], [0.2, 30], [-0.1, 1]].map(([m3, scale]) => [{ scale, m1: 1, m2: 0, m3 }, { scale, margin: m3 }]),
        ),
      }],
    },
    {
      name: "(m1 1, m2 0, m3 0) is normface",
      other: "normface",
      tol: 1e-6,
      cases: (p) => [{
        inputs: p.interior,
        pairs: everyReduction([[{ scale: 16, m1: 1, m2: 0, m3: 0 }, { scale: 16 }]]),
      }],
    },
  ],
  ignored: [{}, { m1: 2, scale: 1 }, { reduction: "sum" }, { reduction: "none" }],
  exact: [{}, { m1: 1.35, m2: 0.2, m3: 0.1, scale: 30, reduction: "none" }, { m1: 2, m2: 0 }, {
    m1: 1,
    m2: 0,
    m3: 0.35,
    reduction: "sum",
  }, { marginGrad: "constant" }],
  clamped: [{}, { m1: 1.35, scale: 16 }, { marginGrad: "constant", reduction: "none" }],
  unchanged: [{ m1: 1.2, m2: 0.3, m3: 0.1 }, { reduction: "none", marginGrad: "constant" }],
  badOptions: [
    ...numberOptionErrors(small, "scale", [0, -1, NaN, Infinity, "64"]),
    ...numberOptionErrors(small, "m1", [NaN, Infinity, "1"]),
    ...numberOptionErrors(small, "m2", [NaN, -Infinity, "0.5"]),
    ...numberOptionErrors(small, "m3", [NaN, Infinity, "0"]),
    badMarginGrad(true),
  ],
};

const normface: MarginLoss = {
  spec: normfaceSpec,
  defaults: { scale: 16, reduction: "mean", ignoreIndex: -100 },
  phi: () => (x) => [x, 1],
  fd: () => {
    const rng = new Rng(15);
    return [
      { name: "s 8, mean", inputs: cosProblem(rng, 4, 5), options: { scale: 8 } },
      { name: "defaults (s 16), h 2^-9", inputs: cosProblem(rng, 3, 4), h: 2 ** -9 },
      {
        name: "s 4, sum, upstream 2.5, ignored rows",
        inputs: cosProblem(rng, 5, 4, undefined, 0.3),
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
  },
  seed: 43,
  crossEntropy: {
    inputs: (p) => [p.edges, p.interior],
    cases: REDUCTIONS.flatMap((reduction) => [16, 30, 64, 1].map((scale) => ({ o: { scale, reduction } }))),
    tol: 1e-6,
  },
  equivalences: [
    {
      // The shifted cosines are rounded to float32: 30 * 6e-8 in the logits.
      name: "a constant added to every cosine of a row changes nothing (while inside [-1, 1])",
      other: "normface",
      tol: 1e-5,
      cases: (p) => [{
        inputs: shifted(p.interior, (i) => [0.05, -0.1, 0.0625][i % 3]),
        otherInputs: p.interior,
        pairs: [[{ reduction: "none", scale: 30 }, { reduction: "none", scale: 30 }]],
      }],
    },
  ],
  ignored: [{}, { scale: 1 }, { reduction: "sum" }, { reduction: "none" }],
  exact: [{}, { scale: 64, reduction: "none" }, { scale: 1, reduction: "sum" }],
  atOne: async (nf, inputs) => {
    // Every cosine +1: a uniform row, loss log(C).
    const uniform = await nf.forward(inputs, { reduction: "none" });
    assertLossClose((uniform.loss as Float32Array)[4], Math.log(4), "all +1 row");
  },
  clamped: [{}, { scale: 64 }, { reduction: "none" }],
  unchanged: [{ scale: 30 }, { reduction: "none" }],
  badOptions: [
    ...numberOptionErrors(small, "scale", [0, -1e-9, NaN, -Infinity, "16"]),
    badMarginGrad("Constant"),
  ],
};

/** Every margin loss on cosines, in the order of docs/LOSSES.md. */
const MARGIN_LOSSES: readonly MarginLoss[] = [arcface, cosface, combinedMargin, normface];

// ------------------------------------------------------------------------------------------------
// The checks, once for every entry

/** Identities: crossEntropy, marginGrad, the equivalences, the defaults, then the loss's own. */
function identities(entry: MarginLoss, b: Backend, skip: string | false): void {
  const name = entry.spec.name;
  const rng = new Rng(entry.seed);
  const n = 12, c = 9;
  const edges = { cos: randomCosines(rng, n, c, 1e4), labels: randomLabels(rng, n, c, 0.2) };
  const label = entry.interiorLabel;
  const interior = cosProblem(rng, n, c, label && (() => label(rng)), 0.2);
  const p: Problems = { rng, n, c, edges, interior };
  const scaleOf = (o: Options): number => o.scale ?? entry.defaults.scale;

  it(
    "equals crossEntropy on s*cos with the label's logit s*phi(cos_y); gradient s*dCE/dz, times phi'(cos_y) at the label",
    { skip },
    async () => {
      const loss = lossOf(b, name)!, ce = lossOf(b, "crossEntropy")!;
      for (const inputs of entry.crossEntropy.inputs(p)) {
        for (const { o, phi, name: what } of entry.crossEntropy.cases) {
          const ref = await viaCrossEntropy(ce, inputs, scaleOf(o), phi ?? entry.phi(o), { reduction: o.reduction });
          const r = await loss.valueAndGrad(inputs, o);
          const label = what ?? JSON.stringify(o);
          assertLossClose(r.loss as Any, ref.loss as Any, `${label} loss`, entry.crossEntropy.tol);
          assertGradClose(r.grads.cos, ref.grad, `${label} grad`, entry.crossEntropy.tol);
        }
      }
    },
  );

  const constant = entry.constantGrad;
  if (constant) {
    it('marginGrad "constant": the label column gets s*(p - 1) (s dCE/dz, phi\' taken as 1), the rest as "exact"', {
      skip,
    }, async () => {
      const loss = lossOf(b, name)!, ce = lossOf(b, "crossEntropy")!;
      for (const o of constant) {
        const ref = await viaCrossEntropy(ce, interior, scaleOf(o), entry.phi(o), { reduction: o.reduction }, true);
        const r = await loss.valueAndGrad(interior, { ...o, marginGrad: "constant" });
        assertLossClose(r.loss as Any, ref.loss as Any, `${JSON.stringify(o)} loss`);
        assertGradClose(r.grads.cos, ref.grad, `${JSON.stringify(o)} grad`);
        // Only the label column differs from "exact"; the loss is the same.
        const exact = await loss.valueAndGrad(interior, { ...o, marginGrad: "exact" });
        assert.deepEqual(exact.loss, r.loss);
        for (let i = 0; i < n * c; i++) {
          const y = interior.labels[Math.floor(i / c)];
          if (i % c !== y) assert.equal(exact.grads.cos.data[i], r.grads.cos.data[i], `element ${i}`);
        }
      }
    });
  } else {
    it('marginGrad "constant" is the same as "exact" (phi\' = 1), bit for bit', { skip }, async () => {
      const loss = lossOf(b, name)!;
      for (const inputs of [edges, interior]) {
        for (const reduction of ["mean", "none"]) {
          const k = await loss.valueAndGrad(inputs, { reduction, marginGrad: "constant" });
          for (const o of [{ reduction }, { reduction, marginGrad: "exact" }]) {
            const e = await loss.valueAndGrad(inputs, o);
            assert.deepEqual(k.loss, e.loss, JSON.stringify(o));
            assert.deepEqual(k.grads.cos.data, e.grads.cos.data, JSON.stringify(o));
          }
        }
      }
    });
  }

  for (const eq of entry.equivalences) {
    it(eq.name, { skip }, async () => {
      const loss = lossOf(b, name)!, other = lossOf(b, eq.other)!;
      for (const { inputs, otherInputs, pairs } of eq.cases(p)) {
        for (const [o, oo] of pairs) {
          const a = await loss.valueAndGrad(inputs, o);
          const z = await other.valueAndGrad(otherInputs ?? inputs, oo);
          const label = `${JSON.stringify(o)} against ${eq.other} ${JSON.stringify(oo)}`;
          assertLossClose(a.loss as Any, z.loss as Any, `${label} loss`, eq.tol);
          assertGradClose(a.grads.cos, z.grads.cos.data, `${label} grad`, eq.tol);
        }
      }
    });
  }

  const defaults = Object.entries(entry.defaults).map(([k, v]) => `${k} ${v}`).join(", ");
  it(`the defaults are ${defaults}`, { skip }, async () => {
    const loss = lossOf(b, name)!;
    const d = await loss.valueAndGrad(edges);
    const e = await loss.valueAndGrad(edges, entry.defaults);
    assert.equal(d.loss, e.loss);
    assert.deepEqual(d.grads.cos.data, e.grads.cos.data);
  });

  entry.own?.(b, p, skip);
}

/** Edge cases: an all-ignored batch, cosines of exactly +-1, cosines just outside [-1, 1]. */
function edgeCases(entry: MarginLoss, b: Backend, skip: string | false): void {
  const name = entry.spec.name;
  const label = (o: Options) => JSON.stringify(o);

  it("an all-ignored batch has loss 0 and zero gradients", { skip }, async () => {
    const loss = lossOf(b, name)!;
    const inputs = { cos: randomCosines(new Rng(2), 3, 4, 1e4), labels: [-100, -100, -100] };
    for (const o of entry.ignored) {
      const r = await loss.valueAndGrad(inputs, o);
      if (typeof r.loss === "number") assert.equal(r.loss, 0);
      else assert.deepEqual([...r.loss as Float32Array], [0, 0, 0]);
      assert.ok(r.grads.cos.data.every((v: number) => v === 0), label(o));
      const g = await loss.backward(inputs, o, o.reduction === "none" ? [1, 2, 3] : 2);
      assert.ok(g.cos.data.every((v: number) => v === 0), `backward ${label(o)}`);
    }
  });

  it("cosines of exactly +-1 (label and others) give finite values that match the reference", { skip }, async () => {
    const loss = lossOf(b, name)!, ref = lossOf(reference, name)!;
    // Label at +1, at -1, at +1 with every other cosine -1, at -1 with every other +1, all +1.
    const inputs = {
      cos: mat(5, 4, [1, 0.2, -1, 0.5, -1, 1, 0.3, -0.2, 1, -1, -1, -1, -1, 1, 1, 1, 1, 1, 1, 1]),
      labels: [0, 0, 0, 0, 2],
    };
    for (const o of entry.exact) {
      const r = await loss.valueAndGrad(inputs, o);
      const e = await ref.valueAndGrad(inputs, o);
      assertFinite(r.loss as Any, `${label(o)} loss`);
      assertFinite(r.grads.cos.data, `${label(o)} grad`, [5, 4]);
      assertLossClose(r.loss as Any, e.loss as Any, `${label(o)} loss`);
      assertGradClose(r.grads.cos, e.grads.cos.data, `${label(o)} grad`);
    }
    await entry.atOne?.(loss, inputs);
  });

  it("cosines just outside [-1, 1] are clamped: the loss of +-1, and gradient exactly 0 there", { skip }, async () => {
    const loss = lossOf(b, name)!;
    const out = mat(3, 4, [1.0000001, 0.3, -1.0000001, 0.1, 0.2, -1.0000001, 1.0000001, 0.5, -1.0000001, 0.4, 0, 0.9]);
    const clamped = { data: out.data.map((v) => Math.max(-1, Math.min(1, v))), shape: out.shape };
    const labels = [0, 1, 0];
    for (const o of entry.clamped) {
      const r = await loss.valueAndGrad({ cos: out, labels }, o);
      const e = await loss.valueAndGrad({ cos: clamped, labels }, o);
      assert.deepEqual(r.loss, e.loss, `${label(o)}: the loss of the clamped cosines`);
      for (let i = 0; i < 12; i++) {
        const v = r.grads.cos.data[i];
        if (Math.abs(out.data[i]) > 1) assert.ok(Object.is(Math.abs(v), 0), `${label(o)} [${i}] ${v}`);
        else assert.ok(v !== 0 && Number.isFinite(v), `${label(o)} [${i}] ${v}`);
      }
    }
  });
}

for (const entry of MARGIN_LOSSES) {
  const { spec } = entry;
  const others = [...new Set(["crossEntropy", ...entry.equivalences.map((e) => e.other)])];

  describe(spec.name, () => {
    existenceTest(spec);
    fixtureSuite(spec);
    fdSuite(spec, entry.fd);
    agreementSuite(spec);

    describe("identities", () => {
      for (const b of backends) {
        describe(b.name, () => identities(entry, b, missing([spec.name, ...others], [b])));
      }
    });

    describe("edge cases", () => {
      for (const b of backends) describe(b.name, () => edgeCases(entry, b, missing(spec.name, [b])));
    });

    errorSuite(spec, [
      ...matrixErrors(small, "cos", true, "cos"),
      ...labelErrors(small),
      ...entry.badOptions,
      ...commonOptionErrors(small, "cos"),
      ...upstreamErrors(small),
    ]);

    describe("inputs", () => {
      it("inputs and options are unchanged by every call on every backend", async () => {
        for (const b of backends) {
          const loss = lossOf(b, spec.name);
          if (!loss) continue;
          const inputs = { cos: randomCosines(new Rng(4), 3, 5, 1e4), labels: [4, -100, 0] };
          for (const options of entry.unchanged) {
            const up = options.reduction === "none" ? randomVector(new Rng(1), 3, -1, 1) : 3;
            const snap = snapshot({ inputs, options, up });
            await loss.forward(inputs, options);
            await loss.backward(inputs, options, up);
            await loss.valueAndGrad(inputs, options);
            assertUnchanged(snap, { inputs, options, up }, `${b.name}: `);
          }
        }
      });
    });
  });
}
