// Chunk kernels of the fused linear cross-entropy (`linearCrossEntropy`): the host
// (src/wasm/linear_cross_entropy.ts) streams the classes in chunks of `cols`, forms each
// chunk's dot products S = X W_J^T [n, cols] with the heads' GEMM (gemm.ts), and calls:
//   lce_stats: adds the bias, takes the chunk as a shard of crossEntropy's logits
//              (sharded.ts's shard_stats: max, the non-label sum, with smoothing `below`,
//              softcap included) and merges it into the running statistics exactly as
//              mergeShardStats merges shards; also keeps, for the accuracy, the largest
//              non-label logit (before the cap: the cap is monotone) and the label's;
//   lce_grads: adds the bias and writes the chunk's gradient w.r.t. its logits over S
//              (shard_grads, from the merged statistics' coefficients A, U, G);
//   lce_colsum: the bias gradient of the chunk (column sums of G, float64);
//   lce_flush:  dst64 += src32 (float64 accumulation of float32 partial products).
import { shard_stats, shard_grads } from "./sharded";
import { rowMax } from "./softmax";

/** local[i]: row i's label column in [j0, j0 + cols) relative to j0, -1 elsewhere, -2 ignored. */
// @ts-ignore: decorator
@inline function localLabels(labels: usize, n: i32, j0: i32, cols: i32, local: usize): void {
  for (let i = 0; i < n; i++) {
    const y = load<i32>(labels + ((<usize>i) << 2));
    store<i32>(local + ((<usize>i) << 2), y < 0 ? -2 : y >= j0 && y < j0 + cols ? y - j0 : -1);
  }
}

/** S[i, j] += bias[j] (bias 0: none). */
// @ts-ignore: decorator
@inline function addBias(S: usize, n: i32, cols: i32, bias: usize): void {
  if (!bias) return;
  for (let i = 0; i < n; i++) {
    const row = S + ((<usize>(i * cols)) << 2);
    let j = 0;
    for (; j + 4 <= cols; j += 4) {
      const o = (<usize>j) << 2;
      v128.store(row + o, f32x4.add(v128.load(row + o), v128.load(bias + o)));
    }
    for (; j < cols; j++) {
      const o = (<usize>j) << 2;
      store<f32>(row + o, load<f32>(row + o) + load<f32>(bias + o));
    }
  }
}

/**
 * One chunk's statistics merged into the running ones. S [n, cols] dot products (the bias is
 * added in place); labels [n] int32 (-1 ignored), local [n] int32 scratch; bias, weight: the
 * chunk's slices [cols] float32 or 0; target [n, 2] float64 (the label's capped logit and its
 * derivative); softcap c or 0, cap a scratch [2, cols]; cmax, csum, cbelow [n] float64 scratch
 * (cbelow 0 without smoothing); running max, sum, below [n] float64 and wsum [1] float64 (the
 * weight of the classes merged so far); top, zy [n] float64: the largest non-label logit and the
 * label's, before the cap.
 */
