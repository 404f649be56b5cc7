/**
 * WebAssembly driver of `linearCrossEntropy`: the classes are streamed in chunks of 128, so
 * the `[N, V]` logits never exist.
 *
 * Row blocks (`valueAndGrad`, `backward`): the rows are taken in blocks of R (`blockRows`: at
 * most 512, and R V floats at most 64 MiB), and each block's logits `[R, V]` are formed once
 * and held until its gradient is done, so the call makes exactly three GEMM products:
 *  1. Statistics: per chunk the dot products `S_J = X_b W_J^T` (the heads' GEMM), kept, then
 *     `lce_stats` (assembly/linear_cross_entropy.ts): the bias added in place, the chunk taken
 *     as a shard of crossEntropy's logits (`shard_stats`: softcap, smoothing, weights) and
 *     merged into the block's running per-row (max, non-label sum, `below`) exactly as
 *     `mergeShardStats` merges shards. The row terms come from the merged statistics
 *     (`logitRowTerms`).
 *  2. Gradients: per chunk `lce_grads` turns the kept `S_J` into the gradient w.r.t. its logits
 *     in place, then `dX_b += G_J W_J`, `dW_J += G_J^T X_b` and `db_J += sum_i G_J`.
 * Forward alone, "precise" mode (large logits, below) and vocabularies too large for blocks of 16
 * rows keep the older form: both phases over all rows, the dot products formed again in phase 2.
 *
 * Accuracy of the sums (SPEC: every gradient element within 1e-5 max|ref| up to V = 1e5; here at
 * V = 128,256 and D = 4096 too): W's gradient `dW_jk = sum_i G_ij x_ik` is one float32 product per
 * block (a chain of at most R = 512 multiply-adds) and the blocks' products are added into a pair
 * of float32 arrays (hi, lo) that carries about 48 bits (`lce_pair`: the sum in float64, split into
 * its nearest float32 and the remainder). Its error is at most about gamma_R sum_i |G_ij x_ik|
 * (gamma_R = R u / (1 - R u), u = 2^-24; in practice about sqrt(R) u) plus 2^-48 per block of the
 * running sum plus the final rounding u |dW_jk|: independent of N, V and D (docs/LOSSES.md). x's
 * gradient, a sum over every class, is summed in float32 by the GEMM over 16 chunks (2048 classes)
 * at a time and those partial sums in float64; the bias gradient in float64. The row scale of
 * `reduction: "none"` (the per-row upstream) is inside G before either product.
 *
 * Memory: one thread holds x, a block's logits (at most 64 MiB), lo (`[V, D]` float32) and chunk
 * buffers in WebAssembly memory. W streams in slab by slab (about 512 KiB of its rows, whole chunks;
 * twice per block: the gradient of a chunk needs the statistics merged over every chunk, which exist
 * only after the block's last dot products, so holding a block's W_J from pass 1 to pass 2 would mean
 * holding W) unless it lies there already (`alloc`); hi is the gradient's own buffer (the caller's
 * `out` or a fresh array, written once by the first block), its slabs copied in and out around the
 * additions, or used in place when it lies in WebAssembly memory. Threads (src/wasm/pool.ts): the
 * classes are split into one range of whole chunks per thread, each running both phases of every
 * block over its range in its own scratch, round by round (`streamRounds`, as the heads'
 * src/wasm/head_threads.ts): in each round every thread takes the next slab of its range from its
 * own two slab buffers while the calling thread, beside its own slab, copies the last round's slabs
 * of the gradient out and the next round's of W (and hi) in. So threads hold O(threads x (slab +
 * R D)) more WebAssembly memory than one thread, whatever V; every problem one thread runs, threads
 * run. The caller merges the ranges' statistics (`mergeShardStats`) and sums x's gradient over the
 * ranges in float64; each thread writes the rows of dW (and bias) of its own classes, with the same
 * kernels as one thread. So loss, parts, grads.W and grads.bias differ from one thread's only through
 * the last bits of the float64 row statistics (the ranges' sums of exponentials merged in another
 * order; the same values in every test, tests/lce_threads_test.ts), and grads.x by the grouping of
 * its float32 partial sums per range (within 2e-6 max|g| of one thread's measured: SPEC's bound).
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import { correctRows, type LinearCeProblem } from "../kernels/linear_ce.ts";
import {
  type LinearShardProblem,
  type LinearShardTerms,
  logitRowTerms,
  mergeShardStats,
  type ShardStats,
} from "../kernels/shards.ts";
import type { Exports } from "./generated.ts";
import { pool, type Recorder, slabClasses, split, streamRounds } from "./pool.ts";
import { PRECISE_ABOVE } from "../kernels/head.ts";
import { Layout, type Runtime, runtime } from "./runtime.ts";

/** Classes per chunk (as the heads): `[N, 128]` blocks and `[128, D]` slices of W stay in L2 for typical N and D. */
const CHUNK = 128;
/** Chunks of x's gradient summed in float32 by the GEMM before each float64 flush. */
const FLUSH = 16;
/** Rows per float32 product of W's gradient; the blocks are summed in float64. */
const ROW_BLOCK = 1024;
/** Multiply-adds per thread below which the call stays on one thread (waking a worker takes ~30 us). */
const MIN_PER_THREAD = 1 << 22;
/** Bytes of a row block's logits `[R, V]` (row-blocked call), and its most rows. */
const BLOCK_BYTES = 2 ** 26, MAX_BLOCK = 512;

