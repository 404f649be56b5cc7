/**
 * The class-sharded families: a shard of classes of the fused softmax (`logitShardStats`, `logitShardGrads`) and
 * the head's two phases on a shard of W (`headShardStats`, `headShardGrads`), and the exact merge of the shards'
 * statistics (`mergeShardStats`).
 *
 * @module
 */
import * as v from "../validate.ts";
import { type HeadPhases, type HeadProblem, type HeadRowTerms, type HeadStats, labelTerms, RowTopK } from "./head.ts";
import type { NonTarget } from "./hard_label.ts";
import type { LinearCeProblem } from "./linear_ce.ts";

/**
 * One shard's per-row statistics (float64 `[N]` vectors), or several shards' merged by
 * {@linkcode mergeShardStats}. Ignored rows hold 0 everywhere.
 */
export interface ShardStats {
  /** The largest logit of the shard's classes (the label's, margin-modified, included where the shard holds it). */
  readonly max: Float64Array;
  /** `sum_j e^(z_j - max)` over the shard's classes other than the label. */
  readonly sum: Float64Array;
  /** The label's (margin-modified) logit where the shard holds the label, else 0. */
  readonly target: Float64Array;
  /** With `labelSmoothing`: `sum_j w_j (max - z_j)` over the shard's classes (`w` the class weights, all 1 without). */
  readonly below?: Float64Array;
  /** With `labelSmoothing`: `sum_j w_j` over the shard's classes. */
  readonly weightSum?: number;
  /**
   * What makes a merge checkable: {@linkcode SHARD_RECORD} floats per shard merged,
   * `[first, end, classes, batch, options]` (the shard's classes `[first, end)` of `classes`,
   * a 32-bit fingerprint of the batch's labels and replicated inputs, and one of the loss's
   * options: {@linkcode shardRecord}); several shards' records concatenated in a merge (an all-gather of them is the
   * merged one). `stats` always gives it, `finish` requires it; statistics built by hand may
   * leave it out of a merge only where every entry does.
   */
  readonly shards?: Float64Array;
}

/** The floats of one shard's record in {@linkcode ShardStats.shards}. */
export const SHARD_RECORD = 5;

/**
 * A 32-bit fingerprint (an integer in `[0, 2^32)`) of a list of values: numbers, strings,
 * booleans, null/undefined, typed arrays (their bytes), arrays and plain objects (by sorted
 * keys). Not cryptographic: it tells mixed-up statistics apart, one word per 4 bytes.
 */
export function fingerprint(values: readonly unknown[]): number {
  let h = 0x811c9dc5;
  const word = (w: number) => {
    h = Math.imul(h ^ w, 0x5bd1e995);
    h ^= h >>> 15;
  };
  const bits = new Float64Array(1), halves = new Uint32Array(bits.buffer);
  const add = (x: unknown): void => {
    if (typeof x === "number") {
      bits[0] = x === 0 ? 0 : x; // (-0 is 0)
      word(1), word(halves[0]), word(halves[1]);
    } else if (typeof x === "string") {
      word(2), word(x.length);
      for (let i = 0; i < x.length; i++) word(x.charCodeAt(i));
    } else if (typeof x === "boolean") word(x ? 3 : 4);
    else if (x === null || x === undefined) word(5);
    else if (ArrayBuffer.isView(x)) {
      const aligned = x.byteOffset % 4 === 0 && x.byteLength % 4 === 0;
      const w = aligned
        ? new Uint32Array(x.buffer, x.byteOffset, x.byteLength / 4)
        : new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
      word(6), word(x.byteLength);
      let g = h; // (the word loop inlined: a closure call per word is several times slower)
      for (let i = 0; i < w.length; i++) g = Math.imul(g ^ w[i], 0x5bd1e995), g ^= g >>> 15;
      h = g;
    } else if (Array.isArray(x)) {
      word(7), word(x.length);
      x.forEach(add);
    } else if (typeof x === "object") {
      const keys = Object.keys(x).sort();
      word(8), word(keys.length);
      for (const k of keys) add(k), add((x as Record<string, unknown>)[k]);
    } else throw new TypeError(`Cannot fingerprint ${typeof x}`);
  };
  values.forEach(add);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  return (h ^ (h >>> 13)) >>> 0;
}

