/**
 * WebAssembly glue of the class-sharded losses (`src/losses/sharded.ts`): a logit shard's
 * statistics and gradient (assembly/sharded.ts), streamed through memory in chunks of rows
 * as the unsharded kernel is (`streamRows`), and a head shard's two phases (the head's
 * own, src/wasm/margin_head.ts, over the shard's rows of W).
 *
 * @module
 */
import type { LogitShardGradProblem, LogitShardProblem, LogitShardStats, ShardKernels } from "../kernels/shards.ts";
import { headShardKernels } from "../kernels/shards.ts";
import { cosines, headGrads, headStats } from "./margin_head.ts";
import { linearShardGrads, linearShardStats } from "./linear_cross_entropy.ts";
import { Layout, runtime } from "./runtime.ts";
import { type Chunk, streamRows, threadsOf } from "./stream.ts";

/** A per-call buffer of a logit shard's kernel, or (a number) the k-th per-row float64 vector. */
type Buffer = "local" | "target" | "weight" | "cap" | "subs" | "ntc" | "nt" | number;

/**
 * Streams a logit shard's rows through `kernel`, with its local labels, targets and weight
 * slice placed once, `rowsIn` float64 [N] vectors put and `rowsOut` float64 [N] vectors
 * read back; with `grad`, the gradient [N, Cs] is written over each chunk's logits.
 * `kernel` gets the chunk and the address of row r0 of a per-row buffer (`at`).
 */
function stream(
  p: LogitShardProblem,
  rowsIn: Float64Array[],
  rowsOut: number,
  grad: Float32Array | null | false,
  kernel: (chunk: Chunk, at: (buffer: Buffer, r0: number) => number) => void,
): { rows: Float64Array[]; grad: Float32Array | undefined } {
  const rt = runtime();
  const { n, c } = p;
  const sub = p.subcenters ?? 1;
  const lay = new Layout();
  const nt = p.nonTarget;
  const off = {
    local: lay.add(n * 4),
    target: lay.add(n * 16),
    weight: p.weight ? lay.add(c * 4) : -1,
    // softcap or the non-target transform: a scratch [2, Cs] per thread (the row and its derivative)
    cap: p.softcap || nt ? lay.add(threadsOf() * 8 * c) : -1,
    // the non-target transform's constants and rows (thr, tie)
    ntc: nt ? lay.add(48) : -1,
    nt: nt?.rows ? lay.add(n * 16) : -1,
    // sub-centres: a scratch [2, Cs] per thread (the class cosines, the winning columns)
    subs: sub > 1 ? lay.add(threadsOf() * 8 * c) : -1,
    rows: Array.from({ length: rowsIn.length + rowsOut }, () => lay.add(n * 8)),
  };
  let base = 0;
  const at = (buffer: Buffer, r0: number) => {
    if (buffer === "weight") return p.weight ? base + off.weight : 0;
    if (buffer === "ntc") return nt ? base + off.ntc : 0;
    if (buffer === "nt") return nt?.rows ? base + off.nt + r0 * 16 : 0;
    if (buffer === "cap") return off.cap >= 0 ? base + off.cap + r0 * 8 * c : 0; // r0: the thread
    if (buffer === "subs") return sub > 1 ? base + off.subs + r0 * 8 * c : 0; // r0: the thread
    if (buffer === "local") return base + off.local + r0 * 4;
    if (buffer === "target") return base + off.target + r0 * 16;
    return base + off.rows[buffer] + r0 * 8;
  };
  const out = grad === false ? [] : [grad ? { data: grad, shape: [n, c * sub] as const } : null];
  const [g] = streamRows(rt, lay, n, c * sub, [p.logits], out, true, (b) => {
    base = b;
    rt.put(b + off.local, p.local);
    rt.put(b + off.target, p.target);
    if (p.weight) rt.put(b + off.weight, p.weight);
    if (nt) rt.put(b + off.ntc, Float64Array.of(nt.lo, nt.hi, nt.a, nt.b, nt.g, nt.cut));
    if (nt?.rows) rt.put(b + off.nt, nt.rows);
    rowsIn.forEach((v, k) => rt.put(b + off.rows[k], v));
  }, (chunk) => kernel(chunk, at));
  const rows = Array.from({ length: rowsOut }, (_, k) => rt.f64(base + off.rows[rowsIn.length + k], n));
  return { rows, grad: g };
}

/** A logit shard's statistics on the WebAssembly backend. */
export function logitShardStats(p: LogitShardProblem): LogitShardStats {
  const { rows } = stream(p, [], 3, false, ({ r0, rows, ins, thread }, at) => {
    const clamp = p.clamp ? 1 : 0;
    const below = p.smoothing ? at(2, r0) : 0;
    const k = runtime().k;
    k.shard_stats(
      ins[0],
      rows,
      p.c,
      at("local", r0),
      p.scale,
      clamp,
      at("target", r0),
      at(0, r0),
      at(1, r0),
      below,
      at("weight", 0),
      p.softcap,
      at("cap", thread),
      p.subcenters ?? 1,
      at("subs", thread),
      at("ntc", 0),
      at("nt", r0),
    );
  });
  return { max: rows[0], sum: rows[1], below: p.smoothing ? rows[2] : null };
}

/** A logit shard's gradient on the WebAssembly backend. */
export function logitShardGrads(p: LogitShardGradProblem): Float32Array {
  const { grad } = stream(p, [p.max, p.A, p.U, p.G], 0, p.out, ({ r0, rows, ins, outs, thread }, at) => {
    const k = runtime().k;
    k.shard_grads(
      ins[0],
      outs[0],
      rows,
      p.c,
      at("local", r0),
      at("weight", 0),
      p.scale,
      p.clamp ? 1 : 0,
      at(0, r0),
      at(1, r0),
      at(2, r0),
      at(3, r0),
      p.softcap,
      at("cap", thread),
      p.subcenters ?? 1,
      at("subs", thread),
      at("ntc", 0),
      at("nt", r0),
    );
  });
  return grad as Float32Array;
}

/** The WebAssembly kernels of the sharded losses. */
export const wasmShardKernels: ShardKernels = {
  logitShardStats,
  logitShardGrads,
  ...headShardKernels({ stats: headStats, grads: headGrads }, cosines),
  linearShardStats,
  linearShardGrads,
};
