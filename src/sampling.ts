/**
 * Seeded sampling for the losses of SPEC §7: ElasticFace's per-row margins
 * (`elasticMargins`) and PartialFC's class sample (`partialFcSample`). Pure,
 * synchronous functions of their arguments: the same seed gives the same values on
 * every backend and runtime (the generator uses 32-bit integer arithmetic and IEEE
 * `+ - * / sqrt` only, never a platform `Math.log`/`Math.cos`, whose last bits may
 * differ between engines).
 *
 * The generator: xoshiro128** (Blackman and Vigna 2018) whose four 32-bit words are
 * `fmix32(seed + k * 0x9E3779B9)` for k = 1..4 (MurmurHash3's finaliser); a uniform
 * double in [0, 1) is `(a >>> 5) * 2^26 + (b >>> 6)` over 2^53 from two outputs a, b;
 * normal draws come in pairs from Marsaglia's polar method.
 *
 * @module
 */
import type { Labels } from "./types.ts";
import * as v from "./validate.ts";

/** MurmurHash3's 32-bit finaliser. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** xoshiro128** seeded from a 32-bit seed: `next()` is a uniform double in [0, 1). */
export function generator(seed: number): { next(): number } {
  const s = new Uint32Array(4);
  for (let k = 0; k < 4; k++) s[k] = fmix32((seed + Math.imul(k + 1, 0x9e3779b9)) >>> 0);
  const word = (): number => {
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  };
  return { next: () => ((word() >>> 5) * 67108864 + (word() >>> 6)) / 9007199254740992 };
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

const LN2 = 0.6931471805599453;
const bits = new Float64Array(1);
const words = new Uint32Array(bits.buffer);
const HIGH = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0;

/**
 * The natural logarithm of a positive finite `x` from IEEE arithmetic alone (within
 * 2 ulp of the exact value): `x = m 2^e` with m in [sqrt(1/2), sqrt(2)), then
 * `ln m = 2 atanh((m - 1) / (m + 1))` by its series. The same bits on every engine.
 */
export function ln(x: number): number {
  bits[0] = x;
  let e = (words[HIGH] >>> 20) - 1023;
  words[HIGH] = (words[HIGH] & 0x000fffff) | 0x3ff00000; // m in [1, 2)
  let m = bits[0];
  if (e === -1023) return ln(x * 2 ** 54) - 54 * LN2; // subnormal
  if (m > Math.SQRT2) {
    m /= 2;
    e++;
  }
  const t = (m - 1) / (m + 1), t2 = t * t;
  let sum = 0;
  for (let k = 27; k >= 1; k -= 2) sum = 1 / k + t2 * sum;
  return e * LN2 + 2 * t * sum;
}

/** Options of {@linkcode elasticMargins}. */
export interface ElasticMarginsOptions {
  /** The mean margin (ElasticFace-Arc used 0.5, ElasticFace-Cos 0.35). */
  mean: number;
  /** The standard deviation, finite, >= 0 (ElasticFace: 0.05 for Arc, 0.025 for Cos). */
  std: number;
  /** A 32-bit unsigned integer; pass a new one per step (e.g. the step) for new margins. */
  seed: number;
}

/**
 * ElasticFace's per-row margins (Boutros et al. 2022, "ElasticFace: Elastic Margin
 * Loss for Deep Face Recognition"): `n` draws from N(mean, std^2) as a `Float32Array`,
 * to pass as the `margin` array of `arcface`, `cosface` or `combinedMargin` (row i uses
 * margin i). Deterministic in `seed` on every runtime (the module's generator); ElasticFace
 * draws new margins every step, so pass a new seed per step. ElasticFace+ (margins sorted
 * by the rows' target cosines) is this array sorted by the caller.
 *
 * @param n The number of rows (a non-negative integer).
 * @param options `mean`, `std` (>= 0) and `seed` (an integer in [0, 2^32)), all required.
 * @returns A fresh `Float32Array` of `n` margins.
 *
 * @example Margins for a batch of 4 rows
 * ```ts
 * import { elasticMargins } from "@softmargin/softmargin";
 * const m = elasticMargins(4, { mean: 0.5, std: 0.05, seed: 1 });
 * console.log(m.length, m.every((x) => Math.abs(x - 0.5) < 0.3)); // 4 true
 * ```
 */
export function elasticMargins(n: number, options: ElasticMarginsOptions): Float32Array {
  const o = v.options(v.required("options", options));
  v.keys("options of elasticMargins", o, ["mean", "std", "seed"]);
  const count = v.size("n", n);
  const mean = v.number("options.mean", v.required("options.mean", o.mean), 0);
  const std = v.number("options.std", v.required("options.std", o.std), 0, { min: 0 });
  const rng = generator(seed("options.seed", o.seed));
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    let a: number, b: number, s: number;
    do {
      a = 2 * rng.next() - 1;
      b = 2 * rng.next() - 1;
      s = a * a + b * b;
    } while (s >= 1 || s === 0);
    const f = Math.sqrt(-2 * ln(s) / s);
    out[i] = mean + std * a * f;
    if (i + 1 < count) out[i + 1] = mean + std * b * f;
  }
  return out;
}