/**
 * A shard's record for {@linkcode ShardStats.shards}: its classes `[first, end)` of `classes`,
 * the fingerprint of the batch (its `labels` as checked, whole, and the inputs every shard holds
 * whole, `replicated`, at up to {@linkcode SAMPLED} evenly spaced values each: another batch
 * differs all over) and of `options` (the loss's name and its checked options, defaults filled
 * in, without `offset`): what {@linkcode mergeShardStats} and `finish` compare.
 */
export function shardRecord(
  first: number,
  end: number,
  classes: number,
  labels: Int32Array,
  replicated: readonly Float32Array[],
  options: readonly unknown[],
): Float64Array {
  const samples = replicated.map((a) => {
    const step = Math.max(1, Math.floor(a.length / SAMPLED)), out = new Float32Array(Math.ceil(a.length / step));
    for (let t = 0; t < out.length; t++) out[t] = a[t * step];
    return out;
  });
  return Float64Array.of(first, end, classes, fingerprint([labels, ...samples]), fingerprint(options));
}

/** How many values of each replicated input a shard's record samples. */
export const SAMPLED = 4096;

/** `[a, b)`. */
const range = (r: Float64Array, k: number) => `[${r[k * SHARD_RECORD]}, ${r[k * SHARD_RECORD + 1]})`;

/**
 * Checks the records of statistics `name` (`own`: those `finish` computes on this shard, which
 * then requires the records, equal classes, batch and options, this shard's range among
 * them and every class covered): disjoint ranges of one batch and one set of options; the
 * names of `from` tell which entry of a merge brought each record. Returns the records.
 */
function checkRecords(name: string, s: Record<string, unknown>, own?: Float64Array, from?: string[]): Float64Array {
  const r = s.shards;
  if (!(r instanceof Float64Array)) {
    throw new TypeError(
      `Expected ${name}.shards to be a Float64Array (the shards' records, from stats), got ${v.show(r)}`,
    );
  }
  const count = r.length / SHARD_RECORD;
  if (count < 1 || !Number.isInteger(count)) {
    throw new RangeError(
      `Expected ${name}.shards to hold ${SHARD_RECORD} values per shard (at least one shard), got ${r.length}`,
    );
  }
  const who = (k: number) => from?.[k] ?? name;
  const ref = own ?? r.subarray(0, SHARD_RECORD), refName = own ? "this shard" : who(0);
  for (let k = 0; k < count; k++) {
    const [first, end, classes, batch, options] = r.subarray(k * SHARD_RECORD, (k + 1) * SHARD_RECORD);
    if (!(Number.isInteger(first) && Number.isInteger(end) && first >= 0 && first < end && end <= classes)) {
      throw new RangeError(
        `Expected ${who(k)}.shards to hold class ranges inside [0, classes), got ${range(r, k)} of ${classes}`,
      );
    }
    if (classes !== ref[2]) {
      throw new RangeError(
        `Expected ${who(k)} to be statistics of ${ref[2]} classes in all (as ${refName}), got ${classes}`,
      );
    }
    if (batch !== ref[3]) {
      throw new RangeError(
        `Expected ${
          who(k)
        } to be statistics of the batch of ${refName} (its labels and replicated inputs: fingerprint ${
          ref[3]
        }), got another batch's (fingerprint ${batch})`,
      );
    }
    if (options !== ref[4]) {
      throw new RangeError(
        `Expected ${who(k)} to be statistics of the loss and options of ${refName} (fingerprint ${
          ref[4]
        }), got another's (fingerprint ${options}: every shard must pass the same options but offset)`,
      );
    }
  }
  const order = Array.from({ length: count }, (_, k) => k).sort((a, b) => r[a * SHARD_RECORD] - r[b * SHARD_RECORD]);
  for (let t = 1; t < count; t++) {
    const [a, b] = [order[t - 1], order[t]];
    if (r[b * SHARD_RECORD] < r[a * SHARD_RECORD + 1]) {
      const same = r[a * SHARD_RECORD] === r[b * SHARD_RECORD] && r[a * SHARD_RECORD + 1] === r[b * SHARD_RECORD + 1];
      throw new RangeError(
        `Expected ${name} to cover disjoint class ranges, got ${range(r, a)} (${who(a)}) and ${range(r, b)} (${
          who(b)
        }): ${same ? "a shard's statistics merged twice" : "overlapping shards"}`,
      );
    }
  }
  if (own) {
    let at = 0, mine = false;
    const missing: string[] = [];
    for (const k of order) {
      if (r[k * SHARD_RECORD] > at) missing.push(`[${at}, ${r[k * SHARD_RECORD]})`);
      at = r[k * SHARD_RECORD + 1];
      mine ||= r[k * SHARD_RECORD] === own[0] && at === own[1];
    }
    if (at < own[2]) missing.push(`[${at}, ${own[2]})`);
    if (missing.length > 0) {
      throw new RangeError(
        `Expected ${name} to cover every class of [0, ${own[2]}) (every shard's statistics merged), got classes ${
          missing.join(", ")
        } missing`,
      );
    }
    if (!mine) {
      throw new RangeError(
        `Expected ${name} to hold this shard's statistics (classes [${own[0]}, ${own[1]})), got shards ${
          order.map((k) => range(r, k)).join(", ")
        }`,
      );
    }
  }
  return r;
}

