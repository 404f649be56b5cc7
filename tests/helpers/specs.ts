/**
 * What the shared suites need to know about each loss of SPEC.md §1: its fixture
 * file, its differentiable inputs, how to draw a random problem of a given shape,
 * and the option sets of the wasm-vs-reference agreement grid.
 *
 * @module
 */
import {
  logSoftmaxOf,
  type Mat,
  randomLabels,
  randomMatrix,
  randomProbabilities,
  randomVector,
  type Rng,
} from "./random.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/** A loss as the shared suites see it. */
export interface LossSpec {
  /** Public name (`wasm.<name>`). */
  readonly name: string;
  /** File under tests/fixtures/. */
  readonly fixtures: string;
  /** The gradients `backward` returns (and nothing else). */
  readonly grads: readonly string[];
  /** softmax / logSoftmax: `forward` returns `{ output }` and backward takes a matrix upstream. */
  readonly matrixOutput?: boolean;
  /** A random problem `[n, c]` with logits of the given scale, for these options. */
  random(rng: Rng, n: number, c: number, scale: number, options: Record<string, Any>): Record<string, Any>;
  /** Option sets of the agreement grid. */
  readonly optionSets: (c: number) => Record<string, Any>[];
}

/** The agreement grid of every loss: SPEC's "weird shapes" around the SIMD widths and one large C. */
export const GRID = {
  classes: [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 1000, 4099],
  rows: [1, 2, 3, 33],
  scales: [1, 30, 1e4],
} as const;

const ignoreOf = (o: Record<string, Any>) => (o.ignoreIndex ?? -100) as number;

export const crossEntropySpec: LossSpec = {
  name: "crossEntropy",
  fixtures: "cross_entropy.json",
  grads: ["logits"],
  random: (rng, n, c, scale, o) => ({
    logits: randomMatrix(rng, n, c, scale),
    labels: randomLabels(rng, n, c, 0.2, ignoreOf(o)),
  }),
  optionSets: (c) => [
    {},
    { weight: weightsFor(c), labelSmoothing: 0.1 },
    { reduction: "sum", ignoreIndex: -1, labelSmoothing: 0.3 },
    { reduction: "none", weight: weightsFor(c) },
    { softcap: 20, zLoss: 1e-3, weight: weightsFor(c), labelSmoothing: 0.1, reduction: "sum" },
    { softcap: 5, zLoss: 0.01, reduction: "none" },
  ],
};

export const focalSpec: LossSpec = {
  name: "focal",
  fixtures: "focal.json",
  grads: ["logits"],
  random: crossEntropySpec.random,
  optionSets: (c) => [
    {},
    { gamma: 0.5, alpha: weightsFor(c) },
    { gamma: 0, reduction: "sum", ignoreIndex: -1 },
    { gamma: 3.5, reduction: "none", alpha: weightsFor(c) },
  ],
};

export const softCrossEntropySpec: LossSpec = {
  name: "softCrossEntropy",
  fixtures: "soft_cross_entropy.json",
  grads: ["logits", "target"],
  random: (rng, n, c, scale) => ({
    logits: randomMatrix(rng, n, c, scale),
    target: randomProbabilities(rng, n, c, true),
  }),
  optionSets: () => [{}, { reduction: "sum" }, { reduction: "none" }],
};

export const klDivSpec: LossSpec = {
  name: "klDiv",
  fixtures: "kl_div.json",
  grads: ["logInput", "target"],
  random: (rng, n, c, scale, o) => ({
    logInput: logSoftmaxOf(randomMatrix(rng, n, c, scale)),
    target: o.logTarget
      ? logSoftmaxOf(randomMatrix(rng, n, c, Math.min(scale, 30)))
      : randomProbabilities(rng, n, c, true),
  }),
  optionSets: () => [{}, { reduction: "sum" }, { reduction: "mean", logTarget: true }, { reduction: "none" }],
};

