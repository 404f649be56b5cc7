/**
 * Seeded random problems for the tests: every test that draws random inputs is
 * reproducible from its seed, and a failure message can name the seed.
 *
 * @module
 */

/** A matrix as the library takes it. */
export interface Mat {
  data: Float32Array;
  shape: [number, number];
}

/** mulberry32: a small, fast, well-mixed 32-bit generator. */
export class Rng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** A standard normal (Box-Muller). */
  normal(): number {
    const u = 1 - this.next();
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
}

/** A seed from a string (FNV-1a), so a problem's name fixes its inputs. */
export function seedOf(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/**
 * Random logits `[n, c]`, as the fixtures draw them: normal * scale, except for
 * scale >= 1000, which is uniform in [-scale, scale] (so |z| reaches the scale).
 */
export function randomMatrix(rng: Rng, n: number, c: number, scale = 1): Mat {
  const data = new Float32Array(n * c);
  for (let i = 0; i < data.length; i++) {
    data[i] = scale >= 1000 ? rng.uniform(-scale, scale) : rng.normal() * scale;
  }
  return { data, shape: [n, c] };
}

/** Random labels in [0, c); each row is `ignoreIndex` with probability `ignoreShare`. */
export function randomLabels(rng: Rng, n: number, c: number, ignoreShare = 0, ignoreIndex = -100): Int32Array {
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) y[i] = rng.next() < ignoreShare ? ignoreIndex : rng.int(c);
  return y;
}

/**
 * Random probability rows `[n, c]` (float32, each row sums to 1 up to rounding);
 * with `zeros`, about 30% of the entries are exactly 0 (never a whole row).
 */
export function randomProbabilities(rng: Rng, n: number, c: number, zeros = false): Mat {
  const data = new Float32Array(n * c);
  for (let i = 0; i < n; i++) {
    let total = 0;
    const row = new Float64Array(c);
    for (let j = 0; j < c; j++) {
      row[j] = zeros && rng.next() < 0.3 ? 0 : -Math.log(1 - rng.next()) + 1e-3;
      total += row[j];
    }
    if (total === 0) {
      row[rng.int(c)] = 1;
      total = 1;
    }
    for (let j = 0; j < c; j++) data[i * c + j] = row[j] / total;
  }
  return { data, shape: [n, c] };
}

/** Row-wise log-softmax of `m` (float64 math, float32 result): a log-probability input. */
export function logSoftmaxOf(m: Mat): Mat {
  const [n, c] = m.shape;
  const data = new Float32Array(n * c);
  for (let i = 0; i < n; i++) {
    let max = -Infinity;
    for (let j = 0; j < c; j++) max = Math.max(max, m.data[i * c + j]);
    let s = 0;
    for (let j = 0; j < c; j++) s += Math.exp(m.data[i * c + j] - max);
    const lse = max + Math.log(s);
    for (let j = 0; j < c; j++) data[i * c + j] = m.data[i * c + j] - lse;
  }
  return { data, shape: [n, c] };
}

/** Random values uniform in [lo, hi) as a Float32Array. */
export function randomVector(rng: Rng, n: number, lo: number, hi: number): Float32Array {
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = rng.uniform(lo, hi);
  return v;
}
