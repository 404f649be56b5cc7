/**
 * The synthetic data of the metric-learning and mixture-of-experts benchmarks
 * (`phys_moe_bench.ts`, `physics_contrastive_bench.ts`), after the seed's configuration:
 * 230 fine classes (space groups) in 7 coarse classes (crystal systems), long-tailed
 * labels, a rule matrix that calls classes of the same system similar, features with a
 * class structure.
 *
 * @module
 */
import { mulberry32 } from "./harness.ts";

/** Fine classes (space groups) and coarse classes (crystal systems) of the seed. */
export const FINE = 230;
export const COARSE = 7;

/**
 * The crystal system of each space group (0-based): triclinic 1-2, monoclinic 3-15,
 * orthorhombic 16-74, tetragonal 75-142, trigonal 143-167, hexagonal 168-194, cubic 195-230.
 */
export function crystalSystems(): Int32Array {
  const last = [2, 15, 74, 142, 167, 194, 230];
  return Int32Array.from({ length: FINE }, (_, j) => last.findIndex((l) => j + 1 <= l));
}

/**
 * `b` labels in `[0, c)`, long-tailed with imbalance ratio 100: class of rank r (a random
 * permutation of the classes, so the head classes spread over the groups) is drawn with
 * probability proportional to `100^(-r / (c - 1))`.
 */
export function longTailLabels(rand: () => number, b: number, c: number): Int32Array {
  const rank = Array.from({ length: c }, (_, j) => j);
  for (let j = c - 1; j > 0; j--) {
    const t = Math.floor(rand() * (j + 1));
    [rank[j], rank[t]] = [rank[t], rank[j]];
  }
  const cdf = new Float64Array(c);
  let s = 0;
  for (let j = 0; j < c; j++) cdf[j] = s += 100 ** (-rank[j] / (c - 1));
  return Int32Array.from({ length: b }, () => {
    const u = rand() * s;
    let j = 0;
    while (j < c - 1 && cdf[j] <= u) j++;
    return j;
  });
}

/**
 * A symmetric rule matrix `[c, c]` with values in [0, 1]: 1 on the diagonal, U(0.3, 0.9)
 * between classes of the same coarse group (one pair in six above the default threshold
 * 0.8, so a positive), U(0, 0.3) between groups.
 */
export function groupRule(rand: () => number, groups: Int32Array): Float32Array {
  const c = groups.length, rule = new Float32Array(c * c);
  for (let i = 0; i < c; i++) {
    for (let j = 0; j <= i; j++) {
      const r = i === j ? 1 : groups[i] === groups[j] ? 0.3 + 0.6 * rand() : 0.3 * rand();
      rule[i * c + j] = rule[j * c + i] = r;
    }
  }
  return rule;
}

/** `rows x d` values from U(-1, 1), each row scaled to unit length. */
export function unitRows(rand: () => number, rows: number, d: number): Float32Array {
  const m = Float32Array.from({ length: rows * d }, () => rand() * 2 - 1);
  normalizeRows(m, rows, d);
  return m;
}

function normalizeRows(m: Float32Array, rows: number, d: number): void {
  for (let i = 0; i < rows; i++) {
    let s = 0;
    for (let q = 0; q < d; q++) s += m[i * d + q] ** 2;
    const inv = 1 / Math.sqrt(s);
    for (let q = 0; q < d; q++) m[i * d + q] *= inv;
  }
}

/**
 * Features `[b, d]` with a class structure: `normalize(mu_y + noise)`, `mu` a unit vector
 * per class, the noise U(-1, 1) per entry scaled to length about 1 (cosines about 0.5
 * within a class, about 0 between classes).
 */
export function classFeatures(rand: () => number, labels: Int32Array, means: Float32Array, d: number): Float32Array {
  const b = labels.length, f = new Float32Array(b * d), k = Math.sqrt(3 / d);
  for (let i = 0; i < b; i++) {
    for (let q = 0; q < d; q++) f[i * d + q] = means[labels[i] * d + q] + (rand() * 2 - 1) * k;
  }
  normalizeRows(f, b, d);
  return f;
}

/** The inputs of `physicsContrastive` at batch `b`, width `d`: long-tailed labels over 230 classes, the group rule. */
export interface ContrastiveData {
  b: number;
  d: number;
  f: Float32Array;
  labels: Int32Array;
  rule: Float32Array;
}

export function contrastiveData(b: number, d: number, seed: number): ContrastiveData {
  const rand = mulberry32(seed);
  const groups = crystalSystems();
  const rule = groupRule(rand, groups);
  const labels = longTailLabels(rand, b, FINE);
  const f = classFeatures(rand, labels, unitRows(rand, FINE, d), d);
  return { b, d, f, labels, rule };
}

/** The arrays of a `physMoe` step at the seed's configuration (or another batch, width, expert count). */
export interface MoeData extends ContrastiveData {
  c: number;
  k: number;
  e: number;
  coarse: Float32Array;
  expertLogits: Float32Array[];
  gating: Float32Array;
  fineToCoarse: Int32Array;
  centers: Float32Array;
}

/**
 * physMoe's inputs: the contrastive data; coarse logits U(-2, 2); E expert logit matrices
 * U(-3, 3); gating rows the softmax of U(-1, 1) values; centres the class means plus
 * U(-0.1, 0.1) noise, times 3 (not normalised: the loss normalises them).
 */
export function moeData(b: number, d: number, e: number, seed: number): MoeData {
  const rand = mulberry32(seed);
  const groups = crystalSystems();
  const rule = groupRule(rand, groups);
  const labels = longTailLabels(rand, b, FINE);
  const means = unitRows(rand, FINE, d);
  const f = classFeatures(rand, labels, means, d);
  const uniform = (n: number, a: number) => Float32Array.from({ length: n }, () => (rand() * 2 - 1) * a);
  const gating = uniform(b * e, 1).map(Math.exp);
  for (let i = 0; i < b; i++) {
    let s = 0;
    for (let x = 0; x < e; x++) s += gating[i * e + x];
    for (let x = 0; x < e; x++) gating[i * e + x] /= s;
  }
  return {
    b,
    d,
    c: FINE,
    k: COARSE,
    e,
    f,
    labels,
    rule,
    coarse: uniform(b * COARSE, 2),
    expertLogits: Array.from({ length: e }, () => uniform(b * FINE, 3)),
    gating,
    fineToCoarse: groups,
    centers: means.map((m) => 3 * (m + (rand() * 2 - 1) * 0.1)),
  };
}
