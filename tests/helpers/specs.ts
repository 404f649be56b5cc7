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
  /** Gradients that are identically zero (accuracy). */
  readonly zeroGrads?: boolean;
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
  grads: ["logits"],
  zeroGrads: true,
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
