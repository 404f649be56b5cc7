/**
 * The shared suites' view of `linearCrossEntropy` (SPEC.md §9) on the GPU path
 * (tests/webgpu_gpupath_test.ts): random problems x [n, 4], W [c, 4] (c the vocabulary),
 * a bias [c] on the host (its gradient comes back on the GPU with the others), labels with
 * some ignored, and option sets that cover every option and reduction. Its fixtures are
 * tests/fixtures/lce/ (read by tests/linear_cross_entropy_test.ts and tests/webgpu_lce_test.ts).
 *
 * @module
 */
import { randomLabels, randomMatrix, randomVector, type Rng } from "./random.ts";
import type { LossSpec } from "./specs.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/** Class weights of a vocabulary of c (fixed, so that each option set is one problem). */
const weights = (c: number) => Float32Array.from({ length: c }, (_, j) => 0.5 + (j % 5) / 4);

export const linearCrossEntropySpec: LossSpec = {
  name: "linearCrossEntropy",
  fixtures: "lce/linear_cross_entropy.json",
  grads: ["x", "W"],
  random: (rng: Rng, n: number, c: number, scale: number, o: Record<string, Any>) => ({
    x: randomMatrix(rng, n, 4, scale),
    W: randomMatrix(rng, c, 4, 1),
    bias: randomVector(rng, c, -1, 1),
    labels: randomLabels(rng, n, c, 0.2, o.ignoreIndex ?? -100),
  }),
  optionSets: (c: number) => [
    {},
    { weight: weights(c), labelSmoothing: 0.1, softcap: 3, zLoss: 0.01, reduction: "sum" },
    { reduction: "none", zLoss: 0.05, ignoreIndex: -1 },
    { reduction: "none", weight: weights(c), labelSmoothing: 0.2, softcap: 5 },
  ],
};