/**
 * Merges shards' statistics exactly (in any order, any grouping): `max = max_k max_k`,
 * `sum = sum_k sum_k e^(max_k - max)`, `target = sum_k target_k` (one shard holds each
 * label), `below = sum_k (below_k + weightSum_k (max - max_k))`, `weightSum = sum_k weightSum_k`.
 * This is what an all-reduce computes; over a collective take the max of `max` first
 * (N floats), then the sum of the rescaled `sum`, of `target` (and `below`), 2N (3N) floats,
 * and an all-gather of the records `shards` (5 floats per shard). The records are
 * concatenated and checked: class ranges that overlap or repeat (a shard merged twice),
 * records of another class count, batch or options are a `RangeError` naming the entries;
 * `finish` also refuses a missing shard (docs/SHARDING.md, "The checks").
 *
 * @param list The statistics of one or more shards (the same N), e.g. from
 *   `losses.sharded.crossEntropy.stats` on each shard; all with `shards` (records), or none.
 * @returns The merged statistics, fresh arrays (`shards`: the entries' records, concatenated).
 *
 * @example Two shards of one row
 * ```ts
 * import { mergeShardStats } from "@softmargin/softmargin/cpu";
 * const a = { max: Float64Array.of(2), sum: Float64Array.of(1), target: Float64Array.of(2) };
 * const b = { max: Float64Array.of(1), sum: Float64Array.of(1), target: Float64Array.of(0) };
 * const m = mergeShardStats([a, b]);
 * console.log(m.max[0], m.sum[0], m.target[0]); // 2 1.3679 2 (1 + e^(1 - 2))
 * ```
 */
export function mergeShardStats(list: readonly ShardStats[]): ShardStats {
  if (!Array.isArray(list) || list.length === 0) {
    throw new TypeError(`Expected list to be a non-empty array of shard statistics, got ${v.show(list)}`);
  }
  const smoothed = typeof list[0] === "object" && list[0] !== null && list[0].below !== undefined;
  const n = checkStats("list[0]", list[0], -1, smoothed).length;
  list.forEach((s, k) => checkStats(`list[${k}]`, s, n, smoothed));
  const shards = mergeRecords(list as unknown as Record<string, unknown>[]);
  const max = new Float64Array(n).fill(-Infinity), sum = new Float64Array(n), target = new Float64Array(n);
  const below = smoothed ? new Float64Array(n) : undefined;
  let weightSum = 0;
  for (const s of list) for (let i = 0; i < n; i++) max[i] = Math.max(max[i], s.max[i]);
  for (const s of list) {
    for (let i = 0; i < n; i++) {
      const shift = s.max[i] === max[i] ? 0 : s.max[i] - max[i]; // (both -inf: 0)
      sum[i] += s.sum[i] * Math.exp(shift);
      target[i] += s.target[i];
      if (below) below[i] += s.below![i] - (s.weightSum as number) * shift;
    }
    weightSum += s.weightSum ?? 0;
  }
  const merged: ShardStats = smoothed ? { max, sum, target, below, weightSum } : { max, sum, target };
  return shards ? { ...merged, shards } : merged;
}

/** The records of `list`'s entries, checked and concatenated (where they carry them: all or none). */
function mergeRecords(list: readonly Record<string, unknown>[]): Float64Array | undefined {
  if (!list.some((s) => s.shards !== undefined)) return undefined;
  const from: string[] = [];
  const parts = list.map((s, k) => {
    if (s.shards === undefined) {
      throw new TypeError(
        `Expected list[${k}].shards to be a Float64Array (every entry of list carries its shards' records, or none), got undefined`,
      );
    }
    const r = checkRecords(`list[${k}]`, s);
    for (let j = 0; j < r.length / SHARD_RECORD; j++) from.push(`list[${k}]`);
    return r;
  });
  const shards = Float64Array.from(parts.flatMap((r) => [...r]));
  checkRecords("list", { shards }, undefined, from);
  return shards;
}

