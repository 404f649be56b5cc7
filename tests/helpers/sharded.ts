/**
 * Running a class-sharded loss (src/losses/sharded.ts, docs/SHARDING.md) as a caller does:
 * its classes split into shards of given sizes, `stats` on each shard, the merge, `finish`
 * on each, and the shares and gradients assembled into the unsharded loss's form. Used by
 * tests/sharded_test.ts and the sharded forms' property tests.
 *
 * @module
 */
import assert from "node:assert/strict";
import { mergeShardStats, type ShardStats } from "../../cpu.ts";
import type { Backend } from "./backends.ts";
import type { Mat } from "./random.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/** How a loss is split: the columns of its `[N, C]` input, or the rows of W (`marginHead`). */
export const LOGIT_KEY: Record<string, string> = {
  crossEntropy: "logits",
  arcface: "cos",
  cosface: "cos",
  normface: "cos",
  combinedMargin: "cos",
};

/** Columns [j0, j0 + cs) of m. */
function columns(m: Mat, j0: number, cs: number): Mat {
  const [n, c] = m.shape;
  const data = new Float32Array(n * cs);
  for (let i = 0; i < n; i++) data.set(m.data.subarray(i * c + j0, i * c + j0 + cs), i * cs);
  return { data, shape: [n, cs] };
}

/** Rows [r0, r0 + rs) of m. */
function rowsOf(m: Mat, r0: number, rs: number): Mat {
  const d = m.shape[1];
  return { data: m.data.slice(r0 * d, (r0 + rs) * d), shape: [rs, d] };
}

/** The inputs of each shard of `name` (sizes summing to its C classes), each shard's first class, and C. */
export function shardsOf(name: string, inputs: Any, sizes: readonly number[]) {
  const key = LOGIT_KEY[name];
  const full: Mat = key ? inputs[key] : inputs.W;
  const c = full.shape[key ? 1 : 0];
  const offsets = sizes.map((_, k) => sizes.slice(0, k).reduce((s, x) => s + x, 0));
  const shards = sizes.map((cs, k) => ({
    ...inputs,
    ...(key ? { [key]: columns(full, offsets[k], cs) } : { W: rowsOf(full, offsets[k], cs) }),
  }));
  return { c, offsets, shards };
}

/** What the shards give together: the summed loss shares and the assembled gradients. */
export interface Assembled {
  loss: number | Float64Array;
  /** crossEntropy: the shards' shares of part z, summed as the loss is. */
  z?: number | Float64Array;
  grads: Record<string, Mat>;
  stats: ShardStats[];
}

/**
 * Runs `name` sharded by `sizes` (classes; with `options.subcenters` K each brings K columns) on backend `b`:
 * stats on each shard, the merge, finish on each.
 */
export async function runSharded(
  b: Backend,
  name: string,
  inputs: Any,
  options: Any,
  classSizes: number[],
  upstream?: Any,
): Promise<Assembled> {
  const loss = (b.losses as Any).sharded[name];
  const key = LOGIT_KEY[name];
  const K = key ? options?.subcenters ?? 1 : 1, sizes = classSizes.map((s) => s * K);
  const { c, offsets, shards } = shardsOf(name, inputs, sizes);
  const opts = sizes.map((_, k) => ({ ...options, offset: offsets[k] / K, classes: c / K }));
  const stats: ShardStats[] = [];
  for (let k = 0; k < sizes.length; k++) stats.push(await loss.stats(shards[k], opts[k]));
  const merged = mergeShardStats(stats);
  const results: Any[] = [];
  for (let k = 0; k < sizes.length; k++) results.push(await loss.finish(shards[k], merged, opts[k], upstream));
  const n = inputs.labels.length;
  const sum = (key: "loss" | "z") => {
    let total: number | Float64Array = options?.reduction === "none" ? new Float64Array(n) : 0;
    for (const r of results) {
      if (typeof total === "number") total += r[key] as number;
      else for (let i = 0; i < n; i++) total[i] += (r[key] as Float32Array)[i];
    }
    return total;
  };
  const total = sum("loss"), z = name === "crossEntropy" ? sum("z") : undefined;
  const grads: Record<string, Mat> = {};
  if (key) {
    const g = new Float32Array(n * c);
    results.forEach((r, k) => {
      const part = r.grads[key] as Mat;
      assert.deepEqual([...part.shape], [n, sizes[k]], `shard ${k} gradient shape`);
      for (let i = 0; i < n; i++) g.set(part.data.subarray(i * sizes[k], (i + 1) * sizes[k]), i * c + offsets[k]);
    });
    grads[key] = { data: g, shape: [n, c] };
  } else {
    const d = inputs.x.shape[1];
    const gx = new Float64Array(n * d), gW = new Float32Array(c * d);
    results.forEach((r, k) => {
      assert.deepEqual([...r.grads.W.shape], [sizes[k], d], `shard ${k} W gradient shape`);
      gW.set(r.grads.W.data, offsets[k] * d);
      r.grads.x.data.forEach((v: number, j: number) => (gx[j] += v));
    });
    grads.x = { data: Float32Array.from(gx), shape: [n, d] };
    grads.W = { data: gW, shape: [c, d] };
  }
  return { loss: total, z, grads, stats };
}