/** Options of {@linkcode partialFcSample}. */
export interface PartialFcSampleOptions {
  /** The share of the classes to sample, in (0, 1] (insightface's `sample_rate`). */
  rate: number;
  /** A 32-bit unsigned integer; pass a new one per step (e.g. the step). */
  seed: number;
  /** Labels equal to it are not classes. @default -100 */
  ignoreIndex?: number;
}

/**
 * PartialFC's class sample (An et al. 2022, "Killing Two Birds with One Stone: Efficient
 * and Robust Training of Face Recognition CNNs by Partial FC"): every distinct label of
 * the batch (`ignoreIndex` excluded) plus `max(0, ceil(rate C) - d)` other classes (d the
 * number of distinct labels) drawn uniformly without replacement by the module's seeded
 * generator (a partial Fisher-Yates shuffle of the other classes in increasing order),
 * returned sorted: the `classes` input of `marginHead`. `ceil(rate C)` ignores the last-bit
 * rounding of `rate * C` (rate 0.3 of 10 classes is 3). Differences from insightface
 * (deliberate): it samples `int(rate C)` classes (a floor) with `torch.rand` + `topk`; here
 * the count is a ceiling (a rate never rounds to no class) and the draw is seeded.
 *
 * @param labels The batch's labels `[N]` (an `Int32Array` or array of integers in `[0, C)` or `ignoreIndex`).
 * @param classes The number of classes C (a positive integer).
 * @param options `rate` in (0, 1] and `seed` (required), `ignoreIndex` (-100).
 * @returns A fresh sorted `Int32Array` of distinct classes in `[0, C)`.
 *
 * @example A tenth of 100 classes around a batch's labels
 * ```ts
 * import { partialFcSample } from "@softmargin/softmargin";
 * const classes = partialFcSample([7, 3, 7, -100], 100, { rate: 0.1, seed: 42 });
 * console.log(classes.length, classes.includes(3) && classes.includes(7)); // 10 true
 * ```
 */
export function partialFcSample(labels: Labels, classes: number, options: PartialFcSampleOptions): Int32Array {
  const o = v.options(v.required("options", options));
  v.keys("options of partialFcSample", o, ["rate", "seed", "ignoreIndex"]);
  const c = v.size("classes", classes);
  if (c === 0) throw new RangeError("Expected classes to be a positive integer, got 0");
  const rate = v.number("options.rate", v.required("options.rate", o.rate), 0, { min: 0, max: 1, minExclusive: true });
  const rng = generator(seed("options.seed", o.seed));
  const ignoreIndex = v.integer("options.ignoreIndex", o.ignoreIndex, -100);
  const checked = v.labels("labels", labels, (labels as ArrayLike<unknown>)?.length ?? 0, c, ignoreIndex);
  const chosen = new Uint8Array(c);
  let d = 0;
  for (const y of checked) if (y >= 0 && !chosen[y]) chosen[y] = 1, d++;
  const want = Math.max(0, Math.min(c, Math.ceil(rate * c * (1 - 2 ** -50))) - d);
  if (want > 0) {
    const others = new Int32Array(c - d);
    for (let j = 0, k = 0; j < c; j++) if (!chosen[j]) others[k++] = j;
    for (let i = 0; i < want; i++) {
      const j = i + Math.floor(rng.next() * (others.length - i));
      const pick = others[j];
      others[j] = others[i];
      others[i] = pick;
      chosen[pick] = 1;
    }
  }
  const out = new Int32Array(d + want);
  for (let j = 0, k = 0; j < c; j++) if (chosen[j]) out[k++] = j;
  return out;
}

/** Checks a seed: an integer in [0, 2^32). */
function seed(name: string, value: unknown): number {
  const s = v.number(name, v.required(name, value), 0, { min: 0, max: 2 ** 32, maxExclusive: true });
  if (!Number.isInteger(s)) throw new RangeError(`Expected ${name} to be an integer in [0, 4294967296), got ${s}`);
  return s;
}