export const distillationSpec: LossSpec = {
  name: "distillation",
  fixtures: "distillation.json",
  grads: ["student"],
  random: (rng, n, c, scale, o) => ({
    student: randomMatrix(rng, n, c, scale),
    teacher: randomMatrix(rng, n, c, scale),
    labels: randomLabels(rng, n, c, 0.2, ignoreOf(o)),
  }),
  optionSets: () => [
    {},
    { temperature: 1, alpha: 0.5, reduction: "sum" },
    { temperature: 1e-4, alpha: 0.3 },
    { temperature: 2, reduction: "none", ignoreIndex: -1 },
  ],
};

export const accuracySpec: LossSpec = {
  name: "accuracy",
  fixtures: "accuracy.json",
  // A metric: no gradients.
  grads: [],
  random: crossEntropySpec.random,
  optionSets: (c) => [{}, { k: Math.min(3, c) }, { k: Math.min(5, c), ignoreIndex: -1 }],
};

export const softmaxSpec: LossSpec = {
  name: "softmax",
  fixtures: "softmax.json",
  grads: ["x"],
  matrixOutput: true,
  random: (rng, n, c, scale) => ({ x: randomMatrix(rng, n, c, scale) }),
  optionSets: () => [{}],
};

export const logSoftmaxSpec: LossSpec = { ...softmaxSpec, name: "logSoftmax", fixtures: "log_softmax.json" };

/** Every loss of SPEC.md §1. */
export const allSpecs: readonly LossSpec[] = [
  crossEntropySpec,
  focalSpec,
  softCrossEntropySpec,
  klDivSpec,
  distillationSpec,
  accuracySpec,
  softmaxSpec,
  logSoftmaxSpec,
];

/** Deterministic positive class weights, some of them 0 (allowed; PyTorch too). */
function weightsFor(c: number): Float32Array {
  const w = new Float32Array(c);
  for (let j = 0; j < c; j++) w[j] = j % 7 === 3 ? 0 : 0.25 + ((j * 37) % 11) / 8;
  return w;
}

/** The upstream gradient of a random problem: a number for a reduced loss, a vector for "none", a matrix for softmax. */
export function randomUpstream(spec: LossSpec, rng: Rng, n: number, c: number, options: Record<string, Any>): Any {
  if (spec.matrixOutput) return randomMatrix(rng, n, c, 1) as Mat;
  if (options.reduction === "none") return randomVector(rng, n, -2, 2);
  return Math.fround(rng.uniform(-2, 2));
}

// ------------------------------------------------------------------------------------------------
// SPEC.md §2 (margin losses on cosines) and §3 (margin heads from embeddings)

/**
 * Random cosines `[n, c]`; `scale` (the agreement grid's) picks how they are spread:
 * below 2, uniform in [-1, 1]; up to 1000, concentrated near +-1 (`+-(1 - |normal| / scale)`);
 * from 1000 on, "edges": about a third of them exactly +-1, 0, or just outside [-1, 1]
 * (+-1.0000001, which the losses clamp), the rest uniform in [-1, 1].
 */
export function randomCosines(rng: Rng, n: number, c: number, scale = 1): Mat {
  const data = new Float32Array(n * c);
  for (let i = 0; i < data.length; i++) {
    if (scale >= 1000) {
      const r = rng.next();
      data[i] = r < 0.1
        ? 1
        : r < 0.2
        ? -1
        : r < 0.25
        ? 1.0000001
        : r < 0.3
        ? -1.0000001
        : r < 0.35
        ? 0
        : rng.uniform(-1, 1);
    } else if (scale >= 2) {
      const v = 1 - Math.abs(rng.normal()) / scale;
      data[i] = Math.max(-1, v) * (rng.next() < 0.5 ? 1 : -1);
    } else {
      data[i] = rng.uniform(-1, 1);
    }
  }
  return { data, shape: [n, c] };
}

const cosineProblem = (rng: Rng, n: number, c: number, scale: number, o: Record<string, Any>) => ({
  cos: randomCosines(rng, n, c, scale),
  labels: randomLabels(rng, n, c, 0.2, ignoreOf(o)),
});

