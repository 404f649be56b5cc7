/**
 * The synthetic data of the metric-learning and mixture-of-experts benchmarks, after the
 * seed's configuration: 230 fine classes (space groups) in 7 coarse classes (crystal
 * systems: triclinic 1-2, monoclinic 3-15, orthorhombic 16-74, tetragonal 75-142, trigonal
 * 143-167, hexagonal 168-194, cubic 195-230); labels long-tailed with imbalance ratio 100
 * (the class of rank r, ranks a random permutation, drawn with weight `100^(-r / 229)`);
 * a symmetric rule, 1 on the diagonal, U(0.3, 0.9) within a system (one pair in six above
 * the threshold 0.8), U(0, 0.3) between systems; features `normalize(mu_y + noise)` with a
 * unit mean per class (cosines about 0.5 within a class, about 0 between).
 *
 * @module
 */
import { mulberry32, uniform } from "./engine.ts";

export const FINE = 230;
export const COARSE = 7;

/** The arrays of `physicsContrastive` at batch `b`, width `d`. */
export type ContrastiveData = { b: number; d: number; f: Float32Array; labels: Int32Array; rule: Float32Array };

/** physMoe's: coarse logits U(-2, 2), E expert logits U(-3, 3), gating rows softmax(U(-1, 1)), centres 3 (mu + U(-0.1, 0.1)). */
export type MoeData =
  & ContrastiveData
  & { c: number; k: number; e: number; coarse: Float32Array; gating: Float32Array }
  & {
    expertLogits: Float32Array[];
    fineToCoarse: Int32Array;
    centers: Float32Array;
  };

function normalizeRows(m: Float32Array, d: number): Float32Array {
  for (let i = 0; i < m.length; i += d) {
    let s = 0;
    for (let q = i; q < i + d; q++) s += m[q] ** 2;
    for (let q = i; q < i + d; q++) m[q] /= Math.sqrt(s);
  }
  return m;
}

function data(b: number, d: number, rand: () => number): ContrastiveData & { groups: Int32Array; means: Float32Array } {
  const last = [2, 15, 74, 142, 167, 194, 230];
  const groups = Int32Array.from({ length: FINE }, (_, j) => last.findIndex((l) => j + 1 <= l));
  const rule = new Float32Array(FINE * FINE);
  for (let i = 0; i < FINE; i++) {
    for (let j = 0; j <= i; j++) {
      rule[i * FINE + j] = rule[j * FINE + i] = i === j
        ? 1
        : groups[i] === groups[j]
        ? 0.3 + 0.6 * rand()
        : 0.3 * rand();
    }
  }
  const rank = Array.from({ length: FINE }, (_, j) => j);
  for (let j = FINE - 1; j > 0; j--) {
    const t = Math.floor(rand() * (j + 1));
    [rank[j], rank[t]] = [rank[t], rank[j]];
  }
  let total = 0;
  const cdf = rank.map((r) => (total += 100 ** (-r / (FINE - 1))));
  const labels = Int32Array.from({ length: b }, () => {
    const u = rand() * total;
    return cdf.findIndex((x) => x > u);
  });
  const means = normalizeRows(uniform(rand, FINE * d), d), k = Math.sqrt(3 / d);
  const f = normalizeRows(
    Float32Array.from(
      { length: b * d },
      (_, x) => means[labels[Math.floor(x / d)] * d + (x % d)] + (rand() * 2 - 1) * k,
    ),
    d,
  );
  return { b, d, f, labels, rule, groups, means };
}

export function contrastiveData(b: number, d: number, seed: number): ContrastiveData {
  return data(b, d, mulberry32(seed));
}

export function moeData(b: number, d: number, e: number, seed: number): MoeData {
  const rand = mulberry32(seed), { groups, means, ...rest } = data(b, d, rand);
  const gating = uniform(rand, b * e).map(Math.exp);
  for (let i = 0; i < b * e; i += e) {
    const s = gating.subarray(i, i + e).reduce((a, x) => a + x);
    for (let x = i; x < i + e; x++) gating[x] /= s;
  }
  return {
    ...rest,
    c: FINE,
    k: COARSE,
    e,
    coarse: uniform(rand, b * COARSE, 2),
    expertLogits: Array.from({ length: e }, () => uniform(rand, b * FINE, 3)),
    gating,
    fineToCoarse: groups,
    centers: means.map((m) => 3 * (m + (rand() * 2 - 1) * 0.1)),
  };
}
