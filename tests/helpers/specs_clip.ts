/**
 * The shared suites' view of `clip` and `siglip` (SPEC.md §8): their fixture files, their
 * matrix gradients (the number gradients, `scale` and `bias`, are checked by
 * tests/clip_test.ts) and random problems: unit rows `a`, `b` [n, c] (c the width D here),
 * `scale` from the grid's scale (at most 100, open_clip's largest logit scale) and siglip's
 * bias.
 *
 * @module
 */
import { randomMatrix, type Rng } from "./random.ts";
import type { LossSpec } from "./specs.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/** n random rows of width d, L2-normalised (as the caller of clip/siglip gives them). */
export function unitRows(rng: Rng, n: number, d: number): { data: Float32Array; shape: [number, number] } {
  const m = randomMatrix(rng, n, d, 1);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += m.data[i * d + k] ** 2;
    const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
    for (let k = 0; k < d; k++) m.data[i * d + k] *= inv;
  }
  return { data: m.data, shape: [n, d] };
}

/** The logit scale of a problem drawn at the grid's scale (1, 30, 1e4): at most 100. */
const logitScale = (scale: number) => Math.min(scale, 100);

export const clipSpec: LossSpec = {
  name: "clip",
  fixtures: "clip/clip.json",
  grads: ["a", "b"],
  random: (rng: Rng, n: number, c: number, scale: number): Record<string, Any> => ({
    a: unitRows(rng, n, c),
    b: unitRows(rng, n, c),
    scale: logitScale(scale),
  }),
  optionSets: () => [{}],
};

export const siglipSpec: LossSpec = {
  name: "siglip",
  fixtures: "clip/siglip.json",
  grads: ["a", "b"],
  random: (rng: Rng, n: number, c: number, scale: number): Record<string, Any> => ({
    a: unitRows(rng, n, c),
    b: unitRows(rng, n, c),
    scale: logitScale(scale),
    bias: rng.uniform(-10, 10),
  }),
  optionSets: () => [{}],
};