/**
 * Checks statistics of `n` rows (`n` < 0: any) with or without the smoothing terms; returns `max`.
 * With `own` (`finish`: this shard's record, {@linkcode shardRecord}) also their records: this
 * shard's among them, every class covered once, all of this batch and these options.
 */
export function checkStats(name: string, s: unknown, n: number, smoothed: boolean, own?: Float64Array): Float64Array {
  if (typeof s !== "object" || s === null) {
    throw new TypeError(`Expected ${name} to be shard statistics, got ${v.show(s)}`);
  }
  const st = s as Record<string, unknown>;
  const fields = smoothed ? ["max", "sum", "target", "below"] : ["max", "sum", "target"];
  for (const f of fields) {
    const a = st[f];
    if (!(a instanceof Float64Array)) {
      throw new TypeError(`Expected ${name}.${f} to be a Float64Array, got ${v.show(a)}`);
    }
    const want = n < 0 ? (st.max as Float64Array).length : n;
    if (a.length !== want) throw new RangeError(`Expected ${name}.${f} to have ${want} values, got ${a.length}`);
  }
  if (smoothed && (typeof st.weightSum !== "number" || !Number.isFinite(st.weightSum))) {
    throw new TypeError(
      `Expected ${name}.weightSum to be a finite number (labelSmoothing), got ${v.show(st.weightSum)}`,
    );
  }
  if (!smoothed && st.below !== undefined) {
    throw new TypeError(`Expected ${name} to have no below (statistics with and without labelSmoothing do not mix)`);
  }
  if (own) checkRecords(name, st, own);
  return st.max as Float64Array;
}

/**
 * `interTopK` over shards (SPEC §7): per row the k largest non-target class cosines (clamped,
 * filtered by `interclassFilteringThreshold`, as the shard's kernels take them) of one shard's
 * classes, from `sharded.<loss>.topK`, or of several shards' merged by {@linkcode mergeShardTopK}.
 * Row i's entries are `[i k, i k + k)`, largest first, equal values by class (the smaller first);
 * a row with fewer (an ignored row, a shard of fewer classes) is padded with `-Infinity` and class -1.
 */
export interface ShardTopK {
  /** interTopK's k (>= 1). */
  readonly k: number;
  /** `[N, k]` float64: the values, largest first. */
  readonly values: Float64Array;
  /** `[N, k]`: the global class of each value (-1 for padding), as float64 (one transport type with `values`). */
  readonly classes: Float64Array;
  /** The shards' records, as {@linkcode ShardStats.shards} (of the loss, its options and the step `"topK"`). */
  readonly shards?: Float64Array;
}

/** Checks one `ShardTopK` of `n` rows (n < 0: any) and k; returns its N. */
function checkTopK(name: string, t: unknown, n: number, k: number): number {
  if (typeof t !== "object" || t === null) {
    throw new TypeError(`Expected ${name} to be the top k of shards (from sharded.<loss>.topK), got ${v.show(t)}`);
  }
  const r = t as Record<string, unknown>;
  if (r.k !== k && k >= 0) throw new RangeError(`Expected ${name}.k to be ${k}, got ${v.show(r.k)}`);
  const kk = r.k as number;
  if (!Number.isInteger(kk) || kk < 1) {
    throw new RangeError(`Expected ${name}.k to be an integer >= 1, got ${v.show(kk)}`);
  }
  for (const f of ["values", "classes"]) {
    if (!(r[f] instanceof Float64Array)) {
      throw new TypeError(`Expected ${name}.${f} to be a Float64Array, got ${v.show(r[f])}`);
    }
  }
  const len = (r.values as Float64Array).length, want = n < 0 ? len : n * kk;
  for (const f of ["values", "classes"]) {
    const a = r[f] as Float64Array;
    if (a.length !== want || a.length % kk !== 0) {
      throw new RangeError(`Expected ${name}.${f} to have ${want} values (N k, k = ${kk}), got ${a.length}`);
    }
  }
  return want / kk;
}

