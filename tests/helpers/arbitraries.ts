/**
 * fast-check arbitraries for every loss, metric and transform: valid calls (every
 * documented option, shapes from 1 x 1 up, logits to |1e4|, cosines of exactly +-1,
 * zero rows for the heads, ignored rows) and invalid ones (one thing broken in a valid
 * call: a bad shape, label, option value or type, an unknown key, a bad `out` buffer or
 * upstream). The table {@linkcode PROPERTY_LOSSES} has one entry per public member, so a
 * loss added later is one more entry; `tests/property_test.ts` and
 * `tests/determinism_test.ts` run it. {@linkcode PROBLEM_LOSSES} is the second table (the
 * losses whose inputs are not one layout), {@linkcode SHARDED_LOSSES} the sharded forms';
 * `tests/property_test.ts` fails when a member of the loss sets has no entry in any of them.
 *
 * Only documented keys are generated for valid calls (docs/LOSSES.md): an unknown key is
 * itself one of the invalid mutations.
 *
 * @module
 */
import fc from "fast-check";
import { word } from "./errors.ts";
import { Rng } from "./random.ts";
import type { LossSpec } from "./specs.ts";
import { clipSpec, siglipSpec } from "./specs_clip.ts";
import {
  centerLossSpec,
  centerRegularizationSpec,
  featureDiversitySpec,
  hierarchicalSpec,
  hnmContrastiveSpec,
  iclMoeSpec,
  mixOutputsSpec,
  physicsContrastiveSpec,
  physMoeSpec,
} from "./specs_moe.ts";
import { multiSimilaritySpec, ntXentSpec, proxyAnchorSpec, tripletMarginSpec } from "./specs_metric.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/** A matrix as the library takes it. */
export interface Mat {
  data: Float32Array;
  shape: readonly [number, number];
}

/** A method of a loss (`compute` is the metric's only one). */
export type Method = "forward" | "backward" | "valueAndGrad" | "compute";

/** What a member is: a loss (forward, backward, valueAndGrad), a metric (compute) or a transform (softmax). */
export type Kind = "loss" | "metric" | "transform";

/** One valid call: inputs, options (possibly undefined) and the upstream gradient of `backward`. */
export interface Case {
  inputs: Record<string, Any>;
  options: Record<string, Any> | undefined;
  upstream: Any;
}

/** One invalid call and what it must do. */
export interface BadCase extends Case {
  /** What was broken (for messages). */
  what: string;
  /** The methods that must throw (the others may, with a proper error). */
  mustThrow: readonly Method[];
  /** A thrown message must name this argument (as a whole word). */
  mentions: RegExp;
}

/** A member of the table. */
export interface PropertyLoss {
  /** Public name (`wasm.<name>`). */
  readonly name: string;
  readonly kind: Kind;
  /** The gradients `backward` returns, which are also the keys `out` takes ("output" too for a transform). */
  readonly grads: readonly string[];
  /** The matrix gradients that take an `out` buffer here, when not every one of `grads` (magface's norms is a vector). */
  readonly outs?: readonly string[];
  /** The matrix input whose rows are the batch (its rows carry the labels). */
  readonly batch: string;
  /** Whether an ignored row's gradient (w.r.t. `batch`) and its "none" loss are exactly 0 (distillation keeps the KL term). */
  readonly ignoredRowsVanish: boolean;
  /** The inputs a head L2-normalises (as `F.normalize`: dividing by `max(||v||, 1e-12)`). */
  readonly normalised: readonly string[];
  readonly valid: fc.Arbitrary<Case>;
  readonly invalid: fc.Arbitrary<BadCase>;
  /** Valid calls of a fixed size: `n` rows, `c` classes, embedding width `d` (the heads). */
  sized(n: number, c: number, d: number): fc.Arbitrary<Case>;
}

/** The methods of a kind. */
export function methodsOf(kind: Kind): readonly Method[] {
  return kind === "metric" ? ["compute"] : ["forward", "backward", "valueAndGrad"];
}

/** The `out` keys a method takes: a transform's forward writes `output`, its backward `x`, valueAndGrad both. */
export function outKeysFor(entry: Pick<PropertyLoss, "kind" | "grads" | "outs">, method: Method): readonly string[] {
  if (entry.kind === "metric") return [];
  if (entry.kind === "transform") {
    return method === "forward" ? ["output"] : method === "backward" ? ["x"] : ["output", "x"];
  }
  return entry.outs ?? entry.grads;
}

// ------------------------------------------------------------------------------------------------
// Numbers

/** The largest logit magnitude SPEC's accuracy bound covers. */
export const LOGIT_MAX = 1e4;

const STEPS = 2 ** 24;

/** Uniform float32 in [-s, s], shrinking towards 0. */
export const uniform = (s: number): fc.Arbitrary<number> =>
  fc.integer({ min: -STEPS, max: STEPS }).map((i) => Math.fround((i / STEPS) * s));

/**
 * Uniform float32 in [-s, s] without fast-check's bias towards small integers (which makes
 * tiny values common): the draw is hashed (mulberry32's finaliser). For the heads, where
 * such values make class rows nearly parallel to each other or to x by accident (their
 * designed edge cases, zero and parallel rows, are drawn on purpose instead).
 */
