/**
 * Synthetic long-tailed data with a two-level label structure: fine classes in coarse
 * groups. A sample of fine class c in group g is
 * `x = groupScale * mu_g + classScale * delta_c + noise * eps` with unit random
 * directions `mu_g` (one per group) and `delta_c` (one per class) and standard normal
 * `eps`: classes of one group share a direction, so a rare class is easily confused with
 * the frequent classes of its own group and seldom with another group's.
 *
 * @module
 */

/** A seeded generator: mulberry32 for uniforms, Box-Muller for normals. */
export class Rng {
  #s: number;
  #spare: number | null = null;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  /** A uniform number in [0, 1). */
  uniform(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** A standard normal number. */
  normal(): number {
    if (this.#spare !== null) {
      const s = this.#spare;
      this.#spare = null;
      return s;
    }
    const u = 1 - this.uniform(), w = 2 * Math.PI * this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.#spare = r * Math.sin(w);
    return r * Math.cos(w);
  }
  /** An array of `n` normals times `scale`. */
  normals(n: number, scale = 1): Float32Array {
    return Float32Array.from({ length: n }, () => scale * this.normal());
  }
  /** A random permutation of 0..n-1 (Fisher-Yates). */
  permutation(n: number): Int32Array {
    const p = Int32Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(this.uniform() * (i + 1));
      [p[i], p[j]] = [p[j], p[i]];
    }
    return p;
  }
}

/** The shape of the synthetic problem. */
export interface DataConfig {
  classes: number;
  groups: number;
  /** Width of the input space. */
  inputs: number;
  /** Training samples of the most frequent class. */
  maxPerClass: number;
  /** Most frequent over least frequent class size. */
  imbalance: number;
  /** Test samples per class (a balanced test set). */
  testPerClass: number;
  groupScale: number;
  classScale: number;
  noise: number;
}

/** A labelled set: `x [n, inputs]` row-major and one fine label per row. */
export interface Split {
  x: Float32Array;
  labels: Int32Array;
  n: number;
}

/** The generated problem. */
export interface LongTailData {
  train: Split;
  test: Split;
  /** Training samples of each class. */
  counts: Int32Array;
  /** The group of each fine class. */
  fineToCoarse: Int32Array;
}

/** A unit random direction. */
function direction(rng: Rng, d: number): Float32Array {
  const v = rng.normals(d);
  const norm = Math.hypot(...v);
  return v.map((x) => x / norm);
}

/**
 * Generates the problem. Class c (in [0, C)) has
 * `round(maxPerClass * imbalance^(-c / (C - 1)))` training samples: sizes decay
 * exponentially from class 0 to class C - 1. Groups take classes round-robin
 * (`c mod groups`), so every group has frequent, medium and rare classes.
 */
export function longTail(cfg: DataConfig, seed: number): LongTailData {
  const rng = new Rng(seed);
  const { classes: c, groups: k, inputs: d } = cfg;
  const fineToCoarse = Int32Array.from({ length: c }, (_, i) => i % k);
  const mu = Array.from({ length: k }, () => direction(rng, d));
  const delta = Array.from({ length: c }, () => direction(rng, d));
  const counts = Int32Array.from(
    { length: c },
    (_, i) => Math.round(cfg.maxPerClass * cfg.imbalance ** (-i / (c - 1))),
  );
  const sample = (perClass: (cls: number) => number): Split => {
    const labels: number[] = [];
    for (let cls = 0; cls < c; cls++) for (let j = perClass(cls); j > 0; j--) labels.push(cls);
    const n = labels.length, x = new Float32Array(n * d);
    for (let i = 0; i < n; i++) {
      const cls = labels[i], g = mu[fineToCoarse[cls]], o = delta[cls];
      for (let j = 0; j < d; j++) {
        x[i * d + j] = cfg.groupScale * g[j] + cfg.classScale * o[j] + cfg.noise * rng.normal();
      }
    }
    return { x, labels: Int32Array.from(labels), n };
  };
  return { train: sample((cls) => counts[cls]), test: sample(() => cfg.testPerClass), counts, fineToCoarse };
}