/**
 * Merges shards' top k (`sharded.<loss>.topK` on each shard) exactly, in any order and
 * grouping: per row the k largest of all entries, equal values by class (the smaller first),
 * as the unsharded loss takes them. Over a collective: an all-gather of every shard's `N k`
 * values and classes (and its record), then this merge on each shard. The records are checked
 * and concatenated as {@linkcode mergeShardStats} does (overlapping or repeated shards, another
 * batch or other options: a `RangeError` naming the entries); `stats` and `finish`, given the
 * merged top k as `inputs.topK`, also refuse one that misses a shard.
 *
 * @param list The top k of one or more shards (the same N and k).
 * @returns The merged top k, fresh arrays (`shards`: the entries' records, concatenated).
 *
 * @example Two shards of one row, k = 2
 * ```ts
 * import { mergeShardTopK } from "@softmargin/softmargin/cpu";
 * const a = { k: 2, values: Float64Array.of(0.5, 0.1), classes: Float64Array.of(0, 1) };
 * const b = { k: 2, values: Float64Array.of(0.5, -Infinity), classes: Float64Array.of(2, -1) };
 * const m = mergeShardTopK([b, a]);
 * console.log([...m.values], [...m.classes]); // [0.5, 0.5] [0, 2]
 * ```
 */
export function mergeShardTopK(list: readonly ShardTopK[]): ShardTopK {
  if (!Array.isArray(list) || list.length === 0) {
    throw new TypeError(`Expected list to be a non-empty array of shards' top k, got ${v.show(list)}`);
  }
  const n = checkTopK("list[0]", list[0], -1, -1), k = list[0].k;
  list.forEach((t, q) => checkTopK(`list[${q}]`, t, n, k));
  const shards = mergeRecords(list as unknown as Record<string, unknown>[]);
  const values = new Float64Array(n * k).fill(-Infinity), classes = new Float64Array(n * k).fill(-1);
  const cand: [number, number][] = [];
  for (let i = 0; i < n; i++) {
    cand.length = 0;
    for (const t of list) {
      for (let q = i * k; q < (i + 1) * k; q++) if (t.values[q] > -Infinity) cand.push([t.values[q], t.classes[q]]);
    }
    cand.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
    for (let q = 0; q < Math.min(k, cand.length); q++) [values[i * k + q], classes[i * k + q]] = cand[q];
  }
  return shards ? { k, values, classes, shards } : { k, values, classes };
}

/**
 * Row i's `interTopK` threshold and tie (src/kernels/hard_label.ts's `NonTarget.rows`) from the
 * merged top k `t` (checked: k, N, and with `own`, this shard's `topK` record, its records as
 * `finish` checks statistics'): the k-th largest value (`-inf`: fewer than k non-targets, every one
 * hard) and the global class of the last one taken at it.
 */
export function topKRows(name: string, t: unknown, n: number, k: number, own: Float64Array): Float64Array {
  checkTopK(name, t, n, k);
  checkRecords(name, t as Record<string, unknown>, own);
  const { values, classes } = t as ShardTopK, rows = new Float64Array(2 * n);
  for (let i = 0; i < n; i++) {
    const thr = values[i * k + k - 1];
    rows[2 * i] = thr;
    rows[2 * i + 1] = thr > -Infinity ? classes[i * k + k - 1] : -1;
  }
  return rows;
}

/** One shard's top k from its kernel's `RowTopK` (local classes; `global` maps one to its global class). */
export function shardTopK(top: RowTopK, global: (j: number) => number, record: Float64Array): ShardTopK {
  const { n, k } = top, values = new Float64Array(n * k).fill(-Infinity), classes = new Float64Array(n * k).fill(-1);
  for (let i = 0; i < n; i++) {
    for (let q = 0; q < top.size[i]; q++) {
      values[i * k + q] = top.vals[i * k + q];
      classes[i * k + q] = global(top.cols[i * k + q]);
    }
  }
  return { k, values, classes, shards: record };
}

/**
 * A shard of a softmax over logits `[N, Cs]` (crossEntropy, or a margin loss on cosines):
 * the logits `z = scale * x` (`x` clamped to [-1, 1] first with `clamp`; with crossEntropy's
 * `softcap` c, `z = c tanh(x / c)`, derivative `1 - tanh^2`), the label's replaced by
 * `target[2i]` (derivative w.r.t. `x_y`: `target[2i+1]`) where the shard holds it.
 */