const spread = (s: number): fc.Arbitrary<number> =>
  fc.integer({ min: 0, max: 2 ** 31 - 1 }).map((i) => {
    let t = (i + 0x6d2b79f5) >>> 0;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.fround(s * ((((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * 2 - 1));
  });

/** Uniform float64 in [lo, hi] (an option value), shrinking towards lo. */
const between = (lo: number, hi: number): fc.Arbitrary<number> =>
  fc.integer({ min: 0, max: STEPS }).map((i) => lo + ((hi - lo) * i) / STEPS);

/** 10^u, u uniform in [lo, hi]. */
const logUniform = (lo: number, hi: number): fc.Arbitrary<number> => between(lo, hi).map((u) => 10 ** u);

/** A number option: mostly uniform in [lo, hi], sometimes one of the values that matter. */
const option = (lo: number, hi: number, ...special: number[]): fc.Arbitrary<number> =>
  fc.oneof({ arbitrary: between(lo, hi), weight: 3 }, { arbitrary: fc.constantFrom(...special), weight: 1 });

/**
 * A matrix entry of magnitude up to `s`: mostly uniform, sometimes any float32 of the
 * range (fast-check's `float` draws every binade alike: tiny values, subnormals, -0), or
 * exactly 0 or +-s.
 */
const entry = (s: number): fc.Arbitrary<number> =>
  fc.oneof(
    { arbitrary: uniform(s), weight: 12 },
    { arbitrary: fc.float({ min: -Math.fround(s), max: Math.fround(s), noNaN: true }), weight: 2 },
    { arbitrary: fc.constantFrom(0, s, -s), weight: 1 },
  );

const matrix = (rows: number, cols: number, el: fc.Arbitrary<number>): fc.Arbitrary<Mat> =>
  fc.array(el, { minLength: rows * cols, maxLength: rows * cols }).map((a) => ({
    data: Float32Array.from(a),
    shape: [rows, cols],
  }));

/** Logits `[n, c]`: one magnitude per matrix (3, 30 or 1e4), or every entry equal. */
export function logits(n: number, c: number, max = LOGIT_MAX): fc.Arbitrary<Mat> {
  return fc.oneof(
    { arbitrary: fc.constantFrom(3, 30, max).chain((s) => matrix(n, c, entry(s))), weight: 9 },
    {
      arbitrary: uniform(max).map((v) => ({
        data: new Float32Array(n * c).fill(v),
        shape: [n, c] as [number, number],
      })),
      weight: 1,
    },
  );
}

/** Non-negative values `[n, c]` up to `hi`, about a fifth of them 0, rows optionally normalised to sum 1. */
function nonNegative(n: number, c: number, hi: number): fc.Arbitrary<Mat> {
  const el = fc.oneof(
    { arbitrary: uniform(1).map(Math.abs), weight: 6 },
    { arbitrary: fc.constantFrom(0, 1), weight: 2 },
    { arbitrary: fc.float({ min: 0, max: 1, noNaN: true }), weight: 1 },
    { arbitrary: uniform(hi).map(Math.abs), weight: 1 },
  );
  return fc.tuple(matrix(n, c, el), fc.boolean()).map(([m, normalise]) => {
    if (!normalise) return m;
    for (let i = 0; i < n; i++) {
      const row = m.data.subarray(i * c, (i + 1) * c);
      let s = 0;
      for (const v of row) s += v;
      if (s > 0) { for (let j = 0; j < c; j++) row[j] /= s; }
    }
    return m;
  });
}

/** Cosines `[n, c]`: mostly in [-1, 1], with exact +-1 and 0, values one ulp inside and outside, and some far outside (clamped). */
function cosines(n: number, c: number): fc.Arbitrary<Mat> {
  return matrix(
    n,
    c,
    fc.oneof(
      { arbitrary: uniform(1), weight: 10 },
      { arbitrary: fc.constantFrom(1, -1, 0, 1.0000001, -1.0000001, 0.99999994, -0.99999994), weight: 3 },
      { arbitrary: fc.float({ min: -1, max: 1, noNaN: true }), weight: 1 },
      { arbitrary: fc.constantFrom(1.5, -2, LOGIT_MAX, -LOGIT_MAX), weight: 1 },
    ),
  );
}

/** One upstream value per row: a Float32Array, a Float64Array or an array. */
const perRow = (n: number): fc.Arbitrary<ArrayLike<number>> =>
  fc.tuple(fc.array(uniform(100), { minLength: n, maxLength: n }), fc.constantFrom("f32", "f64", "array")).map((
    [a, form],
  ) => form === "f32" ? Float32Array.from(a) : form === "f64" ? Float64Array.from(a) : a);

/**
 * A per-class vector option (weight, alpha): C values, each 0 or in [0.1, 10], or null
 * (all 1). Not more skewed: a weighted mean divides by the label weights' sum, so weights of
 * 1e-40 next to 100 give honest gradients beyond float32's range, and ratios of 1e5 make a
 * smoothed target's gradient at the argmax a small difference of large terms.
 */
const classVector = (c: number): fc.Arbitrary<Any> =>
  fc.oneof(
    {
      arbitrary: fc.tuple(
        fc.array(
          fc.oneof(
            { arbitrary: between(0.1, 3), weight: 6 },
            { arbitrary: fc.constantFrom(0, 0.1, 10), weight: 2 },
          ),
          { minLength: c, maxLength: c },
        ),
        fc.constantFrom("f32", "f64", "array"),
      ).map(([a, form]) => form === "f32" ? Float32Array.from(a) : form === "f64" ? Float64Array.from(a) : a),
      weight: 8,
    },
    { arbitrary: fc.constant(null), weight: 1 },
  );

/** Labels `[n]` in [0, c), about a fifth of them `ignore`; an Int32Array or an array. */
function labels(n: number, c: number, ignore: number): fc.Arbitrary<Int32Array | number[]> {
  const one = fc.oneof({ arbitrary: fc.integer({ min: 0, max: c - 1 }), weight: 4 }, {
    arbitrary: fc.constant(ignore),
    weight: 1,
  });
  return fc.tuple(fc.array(one, { minLength: n, maxLength: n }), fc.boolean()).map(([a, typed]) =>
    typed ? Int32Array.from(a) : a
  );
}

// ------------------------------------------------------------------------------------------------
// Heads: x [N, D], W [C, D]

/** The L2 norm of row `row` of a matrix, in float64. */
export function rowNorm(m: Mat, row: number): number {
  const d = m.shape[1];
  let s = 0;
  for (let k = 0; k < d; k++) s += m.data[row * d + k] ** 2;
  return Math.sqrt(s);
}

function maxNorm(m: Mat): number {
  let best = 0;
  for (let r = 0; r < m.shape[0]; r++) best = Math.max(best, rowNorm(m, r));
  return best;
}

/**
 * x and W of a head: W's rows random (magnitude 0.1, 1 or 10) or zero; each row of x
 * random (magnitude 1 to 1e4), zero, or an exact power-of-two multiple of its label's
 * class row (a cosine of +-1 up to rounding). `bound(x, W)`, the largest logit, is then
 * capped at LOGIT_MAX by scaling x (SphereFace and L-Softmax, whose logits grow with the norms).
 */
function headInputs(
  n: number,
  c: number,
  d: number,
  ignore: number,
  bound?: (x: Mat, W: Mat) => number,
): fc.Arbitrary<Record<string, Any>> {
  const row = fc.array(spread(1), { minLength: d, maxLength: d });
  return fc.record({
    labels: labels(n, c, ignore),
    wScale: fc.constantFrom(0.1, 1, 10),
    wRows: fc.array(fc.tuple(fc.oneof({ arbitrary: fc.constant(false), weight: 6 }, fc.constant(true)), row), {
      minLength: c,
      maxLength: c,
    }),
    xScale: fc.constantFrom(1, 30, 1000, LOGIT_MAX),
    xRows: fc.array(
      fc.tuple(
        fc.constantFrom("random", "random", "random", "zero", "aligned"),
        fc.integer({ min: -2, max: 6 }),
        fc.boolean(),
        row,
      ),
      { minLength: n, maxLength: n },
    ),
  }).map(({ labels, wScale, wRows, xScale, xRows }) => {
    const W: Mat = { data: new Float32Array(c * d), shape: [c, d] };
    wRows.forEach(([zero, v], j) => {
      if (!zero) { for (let k = 0; k < d; k++) W.data[j * d + k] = Math.fround(wScale * v[k]); }
    });
    const x: Mat = { data: new Float32Array(n * d), shape: [n, d] };
    xRows.forEach(([mode, power, negative, v], i) => {
      const y = labels[i];
      if (mode === "zero") return;
      if (mode === "aligned" && y >= 0 && y < c) {
        const t = (negative ? -1 : 1) * 2 ** power; // exact in float32
        for (let k = 0; k < d; k++) x.data[i * d + k] = Math.fround(t * W.data[y * d + k]);
      } else {
        for (let k = 0; k < d; k++) x.data[i * d + k] = Math.fround(xScale * v[k]);
      }
    });
    const largest = bound ? bound(x, W) : 0;
    if (largest > LOGIT_MAX) {
      const f = (LOGIT_MAX / largest) * (1 - 1e-6);
      for (let i = 0; i < x.data.length; i++) x.data[i] = Math.fround(x.data[i] * f);
    }
    return { x, W, labels };
  });
}

// ------------------------------------------------------------------------------------------------
// The table

/** Sizes of a problem: rows, classes, and the embedding width of a head. */
interface Shape {
  n: number;
  c: number;
  d: number;
}

const ROWS = fc.oneof({ arbitrary: fc.integer({ min: 1, max: 3 }), weight: 3 }, {
  arbitrary: fc.integer({ min: 1, max: 9 }),
  weight: 1,
});
/** Class counts: small ones, the SIMD widths' neighbours, and anything up to 80. */
const COLS = fc.oneof(
  { arbitrary: fc.integer({ min: 1, max: 5 }), weight: 3 },
  { arbitrary: fc.constantFrom(7, 8, 9, 15, 16, 17, 31, 32, 33), weight: 2 },
  { arbitrary: fc.integer({ min: 1, max: 80 }), weight: 1 },
);
/** The heads' class counts also reach the wasm kernel's class chunk of 128. */
const HEAD_COLS = fc.oneof({ arbitrary: COLS, weight: 12 }, { arbitrary: fc.constantFrom(127, 128, 129), weight: 1 });
const WIDTHS = fc.oneof({ arbitrary: fc.integer({ min: 1, max: 4 }), weight: 3 }, {
  arbitrary: fc.constantFrom(7, 8, 9, 16, 17),
  weight: 1,
});

/** How a member's inputs are laid out (which generic mutations apply). */
type Layout =
  | { kind: "rows"; first: string } // x [N, C] (transforms)
  | { kind: "labels"; first: string } // logits or cos [N, C], labels
  | { kind: "pair"; first: string; second: string; labels: boolean } // two [N, C] inputs (and labels)
  | { kind: "head" }; // x [N, D], W [C, D], labels

/** What a member of the table is defined by; `define` adds what every member shares. */
interface Definition {
  name: string;
  kind: Kind;
  grads: readonly string[];
  layout: Layout;
  shape?: fc.Arbitrary<Shape>;
  /** Reductions, when the member takes `reduction` (klDiv's include "batchmean"). */
  reductions?: readonly string[];
  /** The member's own options (every key optional), for a problem of shape `s`. */
  options(s: Shape): fc.Arbitrary<Record<string, Any>>;
  /** The inputs for shape `s` and options `o` (`ignore`: the effective ignoreIndex). */
  inputs(s: Shape, o: Record<string, Any>, ignore: number): fc.Arbitrary<Record<string, Any>>;
  /** Invalid values of each own option for shape `s` and options `o`. */
  bad?(s: Shape, o: Record<string, Any>): Record<string, readonly unknown[]>;
  /** Whether an ignored row's gradient vanishes; default true for members with labels. */
  ignoredRowsVanish?: boolean;
  normalised?: readonly string[];
  /** The gradients that take an `out` buffer (default `grads`; magface's `norms` is a vector). */
  outs?: readonly string[];
}

const REDUCTIONS = ["mean", "sum", "none"] as const;
const BAD_NUMBER = [NaN, Infinity, -Infinity, "1", true] as const;
const BAD_BOOLEAN = [1, 0, "true", null] as const;
const BAD_MARGIN_GRAD = ["exactly", "Constant", 1, true] as const;

/** Invalid per-class vectors for C = c: wrong lengths, a NaN, a negative, an infinity, a string entry, wrong types. */
function badVectors(c: number): unknown[] {
  const ones = () => Array.from({ length: c }, () => 1);
  const withAt = (v: unknown) => {
    const a: unknown[] = ones();
    a[c - 1] = v;
    return a;
  };
  return [
    Array.from({ length: c + 1 }, () => 1),
    new Float32Array(c + 1),
    new Float32Array(Math.max(0, c - 1)),
    withAt(NaN),
    withAt(-1),
    withAt(Infinity),
    withAt("1"),
    Float32Array.from(withAt(-0.5) as number[]),
    "1111",
    {},
    new Int32Array(c),
    5,
  ];
}

/** A margin loss's own options (section 2 of docs/LOSSES.md): `scale`, `marginGrad` and the kind's margins. */
const MARGIN_KINDS = {
  arcface: (own: Record<string, fc.Arbitrary<unknown>>) => ({
    ...own,
    margin: option(0, 3.14159, 0, 0.5, 1.2, 3.1),
    easyMargin: fc.boolean(),
  }),
  cosface: (own: Record<string, fc.Arbitrary<unknown>>) => ({ ...own, margin: option(-1, 2, 0, 0.35) }),
  normface: (own: Record<string, fc.Arbitrary<unknown>>) => own,
  combinedMargin: (own: Record<string, fc.Arbitrary<unknown>>) => ({
    ...own,
    m1: option(0, 4, 1, 1.35),
    m2: option(-1, 2, 0, 0.5),
    m3: option(-1, 1, 0, 0.2),
  }),
} as const;
type MarginKind = keyof typeof MARGIN_KINDS;

const marginCommon = (maxScale = 128) => ({
  scale: option(0.01, maxScale, 1, 16, 30, maxScale),
  marginGrad: fc.constantFrom("exact", "constant"),
});

/** The invalid values of a margin kind's options. */
function badMargin(kind: MarginKind): Record<string, readonly unknown[]> {
  const common = { scale: [0, -1, ...BAD_NUMBER], marginGrad: BAD_MARGIN_GRAD };
  if (kind === "arcface") {
    return { ...common, margin: [-0.1, Math.PI, 4, ...BAD_NUMBER], easyMargin: BAD_BOOLEAN };
  }
  if (kind === "cosface") return { ...common, margin: BAD_NUMBER };
  if (kind === "combinedMargin") return { ...common, m1: BAD_NUMBER, m2: BAD_NUMBER, m3: BAD_NUMBER };
  return common;
}

/** The inter-class options (SPEC §7) of arcface (all), cosface and combinedMargin (the threshold). */
function interClass(name: MarginKind): Record<string, fc.Arbitrary<unknown>> {
  if (name === "normface") return {};
  const threshold = { interclassFilteringThreshold: option(0, 1, 0, 0.3, 1) };
  if (name !== "arcface") return threshold;
  return { ...threshold, interTopK: fc.integer({ min: 0, max: 40 }), interTopKMargin: option(0, 3, 0, 0.06) };
}

function cosineLoss(name: MarginKind): Definition {
  return {
    name,
    kind: "loss",
    grads: ["cos"],
    layout: { kind: "labels", first: "cos" },
    reductions: REDUCTIONS,
    options: () => fc.record({ ...MARGIN_KINDS[name](marginCommon()), ...interClass(name) }, { requiredKeys: [] }),
    inputs: (s, _o, ignore) => fc.record({ cos: cosines(s.n, s.c), labels: labels(s.n, s.c, ignore) }),
    bad: () => badMargin(name),
  };
}

/**
 * marginHead with sub-centres (SPEC §7, a second entry of the member): W's C*K rows (K = 2 or 3, C*K
 * one of a few sizes around the wasm chunks of 64 and 40 classes), labels classes in [0, C) (the input
 * `classes` is tested in tests/head_subcenters_test.ts: its `grads.W` is not W's shape).
 */
function subcenterHead(): Definition {
  const K = fc.constantFrom(2, 3);
  return {
    name: "marginHead",
    kind: "loss",
    grads: ["x", "W"],
    layout: { kind: "head" },
    shape: fc.record({ n: ROWS, c: fc.constantFrom(6, 12, 30, 120, 126, 132, 258), d: WIDTHS }),
    reductions: REDUCTIONS,
    normalised: ["x", "W"],
    options: () =>
      fc.constantFrom("arcface", "cosface", "combinedMargin").chain((kind) =>
        fc.record({ ...MARGIN_KINDS[kind](marginCommon(64)), subcenters: K } as Record<string, fc.Arbitrary<Any>>, {
          requiredKeys: ["subcenters"],
        }).map((
          o,
        ) => ({ ...o, kind }))
      ),
    inputs: (s, o, ignore) =>
      headInputs(s.n, s.c, s.d, ignore).map((k) => ({
        ...k,
        labels: Array.from(k.labels as ArrayLike<number>, (y) => (y === ignore ? y : Math.floor(y / o.subcenters))),
      })),
    bad: () => ({ subcenters: [0, -1, 1.5, 13, ...BAD_NUMBER] }),
  };
}

/** SphereFace's logits are `||x|| cos`, L-Softmax's `x . W_j`: their largest logit, by the norms. */
const sphereBound = (x: Mat) => maxNorm(x);
const lsoftmaxBound = (x: Mat, W: Mat) => maxNorm(x) * maxNorm(W);

function angularHead(name: "sphereface" | "lsoftmax"): Definition {
  const blend = name === "sphereface" ? "lambda" : "beta";
  return {
    name,
    kind: "loss",
    grads: ["x", "W"],
    layout: { kind: "head" },
    reductions: REDUCTIONS,
    normalised: name === "sphereface" ? ["W"] : [],
    options: () =>
      fc.record({ m: fc.integer({ min: 1, max: 5 }), [blend]: option(0, LOGIT_MAX, 0, 0.5, 5, 100, 1000) }, {
        requiredKeys: [],
      }),
    inputs: (s, _o, ignore) => headInputs(s.n, s.c, s.d, ignore, name === "sphereface" ? sphereBound : lsoftmaxBound),
    bad: () => ({ m: [0, -1, 1.5, ...BAD_NUMBER], [blend]: [-1, ...BAD_NUMBER] }),
  };
}

const hardLabelInputs = (s: Shape, _o: Record<string, Any>, ignore: number) =>
  fc.record({ logits: logits(s.n, s.c), labels: labels(s.n, s.c, ignore) });

const definitions: Definition[] = [
  {
    name: "crossEntropy",
    kind: "loss",
    grads: ["logits"],
    layout: { kind: "labels", first: "logits" },
    reductions: REDUCTIONS,
    options: (s) =>
      // Smoothing near 1 makes the target nearly uniform, and the gradient p - q a difference
      // of two numbers near 1/C that float32 probabilities cannot resolve to SPEC's floor.
      // softcap (SPEC §9): any cap, below and far above the logits (1e9: no cap); zLoss up to 1.
      fc.record({
        weight: classVector(s.c),
        labelSmoothing: option(0, 0.9, 0, 0.1, 0.9),
        softcap: fc.oneof({ arbitrary: logUniform(-3, 5), weight: 3 }, {
          arbitrary: fc.constantFrom(1e-3, 1, 30, 1e9),
          weight: 1,
        }),
        zLoss: option(0, 1, 0, 1e-4, 1),
      }, { requiredKeys: [] }),
    inputs: hardLabelInputs,
    bad: (s) => ({
      weight: badVectors(s.c),
      labelSmoothing: [-0.01, 1.01, ...BAD_NUMBER],
      softcap: [0, -1, -0, ...BAD_NUMBER],
      zLoss: [-1e-4, ...BAD_NUMBER],
    }),
  },
  {
    name: "softCrossEntropy",
    kind: "loss",
    grads: ["logits", "target"],
    layout: { kind: "pair", first: "logits", second: "target", labels: false },
    reductions: REDUCTIONS,
    options: () => fc.constant({}),
    // Targets are usually probabilities (any finite values are documented to work, but a
    // negative one makes a row's loss a difference of terms of size |t log p|, to 1e4 here).
    inputs: (s) => fc.record({ logits: logits(s.n, s.c), target: nonNegative(s.n, s.c, 3) }),
  },
  {
    name: "klDiv",
    kind: "loss",
    grads: ["logInput", "target"],
    layout: { kind: "pair", first: "logInput", second: "target", labels: false },
    reductions: ["batchmean", "sum", "mean", "none"],
    options: () => fc.record({ logTarget: fc.boolean() }, { requiredKeys: [] }),
    // logInput holds log-probabilities (<= 0; not normalised). A target is a probability (>= 0:
    // a negative one gives NaN, as in PyTorch) or, with logTarget, a log-probability (<= 0 here,
    // plus small positive values: e^t must stay a float32).
    inputs: (s, o) =>
      fc.record({
        logInput: logits(s.n, s.c).map((m) => ({ ...m, data: m.data.map((v) => -Math.abs(v)) })),
        target: o.logTarget
          ? fc.constantFrom(3, 30, LOGIT_MAX).chain((m) =>
            matrix(
              s.n,
              s.c,
              fc.oneof({ arbitrary: entry(m).map((v) => -Math.abs(v)), weight: 9 }, uniform(5).map(Math.abs)),
            )
          )
          : nonNegative(s.n, s.c, 3),
      }),
    bad: () => ({ logTarget: BAD_BOOLEAN }),
  },
  {
    name: "distillation",
    kind: "loss",
    grads: ["student"],
    layout: { kind: "pair", first: "student", second: "teacher", labels: true },
    reductions: REDUCTIONS,
    ignoredRowsVanish: false,
    options: () =>
      fc.record({
        temperature: fc.oneof(logUniform(-4, 2), fc.constantFrom(1e-4, 1, 4)),
        alpha: option(0, 1, 0, 0.9, 1),
      }, {
        requiredKeys: [],
      }),
    inputs: (s, _o, ignore) =>
      fc.record({ student: logits(s.n, s.c), teacher: logits(s.n, s.c), labels: labels(s.n, s.c, ignore) }),
    bad: () => ({ temperature: [0, -1, ...BAD_NUMBER], alpha: [-0.1, 1.1, ...BAD_NUMBER] }),
  },
  {
    name: "focal",
    kind: "loss",
    grads: ["logits"],
    layout: { kind: "labels", first: "logits" },
    reductions: REDUCTIONS,
    options: (s) =>
      fc.record({ gamma: option(0, 8, 0, 0.25, 0.5, 1, 2, 3.5), alpha: classVector(s.c) }, { requiredKeys: [] }),
    inputs: hardLabelInputs,
    bad: (s) => ({ gamma: [-0.5, ...BAD_NUMBER], alpha: badVectors(s.c) }),
  },
  {
    name: "accuracy",
    kind: "metric",
    grads: [],
    layout: { kind: "labels", first: "logits" },
    options: (s) => fc.record({ k: fc.integer({ min: 1, max: s.c + 2 }) }, { requiredKeys: [] }),
    inputs: hardLabelInputs,
    bad: () => ({ k: [0, -1, 1.5, ...BAD_NUMBER] }),
  },
  cosineLoss("arcface"),
  cosineLoss("cosface"),
  cosineLoss("normface"),
  cosineLoss("combinedMargin"),
  {
    name: "marginHead",
    kind: "loss",
    grads: ["x", "W"],
    layout: { kind: "head" },
    reductions: REDUCTIONS,
    normalised: ["x", "W"],
    // Only the chosen kind's options (another kind's option is refused). Scales to 64: the
    // head's cosines are float32, so each logit carries about s 2^-24 and the loss up to twice
    // that, which passes SPEC's 1e-5 for a loss near 1 only up to s ~ 80.
    options: () =>
      fc.constantFrom(undefined, "arcface", "cosface", "normface", "combinedMargin").chain((kind) =>
        fc.record(MARGIN_KINDS[kind ?? "arcface"](marginCommon(64)), { requiredKeys: [] }).map((o) =>
          kind === undefined ? o : { ...o, kind }
        )
      ),
    inputs: (s, _o, ignore) => headInputs(s.n, s.c, s.d, ignore),
    bad: (_s, o) => ({ kind: ["sphereface", "ArcFace", 1], ...badMargin(o.kind ?? "arcface") }),
  },
  subcenterHead(),
  angularHead("sphereface"),
  angularHead("lsoftmax"),
  {
    // linearCrossEntropy (SPEC §9): crossEntropy's options on x W^T (no bias: optional), logits
    // to |1e4| (the wasm kernel takes large ones in float64 relative to a per-row reference).
    name: "linearCrossEntropy",
    kind: "loss",
    grads: ["x", "W"],
    layout: { kind: "head" },
    reductions: REDUCTIONS,
    normalised: [],
    options: (s) =>
      fc.record({
        weight: classVector(s.c),
        labelSmoothing: option(0, 0.9, 0, 0.1, 0.9),
        softcap: fc.oneof(logUniform(-3, 5), fc.constantFrom(1e-3, 1, 30, 1e9)),
        zLoss: option(0, 1, 0, 1e-4, 1),
      }, { requiredKeys: [] }),
    inputs: (s, _o, ignore) => headInputs(s.n, s.c, s.d, ignore, (x, W) => maxNorm(x) * maxNorm(W)),
    bad: (s) => ({
      weight: badVectors(s.c),
      labelSmoothing: [-0.01, 1.01, ...BAD_NUMBER],
      softcap: [0, -1, -0, ...BAD_NUMBER],
      zLoss: [-1e-4, ...BAD_NUMBER],
    }),
  },
  ...faceLosses(),
  ...(["softmax", "logSoftmax"] as const).map((name): Definition => ({
    name,
    kind: "transform",
    grads: ["x"],
    layout: { kind: "rows", first: "x" },
    options: () => fc.constant({}),
    inputs: (s) => fc.record({ x: logits(s.n, s.c) }),
  })),
];

/** The face margin losses of SPEC.md §7 (docs/LOSSES.md): their states and per-row norms as inputs. */
function faceLosses(): Definition[] {
  const norms = (n: number) =>
    fc.array(option(0, 200, 0, 1e-3, 10, 110, 1e4), { minLength: n, maxLength: n }).map((a) => Float32Array.from(a));
  const base = (name: string, grads: string[], own: Record<string, fc.Arbitrary<unknown>>, state?: Any) => ({
    name,
    kind: "loss" as const,
    grads,
    outs: ["cos"],
    layout: { kind: "labels", first: "cos" } as const,
    reductions: REDUCTIONS,
    options: () => fc.record({ ...marginCommon(), ...own }, { requiredKeys: [] }),
    inputs: (s: Shape, _o: Record<string, Any>, ignore: number) =>
      fc.record({
        cos: cosines(s.n, s.c),
        labels: labels(s.n, s.c, ignore),
        ...(name === "curricularFace" ? {} : { norms: norms(s.n) }),
        ...(state ? { state } : {}),
      }),
  });
  const angle = option(0, 3.14159, 0, 0.5, 3.1);
  return [
    {
      ...base("adaface", ["cos"], {
        margin: option(-2, 2, 0, 0.4),
        h: option(-10, 10, 0, 0.333),
        alpha: option(0, 1, 0, 0.01, 1),
        eps: option(1e-6, 0.49, 1e-3),
      }, fc.record({ mean: option(-50, 200, 0, 20), std: option(0, 200, 0, 100) })),
      bad: () => ({
        scale: [0, ...BAD_NUMBER],
        marginGrad: BAD_MARGIN_GRAD,
        alpha: [-0.1, 1.1, ...BAD_NUMBER],
        eps: [0, 0.5, ...BAD_NUMBER],
      }),
    },
    {
      ...base(
        "curricularFace",
        ["cos"],
        { margin: angle, momentum: option(0, 1, 0, 0.01, 1) },
        fc.record({
          t: option(-1, 1, 0),
        }),
      ),
      bad: () => ({ scale: [0, ...BAD_NUMBER], margin: [-0.1, 4, ...BAD_NUMBER], momentum: [-1, 2, ...BAD_NUMBER] }),
    },
    {
      ...base("magface", ["cos", "norms"], {
        lowerNorm: option(0.1, 10, 1, 10),
        upperNorm: option(20, 200, 110),
        lowerMargin: angle,
        upperMargin: angle,
        lambda: option(0, 100, 0, 35),
        easyMargin: fc.boolean(),
      }),
      bad: () => ({ lowerNorm: [0, -1, ...BAD_NUMBER], lambda: [-1, ...BAD_NUMBER], easyMargin: BAD_BOOLEAN }),
    },
  ];
}

// ------------------------------------------------------------------------------------------------
// What every member shares: the common options, upstream, out buffers, and the mutations

/** The matrix inputs of a layout, with the number of rows and columns each has for shape `s`. */
function matrices(layout: Layout, s: Shape): [string, number, number][] {
  if (layout.kind === "head") return [["x", s.n, s.d], ["W", s.c, s.d]];
  if (layout.kind === "pair") return [[layout.first, s.n, s.c], [layout.second, s.n, s.c]];
  return [[layout.first, s.n, s.c]];
}

const hasLabels = (layout: Layout) =>
  layout.kind === "labels" || layout.kind === "head" || (layout.kind === "pair" && layout.labels);

/** A garbage-filled (NaN) buffer of `[rows, cols]`: a gradient written into it must overwrite every element. */
export function garbage(shape: readonly [number, number]): Mat {
  return { data: new Float32Array(shape[0] * shape[1]).fill(NaN), shape: [shape[0], shape[1]] };
}

/** The shape of the `out` buffer `key` for these inputs (a transform's `output` has x's shape). */
export function outShape(inputs: Record<string, Any>, key: string): [number, number] {
  const m = inputs[key === "output" ? "x" : key] as Mat;
  return [m.shape[0], m.shape[1]];
}

function upstreamOf(d: Definition, s: Shape, reduction: string | undefined): fc.Arbitrary<Any> {
  if (d.kind === "metric") return fc.constant(undefined);
  if (d.kind === "transform") return fc.constantFrom(1, 100).chain((m) => matrix(s.n, s.c, entry(m)));
  if (reduction === "none") return fc.option(perRow(s.n), { nil: undefined });
  return fc.option(fc.oneof(uniform(100), fc.constantFrom(0, 1, -1)), { nil: undefined });
}

function validCase(d: Definition): fc.Arbitrary<Case> {
  const shape = d.shape ?? fc.record({ n: ROWS, c: d.layout.kind === "head" ? HEAD_COLS : COLS, d: WIDTHS });
  const outKeys = d.kind === "transform" ? ["output", "x"] : d.outs ?? d.grads;
  return shape.chain((s) => {
    const common: Record<string, fc.Arbitrary<unknown>> = { checkFinite: fc.boolean() };
    if (d.reductions) common.reduction = fc.constantFrom(...d.reductions);
    if (hasLabels(d.layout)) {
      common.ignoreIndex = fc.oneof(fc.constantFrom(-100, -1), fc.integer({ min: -2, max: s.c }));
    }
    return fc.record({
      own: d.options(s),
      common: fc.record(common, { requiredKeys: [] }),
      out: fc.subarray([...outKeys]),
      omit: fc.boolean(),
    }).chain(({ own, common, out, omit }) => {
      const o: Record<string, Any> = { ...own, ...common };
      const ignore = (o.ignoreIndex ?? -100) as number;
      return fc.record({ inputs: d.inputs(s, o, ignore), upstream: upstreamOf(d, s, o.reduction) }).map(
        ({ inputs, upstream }) => {
          const options: Record<string, Any> = { ...o };
          if (out.length) options.out = Object.fromEntries(out.map((k) => [k, garbage(outShape(inputs, k))]));
          // Leaving options out altogether is as valid as an empty object.
          return { inputs, options: omit && Object.keys(options).length === 0 ? undefined : options, upstream };
        },
      );
    });
  });
}

/** A copy of a case with one thing changed. */
function change(k: Case, part: { inputs?: Record<string, Any>; options?: Record<string, Any>; upstream?: Any }): Case {
  return {
    inputs: part.inputs ?? k.inputs,
    options: part.options ?? k.options,
    upstream: "upstream" in part ? part.upstream : k.upstream,
  };
}

/** The shared tools of the mutation lists: the list, `add`, the case's options, and a case with one input or option replaced. */
function mutator(k: Case, all: readonly Method[]) {
  const bad: BadCase[] = [];
  const add = (what: string, c: Case, mentions: string, mustThrow: readonly Method[] = all) =>
    bad.push({ ...c, what, mustThrow, mentions: word(mentions) });
  const o = k.options ?? {};
  const withInput = (key: string, value: unknown) => {
    const inputs = { ...k.inputs };
    if (value === undefined) delete inputs[key];
    else inputs[key] = value;
    return change(k, { inputs });
  };
  const withOption = (key: string, value: unknown) => change(k, { options: { ...o, [key]: value } });
  return { bad, add, o, withInput, withOption };
}

/**
 * Every way to break a valid case `k` (of shape `s`) in one place, each with the methods
 * that must throw and the argument the message must name. `r` picks a row or an element.
 */
function mutations(d: Definition, k: Case, s: Shape, r: number): BadCase[] {
  const all = methodsOf(d.kind);
  const { bad, add, o, withInput, withOption } = mutator(k, all);

  // The inputs object itself, and an unknown key.
  for (const value of [null, 5, "inputs", [k.inputs]]) {
    add(`inputs = ${show(value)}`, { ...k, inputs: value as Any }, "inputs");
  }
  add("an unknown input key", withInput("extra", k.inputs[matrices(d.layout, s)[0][0]]), "extra");

  // Every matrix input broken in every way.
  for (const [key, rows, cols] of matrices(d.layout, s)) {
    const len = rows * cols;
    const data = new Float32Array(len);
    const forms: [string, unknown][] = [
      ["missing", undefined],
      ["null", null],
      ["a number", 5],
      ["a bare Float32Array", data],
      ["data a Float64Array", { data: new Float64Array(len), shape: [rows, cols] }],
      ["data an array", { data: Array.from(data), shape: [rows, cols] }],
      ["no data", { shape: [rows, cols] }],
      ["no shape", { data }],
      ["shape of rank 1", { data, shape: [len] }],
      ["shape of rank 3", { data, shape: [rows, cols, 1] }],
      ["shape a string", { data, shape: `${rows},${cols}` }],
      ["a negative size", { data, shape: [-rows, cols] }],
      ["a fractional size", { data, shape: [rows + 0.5, cols] }],
      ["a NaN size", { data, shape: [rows, NaN] }],
      ["a string size", { data, shape: [String(rows), cols] }],
      ["data one too long", { data: new Float32Array(len + 1), shape: [rows, cols] }],
      ["data one too short", { data: new Float32Array(len - 1), shape: [rows, cols] }],
    ];
    for (const [what, value] of forms) add(`${key}: ${what}`, withInput(key, value), key);
    // checkFinite with a NaN or an infinity at a random element.
    const poisoned = k.inputs[key].data.slice() as Float32Array;
    for (const v of [NaN, Infinity, -Infinity]) {
      poisoned[r % len] = v;
      const c = withInput(key, { data: poisoned.slice(), shape: [rows, cols] });
      add(`checkFinite and ${v} in ${key}`, { ...c, options: { ...o, checkFinite: true } }, key);
    }
  }

  // Empty batches and widths, mismatched shapes.
  const [first] = matrices(d.layout, s)[0];
  const resized = (rowsOf: (key: string, rows: number) => number, colsOf: (key: string, cols: number) => number) => {
    const inputs = { ...k.inputs };
    for (const [key, rows, cols] of matrices(d.layout, s)) {
      const [r2, c2] = [rowsOf(key, rows), colsOf(key, cols)];
      inputs[key] = { data: new Float32Array(r2 * c2), shape: [r2, c2] };
    }
    if (hasLabels(d.layout)) inputs.labels = Array.from({ length: rowsOf(first, s.n) }, () => 0);
    return change(k, { inputs });
  };
  add("N = 0", resized((key, rows) => (key === "W" ? rows : 0), (_, cols) => cols), first);
  add(
    d.layout.kind === "head" ? "D = 0" : "C = 0",
    resized((_, rows) => rows, () => 0),
    first,
  );
  if (d.layout.kind === "head") {
    add("W with no rows (C = 0)", withInput("W", { data: new Float32Array(0), shape: [0, s.d] }), "W");
    add("W wider than x", withInput("W", { data: new Float32Array(s.c * (s.d + 1)), shape: [s.c, s.d + 1] }), "W");
  }
  if (d.layout.kind === "pair") {
    const second = d.layout.second;
    add(
      `${second} with one more row`,
      withInput(second, { data: new Float32Array((s.n + 1) * s.c), shape: [s.n + 1, s.c] }),
      second,
    );
    add(
      `${second} with one more column`,
      withInput(second, { data: new Float32Array(s.n * (s.c + 1)), shape: [s.n, s.c + 1] }),
      second,
    );
  }

  // Labels.
  if (hasLabels(d.layout)) {
    const ignore = (o.ignoreIndex ?? -100) as number;
    const at = (value: unknown) => {
      const a: unknown[] = Array.from(k.inputs.labels as ArrayLike<number>);
      a[r % s.n] = value;
      return a;
    };
    const outOfRange = ignore === s.c ? s.c + 1 : s.c;
    const negative = ignore === -7 ? -8 : -7;
    const forms: [string, unknown][] = [
      ["missing", undefined],
      ["null", null],
      ["a string", "0"],
      ["a Float32Array", Float32Array.from(k.inputs.labels)],
      ["an object", {}],
      ["one too many", [...Array.from(k.inputs.labels as ArrayLike<number>), 0]],
      ["one too few", Array.from(k.inputs.labels as ArrayLike<number>).slice(1)],
      [`a label ${outOfRange} (>= C)`, at(outOfRange)],
      [`a label ${negative}`, at(negative)],
      ["a fractional label", at(0.5)],
      ["a NaN label", at(NaN)],
      ["an infinite label", at(Infinity)],
      ["a string label", at("0")],
      ["a null label", at(null)],
    ];
    for (const [what, value] of forms) add(`labels: ${what}`, withInput("labels", value), "labels");
    for (const v of [0.5, NaN, Infinity, "1", true]) {
      add(`ignoreIndex = ${show(v)}`, withOption("ignoreIndex", v), "options.ignoreIndex");
    }
  }

  // Options: not an object, an unknown key, checkFinite, reduction, and each own option.
  for (const value of ["mean", 5, true]) add(`options = ${show(value)}`, { ...k, options: value as Any }, "options");
  add("an unknown option", withOption("unknownOption", 1), "unknownOption");
  for (const v of BAD_BOOLEAN) add(`checkFinite = ${show(v)}`, withOption("checkFinite", v), "options.checkFinite");
  if (d.reductions) {
    const wrong = ["avg", "", "MEAN", 1, null, ...(d.reductions.includes("batchmean") ? [] : ["batchmean"])];
    for (const v of wrong) add(`reduction = ${show(v)}`, withOption("reduction", v), "options.reduction");
  } else if (d.kind !== "transform") {
    add("reduction (not an option of a metric)", withOption("reduction", "mean"), "reduction");
  }
  for (const [key, values] of Object.entries(d.bad?.(s, o) ?? {})) {
    for (const v of values) add(`options.${key} = ${show(v)}`, withOption(key, v), `options.${key}`);
  }

  // out buffers.
  if (d.kind === "metric") {
    add("out (a metric has none)", withOption("out", { logits: garbage([s.n, s.c]) }), "out");
  } else {
    const keys = d.kind === "transform" ? ["output", "x"] : d.outs ?? d.grads;
    for (const key of keys) {
      const [rows, cols] = outShape(k.inputs, key);
      // A loss's forward accepts out's keys but does not use (or check) its buffers.
      const takes = all.filter((m) =>
        (d.kind === "transform" || m !== "forward") && outKeysFor({ kind: d.kind, grads: d.grads }, m).includes(key)
      );
      const forms: [string, unknown][] = [
        ["a bare Float32Array", new Float32Array(rows * cols)],
        ["data a Float64Array", { data: new Float64Array(rows * cols), shape: [rows, cols] }],
        ["one more row", garbage([rows + 1, cols])],
        ["one more column", garbage([rows, cols + 1])],
        ["data one too long", { data: new Float32Array(rows * cols + 1), shape: [rows, cols] }],
      ];
      for (const [what, value] of forms) {
        add(`out.${key}: ${what}`, withOption("out", { [key]: value }), `options.out.${key}`, takes);
      }
    }
    add("an unknown out key", withOption("out", { bogus: garbage([s.n, s.c]) }), "bogus");
    add("out not an object", withOption("out", 5), "options.out");
  }

  // Upstream gradients.
  if (d.kind === "transform") {
    const forms: [string, unknown][] = [
      ["missing", undefined],
      ["a number", 1],
      ["a bare Float32Array", new Float32Array(s.n * s.c)],
      ["one more column", { data: new Float32Array(s.n * (s.c + 1)), shape: [s.n, s.c + 1] }],
      ["one more row", { data: new Float32Array((s.n + 1) * s.c), shape: [s.n + 1, s.c] }],
    ];
    for (const [what, value] of forms) {
      add(`upstream: ${what}`, change(k, { upstream: value }), "upstream", ["backward", "valueAndGrad"]);
    }
  } else if (d.kind === "loss") {
    const forms: [string, unknown][] = o.reduction === "none"
      ? [["a number", 1], ["a string", "1"], ["one value too many", new Float32Array(s.n + 1)], [
        "an Int32Array",
        new Int32Array(s.n),
      ], ["a matrix", garbage([s.n, 1])]]
      : [["a Float32Array", new Float32Array(s.n)], ["a string", "1"], ["an array", [1]], ["an object", {}]];
    for (const [what, value] of forms) {
      add(`upstream: ${what}`, change(k, { upstream: value }), "upstream", ["backward"]);
    }
  }
  return bad;
}

/** A value in a message. */
export function show(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${(v as Float32Array).length})`;
  if (Array.isArray(v)) return `[${v.map(show).join(", ")}]`;
  if (v !== null && typeof v === "object") return `{${Object.keys(v).join(", ")}}`;
  return String(v);
}

function shapeOfCase(d: Definition, k: Case): Shape {
  if (d.layout.kind === "head") {
    const x = k.inputs.x as Mat, W = k.inputs.W as Mat;
    return { n: x.shape[0], c: W.shape[0], d: x.shape[1] };
  }
  const m = k.inputs[d.layout.first] as Mat;
  return { n: m.shape[0], c: m.shape[1], d: 0 };
}

function define(d: Definition): PropertyLoss {
  const valid = validCase(d);
  return {
    name: d.name,
    kind: d.kind,
    grads: d.grads,
    outs: d.outs,
    batch: d.layout.kind === "head" ? "x" : d.layout.first,
    ignoredRowsVanish: d.ignoredRowsVanish ?? hasLabels(d.layout),
    normalised: d.normalised ?? [],
    valid,
    sized: (n, c, w) => validCase({ ...d, shape: fc.constant({ n, c, d: w }) }),
    invalid: fc.tuple(valid, fc.nat()).chain(([k, r]) => fc.constantFrom(...mutations(d, k, shapeOfCase(d, k), r))),
  };
}

/** Every member of the loss set, in the order of docs/LOSSES.md. */
export const PROPERTY_LOSSES: readonly PropertyLoss[] = definitions.map(define);

// ------------------------------------------------------------------------------------------------
// The sharded forms (`losses.sharded.<name>`, docs/SHARDING.md): a valid call of the unsharded
// loss of the table above (its `out` buffers dropped: the sharded forms take none), with its
// classes cut into 1 to 8 shards at random points.

/** A member of the sharded table. */
export interface ShardedLoss {
  /** The name of the sharded form, which is its unsharded loss's. */
  readonly name: string;
  /** The unsharded loss's entry. */
  readonly loss: PropertyLoss;
  readonly valid: fc.Arbitrary<ShardedCase>;
}

/** A valid call of a sharded form: the unsharded loss's call (no `out`) and the shards' sizes, in class order. */
export interface ShardedCase extends Case {
  sizes: number[];
}

/** C classes cut at 0 to 7 distinct points: the sizes of the shards (each >= 1). */
const shardSizes = (c: number): fc.Arbitrary<number[]> =>
  (c === 1 ? fc.constant([]) : fc.uniqueArray(fc.integer({ min: 1, max: c - 1 }), { maxLength: Math.min(7, c - 1) }))
    .map((cuts) => {
      const ends = [...cuts].sort((a, b) => a - b).concat(c);
      return ends.map((e, i) => e - (i === 0 ? 0 : ends[i - 1]));
    });

function shardedForm(name: string): ShardedLoss {
  const loss = PROPERTY_LOSSES.find((e) => e.name === name)!;
  // The classes: the rows of W for a head, else the columns of the batch input.
  const classes = (k: Case) => (k.inputs.W ? (k.inputs.W as Mat).shape[0] : (k.inputs[loss.batch] as Mat).shape[1]);
  return {
    name,
    loss,
    valid: loss.valid.chain((k) =>
      shardSizes(classes(k)).map((sizes) => {
        // (the sharded forms take no out and none of the inter-class options)
        const { out: _, interclassFilteringThreshold: _t, interTopK: _k, interTopKMargin: _m, ...options } =
          k.options ??
            {};
        return { ...k, options, sizes };
      })
    ),
  };
}

/** Every sharded form, in the order of docs/SHARDING.md. */
export const SHARDED_LOSSES: readonly ShardedLoss[] = [
  "crossEntropy",
  "arcface",
  "cosface",
  "normface",
  "combinedMargin",
  "marginHead",
  "linearCrossEntropy",
].map(shardedForm);

// ------------------------------------------------------------------------------------------------
// Calling a member

/**
 * The options a method gets: a transform's `out` cut to the keys that method takes;
 * with `fresh`, every `out` buffer replaced by a new garbage-filled one (so a result
 * written into it can be checked, and no two calls share a buffer).
 */
export function optionsFor(
  entry: Pick<PropertyLoss, "kind" | "grads">,
  method: Method,
  options: Any,
  fresh: boolean,
): Any {
  if (options === null || typeof options !== "object" || entry.kind === "metric") return options;
  const out = options.out;
  if (out === null || typeof out !== "object") return options;
  const takes = outKeysFor(entry, method);
  const chosen: Record<string, Any> = {};
  for (const [key, m] of Object.entries(out as Record<string, Any>)) {
    if (entry.kind === "transform" && (key === "output" || key === "x") && !takes.includes(key)) continue;
    chosen[key] = fresh ? garbage(m.shape) : m;
  }
  const { out: _, ...rest } = options;
  return Object.keys(chosen).length ? { ...rest, out: chosen } : rest;
}

/** Calls `method` of `member` with a case's inputs, the given options and (backward, a transform's valueAndGrad) its upstream. */
export function call(member: Any, entry: Pick<PropertyLoss, "kind">, method: Method, k: Case, options: Any): Any {
  if (method === "compute") return member.compute(k.inputs, options);
  if (method === "forward") return member.forward(k.inputs, options);
  if (method === "backward") return member.backward(k.inputs, options, k.upstream);
  return entry.kind === "transform"
    ? member.valueAndGrad(k.inputs, options, k.upstream)
    : member.valueAndGrad(k.inputs, options);
}

/** A result in one form: the value (loss, metric or a transform's output), the parts, the gradients. */
export interface Outcome {
  value?: number | Float32Array;
  /** A transform's output matrix, or a loss's per-row losses are `value`. */
  output?: Mat;
  parts: Record<string, number>;
  grads?: Record<string, Mat>;
}

/** Gradients with each vector (magface's norms) as a `[N, 1]` matrix. */
function matrices1(grads: Record<string, Any>): Record<string, Mat> {
  return Object.fromEntries(
    Object.entries(grads).map(([k, g]) => [k, g instanceof Float32Array ? { data: g, shape: [g.length, 1] } : g]),
  );
}

/** Splits what `method` returned into an {@linkcode Outcome}. */
export function outcome(entry: Pick<PropertyLoss, "kind">, method: Method, r: Any): Outcome {
  if (method === "compute") return { value: r, parts: {} };
  if (method === "backward") return { parts: {}, grads: entry.kind === "transform" ? { x: r.x } : matrices1(r) };
  if (entry.kind === "transform") return { value: r.output.data, output: r.output, parts: {}, grads: r.grads };
  const { loss, grads, ...rest } = r;
  // A state part (adaface, curricularFace) is its numbers; a vector gradient (magface's norms) a [N, 1] matrix.
  // (A matrix part, mixOutputs' mean logits, stays a matrix.)
  const parts: Record<string, number> = {};
  for (const [k, v] of Object.entries(rest)) {
    if (v !== null && typeof v === "object" && !ArrayBuffer.isView(v) && !("data" in v)) {
      for (const [q, x] of Object.entries(v)) parts[`${k}.${q}`] = x as number;
    } else parts[k] = v as number;
  }
  return { value: loss, parts, grads: grads && matrices1(grads) };
}

// ------------------------------------------------------------------------------------------------
// The second table: metric learning, mixture of experts, hard-negative mining (docs/LOSSES.md
// sections 4-6). Their inputs are not one layout (lists of expert matrices, a rule, a gating,
// a fine-to-coarse map, an integer matrix of hard negatives), so a valid call is one of the
// shared suites' random problems (tests/helpers/specs_moe.ts) drawn from a seed, at a shape,
// scale and options drawn here, and then pushed to one of its edges ("extreme").

/** A member of the second table. */
export interface ProblemLoss {
  readonly name: string;
  readonly grads: readonly string[];
  /** Inputs that are lists of matrices (their gradient is a list in the same order). */
  readonly lists: readonly string[];
  /** Inputs the loss L2-normalises by rows (as `F.normalize`: a zero row's gradient is divided by 1e-12). */
  readonly normalised: readonly string[];
  /** Whether it takes `reduction` (then `"none"` takes an upstream per row). */
  readonly reduces: boolean;
  /** Number inputs with a number gradient (clip's `scale`, siglip's `scale` and `bias`). */
  readonly numbers: readonly string[];
  readonly valid: fc.Arbitrary<ProblemCase>;
  /** Valid calls broken in one place (as the first table's `invalid`). */
  readonly invalid: fc.Arbitrary<BadCase>;
}

/** A valid call of the second table, with the name of the edge it was pushed to. */
export interface ProblemCase extends Case {
  extreme: string;
}

/** Ways of pushing a random problem to an edge; each changes fresh inputs in place. */
type Extreme = (inputs: Record<string, Any>, rng: Rng) => void;

/** The batch's first matrix (a list's first expert). */
const batchOf = (
  inputs: Record<string, Any>,
  key: string,
): Mat => (Array.isArray(inputs[key]) ? inputs[key][0] : inputs[key]);

const setRows = (m: Mat, value: (row: number, k: number) => number) => {
  const [n, d] = m.shape;
  for (let i = 0; i < n; i++) for (let k = 0; k < d; k++) m.data[i * d + k] = value(i, k);
};

/** Edges every member meets: coincident rows, one class only, classes absent from the batch, a zero row. */
const commonExtremes = (batch: string): Record<string, Extreme> => ({
  "coincident rows": (inputs) => {
    const m = batchOf(inputs, batch);
    setRows(m, (_, k) => m.data[k]);
    // Every expert the same (featureDiversity: every distance 0).
    if (Array.isArray(inputs[batch])) { for (const e of inputs[batch]) e.data.set(m.data); }
  },
  "one class": (inputs) => inputs.labels?.fill(inputs.labels[0]),
  "absent classes": (inputs) => inputs.labels?.forEach((y: number, i: number, a: Int32Array) => (a[i] = y % 2 ? y : 0)),
  "a zero row": (inputs) => batchOf(inputs, batch).data.fill(0, 0, batchOf(inputs, batch).shape[1]),
});

/** Edges of a rule: every other row 0, every value 1 (no denominator weight left), 0 or 1 at random. */
const ruleExtremes: Record<string, Extreme> = {
  "rule rows of zeros": (inputs) => {
    const r = inputs.rule as Mat, k = r.shape[0];
    for (let i = 0; i < k; i += 2) r.data.fill(0, i * k, (i + 1) * k);
  },
  "rule of ones": (inputs) => (inputs.rule as Mat).data.fill(1),
  "rule of 0 and 1": (inputs, rng) => (inputs.rule as Mat).data.forEach((_, i, a) => (a[i] = rng.int(2))),
};

interface ProblemDefinition {
  spec: LossSpec;
  lists?: readonly string[];
  normalised?: readonly string[];
  reduces?: boolean;
  /** Number inputs with a number gradient. */
  numbers?: readonly string[];
  /** The matrix (or list) whose rows are the batch. */
  batch: string;
  /** Whether the random problem has a rule (physicsContrastive: only when a threshold is given). */
  rule?: (o: Record<string, Any>) => boolean;
  /** Inputs that may be left out (physicsContrastive's rule). */
  optional?: readonly string[];
  /** The member's own options for C classes. */
  options(c: number): fc.Arbitrary<Record<string, Any>>;
  /** Its own edges, beside the common ones. */
  extremes?: Record<string, Extreme>;
}

const temperatures = fc.oneof(logUniform(-4, 1), fc.constantFrom(1e-4, 0.07, 1));
const thresholds = option(-0.5, 1.5, 0, 0.5, 0.8, 1);
const weights = option(-2, 2, 0, 0.001, 0.1, 1);
/** iclMoe's and physMoe's tail experts among the specs' 3, and gamma. */
const tail = { tailExperts: fc.subarray([0, 1, 2]), gamma: option(0, 5, 0, 0.5, 2) };

const problemDefinitions: ProblemDefinition[] = [
  { spec: centerLossSpec, batch: "x", reduces: true, options: () => fc.constant({}) },
  {
    spec: physicsContrastiveSpec,
    batch: "f",
    reduces: true,
    rule: (o) => o.threshold !== undefined,
    optional: ["rule"],
    options: () => fc.record({ temperature: temperatures, threshold: thresholds }, { requiredKeys: [] }),
    extremes: ruleExtremes,
  },
  {
    spec: featureDiversitySpec,
    batch: "features",
    lists: ["features"],
    options: () => fc.record({ lambda: weights }, { requiredKeys: [] }),
  },
  {
    spec: centerRegularizationSpec,
    batch: "f",
    normalised: ["centers"],
    rule: () => true,
    options: () => fc.record({ prototypeWeight: option(-2, 5, 0, 0.5, 2) }, { requiredKeys: [] }),
    extremes: {
      ...ruleExtremes,
      "a zero centre": (inputs) => (inputs.centers as Mat).data.fill(0, 0, (inputs.centers as Mat).shape[1]),
    },
  },
  {
    spec: mixOutputsSpec,
    batch: "expertLogits",
    lists: ["expertLogits"],
    options: (c) =>
      fc.record({
        prior: fc.array(between(0.01, 10), { minLength: c, maxLength: c }).map((a) => Float32Array.from(a)),
        distillWeight: weights,
        parallelWeight: weights,
        eps: logUniform(-8, 0),
      }, { requiredKeys: [] }),
  },
  {
    spec: iclMoeSpec,
    batch: "expertLogits",
    lists: ["expertLogits"],
    options: () => fc.record(tail, { requiredKeys: [] }),
    extremes: {
      "one-hot gating": (inputs, rng) => setRows(inputs.gating, (i, e) => (e === (i + rng.int(3)) % 3 ? 1 : 0)),
    },
  },
  {
    spec: hierarchicalSpec,
    batch: "fine",
    reduces: true,
    options: () => fc.constant({}),
    extremes: {
      "one coarse class": (inputs) => inputs.fineToCoarse.fill(0),
      "each class alone": (inputs) =>
        inputs.fineToCoarse.forEach((
          _: number,
          j: number,
          a: Int32Array,
        ) => (a[j] = j % (inputs.coarse as Mat).shape[1])),
    },
  },
  {
    spec: physMoeSpec,
    batch: "features",
    lists: ["expertLogits"],
    rule: () => true,
    options: () =>
      fc.record({
        lambdaScl: weights,
        lambdaHier: weights,
        lambdaReg: weights,
        contrast: fc.boolean(),
        temperature: temperatures,
        threshold: thresholds,
        prototypeWeight: option(-2, 5, 0, 0.5),
        ...tail,
      }, { requiredKeys: [] }),
    extremes: { ...ruleExtremes, "one coarse class": (inputs) => inputs.fineToCoarse.fill(0) },
  },
  {
    spec: hnmContrastiveSpec,
    batch: "f",
    reduces: true,
    normalised: ["f"],
    options: () => fc.record({ temperature: temperatures }, { requiredKeys: [] }),
    extremes: {
      "hard negatives equal to the label": (inputs) => {
        const h = inputs.hard, k = h.shape[1];
        for (let i = 0; i < h.shape[0]; i++) h.data.fill(inputs.labels[i], i * k, (i + 1) * k);
      },
    },
  },
  { spec: clipSpec, batch: "a", numbers: ["scale"], options: () => fc.constant({}) },
  { spec: siglipSpec, batch: "a", numbers: ["scale", "bias"], options: () => fc.constant({}) },
  // SPEC §8's metric-learning staples.
  {
    spec: ntXentSpec,
    batch: "f",
    normalised: ["f"],
    options: () => fc.record({ temperature: temperatures }, { requiredKeys: [] }),
  },
  {
    spec: tripletMarginSpec,
    batch: "f",
    normalised: ["f"],
    options: () =>
      fc.record({
        margin: option(-1, 2, 0, 0.05, 0.5),
        mining: fc.constantFrom("all", "hard", "semihard", "batchHard"),
        soft: fc.boolean(),
      }, { requiredKeys: [] }),
  },
  {
    spec: multiSimilaritySpec,
    batch: "f",
    normalised: ["f"],
    options: () =>
      fc.record({ alpha: logUniform(-2, 2), beta: logUniform(-1, 2.5), base: option(-1, 1, 0, 0.5) }, {
        requiredKeys: [],
      }),
  },
  {
    spec: proxyAnchorSpec,
    batch: "f",
    normalised: ["f", "proxies"],
    options: () => fc.record({ margin: option(-0.5, 0.5, 0, 0.1), alpha: logUniform(-1, 2) }, { requiredKeys: [] }),
  },
];

/** Batch sizes: small ones, and around the SIMD widths. */
const PROBLEM_ROWS = fc.oneof(
  { arbitrary: fc.integer({ min: 1, max: 9 }), weight: 4 },
  { arbitrary: fc.constantFrom(15, 16, 17, 33), weight: 1 },
);

function problemCase(d: ProblemDefinition): fc.Arbitrary<ProblemCase> {
  const extremes = { none: () => {}, ...commonExtremes(d.batch), ...d.extremes };
  const names = Object.keys(extremes);
  return fc.record({ n: PROBLEM_ROWS, c: COLS, seed: fc.integer(), scale: fc.constantFrom(1, 30, LOGIT_MAX) }).chain((
    s,
  ) =>
    fc.record({
      own: d.options(s.c),
      reduction: d.reduces ? fc.option(fc.constantFrom(...REDUCTIONS), { nil: undefined }) : fc.constant(undefined),
      checkFinite: fc.option(fc.boolean(), { nil: undefined }),
      extreme: fc.oneof({ arbitrary: fc.constant("none"), weight: 2 }, {
        arbitrary: fc.constantFrom(...names),
        weight: 1,
      }),
      upstream: fc.option(fc.oneof(uniform(100), fc.constantFrom(0, 1, -1)), { nil: undefined }),
      perRow: perRow(s.n),
      out: fc.subarray(d.spec.grads.filter((g) => !d.lists?.includes(g))),
    }).map(({ own, reduction, checkFinite, extreme, upstream, perRow, out }) => {
      const options: Record<string, Any> = { ...own };
      if (reduction !== undefined) options.reduction = reduction;
      if (checkFinite !== undefined) options.checkFinite = checkFinite;
      const rng = new Rng(s.seed);
      // The specs draw a rule only for options that have one (physicsContrastive: a threshold).
      const inputs = d.spec.random(
        rng,
        s.n,
        s.c,
        s.scale,
        d.rule?.(options) ? { threshold: 0.8, ...options } : options,
      );
      // A rule's edges need a rule.
      if (extreme in ruleExtremes && !inputs.rule) extreme = "none";
      (extremes as Record<string, Extreme>)[extreme](inputs, rng);
      if (out.length) options.out = Object.fromEntries(out.map((k) => [k, garbage(outShape(inputs, k))]));
      return {
        inputs,
        options: Object.keys(options).length ? options : undefined,
        upstream: reduction === "none" ? perRow : upstream,
        extreme,
      };
    })
  );
}

const isMatrix = (v: unknown): v is Mat =>
  typeof v === "object" && v !== null && "data" in v && ArrayBuffer.isView((v as Mat).data);

/**
 * Every way to break a valid call `k` of the second table in one place, each with the
 * methods that must throw and the argument the message must name: the inputs object, each
 * input (left out, null, a string; a matrix's data, shape and length; a list's matrices),
 * the labels' type and length, the options object, an unknown option, checkFinite,
 * reduction, each of the call's own options (NaN, a string, a boolean), out, the upstream.
 */
function problemMutations(d: ProblemDefinition, k: ProblemCase): BadCase[] {
  const all = methodsOf("loss");
  const { bad, add, o, withInput, withOption } = mutator(k, all);
  const brokenMatrices = (m: Mat): [string, unknown][] => {
    const [rows, cols] = m.shape;
    return [
      ["a bare typed array", m.data],
      ["data a Float64Array", { data: new Float64Array(rows * cols), shape: [rows, cols] }],
      ["no shape", { data: m.data }],
      ["shape of rank 3", { data: m.data, shape: [rows, cols, 1] }],
      ["a negative size", { data: m.data, shape: [-rows, cols] }],
      ["data one too long", {
        data: new (m.data.constructor as Float32ArrayConstructor)(rows * cols + 1),
        shape: [rows, cols],
      }],
    ];
  };

  for (const value of [null, 5, "inputs", [k.inputs]]) {
    add(`inputs = ${show(value)}`, { ...k, inputs: value as Any }, "inputs");
  }
  add("an unknown input key", withInput("extra", k.inputs[d.batch]), "extra");
  for (const [key, value] of Object.entries(k.inputs)) {
    add(`${key} missing`, withInput(key, undefined), key, d.optional?.includes(key) ? [] : all);
    add(`${key}: null`, withInput(key, null), key);
    add(`${key}: a string`, withInput(key, "1"), key);
    if (isMatrix(value)) {
      for (const [what, m] of brokenMatrices(value)) add(`${key}: ${what}`, withInput(key, m), key);
    } else if (Array.isArray(value) && isMatrix(value[0])) {
      add(`${key}: a matrix, not a list`, withInput(key, value[0]), key);
      for (const [what, m] of brokenMatrices(value[0])) {
        add(`${key}[0]: ${what}`, withInput(key, [m, ...value.slice(1)]), key);
      }
    }
  }
  const labels = k.inputs.labels as ArrayLike<number> | undefined;
  if (labels) {
    const forms: [string, unknown][] = [
      ["a Float32Array", Float32Array.from(labels)],
      ["one too many", [...Array.from(labels), 0]],
      ["a fractional label", Array.from(labels, (y, i) => (i === 0 ? 0.5 : y))],
      ["a NaN label", Array.from(labels, (y, i) => (i === 0 ? NaN : y))],
    ];
    for (const [what, value] of forms) add(`labels: ${what}`, withInput("labels", value), "labels");
  }

  for (const value of ["mean", 5, true]) add(`options = ${show(value)}`, { ...k, options: value as Any }, "options");
  add("an unknown option", withOption("unknownOption", 1), "unknownOption");
  for (const v of BAD_BOOLEAN) add(`checkFinite = ${show(v)}`, withOption("checkFinite", v), "options.checkFinite");
  if (d.reduces) {
    for (const v of ["avg", "MEAN", 1, null]) {
      add(`reduction = ${show(v)}`, withOption("reduction", v), "options.reduction");
    }
  } else add("reduction (not an option here)", withOption("reduction", "mean"), "reduction");
  for (const [key, value] of Object.entries(o)) {
    if (["reduction", "checkFinite", "out"].includes(key)) continue;
    for (const v of typeof value === "boolean" ? BAD_BOOLEAN : [NaN, "1", true]) {
      add(`options.${key} = ${show(v)}`, withOption(key, v), `options.${key}`);
    }
  }
  add("an unknown out key", withOption("out", { bogus: garbage([1, 1]) }), "bogus");
  add("out not an object", withOption("out", 5), "options.out");

  const batch = k.inputs[d.batch];
  const n = (Array.isArray(batch) ? batch[0] : batch).shape[0];
  const forms: [string, unknown][] = o.reduction === "none"
    ? [["a string", "1"], ["one value too many", new Float32Array(n + 1)], ["a matrix", garbage([n, 1])]]
    : [["a Float32Array", new Float32Array(n)], ["a string", "1"], ["an object", {}]];
  for (const [what, value] of forms) add(`upstream: ${what}`, change(k, { upstream: value }), "upstream", ["backward"]);
  return bad;
}

/** The second table, in the order of docs/LOSSES.md. */
export const PROBLEM_LOSSES: readonly ProblemLoss[] = problemDefinitions.map((d) => {
  const valid = problemCase(d);
  return {
    name: d.spec.name,
    grads: d.spec.grads,
    lists: d.lists ?? [],
    normalised: d.normalised ?? [],
    reduces: d.reduces ?? false,
    numbers: d.numbers ?? [],
    valid,
    invalid: valid.chain((k) => fc.constantFrom(...problemMutations(d, k))),
  };
});
