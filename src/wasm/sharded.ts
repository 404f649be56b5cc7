/**
 * WebAssembly glue of the class-sharded losses (`src/losses/sharded.ts`): a logit shard's
 * statistics and gradient (assembly/sharded.ts), and a head shard's two phases (the head's
 * own, src/wasm/margin_head.ts, over the shard's rows of W).
 *
 * @module
 */
import type { LogitShardGradProblem, LogitShardProblem, LogitShardStats, ShardKernels } from "../losses/sharded.ts";
import { headShardKernels } from "../losses/sharded.ts";
import { headGrads, headStats } from "./margin_head.ts";
import { Layout, runtime } from "./runtime.ts";

/** The arena of a logit shard: its logits, local labels, targets, weight slice and `extra` float64 [N] rows. */
function place(p: LogitShardProblem, extra: number) {
  const rt = runtime();
  const { n, c } = p;
  const lay = new Layout();
  const at = {
    z: lay.add(n * c * 4),
    local: lay.add(n * 4),
    target: lay.add(n * 16),
    weight: lay.add(c * 4),
    rows: lay.add(extra * n * 8),
  };
  const pin = rt.pin(p.logits);
  const base = rt.arena(lay.size);
  rt.put(base + at.z, pin());
  rt.put(base + at.local, p.local);
  rt.put(base + at.target, p.target);
  if (p.weight) rt.put(base + at.weight, p.weight);
  const row = (k: number) => base + at.rows + k * n * 8;
  return {
    rt,
    z: base + at.z,
    local: base + at.local,
    target: base + at.target,
    weight: p.weight ? base + at.weight : 0,
    row,
  };
}

/** A logit shard's statistics on the WebAssembly backend. */
export function logitShardStats(p: LogitShardProblem): LogitShardStats {
  const { n, c } = p;
  const a = place(p, 3);
  a.rt.k.shard_stats(
    a.z,
    n,
    c,
    a.local,
    p.scale,
    p.clamp ? 1 : 0,
    a.target,
    a.row(0),
    a.row(1),
    p.smoothing ? a.row(2) : 0,
    a.weight,
  );
  return {
    max: a.rt.f64(a.row(0), n),
    sum: a.rt.f64(a.row(1), n),
    below: p.smoothing ? a.rt.f64(a.row(2), n) : null,
  };
}

/** A logit shard's gradient on the WebAssembly backend (written over the arena's copy of the logits). */
export function logitShardGrads(p: LogitShardGradProblem): Float32Array {
  const { n, c } = p;
  const a = place(p, 4);
  [p.max, p.A, p.U, p.G].forEach((v, k) => a.rt.put(a.row(k), v));
  a.rt.k.shard_grads(
    a.z,
    a.z,
    n,
    c,
    a.local,
    a.weight,
    p.scale,
    p.clamp ? 1 : 0,
    a.row(0),
    a.row(1),
    a.row(2),
    a.row(3),
  );
  const g = p.out ?? new Float32Array(n * c);
  g.set(a.rt.f32.subarray(a.z >>> 2, (a.z >>> 2) + n * c));
  return g;
}

/** The WebAssembly kernels of the sharded losses. */
export const wasmShardKernels: ShardKernels = {
  logitShardStats,
  logitShardGrads,
  ...headShardKernels({ stats: headStats, grads: headGrads }),
};