export interface LogitShardProblem {
  readonly n: number;
  readonly c: number;
  readonly logits: Float32Array;
  /** Per row the label's column on this shard, -1 when it is on another shard, -2 for an ignored row. */
  readonly local: Int32Array;
  /** The shard's slice `[Cs]` of the class weights, or null for all 1. */
  readonly weight: Float32Array | null;
  readonly scale: number;
  readonly clamp: boolean;
  /** `[N, 2]`: the label's logit and its derivative, where the shard holds the label. */
  readonly target: Float64Array;
  /** Whether to compute `below` (label smoothing). */
  readonly smoothing: boolean;
  /** crossEntropy's softcap c (scale 1, no clamp), or 0 for none. */
  readonly softcap: number;
  /**
   * The margin losses' sub-centres K (absent: 1): `logits` and the gradient are `[N, c K]`, each class's
   * cosine the largest of its K columns after the clamp (src/kernels/hard_label.ts's `subcenter`).
   */
  readonly subcenters?: number;
  /**
   * The margin losses' inter-class options (`interclassFilteringThreshold`, `interTopK`): their
   * non-target transform (src/kernels/hard_label.ts), each row's tie a column of this shard, or absent.
   */
  readonly nonTarget?: NonTarget;
}

/** A logit shard's statistics as its kernel computes them (`target` and `weightSum` come from the host). */
export interface LogitShardStats {
  readonly max: Float64Array;
  readonly sum: Float64Array;
  readonly below: Float64Array | null;
}

/**
 * The gradient of a logit shard from the merged statistics: per row
 * `g_j = dz_j/dx_j (A_i e^(z_j - max_i) - U_i w_j)` for the shard's columns j other than
 * the label's, `g_y = G_i` (already times `dz_y/dx_y`), and 0 for ignored rows.
 */
export interface LogitShardGradProblem extends LogitShardProblem {
  readonly max: Float64Array;
  readonly A: Float64Array;
  readonly U: Float64Array;
  readonly G: Float64Array;
  /** A buffer `[N, Cs]` to write, or null for a fresh one. */
  readonly out: Float32Array | null;
}

/** A head shard: the head's problem on the shard's rows of W, its first class and (finish) the merged row terms. */
export interface HeadShardProblem {
  readonly p: HeadProblem;
  readonly first: number;
  readonly stats?: HeadStats;
  readonly terms?: HeadRowTerms;
  /** (finish) Every row's label logit, from the merged statistics. */
  readonly target?: Float64Array;
  /** (the step `topK`) interTopK's k. */
  readonly k?: number;
}

/** The sharded losses' kernels: what a backend implements for them. */
export interface ShardKernels {
  logitShardStats(p: LogitShardProblem): LogitShardStats | Promise<LogitShardStats>;
  logitShardGrads(p: LogitShardGradProblem): Float32Array | Promise<Float32Array>;
  headShardStats(p: HeadShardProblem): HeadStats | Promise<HeadStats>;
  headShardGrads(
    p: HeadShardProblem,
  ): { x: Float32Array; W: Float32Array } | Promise<{ x: Float32Array; W: Float32Array }>;
  /**
   * `interTopK`'s first step on a head shard: per row the k largest non-target class cosines of
   * the shard's classes, as its head kernels compute and transform them (local classes).
   */
  headShardTopK(p: HeadShardProblem): RowTopK | Promise<RowTopK>;
  linearShardStats(p: LinearShardProblem): ShardStats | Promise<ShardStats>;
  /** The shard's gradients: `x` (its share), `W` (its rows) and `bias` (its slice, with a bias). */
  linearShardGrads(p: LinearShardProblem): Record<string, Float32Array> | Promise<Record<string, Float32Array>>;
}

/** A head shard's kernels from a backend's two head phases (over the shard's rows of W). */
export function headShardKernels(
  phases: HeadPhases,
  cosines: (p: HeadProblem, top: RowTopK) => void,
): Pick<ShardKernels, "headShardStats" | "headShardGrads" | "headShardTopK"> {
  return {
    headShardStats: (q) => phases.stats(q.p, q.p.W, q.first),
    headShardGrads: (q) => phases.grads(q.p, q.p.W, q.first, q.stats!, q.terms!),
    headShardTopK: (q) => {
      // The head's first pass over the shard's classes, its labels local to them (elsewhere: none here).
      const { p, first } = q, top = new RowTopK(p.n, q.k!);
      const labels = p.labels.map((y) => (y < 0 ? -1 : y >= first && y < first + p.c ? y - first : p.c));
      cosines({ ...p, labels, interTopK: q.k }, top);
      return top;
    },
  };
}

