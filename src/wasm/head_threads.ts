/**
 * The embedding heads on the thread pool (src/wasm/pool.ts): the classes are split into
 * one range per thread, whole chunks of 128 each, and each thread runs both phases of
 * src/wasm/margin_head.ts over its range, in its own scratch buffers:
 *  1. statistics: per row an online (max, non-label sum of exponentials) over the range;
 *     the caller merges the threads' pairs exactly (`mergeShardStats`) and forms the row terms;
 *  2. gradients: each thread writes the rows of dW of its own classes (no two threads
 *     write one float) and its share of x's gradient; the caller sums the shares.
 * W streams (src/wasm/pool.ts's `streamRounds`, shared with linearCrossEntropy): each phase
 * runs in rounds, and in each round every thread takes the next slab of its range (whole
 * chunks, about `SLAB_BYTES` of W) from its own two slab buffers, while the calling thread,
 * before its own slab, copies the previous round's slabs of dW out and every thread's next
 * slab of W in (where W and dW are ordinary arrays; where they were
 * allocated in WebAssembly memory, `alloc`, the threads read and write them in place). So
 * threads hold O(threads x slab) more WebAssembly memory than one thread, whatever C is;
 * x and the per-row buffers are there once, shared.
 *
 * The row losses and dW equal one thread's up to the order of two sums (the merge of the
 * ranges' sums of exponentials, and x's gradient summed per range, then over ranges):
 * within SPEC's bound, and the same from call to call for a given thread count. Heads in
 * "precise" mode (x not normalised, large logits: SphereFace, L-Softmax) stay on one thread.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import { type HeadProblem, headRowTerms, type HeadStats, RowTopK } from "../kernels/head.ts";
import { mergeShardStats } from "../kernels/shards.ts";
import { chunkClasses, head as oneThread, isPrecise, labelParts } from "./margin_head.ts";
import { pool, type Recorder, slabClasses, split, streamRounds } from "./pool.ts";
import { Layout } from "./runtime.ts";

const EPS = 1e-12;
/** Multiply-adds per thread below which a head stays on one thread (waking a worker takes ~30 us). */
const MIN_PER_THREAD = 1 << 22;
/**
 * Row losses and gradients of an embedding head: on the thread pool when it pays, else on this
 * thread. With `interTopK` a first phase finds each thread's range's top k per row (`head_topk`),
 * merged in class order.
 */
