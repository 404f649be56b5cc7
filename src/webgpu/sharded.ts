/**
 * WebGPU kernels of a `marginHead` shard (`src/losses/sharded.ts`): the head's two phases
 * (src/webgpu/margin_head.ts) over the shard's rows of W, its labels made local (a label on
 * another shard becomes one no class here has, so every class of the shard counts as a
 * non-label class of that row).
 *  - stats: `encodeStats`, then the rows' (r_i, S_i) and the label's logit T_i come back,
 *    and the shard's statistics are `max = max(r, T)` (T where the shard holds the label),
 *    `sum = S e^(r - max)`;
 *  - grads: `encodeRows` (b_j, W_y, the label's terms), then the merged statistics go in
 *    (`comb` as (r, S) = (max rounded to float32, sum rescaled to it), every row's T into
 *    `rowV`), then `encodeGrads`: dW of the shard's rows and its share of dx.
 * The face kinds (adaface, curricularFace, magface) run the GPU head's non-label transform (its
 * `MH_NT` tiles) with their rows from the host, which has every row's batch statistic (the norms of
 * the replicated x; CurricularFace's label cosines from `labelCosines`): after `encodeRows` each
 * phase puts the host's label logit T and dT/du of the rows whose label is here, the hard
 * non-labels' threshold (CurricularFace's phi_i) and t' into `rowV` before the tiles (the GPU's own
 * `face_rows`, which sees only this shard's labels, is overwritten). MagFace's gradient through
 * `||x_i||` is the host's (src/losses/sharded.ts), as on the CPU shards. A per-row margin (ElasticFace) runs
 * as on the unsharded head (each row's constants, `rowMargins`, read by the label's kernel).
 * `interTopK`: the step `topK` is the unsharded head's top-k pass over the shard's rows of W (its float32
 * cosines, the values the logit tiles compare); with the merged top k (`nonTarget.rows`) each phase puts
 * every row's threshold and tie (the shard's own class index) into `rowV` after `encodeRows`, and the
 * tiles run with MH_TOPK and no top-k pass.
 * The logit shards (crossEntropy, the margin losses on cosines) run the float64 reference.
 *
 * @module
 */
import { headRows, type HeadStats, RowTopK, type TargetSpec } from "../kernels/head.ts";
import type { HeadShardProblem } from "../kernels/shards.ts";
import type { GpuContext } from "./context.ts";
import { MH } from "./generated.ts";
import { compileHead, encodeGrads, encodeRows, encodeStats, encodeTiles, openHead } from "./margin_head.ts";
import type { TopKStep } from "./margin_head_inter.ts";

/** A label no class of a shard has (the label is on another shard). */
const ELSEWHERE = 0x7fffffff;

/** The hard non-labels' threshold of none (src/webgpu/margin_head_face.wgsl's FLT_MAX). */
const NONE_HARD = 3.4028234e38;

/** Puts a float64 value as a float pair (hi, lo) at `at`. */
function putPair(rowV: Float32Array, at: number, x: number): void {
  const hi = Math.fround(x);
  rowV[at] = hi;
  rowV[at + 1] = x - hi;
}

/**
 * The host's rows into `rowV` (read back after `encodeRows`): with `targets`, T and dT/du where the
 * shard holds the label (the norms' terms 0: MagFace's are the host's); the face kinds also every row's
 * hard threshold and t'; with interTopK's rows from the merged top k, every row's threshold and tie.
 */
function hostRows(p: HeadShardProblem["p"], owns: (i: number) => boolean, rowV: Float32Array, targets: boolean): void {
  const { n } = p, nt = p.nonTarget;
  for (let i = 0; i < n; i++) {
    const base = i * MH.RS;
    if (p.face) rowV[base + 27] = nt?.rows ? Math.fround(nt.rows[2 * i]) : NONE_HARD;
    if (!p.face && nt?.rows) {
      // (the k-th value, a float32 cosine of a shard, exact; -inf: fewer than k, every non-label hard;
      // the tie a row of this shard's classes, as inter_logit's j / subs)
      const thr = nt.rows[2 * i];
      rowV[base + 27] = thr > -Infinity ? Math.fround(thr) : -NONE_HARD;
      rowV[base + 28] = nt.rows[2 * i + 1];
    }
    if (!targets || p.labels[i] < 0 || !owns(i)) continue;
    putPair(rowV, base + 13, p.target[4 * i]);
    putPair(rowV, base + 15, p.target[4 * i + 1]);
    rowV.fill(0, base + 17, base + 21);
  }
  if (p.face) rowV[n * MH.RS + 2] = nt?.a ?? 0;
}