/** What the row terms of a fused softmax cross-entropy need besides the merged statistics. */
export interface LogitRowInputs {
  /** Global labels, ignored rows -1. */
  readonly labels: Int32Array;
  /** Every class's weight, or null for all 1. */
  readonly weight: Float32Array | null;
  readonly smoothing: number;
  /** C, the number of classes of the softmax. */
  readonly classes: number;
  readonly zLoss: number;
  /** Per-row gradient scales of the cross-entropy and (with `zLoss`) of the z-loss. */
  readonly scales: Float64Array;
  readonly zScales: Float64Array;
  /** `[N, 2]`: the label's logit and its derivative `dz_y / dx_y` (index `2i + 1` is read). */
  readonly target: Float64Array;
}

/**
 * crossEntropy's row terms from the merged statistics of every class (a sharded
 * crossEntropy's `finish`, and each vocabulary chunk of `linearCrossEntropy`): per row the
 * loss `(1-eps) w_y nll + (eps/C) sum_c w_c (lse - z_c)` (the last sum as `W log(total) +
 * below`), the z-loss `k lse^2`, and the coefficients of the gradient w.r.t. the logits,
 * `dz_c = A e^(z_c - max) - U w_c` off the label and `G` (already times `dz_y/dx_y`) at it.
 * Ignored rows are 0.
 */
export function logitRowTerms(
  stats: ShardStats,
  q: LogitRowInputs,
): { rows: Float64Array; zRows: Float64Array; A: Float64Array; U: Float64Array; G: Float64Array } {
  const n = q.labels.length;
  const eps = q.smoothing, epsC = eps / q.classes;
  let W = q.classes;
  if (q.weight) W = q.weight.reduce((t, w) => t + w, 0);
  const A = new Float64Array(n), U = new Float64Array(n), G = new Float64Array(n);
  const rows = new Float64Array(n), zRows = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    if (q.labels[i] < 0) continue;
    const wy = q.weight ? q.weight[q.labels[i]] : 1;
    const M = stats.max[i], S = stats.sum[i];
    const [nll, , om] = labelTerms(stats.target[i], M, S);
    const total = S + Math.exp(stats.target[i] - M);
    rows[i] = (1 - eps) * wy * nll + (eps === 0 ? 0 : epsC * (W * Math.log(total) + stats.below![i]));
    // dz_c = s_i (a p_c - u w_c), a = (1-eps) w_y + (eps/C) W, u = eps/C;
    // dz_y = s_i (eps/C W (1 - om) - (1-eps) w_y om - (eps/C) w_y), om = 1 - p_y
    const a = (1 - eps) * wy + epsC * W, s = q.scales.length ? q.scales[i] : 0;
    A[i] = (s * a) / total;
    U[i] = s * epsC;
    G[i] = s * (epsC * W * (1 - om) - (1 - eps) * wy * om - epsC * wy);
    if (q.zLoss) {
      // z-loss: k lse^2, gradient 2 k lse p_c at its own scale (p_y = e^(target - max) / total).
      const lse = M + Math.log(total), zk = (q.zScales.length ? q.zScales[i] : 0) * 2 * q.zLoss * lse;
      zRows[i] = q.zLoss * lse * lse;
      A[i] += zk / total;
      G[i] += (zk * Math.exp(stats.target[i] - M)) / total;
    }
    G[i] *= q.target[2 * i + 1];
  }
  return { rows, zRows, A, U, G };
}

/** The coefficients of the gradient w.r.t. the logits from the merged statistics (`logitRowTerms`'s). */
export interface LinearShardTerms {
  readonly A: Float64Array;
  readonly U: Float64Array;
  /** The label's coefficient, without the label's slope through the cap (the kernel applies it). */
  readonly G: Float64Array;
}

/**
 * A shard of `linearCrossEntropy`'s vocabulary: its problem on the shard's rows of W (labels
 * local: -1 ignored, the shard's class index, or `c` for a label on another shard; weight and
 * bias the shard's slices) and (finish) every shard's merged statistics and the row terms.
 */
export interface LinearShardProblem {
  readonly p: LinearCeProblem;
  readonly stats?: ShardStats;
  readonly terms?: LinearShardTerms;
}