/**
 * Whether the logits can be large (as the heads' "precise" mode, src/wasm/margin_head.ts): a
 * float32 logit of 1e4 is good to only 6e-4. Then the dot products are summed in float64
 * (dots64, the bias inside) and each row is held relative to a reference: the label's logit
 * in phase 1 (where the row's loss is large unless the label is near the maximum, so the
 * relative rounding that matters is that of the values near it), the merged maximum in phase 2.
 * A softcap c <= 256 bounds the logits (no precise mode); a larger one is applied to the
 * relative values as the cap's difference `cap(u) - cap(ref)` (`lce_cap_relative`), its
 * slope kept beside them for the gradient.
 */
function isPrecise(p: LinearCeProblem): boolean {
  if (p.softcap && p.softcap <= PRECISE_ABOVE) return false;
  const rt = runtime(), pinW = rt.pin(p.W), nx = maxRowNorm(rt, rt.pin(p.x)(), p.n, p.d);
  let b = 0;
  if (p.bias) { for (const v of p.bias) b = Math.max(b, Math.abs(v)); }
  return nx * maxRowNorm(rt, pinW(), p.c, p.d) + b > PRECISE_ABOVE;
}

/** `maxNorm` (src/kernels/head.ts) by the kernel `lce_max_norm`: in place, or ~1 MiB at a time through the arena. */
function maxRowNorm(rt: Runtime, data: Float32Array, rows: number, d: number): number {
  const at = rt.addressOf(data);
  if (at >= 0) return rt.k.lce_max_norm(at, rows, d);
  const per = Math.max(1, Math.floor(2 ** 18 / d)), buf = rt.arena(Math.min(rows, per) * d * 4);
  let best = 0;
  for (let r0 = 0; r0 < rows; r0 += per) {
    const m = Math.min(per, rows - r0);
    rt.copy(rt.f32.subarray(buf >>> 2, (buf >>> 2) + m * d), data.subarray(r0 * d, (r0 + m) * d));
    best = Math.max(best, rt.k.lce_max_norm(buf, m, d));
  }
  return best;
}

/** Each row's uncapped label logit `x_i . W_y + b_y` (float64; 0 for an ignored row). */
function labelLogits(p: LinearCeProblem, x: Float32Array, W: Float32Array): Float64Array {
  const { d } = p;
  return Float64Array.from(p.labels, (y, i) => {
    if (y < 0 || y >= p.c) return 0;
    let u = p.bias ? p.bias[y] : 0;
    for (let k = 0; k < d; k++) u += x[i * d + k] * W[y * d + k];
    return u;
  });
}