export const arcfaceSpec: LossSpec = {
  name: "arcface",
  fixtures: "arcface.json",
  grads: ["cos"],
  random: cosineProblem,
  optionSets: () => [
    {},
    { scale: 30, margin: 0.2, easyMargin: true, reduction: "sum", ignoreIndex: -1 },
    { margin: 1.2, marginGrad: "constant", reduction: "none" },
    { scale: 1, margin: 0.5, easyMargin: false, marginGrad: "exact" },
  ],
};

export const cosfaceSpec: LossSpec = {
  name: "cosface",
  fixtures: "cosface.json",
  grads: ["cos"],
  random: cosineProblem,
  optionSets: () => [
    {},
    { scale: 30, margin: 0.2, reduction: "sum", ignoreIndex: -1 },
    { scale: 1, margin: 0.5, reduction: "none" },
    { margin: -0.1, marginGrad: "constant" },
  ],
};

export const normfaceSpec: LossSpec = {
  name: "normface",
  fixtures: "normface.json",
  grads: ["cos"],
  random: cosineProblem,
  optionSets: () => [{}, { scale: 64, reduction: "sum", ignoreIndex: -1 }, { scale: 1, reduction: "none" }],
};

export const combinedMarginSpec: LossSpec = {
  name: "combinedMargin",
  fixtures: "combined_margin.json",
  grads: ["cos"],
  random: cosineProblem,
  optionSets: () => [
    {},
    { scale: 30, m1: 1, m2: 0.3, m3: 0.2, reduction: "sum", ignoreIndex: -1 },
    { scale: 1, m1: 1.35, m2: 0.2, m3: 0.1, reduction: "none", marginGrad: "constant" },
    { m1: 0.9, m2: 0.4, m3: 0.15 },
  ],
};

/** A head of SPEC.md §3: also draws problems of a given embedding width D. */
export interface HeadSpec extends LossSpec {
  /** The embedding widths of its agreement grid (`HEAD_GRID.widths` or `.angularWidths`). */
  readonly widths: readonly number[];
  /** A random problem `x [n, d]`, `W [c, d]`, labels; `scale` sets the size of x (see each spec's). */
  randomHead(
    rng: Rng,
    n: number,
    c: number,
    d: number,
    scale: number,
    options: Record<string, Any>,
  ): Record<string, Any>;
}

/**
 * The heads' agreement grid (the rows and scales are GRID's): class counts around the
 * SIMD width and the wasm kernel's class chunk of 128, and embedding widths from 1 (every
 * cosine +-1) to 64. SphereFace and L-Softmax take `angularWidths`: at D = 1 their gradient
 * w.r.t. x is a sum of O(1) terms over the classes that cancels (often to exactly 0), which
 * float32 cannot resolve below ~1e-7, under SPEC's absolute floor of 1e-8 (D = 1 is covered
 * by their fixtures and edge-case tests).
 */
export const HEAD_GRID = {
  classes: [1, 3, 7, 129, 300],
  widths: [1, 3, 8, 64],
  angularWidths: [2, 3, 8, 64],
} as const;

/** Random class rows `[c, d]`: random directions, norms uniform in [0.3, 2] (whatever d). */
export function randomClassRows(rng: Rng, c: number, d: number): Mat {
  const W = randomMatrix(rng, c, d, 1);
  for (let j = 0; j < c; j++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += W.data[j * d + k] ** 2;
    const f = rng.uniform(0.3, 2) / Math.sqrt(s);
    for (let k = 0; k < d; k++) W.data[j * d + k] *= f;
  }
  return W;
}

/** Unit rows of m (float64), dividing by max(||row||, 1e-12) as F.normalize, and the norms. */
export function unitRows(m: Mat): { u: Float64Array; norms: Float64Array } {
  const [r, d] = m.shape;
  const u = new Float64Array(r * d), norms = new Float64Array(r);
  for (let i = 0; i < r; i++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += m.data[i * d + k] ** 2;
    norms[i] = Math.sqrt(s);
    for (let k = 0; k < d; k++) u[i * d + k] = m.data[i * d + k] / Math.max(norms[i], 1e-12);
  }
  return { u, norms };
}

