/**
 * The shared suites' view of the metric-learning and mixture-of-experts losses
 * (docs/LOSSES.md, "Metric learning" and "Mixture of experts"): random problems whose
 * class count follows the agreement grid's C (capped where a loss holds a `[C, C]`
 * rule), and the option sets of the grid.
 *
 * @module
 */
import { type Mat, randomLabels, randomMatrix, type Rng } from "./random.ts";
import type { LossSpec } from "./specs.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/** Embedding width of the random problems. */
const D = 8;

/** Rows of `[n, d]` normalised to unit length (float32). */
export function unitRows(rng: Rng, n: number, d: number): Mat {
  const m = randomMatrix(rng, n, d, 1);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += m.data[i * d + k] ** 2;
    const inv = 1 / Math.sqrt(s);
    for (let k = 0; k < d; k++) m.data[i * d + k] *= inv;
  }
  return m;
}

/** A rule matrix `[k, k]` of similarities in [0, 1], ones on the diagonal, a few pairs above 0.8. */
export function randomRule(rng: Rng, k: number): Mat {
  const data = new Float32Array(k * k);
  for (let i = 0; i < k; i++) {
    for (let j = 0; j <= i; j++) {
      const r = i === j ? 1 : rng.next() < 0.15 ? rng.uniform(0.8, 1) : rng.uniform(0, 0.6);
      data[i * k + j] = data[j * k + i] = r;
    }
  }
  return { data, shape: [k, k] };
}

/** Positive gating weights `[n, e]`, rows summing to 1. */
export function randomGating(rng: Rng, n: number, e: number): Mat {
  const data = new Float32Array(n * e);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < e; k++) s += data[i * e + k] = rng.uniform(0.05, 1);
    for (let k = 0; k < e; k++) data[i * e + k] /= s;
  }
  return { data, shape: [n, e] };
}

/** A fine-to-coarse map of `c` classes onto `k` groups. */
export function randomGroups(rng: Rng, c: number, k: number): Int32Array {
  return Int32Array.from({ length: c }, (_, j) => (j < k ? j : rng.int(k)));
}

const experts = (rng: Rng, e: number, n: number, c: number, scale: number) =>
  Array.from({ length: e }, () => randomMatrix(rng, n, c, scale));

export const centerLossSpec: LossSpec = {
  name: "centerLoss",
  fixtures: "center_loss.json",
  grads: ["x", "centers"],
  random: (rng, n, c, scale) => ({
    x: randomMatrix(rng, n, D, Math.min(scale, 30)),
    centers: randomMatrix(rng, c, D, Math.min(scale, 30)),
    labels: randomLabels(rng, n, c),
  }),
  optionSets: () => [{}, { reduction: "sum" }, { reduction: "none" }],
};

export const physicsContrastiveSpec: LossSpec = {
  name: "physicsContrastive",
  fixtures: "physics_contrastive.json",
  grads: ["f"],
  random: (rng, n, c, _scale, o) => {
    const k = Math.min(c, 5);
    const inputs: Record<string, Any> = { f: unitRows(rng, n, D), labels: randomLabels(rng, n, k) };
    if (o.threshold !== undefined) inputs.rule = randomRule(rng, k);
    return inputs;
  },
  optionSets:
    () => [{}, { threshold: 0.7, temperature: 0.5 }, { threshold: 0.9, temperature: 1e-4, reduction: "sum" }, {
      reduction: "none",
    }],
};

export const featureDiversitySpec: LossSpec = {
  name: "featureDiversity",
  fixtures: "feature_diversity.json",
  grads: ["features"],
  random: (rng, n, c, scale) => ({ features: experts(rng, 1 + (c % 4), n, D, Math.min(scale, 30)) }),
  optionSets: () => [{}, { lambda: 0.5 }],
};

