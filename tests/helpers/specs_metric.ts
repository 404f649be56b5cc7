/**
 * The shared suites' view of the metric-learning staples of SPEC §8 (`ntXent`,
 * `tripletMargin`, `multiSimilarity`, `proxyAnchor`; docs/LOSSES.md "Contrastive and
 * metric-learning staples"): random problems whose labels draw from at most 5 classes (so
 * that batches have positives and negatives; proxyAnchor: the grid's C proxies), and the
 * option sets of the agreement grid.
 *
 * @module
 */
import { randomLabels, randomMatrix, type Rng } from "./random.ts";
import type { LossSpec } from "./specs.ts";

/** Embedding width of the random problems. */
const D = 8;

const embeddings = (rng: Rng, n: number, c: number, scale: number) => ({
  f: randomMatrix(rng, n, D, Math.min(scale, 30)),
  labels: randomLabels(rng, n, Math.min(c, 5)),
});

export const ntXentSpec: LossSpec = {
  name: "ntXent",
  fixtures: "nt_xent.json",
  grads: ["f"],
  random: embeddings,
  optionSets: () => [{}, { temperature: 0.5 }, { temperature: 1e-4 }],
};

export const tripletMarginSpec: LossSpec = {
  name: "tripletMargin",
  fixtures: "triplet_margin.json",
  grads: ["f"],
  random: embeddings,
  optionSets: () => [
    {},
    { mining: "hard", margin: 0.3 },
    { mining: "semihard", margin: 0.5, soft: true },
    { mining: "batchHard", soft: true },
    { soft: true, margin: 0.2 },
  ],
};

export const multiSimilaritySpec: LossSpec = {
  name: "multiSimilarity",
  fixtures: "multi_similarity.json",
  grads: ["f"],
  random: embeddings,
  optionSets: () => [{}, { alpha: 1, beta: 10, base: 0.2 }],
};

export const proxyAnchorSpec: LossSpec = {
  name: "proxyAnchor",
  fixtures: "proxy_anchor.json",
  grads: ["f", "proxies"],
  random: (rng, n, c, scale) => ({
    f: randomMatrix(rng, n, D, Math.min(scale, 30)),
    proxies: randomMatrix(rng, c, D, 1),
    labels: randomLabels(rng, n, c),
  }),
  optionSets: () => [{}, { margin: 0.3, alpha: 4 }],
};

/** The four specs. */
export const metricSpecs: readonly LossSpec[] = [ntXentSpec, tripletMarginSpec, multiSimilaritySpec, proxyAnchorSpec];