/**
 * Embeddings `[n, d]` whose cosine to their label's class row `W[labels[i]]` is `targets[i]`
 * (up to float32 rounding) and whose norm is `norms[i]`; a random direction for ignored
 * rows (a label outside `[0, C)`). With d = 1 the cosine is the sign of the target.
 */
export function alignedRows(
  rng: Rng,
  W: Mat,
  labels: ArrayLike<number>,
  targets: ArrayLike<number>,
  norms: ArrayLike<number>,
): Mat {
  const [c, d] = W.shape;
  const n = labels.length;
  const data = new Float32Array(n * d);
  const direction = (v: Float64Array) => {
    let s = 0;
    for (let k = 0; k < d; k++) s += v[k] * v[k];
    for (let k = 0; k < d; k++) v[k] /= Math.sqrt(s);
    return v;
  };
  for (let i = 0; i < n; i++) {
    const y = labels[i];
    const r = norms[i];
    const u = direction(Float64Array.from({ length: d }, () => rng.normal()));
    if (!(y >= 0 && y < c)) {
      for (let k = 0; k < d; k++) data[i * d + k] = r * u[k];
      continue;
    }
    const w = direction(Float64Array.from(W.data.subarray(y * d, (y + 1) * d)));
    const t = targets[i];
    if (d === 1) {
      data[i] = r * (t >= 0 ? 1 : -1) * w[0];
      continue;
    }
    let dot = 0;
    for (let k = 0; k < d; k++) dot += u[k] * w[k];
    for (let k = 0; k < d; k++) u[k] -= dot * w[k];
    direction(u);
    const s = Math.sqrt(Math.max(0, 1 - t * t));
    for (let k = 0; k < d; k++) data[i * d + k] = r * (t * w[k] + s * u[k]);
  }
  return { data, shape: [n, d] };
}

/**
 * A random head problem: W from `randomClassRows`, x normal * `scale` (uniform in
 * [-scale, scale] from 1000 on), and about half the labelled rows moved towards (or away
 * from) their class row, so the label cosines spread over (-1, 1).
 */
function randomHead(rng: Rng, n: number, c: number, d: number, scale: number, o: Record<string, Any>) {
  const W = randomClassRows(rng, c, d);
  const labels = randomLabels(rng, n, c, 0.2, ignoreOf(o));
  const x = randomMatrix(rng, n, d, scale);
  for (let i = 0; i < n; i++) {
    const y = labels[i];
    if (y < 0 || rng.next() < 0.5) continue;
    let nx = 0, nw = 0;
    for (let k = 0; k < d; k++) {
      nx += x.data[i * d + k] ** 2;
      nw += W.data[y * d + k] ** 2;
    }
    const t = rng.uniform(-2, 2) * Math.sqrt(nx / nw);
    for (let k = 0; k < d; k++) x.data[i * d + k] += t * W.data[y * d + k];
  }
  return { x, W, labels };
}

/**
 * The largest row norm of x in SphereFace's and L-Softmax's random problems (their logits are
 * `||x|| ||W_j|| cos`, up to about twice this here); the "large logits" tests go to 1e4.
 */
export const ANGULAR_X_NORM_CAP = 2500;

/**
 * A random SphereFace / L-Softmax problem: W from `randomClassRows`, each labelled row of x at
 * a label cosine uniform in (-1, 1), the row norms of x uniform in [0.1, 1] * min(scale,
 * ANGULAR_X_NORM_CAP), so the logits grow with the grid's scale up to the cap.
 */
function randomAngularHead(rng: Rng, n: number, c: number, d: number, scale: number, o: Record<string, Any>) {
  const W = randomClassRows(rng, c, d);
  const labels = randomLabels(rng, n, c, 0.2, ignoreOf(o));
  const cap = Math.min(scale, ANGULAR_X_NORM_CAP);
  const x = alignedRows(rng, W, labels, randomVector(rng, n, -1, 1), randomVector(rng, n, 0.1 * cap, cap));
  return { x, W, labels };
}