/** A label target the GPU evaluates, replaced by the host's (the face kinds: `spec` "host"). */
const PLAIN: TargetSpec = { kind: "margin", phi: { m1: 1, m2: 0, m3: 0, branch: "none" }, constant: false };

/**
 * The shard's problem with local labels, whether row i's label is here, and whether the host's rows go
 * into `rowV` (the face kinds, whose targets only the host has; interTopK's merged thresholds).
 */
function local(q: HeadShardProblem) {
  const { p, first } = q;
  const owns = (i: number) => p.labels[i] >= first && p.labels[i] < first + p.c;
  const labels = p.labels.map((y, i) => (y < 0 ? -1 : owns(i) ? y - first : ELSEWHERE));
  // interTopK's rows from the merged top k (the GPU's own top-k pass, of this shard only, skipped):
  // the ties, the kernels' index first + r, made this shard's r (-1: none here at or below it).
  const nt = p.nonTarget, top = !p.face && nt?.rows ? nt.rows.slice() : null;
  if (top) { for (let i = 1; i < top.length; i += 2) top[i] = top[i] < 0 ? -1 : top[i] - first; }
  const targets = p.face !== undefined || p.spec.kind === "host", host = targets || top !== null;
  const spec = p.spec.kind === "host" ? PLAIN : p.spec;
  // (PartialFC's classes: the shard's head over W's rows of those classes, K each)
  const W = p.rows ? headRows(p, p.W) : p.W;
  const nonTarget = top ? { ...nt!, rows: top } : nt;
  return { p: { ...p, W, rows: null, labels, spec, nonTarget, outX: null, outW: null }, owns, host, targets };
}

/** Runs `body` with temporaries destroyed after. */
async function withTemps<T>(body: (keep: (b: GPUBuffer) => GPUBuffer) => Promise<T>): Promise<T> {
  const temps: GPUBuffer[] = [];
  try {
    return await body((b) => (temps.push(b), b));
  } finally {
    for (const b of temps) b.destroy();
  }
}

/** A head shard's statistics on the GPU. */
export function headShardStats(ctx: GpuContext, q: HeadShardProblem): Promise<HeadStats> {
  ctx.check();
  const { p, owns, host, targets } = local(q);
  const { n, d } = p;
  return withTemps(async (keep) => {
    await compileHead(ctx);
    const s = openHead(ctx, p, keep);
    const combS = keep(ctx.staging(n * 8)), rowS = keep(ctx.staging(n * MH.RS * 4));
    if (host) {
      // The label's terms, then the host's rows into rowV, then the tiles.
      const faceS = keep(ctx.staging(s.rowBytes));
      await ctx.submit((enc) => {
        enc.clearBuffer(s.wy, 0, n * d * 4);
        const pass = enc.beginComputePass();
        encodeRows(s, pass);
        pass.end();
        enc.copyBufferToBuffer(s.rowV, 0, faceS, 0, s.rowBytes);
      });
      const rows = new Float32Array((await ctx.readAll([[faceS, s.rowBytes]]))[0]);
      hostRows(p, owns, rows, targets);
      ctx.device.queue.writeBuffer(s.rowV, 0, rows);
    }
    await ctx.submit((enc) => {
      if (!host) enc.clearBuffer(s.wy, 0, n * d * 4);
      const pass = enc.beginComputePass();
      if (host) encodeTiles(s, pass);
      else encodeStats(s, pass);
      pass.end();
      enc.copyBufferToBuffer(s.comb, 0, combS, 0, n * 8);
      enc.copyBufferToBuffer(s.rowV, 0, rowS, 0, n * MH.RS * 4);
    });
    const [comb, rowV] = (await ctx.readAll([[combS, n * 8], [rowS, n * MH.RS * 4]])).map((b) => new Float32Array(b));
    ctx.check();
    const max = new Float64Array(n), sum = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      if (p.labels[i] < 0) continue;
      const r = comb[2 * i], S = comb[2 * i + 1];
      const m = owns(i) ? Math.max(r, rowV[i * MH.RS + 13] + rowV[i * MH.RS + 14]) : r;
      max[i] = m;
      sum[i] = S === 0 ? 0 : S * Math.exp(r - m);
    }
    return { max, sum };
  });
}