/** Row losses, z-loss rows, correct rows and gradients of `linearCrossEntropy` on the WebAssembly backend. */
export function linearCe(p: LinearCeProblem): Raw {
  const precise = isPrecise(p), { n, c, d } = p;
  const R = blockRows(n, c);
  // Forward alone, precise mode and vocabularies too large for blocks of 16 rows: the two passes over all rows.
  if (!p.grad || precise || R < 16) return lce(p, "full", { precise }) as Raw;
  if (R >= n) return lce(p, "full", { precise, keep: true }) as Raw;
  // Row blocks: each block's call forms its logits once and holds them (keep); W's gradient is
  // each block's float32 product added into a float32 pair (hi, lo) (see the module's comment).
  const blocks = Math.ceil(n / R), rows = Math.ceil(n / blocks / 4) * 4;
  const pl = pool(), threads = pl ? threadsFor(pl.active, rows, c, d, false) : 1;
  const rt = runtime();
  const pinOX = p.outX && rt.pin(p.outX.data), pinOW = p.outW && rt.pin(p.outW.data);
  const pinOB = p.outBias && rt.pin(p.outBias);
  // lo in WebAssembly memory for the call (its pages stay mapped from call to call; a fresh host
  // array pays its page faults every call); hi is the gradient's own buffer (the caller's or a
  // fresh one, written once by the first block), streamed through each thread's slab buffers.
  const lo = rt.malloc(c * d * 4);
  try {
    new Uint8Array(rt.buffer, lo, c * d * 4).fill(0);
    const gx = pinOX?.() ?? new Float32Array(n * d);
    const gW = pinOW ? null : new Float32Array(c * d);
    const pair: Pair = { first: true, lo, hi: () => pinOW?.() ?? gW! };
    const db = p.bias ? new Float64Array(c) : null;
    const out = [new Float64Array(n), new Float64Array(n), new Float64Array(n)];
    for (let r0 = 0; r0 < n; r0 += rows) {
      const r1 = Math.min(n, r0 + rows), m = r1 - r0;
      const sub = (a: Float64Array, k = 1) => (a.length ? a.subarray(k * r0, k * r1) : a);
      const q: LinearCeProblem = {
        ...p,
        n: m,
        x: rt.pin(p.x)().subarray(r0 * d, r1 * d),
        labels: p.labels.subarray(r0, r1),
        target: sub(p.target, 2),
        scales: sub(p.scales),
        zScales: sub(p.zScales),
        outX: { data: (pinOX?.() ?? gx).subarray(r0 * d, r1 * d), shape: [m, d] },
        outW: null,
        outBias: null,
      };
      const res = lce(q, "full", { precise, keep: true, pair, threads }) as Raw;
      pair.first = false;
      res.rows.forEach((r, k) => out[k].set(r, r0));
      if (db) res.grads.bias.forEach((g, j) => (db[j] += g));
    }
    const grads: Record<string, Float32Array> = { x: pinOX?.() ?? gx, W: pair.hi() };
    if (db) (grads.bias = pinOB?.() ?? new Float32Array(c)).set(db);
    return { rows: out, grads };
  } finally {
    rt.free(lo);
  }
}

/**
 * W's gradient summed over row blocks as a float32 pair (hi, lo), `lce_pair`: lo at an address of
 * WebAssembly memory (`[c, d]`), hi the gradient's buffer (in place where it lies in WebAssembly
 * memory, else copied in and out slab by slab). `first`: the first block, whose product is
 * written to hi (lo is 0).
 */
interface Pair {
  first: boolean;
  lo: number;
  hi: () => Float32Array;
}

/**
 * Rows per block of the row-blocked call: the block's logits `[R, V]` take at most `BLOCK_BYTES`
 * (at least 16 rows, else the two-pass form), at most `MAX_BLOCK` rows.
 */
function blockRows(n: number, c: number): number {
  return Math.min(n, MAX_BLOCK, Math.floor(BLOCK_BYTES / (4 * c)));
}

/** Threads a call of n rows takes (at least 1): at least MIN_PER_THREAD multiply-adds each, whole chunks. */
function threadsFor(active: number, n: number, c: number, d: number, precise: boolean): number {
  const most = Math.min(active, Math.ceil(c / Math.min(CHUNK, c)), Math.floor((n * c * d) / MIN_PER_THREAD));
  return precise ? 1 : Math.max(1, most);
}