/** The width of `HeadSpec.random` (the `LossSpec` interface has none). */
const DEFAULT_HEAD_WIDTH = 8;

export const marginHeadSpec: HeadSpec = {
  name: "marginHead",
  fixtures: "margin_head.json",
  grads: ["x", "W"],
  widths: HEAD_GRID.widths,
  randomHead,
  random: (rng, n, c, scale, o) => randomHead(rng, n, c, DEFAULT_HEAD_WIDTH, scale, o),
  optionSets: () => [
    {},
    { kind: "cosface", scale: 30, reduction: "sum", ignoreIndex: -1 },
    { kind: "normface", reduction: "none" },
    { kind: "combinedMargin", m1: 1.2, m2: 0.3, m3: 0.1, marginGrad: "constant" },
    { kind: "arcface", scale: 16, margin: 0.3, easyMargin: true, reduction: "none" },
  ],
};

export const spherefaceSpec: HeadSpec = {
  name: "sphereface",
  fixtures: "sphereface.json",
  grads: ["x", "W"],
  widths: HEAD_GRID.angularWidths,
  randomHead: randomAngularHead,
  random: (rng, n, c, scale, o) => randomAngularHead(rng, n, c, DEFAULT_HEAD_WIDTH, scale, o),
  optionSets: () => [
    {},
    { m: 1, lambda: 0, reduction: "sum", ignoreIndex: -1 },
    { m: 3, lambda: 5, reduction: "none" },
    { m: 2, lambda: 1000 },
    { m: 5, lambda: 0.5, reduction: "none" },
  ],
};

export const lsoftmaxSpec: HeadSpec = {
  name: "lsoftmax",
  fixtures: "lsoftmax.json",
  grads: ["x", "W"],
  widths: HEAD_GRID.angularWidths,
  randomHead: randomAngularHead,
  random: (rng, n, c, scale, o) => randomAngularHead(rng, n, c, DEFAULT_HEAD_WIDTH, scale, o),
  optionSets: () => [
    {},
    { m: 1, beta: 0, reduction: "sum", ignoreIndex: -1 },
    { m: 3, beta: 1, reduction: "none" },
    { m: 2, beta: 100 },
    { m: 5, beta: 0.5, reduction: "none" },
  ],
};

/** `spec` with every random problem of embedding width `d` (for `checkAgreement`). */
export function withWidth(spec: HeadSpec, d: number): LossSpec {
  return { ...spec, random: (rng, n, c, scale, o) => spec.randomHead(rng, n, c, d, scale, o) };
}

/** Every loss of SPEC.md §2 (inputs cos, labels). */
export const cosineMarginSpecs: readonly LossSpec[] = [arcfaceSpec, cosfaceSpec, normfaceSpec, combinedMarginSpec];

/** Every head of SPEC.md §3 (inputs x, W, labels). */
export const headSpecs: readonly HeadSpec[] = [marginHeadSpec, spherefaceSpec, lsoftmaxSpec];

/**
 * `spec` (a margin loss on cosines) with `subcenters` (SPEC §7): a random problem has `cos [n, c K]`
 * (K = `options.subcenters`, default 1) and labels in `[0, c)`; every option set takes K = 3.
 */
export function withSubcenters(spec: LossSpec): LossSpec {
  return {
    ...spec,
    fixtures: "subcenters/subcenters.json",
    random: (rng, n, c, scale, o) => ({
      cos: randomCosines(rng, n, c * (o.subcenters ?? 1), scale),
      labels: randomLabels(rng, n, c, 0.2, ignoreOf(o)),
    }),
    optionSets: (c) => spec.optionSets(c).map((o) => ({ ...o, subcenters: 3 })),
  };
}

/** The losses of SPEC.md §2 with 3 sub-centres per class. */
export const subcenterSpecs: readonly LossSpec[] = cosineMarginSpecs.map(withSubcenters);