export function lce_stats(
  S: usize, n: i32, cols: i32, j0: i32, labels: usize, local: usize, bias: usize, weight: usize, target: usize,
  softcap: f64, cap: usize, cmax: usize, csum: usize, cbelow: usize,
  M: usize, sum: usize, below: usize, wsum: usize, top: usize, zy: usize,
): void {
  localLabels(labels, n, j0, cols, local);
  addBias(S, n, cols, bias);
  for (let i = 0; i < n; i++) {
    const yl = load<i32>(local + ((<usize>i) << 2));
    if (yl == -2) continue;
    const row = S + ((<usize>(i * cols)) << 2), o8 = (<usize>i) << 3;
    const y = yl >= 0 ? yl : cols, after = y < cols ? y + 1 : cols;
    const mx = max(rowMax(row, y), rowMax(row + ((<usize>after) << 2), cols - after));
    store<f64>(top + o8, max(load<f64>(top + o8), <f64>mx));
    if (yl >= 0) store<f64>(zy + o8, <f64>load<f32>(row + ((<usize>yl) << 2)));
  }
  shard_stats(S, n, cols, local, 1, 0, target, cmax, csum, cbelow, weight, softcap, cap, 1, 0, 0, 0);
  // The chunk's weight (sum of its class weights; its column count without weights).
  let wc: f64 = <f64>cols;
  if (weight) {
    wc = 0;
    for (let j = 0; j < cols; j++) wc += <f64>load<f32>(weight + ((<usize>j) << 2));
  }
  const w0 = load<f64>(wsum);
  for (let i = 0; i < n; i++) {
    if (load<i32>(local + ((<usize>i) << 2)) == -2) continue;
    const o8 = (<usize>i) << 3;
    const m0 = load<f64>(M + o8), m1 = load<f64>(cmax + o8), m = max(m0, m1);
    // mergeShardStats: sum = sum_k sum_k e^(max_k - max), below = sum_k below_k + W_k (max - max_k)
    const f0 = m0 == m ? 1 : Math.exp(m0 - m), f1 = m1 == m ? 1 : Math.exp(m1 - m);
    store<f64>(sum + o8, load<f64>(sum + o8) * f0 + load<f64>(csum + o8) * f1);
    store<f64>(M + o8, m);
    if (cbelow) {
      const b0 = w0 == 0 ? 0 : load<f64>(below + o8) + w0 * (m - m0);
      store<f64>(below + o8, b0 + load<f64>(cbelow + o8) + wc * (m - m1));
    }
  }
  store<f64>(wsum, w0 + wc);
}

/**
 * One chunk's gradient w.r.t. its logits over S (the bias added first): shard_grads from the
 * merged statistics (M, A, U, G [n] float64); arguments as lce_stats.
 */
export function lce_grads(
  S: usize, n: i32, cols: i32, j0: i32, labels: usize, local: usize, bias: usize, weight: usize,
  softcap: f64, cap: usize, M: usize, A: usize, U: usize, G: usize,
): void {
  localLabels(labels, n, j0, cols, local);
  addBias(S, n, cols, bias);
  shard_grads(S, S, n, cols, local, weight, 1, 0, M, A, U, G, softcap, cap, 1, 0, 0, 0);
}

/**
 * Precise mode with a softcap c: S [n, cols] holds r = u - ref_i (float64 dot products less the
 * row's reference, rounded once); replaces it by z - cap(ref_i) = c (tanh(a + b) - tanh(a)),
 * a = ref_i / c, b = r / c (in float64: an absolute error of about c 2^-53), and writes
 * dcap [n, cols] = 1 - tanh^2(u / c) = 1 / cosh^2(a + b) (no cancellation where the cap
 * saturates; 0 past cosh's range). ref [n] float64.
 */
export function lce_cap_relative(S: usize, n: i32, cols: i32, ref: usize, c: f64, dcap: usize): void {
  for (let i = 0; i < n; i++) {
    const a = load<f64>(ref + ((<usize>i) << 3)) / c, ta = Math.tanh(a);
    for (let j = 0; j < cols; j++) {
      const o = (<usize>(i * cols + j)) << 2;
      const v = a + <f64>load<f32>(S + o) / c, ch = Math.cosh(v);
      store<f32>(S + o, <f32>(c * (Math.tanh(v) - ta)));
      store<f32>(dcap + o, <f32>(1 / (ch * ch)));
    }
  }
}

/** G [n, cols] *= dcap [n, cols] (elementwise). */
export function lce_mul(G: usize, n: i32, cols: i32, dcap: usize): void {
  const len = n * cols;
  let k = 0;
  for (; k + 4 <= len; k += 4) {
    const o = (<usize>k) << 2;
    v128.store(G + o, f32x4.mul(v128.load(G + o), v128.load(dcap + o)));
  }
  for (; k < len; k++) {
    const o = (<usize>k) << 2;
    store<f32>(G + o, load<f32>(G + o) * load<f32>(dcap + o));
  }
}

/** out[j] = sum_i G[i, j] over the n rows of G [n, cols], summed in float64. */
export function lce_colsum(G: usize, n: i32, cols: i32, out: usize): void {
  for (let j = 0; j < cols; j++) {
    let s: f64 = 0;
    for (let i = 0; i < n; i++) s += <f64>load<f32>(G + ((<usize>(i * cols + j)) << 2));
    store<f32>(out + ((<usize>j) << 2), <f32>s);
  }
}