/** A head shard's gradients (its rows of dW, its share of dx) on the GPU, from the merged statistics. */
export function headShardGrads(ctx: GpuContext, q: HeadShardProblem): Promise<{ x: Float32Array; W: Float32Array }> {
  ctx.check();
  const { p, owns, host, targets } = local(q);
  const { n, d } = p;
  const stats = q.stats!, T = q.target!;
  return withTemps(async (keep) => {
    await compileHead(ctx);
    const s = openHead(ctx, p, keep);
    const { dX, dW, dXlo, c } = s; // (c: W's rows, K per class)
    const rowS = keep(ctx.staging(s.rowBytes));
    await ctx.submit((enc) => {
      enc.clearBuffer(s.wy, 0, n * d * 4);
      enc.clearBuffer(dX!, 0, n * d * 4);
      enc.clearBuffer(dXlo!, 0, n * d * 4);
      const pass = enc.beginComputePass();
      encodeRows(s, pass);
      pass.end();
      enc.copyBufferToBuffer(s.rowV, 0, rowS, 0, s.rowBytes);
    });
    // Every row's T (a float pair) and (r, S) of the merged statistics.
    const [rowBuf] = await ctx.readAll([[rowS, s.rowBytes]]);
    const rowV = new Float32Array(rowBuf), comb = new Float32Array(2 * n);
    if (host) hostRows(p, owns, rowV, targets);
    for (let i = 0; i < n; i++) {
      if (p.labels[i] < 0) continue;
      const hi = Math.fround(T[i]);
      rowV[i * MH.RS + 13] = hi;
      rowV[i * MH.RS + 14] = T[i] - hi;
      const r = Math.fround(stats.max[i]);
      comb[2 * i] = r;
      comb[2 * i + 1] = stats.sum[i] * Math.exp(stats.max[i] - r);
    }
    ctx.device.queue.writeBuffer(s.rowV, 0, rowV);
    ctx.device.queue.writeBuffer(s.comb, 0, comb);
    const xS = keep(ctx.staging(n * d * 4)), wS = keep(ctx.staging(c * d * 4));
    await ctx.submit((enc) => {
      const pass = enc.beginComputePass();
      encodeGrads(s, pass);
      pass.end();
      enc.copyBufferToBuffer(dX!, 0, xS, 0, n * d * 4);
      enc.copyBufferToBuffer(dW!, 0, wS, 0, c * d * 4);
    });
    const [gx, gW] = (await ctx.readAll([[xS, n * d * 4], [wS, c * d * 4]])).map((b) => new Float32Array(b));
    ctx.check();
    return { x: gx, W: gW };
  });
}

/**
 * `interTopK`'s step on a head shard: the unsharded head's top-k pass (src/webgpu/margin_head_topk.wgsl,
 * after the label's terms) over the shard's rows of W, its list of k kept per row even where k >= the
 * shard's classes - 1; per row the k largest non-label class cosines (the GPU's float32 values, which
 * its logit tiles compare against the threshold), largest first, ties to the smaller class (local).
 */
export function headShardTopK(ctx: GpuContext, q: HeadShardProblem): Promise<RowTopK> {
  ctx.check();
  const { p } = local(q);
  const { n, d } = p, k = q.k!;
  return withTemps(async (keep) => {
    await compileHead(ctx);
    const step: TopKStep = { ...p, interTopK: k, topKStep: true };
    const s = openHead(ctx, step, keep);
    const list = s.inter.top!.list, bytes = n * (2 * k + 2) * 4, listS = keep(ctx.staging(bytes));
    await ctx.submit((enc) => {
      enc.clearBuffer(s.wy, 0, n * d * 4);
      const pass = enc.beginComputePass();
      encodeRows(s, pass);
      pass.end();
      enc.copyBufferToBuffer(list, 0, listS, 0, bytes);
    });
    const got = new Float32Array((await ctx.readAll([[listS, bytes]]))[0]);
    ctx.check();
    // Row i's list at i (2k + 2): its size, the k-th, k values, k classes (as float32s), a heap
    // (src/webgpu/topk.wgsl): sorted here, largest first, ties to the smaller class.
    const top = new RowTopK(n, k);
    for (let i = 0; i < n; i++) {
      if (p.labels[i] < 0) continue;
      const o = i * (2 * k + 2), size = got[o];
      const order = Array.from({ length: size }, (_, r) => r)
        .sort((a, b) => got[o + 2 + b] - got[o + 2 + a] || got[o + 2 + k + a] - got[o + 2 + k + b]);
      top.size[i] = size;
      order.forEach((r, q) => {
        top.vals[i * k + q] = got[o + 2 + r];
        top.cols[i * k + q] = got[o + 2 + k + r];
      });
    }
    return top;
  });
}