export const centerRegularizationSpec: LossSpec = {
  name: "centerRegularization",
  fixtures: "center_regularization.json",
  grads: ["f", "centers"],
  random: (rng, n, c) => {
    const k = Math.min(c, 40);
    return {
      f: unitRows(rng, n, D),
      centers: randomMatrix(rng, k, D, 1),
      labels: randomLabels(rng, n, k),
      rule: randomRule(rng, k),
    };
  },
  optionSets: () => [{}, { prototypeWeight: 2 }],
};

export const mixOutputsSpec: LossSpec = {
  name: "mixOutputs",
  fixtures: "mix_outputs.json",
  grads: ["expertLogits"],
  random: (rng, n, c, scale) => ({ expertLogits: experts(rng, 3, n, c, scale), labels: randomLabels(rng, n, c) }),
  optionSets: (c) => [
    {},
    { distillWeight: 0.5, parallelWeight: 0.3 },
    { prior: Float32Array.from({ length: c }, (_, j) => 1 / (1 + j)), distillWeight: 1, eps: 1e-3 },
  ],
};

export const iclMoeSpec: LossSpec = {
  name: "iclMoe",
  fixtures: "icl_moe.json",
  grads: ["expertLogits"],
  random: (rng, n, c, scale) => ({
    expertLogits: experts(rng, 3, n, c, scale),
    gating: randomGating(rng, n, 3),
    labels: randomLabels(rng, n, c),
  }),
  optionSets: () => [{}, { tailExperts: [1, 2] }, { tailExperts: [0], gamma: 0.5 }],
};

export const hierarchicalSpec: LossSpec = {
  name: "hierarchical",
  fixtures: "hierarchical.json",
  grads: ["coarse", "fine"],
  random: (rng, n, c, scale) => {
    const k = Math.min(c, 4);
    return {
      coarse: randomMatrix(rng, n, k, scale),
      fine: randomMatrix(rng, n, c, scale),
      labels: randomLabels(rng, n, c),
      fineToCoarse: randomGroups(rng, c, k),
    };
  },
  optionSets: () => [{}, { reduction: "sum" }, { reduction: "none" }],
};

export const physMoeSpec: LossSpec = {
  name: "physMoe",
  fixtures: "phys_moe.json",
  grads: ["features", "coarse", "expertLogits", "gating", "centers"],
  random: (rng, n, cGrid, scale) => {
    const c = Math.min(cGrid, 40), k = Math.min(c, 4);
    return {
      features: unitRows(rng, n, D),
      coarse: randomMatrix(rng, n, k, Math.min(scale, 30)),
      expertLogits: experts(rng, 3, n, c, Math.min(scale, 30)),
      gating: randomGating(rng, n, 3),
      labels: randomLabels(rng, n, c),
      rule: randomRule(rng, c),
      fineToCoarse: randomGroups(rng, c, k),
      centers: randomMatrix(rng, c, D, 1),
    };
  },
  optionSets: () => [{}, { tailExperts: [2], contrast: false }, { tailExperts: [0, 1], lambdaScl: 1, lambdaReg: 0.5 }],
};

export const hnmContrastiveSpec: LossSpec = {
  name: "hnmContrastive",
  fixtures: "hnm.json",
  grads: ["f"],
  random: (rng, n, c, scale) => {
    const k = Math.min(3, c);
    return {
      f: randomMatrix(rng, n, D, Math.min(scale, 30)),
      prototypes: randomMatrix(rng, c, D, 1),
      labels: randomLabels(rng, n, c),
      hard: { data: Int32Array.from({ length: n * k }, () => rng.int(c)), shape: [n, k] },
    };
  },
  optionSets: () => [{}, { temperature: 1 }, { temperature: 1e-4, reduction: "none" }],
};

/** The metric-learning and mixture-of-experts losses of SPEC.md §4–§6, in this order. */
export const moeSpecs: readonly LossSpec[] = [
  centerLossSpec,
  physicsContrastiveSpec,
  featureDiversitySpec,
  centerRegularizationSpec,
  mixOutputsSpec,
  iclMoeSpec,
  hierarchicalSpec,
  physMoeSpec,
  hnmContrastiveSpec,
];