/**
 * A shard of the vocabulary (`sharded.linearCrossEntropy`, the problem's labels local to the shard:
 * -1 ignored, the shard's class index, or `c` for a label on another shard): phase 1 alone, its
 * statistics (`target`: the label's logit where the shard holds it, else 0).
 */
export const linearShardStats = (q: LinearShardProblem): ShardStats => lce(q.p, "stats") as ShardStats;

/** A shard's gradients from every shard's merged statistics and the row terms (`G` without the label's slope). */
export const linearShardGrads = (q: LinearShardProblem): Record<string, Float32Array> =>
  (lce(q.p, { max: q.stats!.max, ...q.terms! }) as Raw).grads;

/** The call: both phases (`"full"`), phase 1 alone (`"stats"`), or phase 2 alone from merged statistics. */
function lce(
  p: LinearCeProblem,
  mode: "full" | "stats" | (LinearShardTerms & { max: Float64Array }),
  opt: { precise?: boolean; keep?: boolean; pair?: Pair; threads?: number } = {},
): Raw | ShardStats {
  const { n, d, c } = p;
  const B = Math.min(CHUNK, c);
  const precise = opt.precise ?? isPrecise(p);
  // keep: each chunk's logits held from phase 1 to phase 2 (n x c floats in all), not formed again.
  const keep = !!opt.keep && !precise && mode === "full" && p.grad;
  const pl = pool();
  const threads = pl ? (opt.threads ?? threadsFor(pl.active, n, c, d, precise)) : 1;
  const rt = runtime();
  // Inputs and outputs may live in WebAssembly memory: pinned before the arena may grow it.
  const pinX = rt.pin(p.x), pinW = rt.pin(p.W);
  const pinOX = p.outX && rt.pin(p.outX.data), pinOW = p.outW && rt.pin(p.outW.data);
  const pinOB = p.outBias && rt.pin(p.outBias);
  // Precise: x and W rows with the bias as one more column (x's a 1), so that dots64's float64
  // dot product includes it; every row held relative to its reference (phase 1: the label's
  // logit T_i, phase 2: the merged maximum).
  const da = precise && p.bias ? d + 1 : d;
  const capRel = precise && p.softcap > 0, cap = (u: number) => (capRel ? p.softcap * Math.tanh(u / p.softcap) : u);
  // W used where it lies in WebAssembly memory (`alloc`), else streamed slab by slab through each
  // thread's buffers. W's gradient (with `pair`, hi) likewise: written where it lies, else into
  // each thread's slab buffers and copied out (with `pair` after the first block, copied in too).
  const pair = keep ? opt.pair : undefined;
  const wAt = da === d ? rt.addressOf(p.W) : -1;
  const gw = p.grad ? (pair ? pair.hi() : (pinOW?.() ?? new Float32Array(c * d))) : null;
  const gAt = gw ? rt.addressOf(gw) : -1;
  const hiIn = !!pair && !pair.first && gAt < 0, big = n > ROW_BLOCK;
  const L = slabClasses(B, da * 4), bufs = threads > 1 ? 2 : 1;
  const lay = new Layout();
  const at = {
    X: lay.add(n * da * 4),
    XT: precise ? -1 : lay.add(n * d * 4),
    off: lay.add(n * 8),
    ones: precise ? lay.add(B * 12) : -1,
    labels: lay.add(n * 4),
    target: lay.add(n * 16),
    bias: p.bias ? lay.add(c * 4) : -1,
    weight: p.weight ? lay.add(c * 4) : -1,
    M: lay.add(n * 8),
    A: lay.add(n * 8),
    U: lay.add(n * 8),
    G: lay.add(n * 8),
    db: p.grad && p.bias ? lay.add(c * 4) : -1,
  };
  const ranges = Array.from({ length: threads }, (_, t) => split(c, threads, t, B));
  const slabs = (bytes: number) => Array.from({ length: bufs }, () => lay.add(L * bytes));
  const own = ranges.map(([c0, c1]) => ({
    local: lay.add(n * 4),
    cap: lay.add(8 * B),
    cmax: lay.add(n * 8),
    csum: lay.add(n * 8),
    cbelow: lay.add(n * 8),
    M: lay.add(n * 8),
    sum: lay.add(n * 8),
    below: lay.add(n * 8),
    wsum: lay.add(8),
    top: lay.add(n * 8),
    zy: lay.add(n * 8),
    /** S^T of a chunk, `[count, n]`. */
    ST: precise ? -1 : lay.add(n * B * 4),
    S: lay.add(n * (keep ? c1 - c0 : B) * 4),
    /** A chunk's product G^T X where it is not written in place (rows in float64 blocks, or added into the pair). */
    dWJ: p.grad ? lay.add(B * d * 4) : -1,
    dW64: big ? lay.add(B * d * 8) : -1,
    dX: p.grad ? lay.add(n * d * 4) : -1,
    dX64: p.grad ? lay.add(n * d * 8) : -1,
    dcap: capRel ? lay.add(n * B * 4) : -1,
    /** Slabs of W's rows in and of its gradient's rows out (and in), by round parity. */
    win: wAt < 0 ? slabs(da * 4) : [],
    gout: gw && gAt < 0 ? slabs(d * 4) : [],
  }));
  const base = rt.arena(lay.size);
  const x = pinX(), w = pinW();
  const ptr = (off: number) => base + off;
  const f64 = (off: number, len: number) => new Float64Array(rt.buffer, base + off, len);
  if (da === d) rt.put(ptr(at.X), x);
  else {
    const xa = new Float32Array(rt.buffer, ptr(at.X), n * da);
    for (let i = 0; i < n; i++) [xa.set(x.subarray(i * d, (i + 1) * d), i * da), xa[i * da + d] = 1];
  }
  if (!precise) rt.k.transpose(ptr(at.X), n, d, ptr(at.XT));
  if (precise) {
    new Float64Array(rt.buffer, ptr(at.ones), B).fill(1);
    new Float32Array(rt.buffer, ptr(at.ones) + B * 8, B).fill(1);
  }
  rt.put(ptr(at.labels), p.labels);
  rt.put(ptr(at.target), p.target);
  if (p.bias) rt.put(ptr(at.bias), p.bias);
  if (p.weight) rt.put(ptr(at.weight), p.weight);
  const slice = (off: number, j0: number) => (off < 0 ? 0 : ptr(off) + j0 * 4);
  /** Where the chunk at j0 of thread t has its logits: its own block when kept, else the thread's one block. */
  const sAt = (t: number, j0: number) => ptr(own[t].S) + (keep ? (j0 - ranges[t][0]) * n * 4 : 0);

  // The rounds: in round r thread t takes the classes [s0, s1) of its range (at most L), from
  // W's rows at W and its gradient's at gW (in place, or its slab buffers of parity r).
  const rounds = Math.max(...ranges.map(([c0, c1]) => Math.ceil((c1 - c0) / L)));
  const slab = (t: number, r: number) => {
    const [c0, c1] = ranges[t], s0 = Math.min(c1, c0 + r * L), s1 = Math.min(c1, s0 + L), o = own[t];
    const W = wAt >= 0 ? wAt + s0 * d * 4 : ptr(o.win[r % bufs]);
    const gW = gAt >= 0 ? gAt + s0 * d * 4 : o.gout.length ? ptr(o.gout[r % bufs]) : -1;
    return { s0, s1, W, gW };
  };
  /** Copies every thread's slab of round r in: W's rows (with the bias column in precise mode), and hi's with `hiIn`. */
  const feed = (grads: boolean) => (r: number) => {
    if (r >= rounds) return;
    own.forEach((_, t) => {
      const { s0, s1, W, gW } = slab(t, r), w = pinW();
      if (wAt < 0 && da === d) rt.f32.set(w.subarray(s0 * d, s1 * d), W >>> 2);
      else if (wAt < 0) {
        const wa = new Float32Array(rt.buffer, W, (s1 - s0) * da);
        for (let j = s0; j < s1; j++) {
          [wa.set(w.subarray(j * d, (j + 1) * d), (j - s0) * da), wa[(j - s0) * da + d] = p.bias![j]];
        }
      }
      if (grads && hiIn) rt.f32.set(gw!.subarray(s0 * d, s1 * d), gW >>> 2);
    });
  };
  /** Copies every thread's slab of W's gradient of round r out. */
  const drain = (r: number) => {
    if (r < 0 || gAt >= 0) return;
    own.forEach((_, t) => {
      const { s0, s1, gW } = slab(t, r);
      gw!.set(rt.f32.subarray(gW >>> 2, (gW >>> 2) + (s1 - s0) * d), s0 * d);
    });
  };
  /**
   * One phase: `step(k, t, j0, count, W_J, dW_J, last)` over every chunk of every thread's range,
   * round by round (src/wasm/pool.ts's `streamRounds`: one program per thread, or directly on one);
   * `grads`: the phase writes W's gradient (copied out after each round).
   */
  const run = (
    step: (k: Recorder | Exports, t: number, j0: number, count: number, wj: number, gj: number, last: boolean) => void,
    grads: boolean,
  ) =>
    streamRounds(
      pl,
      rt,
      threads,
      rounds,
      (k, t, r) => {
        const { s0, s1, W, gW } = slab(t, r);
        for (let j0 = s0; j0 < s1; j0 += B) {
          const count = Math.min(B, s1 - j0);
          step(k, t, j0, count, W + (j0 - s0) * da * 4, gW + (j0 - s0) * d * 4, j0 + count >= ranges[t][1]);
        }
      },
      feed(grads),
      grads && gw ? drain : undefined,
    );
  /** The chunk's dot products S = X W_J^T (W_J at wj). */
  const dots = (k: Recorder | Exports, t: number, j0: number, count: number, wj: number) => {
    const o = own[t], S = sAt(t, j0);
    if (precise) {
      k.dots64(S, ptr(at.X), n, wj, count, da, ptr(at.off), ptr(at.ones) + B * 8, ptr(at.ones));
      if (capRel) k.lce_cap_relative(S, n, count, ptr(at.off), p.softcap, ptr(o.dcap));
      return;
    }
    // S^T = W_J X^T (X^T made once per call), then S: R x count floats moved, not W_J's count x D.
    k.gemm(ptr(o.ST), n, count, n, d, wj, d, 1, ptr(at.XT), n, 0);
    k.transpose(ptr(o.ST), count, n, S);
  };

  const T = Float64Array.from({ length: n }, (_, i) => p.target[2 * i]);
  const bias = (j0: number) => (precise ? 0 : slice(at.bias, j0));
  const phase1 = () => {
    // Phase 1: each range's running statistics. Precise (one thread): relative to a reference per
    // row, at first the label's logit T_i; a chunk that raises a row's maximum by more than 1
    // above it moves the reference there (the running values follow) and is taken again, as the
    // heads do, so the values near the maximum are small and exact.
    // (With a softcap the reference is an uncapped logit and the values are relative to its cap.)
    const ref = capRel ? labelLogits(p, x, w) : T.slice();
    if (precise) {
      rt.put(ptr(at.off), ref);
      // the label's logit relative to the reference (0), and its slope 1 where lce_mul applies the cap's
      rt.put(ptr(at.target), Float64Array.from(p.target, (v, k) => (k % 2 === 0 ? 0 : capRel ? 1 : v)));
    }
    const rebase = (t: number, j0: number, count: number, wj: number) => {
      const o = own[t];
      rt.k.head_chunk_max(ptr(o.S), n, count, j0, ptr(at.labels), ptr(at.ones) + B * 8, ptr(o.cmax));
      const cm = f64(o.cmax, n), M = f64(o.M, n), top = f64(o.top, n), zy = f64(o.zy, n), tg = f64(at.target, 2 * n);
      let again = false;
      for (let i = 0; i < n; i++) {
        if (!(cm[i] > 1)) continue;
        let shift = cm[i];
        if (capRel) {
          // the uncapped reference whose cap is cap(ref) + cm (none past the cap's saturation)
          const to = (cap(ref[i]) + shift) / p.softcap;
          if (!(Math.abs(to) < 1 - 1e-12)) continue;
          const next = p.softcap * Math.atanh(to);
          shift = cap(next) - cap(ref[i]);
          ref[i] = next;
        } else ref[i] += shift;
        [M[i], top[i], zy[i], tg[2 * i]] = [M[i] - shift, top[i] - shift, zy[i] - shift, tg[2 * i] - shift];
        again = true;
      }
      if (!again) return;
      f64(at.off, n).set(ref);
      rt.k.dots64(ptr(o.S), ptr(at.X), n, wj, count, da, ptr(at.off), ptr(at.ones) + B * 8, ptr(at.ones));
      if (capRel) rt.k.lce_cap_relative(ptr(o.S), n, count, ptr(at.off), p.softcap, ptr(o.dcap));
    };
    for (const o of own) {
      f64(o.M, n).fill(-Infinity);
      f64(o.sum, n).fill(0);
      f64(o.below, n).fill(0);
      f64(o.wsum, 1).fill(0);
      f64(o.top, n).fill(-Infinity);
      f64(o.zy, n).fill(0);
    }
    run((k, t, j0, count, wj) => {
      const o = own[t];
      dots(k, t, j0, count, wj);
      if (precise) rebase(t, j0, count, wj);
      k.lce_stats(
        sAt(t, j0),
        n,
        count,
        j0,
        ptr(at.labels),
        ptr(o.local),
        bias(j0),
        slice(at.weight, j0),
        ptr(at.target),
        capRel ? 0 : p.softcap,
        ptr(o.cap),
        ptr(o.cmax),
        ptr(o.csum),
        p.smoothing ? ptr(o.cbelow) : 0,
        ptr(o.M),
        ptr(o.sum),
        ptr(o.below),
        ptr(o.wsum),
        ptr(o.top),
        ptr(o.zy),
      );
    }, false);
    // The ranges merge as shards do; ignored rows hold 0.
    const none = new Float64Array(n);
    const merged = mergeShardStats(own.map((o): ShardStats => ({
      max: f64(o.M, n).map((m, i) => (precise ? m + cap(ref[i]) : m)),
      sum: f64(o.sum, n).slice(),
      target: none,
      ...(p.smoothing ? { below: f64(o.below, n).slice(), weightSum: f64(o.wsum, 1)[0] } : {}),
    })));
    const top = new Float64Array(n).fill(-Infinity), zy = new Float64Array(n);
    for (const o of own) {
      const tt = f64(o.top, n), zz = f64(o.zy, n);
      for (let i = 0; i < n; i++) [top[i], zy[i]] = [Math.max(top[i], tt[i]), zy[i] + zz[i]];
    }
    if (precise) {
      for (let i = 0; i < n; i++) [top[i], zy[i]] = [top[i] + cap(ref[i]), zy[i] + cap(ref[i])];
    }
    for (let i = 0; i < n; i++) if (p.labels[i] < 0) merged.max[i] = merged.sum[i] = 0;
    return { merged, top, zy };
  };
  let max: Float64Array, terms: LinearShardTerms, rows: Float64Array[] = [];
  if (typeof mode === "object") {
    // (the label's slope joins G here, except with capRel, where dcap holds it)
    const G = capRel ? mode.G : mode.G.map((g, i) => g * p.target[2 * i + 1]);
    [max, terms] = [mode.max, { ...mode, G }];
  } else {
    const { merged, top, zy } = phase1();
    if (mode === "stats") {
      const own = (i: number) => p.labels[i] >= 0 && p.labels[i] < c;
      return { ...merged, target: T.map((t, i) => (own(i) ? t : 0)) };
    }
    const stats: ShardStats = { ...merged, target: T };
    // (capRel: the label's slope is in dcap, applied to the whole chunk's gradient)
    const slopes = capRel ? Float64Array.from(p.target, (v, k) => (k % 2 === 0 ? v : 1)) : p.target;
    terms = logitRowTerms(stats, { ...p, classes: c, target: slopes });
    // (top and zy: before the cap, except with capRel, where they are capped values already)
    const t = terms as ReturnType<typeof logitRowTerms>;
    rows = [t.rows, t.zRows, correctRows(p.labels, top, zy, capRel ? 0 : p.softcap)];
    max = stats.max;
    if (!p.grad) return { rows, grads: {} };
  }

  // Phase 2: the gradients, chunk by chunk.
  // (precise: the logits relative to the merged maximum, which is then 0, and the label's target relative to it)
  if (precise) {
    // the reference: an uncapped logit whose cap is (about) the merged maximum; M relative to its cap
    const ref2 = capRel
      ? max.map((m) => p.softcap * Math.atanh(Math.max(-1 + 1e-12, Math.min(1 - 1e-12, m / p.softcap))))
      : max;
    rt.put(ptr(at.off), ref2);
    rt.put(ptr(at.M), max.map((m, i) => (capRel ? m - cap(ref2[i]) : 0)));
  } else rt.put(ptr(at.M), max);
  rt.put(ptr(at.A), terms.A);
  rt.put(ptr(at.U), terms.U);
  rt.put(ptr(at.G), terms.G);
  const flushes = own.map(() => 0), counter = own.map(() => 0);
  run((k, t, j0, count, wj, gj, last) => {
    const o = own[t], S = sAt(t, j0);
    // (kept logits have their bias already)
    if (!keep) dots(k, t, j0, count, wj);
    k.lce_grads(
      S,
      n,
      count,
      j0,
      ptr(at.labels),
      ptr(o.local),
      keep ? 0 : bias(j0),
      slice(at.weight, j0),
      capRel ? 0 : p.softcap,
      ptr(o.cap),
      ptr(at.M),
      ptr(at.A),
      ptr(at.U),
      ptr(at.G),
    );
    if (capRel) k.lce_mul(S, n, count, ptr(o.dcap));
    // x's gradient: dX += G W_J in float32 (the first chunk of a group overwrites), added into
    // float64 every FLUSH chunks and at the end of the range.
    k.gemm(ptr(o.dX), d, n, d, count, S, count, 1, wj, da, counter[t] === 0 ? 0 : 1);
    counter[t] = (counter[t] + 1) % FLUSH;
    if (counter[t] === 0 || last) {
      k.lce_flush(ptr(o.dX64), ptr(o.dX), n * d, flushes[t] === 0 ? 1 : 0, 0, 0);
      flushes[t]++;
      counter[t] = 0;
    }
    // W's gradient: dW_J = G^T X, one product per block of rows (float32), blocks summed in float64;
    // written to gj directly, or formed aside and then copied there or (pair) added into hi + lo.
    const added = !!pair && !pair.first, direct = !big && !added, g = direct ? gj : ptr(o.dWJ);
    for (let r0 = 0; r0 < n; r0 += ROW_BLOCK) {
      const rows = Math.min(ROW_BLOCK, n - r0);
      k.gemm(g, d, count, d, rows, S + r0 * count * 4, 1, count, ptr(at.X) + r0 * da * 4, da, 0);
      if (big) k.lce_flush(ptr(o.dW64), g, count * d, r0 === 0 ? 1 : 0, 0, r0 + ROW_BLOCK >= n ? 1 : 0);
    }
    if (added) k.lce_pair(gj, pair.lo + j0 * d * 4, g, count * d);
    else if (!direct) k.copy_bytes(gj, g, count * d * 4);
    if (p.bias) k.lce_colsum(S, n, count, ptr(at.db) + j0 * 4);
  }, true);
  // x's gradient: the ranges' float64 sums added in range order, then rounded.
  const gx = pinOX?.() ?? new Float32Array(n * d);
  if (threads === 1) gx.set(f64(own[0].dX64, n * d));
  else {
    const sum = f64(own[0].dX64, n * d).slice();
    for (const o of own.slice(1)) f64(o.dX64, n * d).forEach((g, i) => (sum[i] += g));
    gx.set(sum);
  }
  // (W's gradient in WebAssembly memory: a fresh view, growth may have detached the first)
  const grads: Record<string, Float32Array> = { x: gx, W: gAt >= 0 ? (pair ? pair.hi() : pinOW!()) : gw! };
  if (p.bias) {
    const gb = pinOB?.() ?? new Float32Array(c);
    gb.set(new Float32Array(rt.buffer, ptr(at.db), c));
    grads.bias = gb;
  }
  return { rows, grads };
}