export function head(p: HeadProblem): Raw {
  const pl = pool();
  const { n, c, d } = p;
  // Sub-centres: a chunk of B classes is R = B K rows of W; with `rows` the slabs are gathered.
  const K = p.subcenters ?? 1, B = chunkClasses(K), R = B * K;
  const threads = pl ? Math.min(pl.active, Math.ceil(c / B), Math.floor((n * c * K * d) / MIN_PER_THREAD)) : 1;
  if (!pl || threads < 2 || isPrecise(p)) return oneThread(p);
  const rt = pl.rt;
  const L = slabClasses(B, d * 4 * K), span = K * d;
  const pinX = rt.pin(p.x), pinW = rt.pin(p.W);
  const outX = p.outX ? rt.pin(p.outX.data) : null, outW = p.outW ? rt.pin(p.outW.data) : null;
  const wAt = p.rows ? -1 : rt.addressOf(p.W), gAt = p.grad && p.outW ? rt.addressOf(p.outW.data) : -1;
  const lay = new Layout();
  const at = {
    X: lay.add(n * d * 4),
    labels: lay.add(n * 4),
    a: lay.add(n * 4),
    target: lay.add(n * 32),
    ntc: lay.add(48),
    nt: lay.add(n * 16),
    m: lay.add(n * 8),
    lse: lay.add(n * 8),
    om: lay.add(n * 8),
    scales: lay.add(n * 8),
    zero: lay.add(Math.max(n, R) * 4),
    ones: lay.add(K > 1 ? Math.max(n, B) * 4 : 0),
  };
  const slabs = () => [lay.add(L * span * 4), lay.add(L * span * 4)];
  const own = Array.from({ length: threads }, () => ({
    b: lay.add(R * 4),
    WT: lay.add(d * R * 4),
    S: lay.add(n * R * 4),
    G: lay.add(n * R * 4),
    H: lay.add(n * R * 4),
    idx: lay.add(K > 1 ? n * B * 4 : 0),
    m: lay.add(n * 8),
    sum: lay.add(n * 8),
    dX: lay.add(n * d * 4),
    /** Two slabs of W's rows in (W an ordinary array) and of dW's rows out (dW one), by round parity. */
    win: wAt < 0 ? slabs() : [],
    gout: p.grad && gAt < 0 ? slabs() : [],
  }));
  // interTopK's first phase: each thread's top k per row (values, classes, counts).
  const top = p.interTopK && p.nonTarget && !p.nonTarget.rows && p.interTopK < c - 1 ? p.interTopK : 0;
  const tops = own.map(() => ({ v: lay.add(n * top * 8), c: lay.add(n * top * 4), s: lay.add(top ? n * 4 : 0) }));
  const base = rt.arena(lay.size);
  const x = pinX(), w = pinW();
  const f64 = (off: number, len: number) => new Float64Array(rt.buffer, base + off, len);
  const f32 = (off: number, len: number) => new Float32Array(rt.buffer, base + off, len);
  rt.put(base + at.X, x);
  rt.put(base + at.labels, p.labels);
  rt.put(base + at.target, p.target);
  const nt = p.nonTarget;
  if (nt) rt.put(base + at.ntc, Float64Array.of(nt.lo, nt.hi, nt.a, nt.b, nt.g, nt.cut));
  if (nt?.rows) rt.put(base + at.nt, nt.rows);
  const ntc = nt ? base + at.ntc : 0;
  let ntRows = nt?.rows ? base + at.nt : 0;
  const a = f32(at.a, n);
  a.set(Float32Array.from(p.nx, (nx) => (p.normX ? 1 / Math.max(nx, EPS) : 1)));
  f32(at.zero, Math.max(n, R)).fill(0);
  if (K > 1) f32(at.ones, Math.max(n, B)).fill(1);
  const ptr = (off: number) => base + off;
  const ranges = own.map((_, t) => split(c, threads, t, B));
  const rounds = Math.max(...ranges.map(([c0, c1]) => Math.ceil((c1 - c0) / L)));
  /** Thread t's slab of round r: its classes [s0, s1) (empty past its range), and where its W and dW rows are. */
  const slab = (t: number, r: number) => {
    const [c0, c1] = ranges[t], s0 = Math.min(c1, c0 + r * L), s1 = Math.min(c1, s0 + L), o = own[t];
    const W = wAt >= 0 ? wAt + s0 * span * 4 : ptr(o.win[r % 2]);
    const gW = gAt >= 0 ? gAt + s0 * span * 4 : o.gout.length ? ptr(o.gout[r % 2]) : -1;
    return { s0, s1, W, gW };
  };
  const gw = p.grad ? outW?.() ?? new Float32Array(c * span) : null;
  /** Copies every thread's slab of W for round r in (W an ordinary array; gathered with `rows`). */
  const feed = (r: number) => {
    if (wAt >= 0 || r >= rounds) return;
    own.forEach((_, t) => {
      const { s0, s1, W } = slab(t, r);
      if (!p.rows) {
        return rt.copy(rt.f32.subarray(W >>> 2, (W >>> 2) + (s1 - s0) * span), w.subarray(s0 * span, s1 * span));
      }
      for (let j = s0; j < s1; j++) {
        rt.copy(
          rt.f32.subarray((W >>> 2) + (j - s0) * span, (W >>> 2) + (j - s0 + 1) * span),
          w.subarray(p.rows[j] * span, (p.rows[j] + 1) * span),
        );
      }
    });
  };
  /** Copies every thread's slab of dW of round r out (dW an ordinary array). */
  const drain = (r: number) => {
    if (gAt >= 0 || r < 0) return;
    own.forEach((_, t) => {
      const { s0, s1, gW } = slab(t, r);
      rt.copy(gw!.subarray(s0 * span, s1 * span), rt.f32.subarray(gW >>> 2, (gW >>> 2) + (s1 - s0) * span));
    });
  };
  /**
   * One phase: round by round, `step(k, t, j0, count, W, gW)` over every chunk of every thread's
   * slab (W, gW: the chunk's rows of W and dW), one program per thread; the caller feeds the
   * next round's slabs (and drains the last round's dW with `out`) alongside its own slab.
   */
  const phase = (
    step: (k: Recorder, t: number, j0: number, count: number, W: number, gW: number) => void,
    out: boolean,
  ) =>
    streamRounds(
      pl,
      rt,
      threads,
      rounds,
      (k, t, r) => {
        const { s0, s1, W, gW } = slab(t, r);
        for (let j0 = s0; j0 < s1; j0 += B) {
          step(k, t, j0, Math.min(B, s1 - j0), W + (j0 - s0) * span * 4, gW + (j0 - s0) * span * 4);
        }
      },
      feed,
      out ? drain : undefined,
    );
  // Each chunk's norms, W^T and dot products S = X W_J^T, on the thread's own buffers (with
  // sub-centres, then each class's largest: S [n, count] of class cosines, taken with a = b = 1).
  const dots = (k: Recorder, t: number, count: number, wj: number) => {
    const o = own[t];
    k.head_prep(wj, count * K, d, p.normW ? 1 : 0, ptr(o.b), ptr(o.WT));
    k.gemm(ptr(o.S), count * K, n, count * K, d, ptr(at.X), d, 1, ptr(o.WT), count * K, 0);
    if (K > 1) k.head_submax(ptr(o.S), n, count, K, ptr(at.a), ptr(o.b), ptr(o.idx));
  };
  const ab = (t: number) => K > 1 ? [ptr(at.ones), ptr(at.ones)] as const : [ptr(at.a), ptr(own[t].b)] as const;

  if (p.interTopK && nt && !nt.rows) {
    // interTopK: each range's top k per row, then merged in class order (the ranges ascend).
    const merged = new RowTopK(n, p.interTopK);
    if (top > 0) {
      for (const o of tops) new Int32Array(rt.buffer, base + o.s, n).fill(0);
      phase((k, t, j0, count, wj) => {
        dots(k, t, count, wj);
        const o = tops[t];
        k.head_topk(ptr(own[t].S), n, count, j0, ptr(at.labels), ...ab(t), ntc, top, ptr(o.v), ptr(o.c), ptr(o.s));
      }, false);
      for (const o of tops) {
        const v = f64(o.v, n * top), cl = new Int32Array(rt.buffer, base + o.c, n * top);
        const size = new Int32Array(rt.buffer, base + o.s, n);
        for (let i = 0; i < n; i++) for (let q = 0; q < size[i]; q++) merged.offer(i, cl[i * top + q], v[i * top + q]);
      }
    }
    rt.put(base + at.nt, merged.rows(p.labels));
    ntRows = base + at.nt;
  }
  // Phase 1: each range's (max, sum) per row, starting at the label's logit where the range holds it.
  const T = Float64Array.from({ length: n }, (_, i) => p.target[4 * i]);
  own.forEach((o, t) => {
    const [c0, c1] = ranges[t];
    f64(o.m, n).set(Float64Array.from(T, (v, i) => (p.labels[i] >= c0 && p.labels[i] < c1 ? v : -Infinity)));
    f64(o.sum, n).fill(0);
  });
  phase((k, t, j0, count, wj) => {
    dots(k, t, count, wj);
    const o = own[t];
    k.head_forward(
      ptr(o.S),
      n,
      count,
      j0,
      ptr(at.labels),
      ...ab(t),
      p.scale,
      p.clamp ? 1 : 0,
      ptr(o.m),
      ptr(o.sum),
      ntc,
      ntRows,
    );
  }, false);
  // The threads are shards of the classes: their statistics merge as shards' do.
  const none = new Float64Array(n);
  const stats: HeadStats = mergeShardStats(
    own.map((o) => ({ max: f64(o.m, n).slice(), sum: f64(o.sum, n).slice(), target: none })),
  );
  for (let i = 0; i < n; i++) if (p.labels[i] < 0) stats.max[i] = stats.sum[i] = 0;
  const terms = headRowTerms(p.target, p.labels, stats);
  if (!gw) return { rows: [terms.rows], grads: {} };

  // Phase 2: each thread's rows of dW, and its share of v = G W (x's gradient before normalisation).
  f64(at.m, n).set(stats.max);
  f64(at.lse, n).set(terms.lse);
  f64(at.om, n).set(terms.om);
  f64(at.scales, n).set(p.scales);
  for (const o of own) f32(o.dX, n * d).fill(0);
  phase((k, t, j0, count, wj, gj) => {
    dots(k, t, count, wj);
    const o = own[t];
    k.head_backward(
      ptr(o.S),
      n,
      count,
      j0,
      ptr(at.labels),
      ...ab(t),
      p.scale,
      p.clamp ? 1 : 0,
      ptr(at.m),
      ptr(at.lse),
      ptr(at.scales),
      ptr(at.target),
      ptr(at.om),
      ptr(o.G),
      ptr(o.H),
      p.normX ? 1 : 0,
      p.normW ? 1 : 0,
      ntc,
      ntRows,
    );
    if (K > 1) k.head_subexpand(ptr(o.G), ptr(o.H), n, count, K, ptr(at.a), ptr(o.b), ptr(o.idx));
    // v += G W_J; t = H^T X, then dW_j = b_j (t_j - [W normalised] (W^_j . t_j) W^_j)
    const rows = count * K;
    k.gemm(ptr(o.dX), d, n, d, rows, ptr(o.G), rows, 1, wj, d, 1);
    k.gemm(gj, d, rows, d, n, ptr(o.H), 1, rows, ptr(at.X), d, 0);
    k.row_finish(gj, wj, rows, d, ptr(o.b), ptr(at.zero), p.normW ? 1 : 0);
  }, true);
  // v = the threads' shares summed in thread order (float64), then dx = a (v - [x normalised] (x^ . v) x^).
  const v = new Float64Array(n * d);
  for (const o of own) f32(o.dX, n * d).forEach((g, i) => (v[i] += g));
  const dX = f32(own[0].dX, n * d);
  dX.set(v);
  rt.k.row_finish(ptr(own[0].dX), ptr(at.X), n, d, ptr(at.a), ptr(at.zero), p.normX ? 1 : 0);
  const gx = outX?.() ?? new Float32Array(n * d);
  gx.set(dX);
  labelParts(p, x, w, 0, a, terms, gx, gw);
  return { rows: [terms.rows], grads: { x: gx, W: gw } };
}