/** dst64[0 .. len) = (first ? 0 : dst64) + src32; with `zero`, src32 is cleared; with `round`, src32 = f32(dst64). */
export function lce_flush(dst: usize, src: usize, len: i32, first: i32, zero: i32, round: i32): void {
  for (let k = 0; k < len; k++) {
    const o4 = (<usize>k) << 2, o8 = (<usize>k) << 3;
    const v = (first ? 0 : load<f64>(dst + o8)) + <f64>load<f32>(src + o4);
    store<f64>(dst + o8, v);
    store<f32>(src + o4, zero ? 0 : round ? <f32>v : load<f32>(src + o4));
  }
}

/**
 * hi + lo += src over len floats (float32 pairs, W's gradient summed over row blocks): the sum
 * formed in float64 and split into its nearest float32 and the remainder, so the pair carries
 * about 48 bits (each addition's error at most about 2^-48 of the running sum).
 */
export function lce_pair(hi: usize, lo: usize, src: usize, len: i32): void {
  let k = 0;
  for (; k + 4 <= len; k += 4) {
    const o = (<usize>k) << 2;
    const h = v128.load(hi + o), l = v128.load(lo + o), s = v128.load(src + o);
    // lanes 0-1 and 2-3 in float64
    const v0 = f64x2.add(f64x2.add(f64x2.promote_low_f32x4(h), f64x2.promote_low_f32x4(l)), f64x2.promote_low_f32x4(s));
    const h2 = v128.shuffle<f32>(h, h, 2, 3, 0, 1), l2 = v128.shuffle<f32>(l, l, 2, 3, 0, 1);
    const s2 = v128.shuffle<f32>(s, s, 2, 3, 0, 1);
    const v1 = f64x2.add(f64x2.add(f64x2.promote_low_f32x4(h2), f64x2.promote_low_f32x4(l2)), f64x2.promote_low_f32x4(s2));
    const n0 = f32x4.demote_f64x2_zero(v0), n1 = f32x4.demote_f64x2_zero(v1);
    const r0 = f64x2.sub(v0, f64x2.promote_low_f32x4(n0)), r1 = f64x2.sub(v1, f64x2.promote_low_f32x4(n1));
    v128.store(hi + o, v128.shuffle<f32>(n0, n1, 0, 1, 4, 5));
    v128.store(lo + o, v128.shuffle<f32>(f32x4.demote_f64x2_zero(r0), f32x4.demote_f64x2_zero(r1), 0, 1, 4, 5));
  }
  for (; k < len; k++) {
    const o = (<usize>k) << 2;
    const v = <f64>load<f32>(hi + o) + <f64>load<f32>(lo + o) + <f64>load<f32>(src + o), h = <f32>v;
    store<f32>(hi + o, h);
    store<f32>(lo + o, <f32>(v - <f64>h));
  }
}

/** The largest Euclidean norm of the rows of src [rows, d] (squares summed in float64; NaN propagates). */
export function lce_max_norm(src: usize, rows: i32, d: i32): f64 {
  let best: f64 = 0;
  for (let r = 0; r < rows; r++) {
    const row = src + ((<usize>r * <usize>d) << 2);
    let a = f64x2.splat(0), b = a;
    let k = 0;
    for (; k + 4 <= d; k += 4) {
      const v = v128.load(row + ((<usize>k) << 2));
      const lo = f64x2.promote_low_f32x4(v), hi = f64x2.promote_low_f32x4(v128.shuffle<f32>(v, v, 2, 3, 0, 1));
      a = f64x2.add(a, f64x2.mul(lo, lo));
      b = f64x2.add(b, f64x2.mul(hi, hi));
    }
    const s = f64x2.add(a, b);
    let t = f64x2.extract_lane(s, 0) + f64x2.extract_lane(s, 1);
    for (; k < d; k++) {
      const v = <f64>load<f32>(row + ((<usize>k) << 2));
      t += v * v;
    }
    best = max(best, Math.sqrt(t));
  }
  return best;
}
