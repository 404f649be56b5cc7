// Class-chunk kernels of the embedding heads `marginHead`, `sphereface` and
// `lsoftmax`: the [N, C] logits never exist, only [N, B] blocks of one chunk of B
// classes at a time (the host, src/wasm/margin_head.ts, drives the chunks).
//
// For row i and class j, with a_i = 1/max(||x_i||, 1e-12) when x is normalised
// (else 1) and b_j = 1/max(||W_j||, 1e-12) when W is (else 1):
//   u_ij = (x_i . W_j) a_i b_j        (the cosine for marginHead)
//   z_ij = s * clamp(u_ij)            (clamp to [-1, 1] only for marginHead)
// except the label's logit z_iy = T_i, given by the host with dT/du (target[4i+1]).
// Forward keeps an online (max, sum of exponentials) per row across chunks.
// Backward forms du_ij = dL/du_ij = s_i p_ij s [u in range] (j != y),
// du_iy = s_i (p_iy - 1) dT/du, and the blocks the products need:
//   G_ij = du_ij b_j (v = G W: dX = a v before normalisation),
//   H_ij = du_ij a_i (t = H^T X: dW = b t before normalisation).
// Through a normalisation v -> v / ||v|| the gradient is the projection
// a (v - (x^ . v) x^) (`row_finish`): sum_j du_ij u_ij = x^ . v, so no accumulator is
// needed, and the projection, in float64, does not cancel where the gradient is 0.
import { expNeg } from "./math";
import { rowMax, rowExpSum } from "./softmax";
import { transpose } from "./gemm";
import { gather, subMax } from "./cross_entropy";

// The margin losses' non-target transform (src/kernels/hard_label.ts's NonTarget; as in
// cross_entropy.ts): ntc = [lo, hi, a, b, g, cut] f64 or 0, nt = per row (thr, tie) f64 or 0.
// With it, each row's logits of a chunk are taken by the scalar `ntLogit` (u clamped to
// [lo, hi], 0 above cut, a hard one s (a u + b u^2 + g sqrt(1 - u^2))), whose derivative over s
// is left in ntSlope; the GEMM around them is unchanged.
let ntSlope: f64 = 0;

// @ts-ignore: decorator
@inline function ntLogit(u: f64, s: f64, col: i32, ntc: usize, thr: f64, tie: i32): f64 {
  let v = min(max(u, load<f64>(ntc)), load<f64>(ntc + 8));
  ntSlope = v == u ? 1 : 0;
  if (v > load<f64>(ntc + 40)) {
    v = 0;
    ntSlope = 0;
  }
  if (v > thr || (v == thr && col <= tie)) {
    const a = load<f64>(ntc + 16), b = load<f64>(ntc + 24), g = load<f64>(ntc + 32);
    let value = a * v + b * v * v, slope = a + 2 * b * v;
    if (g != 0) {
      const vd = min(max(v, -1 + 1e-6), 1 - 1e-6);
      value += g * Math.sqrt(max(0, 1 - v * v));
      slope -= g * vd / Math.sqrt(1 - vd * vd);
    }
    ntSlope *= slope;
    return s * value;
  }
  return s * v;
}

let uMax: f32 = 0, uMin: f32 = 0;

/** uMax, uMin: the largest and smallest u = (S a) b over row[lo, hi) (as `logits` rounds it), merged into them. */
function uRange(row: usize, lo: i32, hi: i32, a: f32, b: usize): void {
  const va = f32x4.splat(a);
  let mx = f32x4.splat(uMax), mn = f32x4.splat(uMin);
  let j = lo;
  for (; j + 4 <= hi; j += 4) {
    const o = (<usize>j) << 2;
    const u = f32x4.mul(f32x4.mul(v128.load(row + o), va), v128.load(b + o));
    mx = f32x4.max(mx, u);
    mn = f32x4.min(mn, u);
  }
  let m1 = max(max(f32x4.extract_lane(mx, 0), f32x4.extract_lane(mx, 1)), max(f32x4.extract_lane(mx, 2), f32x4.extract_lane(mx, 3)));
  let m0 = min(min(f32x4.extract_lane(mn, 0), f32x4.extract_lane(mn, 1)), min(f32x4.extract_lane(mn, 2), f32x4.extract_lane(mn, 3)));
  for (; j < hi; j++) {
    const o = (<usize>j) << 2;
    const u = load<f32>(row + o) * a * load<f32>(b + o);
    m1 = max(m1, u);
    m0 = min(m0, u);
  }
  uMax = m1;
  uMin = m0;
}

/**
 * Whether the non-target transform leaves every non-label entry of a chunk row as the plain
 * kernel takes it: u inside [lo, hi], not above cut, not hard. Then the SIMD loops run.
 */
function ntPlain(row: usize, cols: i32, yl: i32, a: f32, b: usize, ntc: usize, thr: f64, tie: i32): bool {
  uMax = -Infinity;
  uMin = Infinity;
  uRange(row, 0, yl, a, b);
  uRange(row, yl < cols ? yl + 1 : cols, cols, a, b);
  const top = <f64>uMax;
  if (isNaN(top) || isNaN(<f64>uMin)) return false;
  return top <= load<f64>(ntc + 8) && <f64>uMin >= load<f64>(ntc) && top <= load<f64>(ntc + 40) &&
    (top < thr || (top == thr && tie < 0));
}

/** The non-target transform's logits of one row of a chunk, in place (the label's column yl skipped). */
function logitsNT(row: usize, n: i32, a: f32, b: usize, s: f32, yl: i32, j0: i32, ntc: usize, thr: f64, tie: i32): void {
  for (let j = 0; j < n; j++) {
    if (j == yl) continue;
    const o = (<usize>j) << 2;
    const u = <f64>(load<f32>(row + o) * a * load<f32>(b + o));
    store<f32>(row + o, <f32>ntLogit(u, <f64>s, j0 + j, ntc, thr, tie));
  }
}

const EPS: f32 = 1e-12;

/** b_j (1/max(||W_j||, 1e-12), or 1 without normW) for a [rows, d] chunk of W, and W^T into wt. */
export function head_prep(w: usize, rows: i32, d: i32, normW: i32, b: usize, wt: usize): void {
  for (let r = 0; r < rows; r++) {
    let s: f32 = 1;
    if (normW) {
      const row = w + ((<usize>(r * d)) << 2);
      let acc = f32x4.splat(0);
      let k = 0;
      for (; k + 4 <= d; k += 4) {
        const v = v128.load(row + ((<usize>k) << 2));
        acc = f32x4.add(acc, f32x4.mul(v, v));
      }
      let ss = <f64>f32x4.extract_lane(acc, 0) + <f64>f32x4.extract_lane(acc, 1) + <f64>f32x4.extract_lane(acc, 2) + <f64>f32x4.extract_lane(acc, 3);
      for (; k < d; k++) {
        const v = <f64>load<f32>(row + ((<usize>k) << 2));
        ss += v * v;
      }
      s = <f32>(1 / max(Math.sqrt(ss), <f64>EPS));
    }
    store<f32>(b + ((<usize>r) << 2), s);
  }
  transpose(w, rows, d, wt);
}

/** z = s * clamp?(S a_i b_j) over row[0 .. n), in place. */
// @ts-ignore: decorator
@inline function logits(row: usize, n: i32, a: f32, b: usize, s: f32, clamp: i32): void {
  const va = f32x4.splat(a), vs = f32x4.splat(s), one = f32x4.splat(1), minus = f32x4.splat(-1);
  let j = 0;
  for (; j + 4 <= n; j += 4) {
    const o = (<usize>j) << 2;
    let u = f32x4.mul(f32x4.mul(v128.load(row + o), va), v128.load(b + o));
    if (clamp) u = f32x4.pmax(f32x4.pmin(u, one), minus);
    v128.store(row + o, f32x4.mul(u, vs));
  }
  for (; j < n; j++) {
    const o = (<usize>j) << 2;
    let u = load<f32>(row + o) * a * load<f32>(b + o);
    if (clamp) u = max(min(u, <f32>1), <f32>-1);
    store<f32>(row + o, u * s);
  }
}

/**
 * Forward over one chunk of `cols` classes starting at class j0: S [n, cols] holds
 * the dot products (overwritten by the logits); m, sum [n] float64 are the running
 * row maxima and sums of e^(z - m) over the non-label entries, updated here (the
 * host starts each row with m = T, its label's logit, and sum = 0; keeping the
 * label out of the sum keeps 1 - p_y = sum / (sum + e^(T - m)) accurate as p_y -> 1).
 */
export function head_forward(
  S: usize, n: i32, cols: i32, j0: i32, labels: usize, a: usize, b: usize, s: f32, clamp: i32,
  m: usize, sum: usize, ntc: usize, nt: usize,
): void {
  for (let i = 0; i < n; i++) {
    const y = load<i32>(labels + ((<usize>i) << 2));
    if (y < 0) continue;
    const row = S + ((<usize>(i * cols)) << 2);
    const yl = y - j0 >= 0 && y - j0 < cols ? y - j0 : cols; // the label's column here, or none
    if (ntc) {
      const thr = nt ? load<f64>(nt + ((<usize>i) << 4)) : Infinity;
      const tie = nt ? <i32>load<f64>(nt + ((<usize>i) << 4) + 8) : -1;
      const ai = load<f32>(a + ((<usize>i) << 2));
      if (ntPlain(row, cols, yl, ai, b, ntc, thr, tie)) logits(row, cols, ai, b, s, clamp);
      else logitsNT(row, cols, ai, b, s, yl, j0, ntc, thr, tie);
    } else {
      logits(row, cols, load<f32>(a + ((<usize>i) << 2)), b, s, clamp);
    }
    const after = yl < cols ? yl + 1 : cols;
    const cm = max(rowMax(row, yl), rowMax(row + ((<usize>after) << 2), cols - after));
    let mi = load<f64>(m + ((<usize>i) << 3));
    let si = load<f64>(sum + ((<usize>i) << 3));
    if (<f64>cm > mi) {
      si *= Math.exp(mi - <f64>cm);
      mi = <f64>cm;
    }
    const m32 = <f32>mi;
    // Exponentials are taken against the float32 max; m32 >= every logit of the chunk
    // up to rounding, and e^(z - m32) is corrected to e^(z - mi) by one factor.
    const part = rowExpSum(row, yl, m32, 1, 0) + rowExpSum(row + ((<usize>after) << 2), cols - after, m32, 1, 0);
    si += part * Math.exp(<f64>m32 - mi);
    store<f64>(m + ((<usize>i) << 3), mi);
    store<f64>(sum + ((<usize>i) << 3), si);
  }
}

/** Per row, the largest S_ij b_j over the chunk's non-label columns (float64 out [n]; -inf if none). */
export function head_chunk_max(S: usize, n: i32, cols: i32, j0: i32, labels: usize, b: usize, out: usize): void {
  for (let i = 0; i < n; i++) {
    const y = load<i32>(labels + ((<usize>i) << 2));
    let best: f32 = -Infinity;
    if (y >= 0) {
      const row = S + ((<usize>(i * cols)) << 2);
      for (let j = 0; j < cols; j++) {
        if (j + j0 == y) continue;
        best = max(best, load<f32>(row + ((<usize>j) << 2)) * load<f32>(b + ((<usize>j) << 2)));
      }
    }
    store<f64>(out + ((<usize>i) << 3), <f64>best);
  }
}

/** The gradient blocks of one range of columns [j, end) of row `row` (no label inside). */
// @ts-ignore: decorator
@inline function gradRange(
  row: usize, g: usize, h: usize, b: usize, j: i32, end: i32, a: f32, s: f32, m: f32, l: f32, scale: f32, clamp: i32,
): void {
  const va = f32x4.splat(a), vs = f32x4.splat(s), vm = f32x4.splat(m), vl = f32x4.splat(l), vk = f32x4.splat(scale);
  const one = f32x4.splat(1), minus = f32x4.splat(-1);
  for (; j + 4 <= end; j += 4) {
    const o = (<usize>j) << 2;
    const vb = v128.load(b + o);
    const u = f32x4.mul(f32x4.mul(v128.load(row + o), va), vb);
    let uc = u;
    if (clamp) uc = f32x4.pmax(f32x4.pmin(u, one), minus);
    // p = e^((z - m) - (lse - m)): z - m is exact near the max, lse - m is small
    let du = f32x4.mul(vk, expNeg(f32x4.sub(f32x4.sub(f32x4.mul(uc, vs), vm), vl)));
    if (clamp) du = v128.and(du, f32x4.eq(uc, u));
    v128.store(g + o, f32x4.mul(du, vb));
    v128.store(h + o, f32x4.mul(du, va));
  }
  for (; j < end; j++) {
    const o = (<usize>j) << 2;
    const bj = load<f32>(b + o);
    const u = load<f32>(row + o) * a * bj;
    const uc = clamp ? max(min(u, <f32>1), <f32>-1) : u;
    let du = scale * f32x4.extract_lane(expNeg(f32x4.splat((uc * s - m) - l)), 0);
    if (uc != u) du = 0;
    store<f32>(g + o, du * bj);
    store<f32>(h + o, du * a);
  }
}

/**
 * Backward over one chunk (S [n, cols] holds the dot products): writes G and H
 * [n, cols]. m (the row maxima of the forward pass), lse, scales, om (1 - p_y) [n]
 * float64; target [n, 4] float64 (T, dT/du, ...).
 */
export function head_backward(
  S: usize, n: i32, cols: i32, j0: i32, labels: usize, a: usize, b: usize, s: f32, clamp: i32,
  m: usize, lse: usize, scales: usize, target: usize, om: usize, G: usize, H: usize, labelInG: i32, labelInH: i32,
  ntc: usize, nt: usize,
): void {
  for (let i = 0; i < n; i++) {
    const off = (<usize>(i * cols)) << 2;
    const y = load<i32>(labels + ((<usize>i) << 2));
    if (y < 0) {
      memory.fill(G + off, 0, (<usize>cols) << 2);
      memory.fill(H + off, 0, (<usize>cols) << 2);
      continue;
    }
    const ai = load<f32>(a + ((<usize>i) << 2));
    const mi = <f32>load<f64>(m + ((<usize>i) << 3));
    const li = <f32>(load<f64>(lse + ((<usize>i) << 3)) - <f64>mi);
    const si = load<f64>(scales + ((<usize>i) << 3));
    const row = S + off;
    const yl = y - j0 >= 0 && y - j0 < cols ? y - j0 : cols;
    const after = yl < cols ? yl + 1 : cols;
    // dL/du = s_i p s for the non-label columns.
    const k = <f32>(si * <f64>s);
    const thr = ntc && nt ? load<f64>(nt + ((<usize>i) << 4)) : Infinity;
    const tie = ntc && nt ? <i32>load<f64>(nt + ((<usize>i) << 4) + 8) : -1;
    if (ntc && !ntPlain(row, cols, yl, ai, b, ntc, thr, tie)) {
      // dL/du = s_i p s (dz/du over s), p = e^((z - m) - (lse - m))
      for (let j = 0; j < cols; j++) {
        if (j == yl) continue;
        const o = (<usize>j) << 2;
        const bj = load<f32>(b + o);
        const z = ntLogit(<f64>(load<f32>(row + o) * ai * bj), <f64>s, j0 + j, ntc, thr, tie);
        const e = f32x4.extract_lane(expNeg(f32x4.splat((<f32>z - mi) - li)), 0);
        const du = <f32>(<f64>(k * e) * ntSlope);
        store<f32>(G + off + o, du * bj);
        store<f32>(H + off + o, du * ai);
      }
    } else {
      gradRange(row, G + off, H + off, b, 0, yl, ai, s, mi, li, k, clamp);
      gradRange(row, G + off, H + off, b, after, cols, ai, s, mi, li, k, clamp);
    }
    if (yl < cols) {
      const t = target + ((<usize>i) << 5);
      const o = (<usize>yl) << 2;
      // dL/dz_y = s_i (p_y - 1) = -s_i (1 - p_y), 1 - p_y given by the host
      const du = -si * load<f64>(om + ((<usize>i) << 3)) * load<f64>(t + 8);
      // With labelInG (labelInH) = 0 the host adds the label's part of dX (dW) itself, in float64.
      store<f32>(G + off + o, labelInG ? <f32>(du * <f64>load<f32>(b + o)) : 0);
      store<f32>(H + off + o, labelInH ? <f32>(du * <f64>ai) : 0);
    }
  }
}

/**
 * For rows of d floats: out_r = ca[r] (out_r - [project] (out_r . src_r / ||src_r||^2) src_r) + cb[r] src_r,
 * the projection taken when `project` and ||src_r|| > 1e-12 (the gradient through
 * src_r / max(||src_r||, 1e-12)); float64 arithmetic (ca, cb float32 [rows]).
 */
export function row_finish(out: usize, src: usize, rows: i32, d: i32, ca: usize, cb: usize, project: i32): void {
  for (let r = 0; r < rows; r++) {
    const o = out + ((<usize>(r * d)) << 2), x = src + ((<usize>(r * d)) << 2);
    let dot: f64 = 0, ss: f64 = 0;
    for (let k = 0; k < d; k++) {
      const xv = <f64>load<f32>(x + ((<usize>k) << 2));
      dot += <f64>load<f32>(o + ((<usize>k) << 2)) * xv;
      ss += xv * xv;
    }
    const coef = project && Math.sqrt(ss) > 1e-12 ? dot / ss : 0;
    const sa = <f64>load<f32>(ca + ((<usize>r) << 2)), sb = <f64>load<f32>(cb + ((<usize>r) << 2));
    for (let k = 0; k < d; k++) {
      const p = (<usize>k) << 2;
      const xv = <f64>load<f32>(x + p);
      store<f32>(o + p, <f32>(sa * (<f64>load<f32>(o + p) - coef * xv) + sb * xv));
    }
  }
}

/**
 * Sub-centres (marginHead's `subcenters` K): over one chunk of `cols` classes of K rows each
 * (S [n, cols*K] the dot products, b [cols*K] the row scales, a [n] the row scales of x), per row
 * `subMax` (cross_entropy.ts: the losses' rule) of u = (S a) b, in place: S [n, cols] of the class
 * cosines, unclamped (the kernels then take them with a = b = 1), and idx [n, cols] the winning
 * rows, c*K + q (the chunk's rows of W).
 */
export function head_submax(S: usize, n: i32, cols: i32, K: i32, a: usize, b: usize, idx: usize): void {
  const rows = cols * K;
  for (let i = 0; i < n; i++) {
    const src = S + ((<usize>(i * rows)) << 2), dst = S + ((<usize>(i * cols)) << 2);
    // (in place: row i's cosines land before its values, and after every earlier row's)
    subMax(src, dst, idx + ((<usize>(i * cols)) << 2), cols, K, load<f32>(a + ((<usize>i) << 2)), b);
  }
}

/**
 * The inverse of `head_submax` for the gradient blocks, in place: G, H [n, cols] of the class
 * cosines (taken with a = b = 1) become G [n, cols*K] (du b_r at the class's winning row r, 0 at its
 * other rows) and H [n, cols*K] (du a_i there), ready for the GEMMs over the chunk's rows of W.
 * Four classes at a time, their K rows written lane by lane.
 */
export function head_subexpand(G: usize, H: usize, n: i32, cols: i32, K: i32, a: usize, b: usize, idx: usize): void {
  // From the end: every write lands at or after the entries it reads, and after every entry still to be read.
  const tail = cols & 3;
  for (let i = n - 1; i >= 0; i--) {
    const ai = load<f32>(a + ((<usize>i) << 2));
    for (let c = cols - 1; c >= cols - tail; c--) expandGroup(G, H, i, c, cols, K, ai, b, idx, false);
    for (let c = cols - tail - 4; c >= 0; c -= 4) expandGroup(G, H, i, c, cols, K, ai, b, idx, true);
  }
}

/** `head_subexpand` of row i's classes c .. c + 3 (four) or of class c alone. */
// @ts-ignore: decorator
@inline function expandGroup(
  G: usize, H: usize, i: i32, c: i32, cols: i32, K: i32, ai: f32, b: usize, idx: usize, four: bool,
): void {
  const from = (<usize>(i * cols + c)) << 2;
  let g = v128.load32_splat(G + from), h = v128.load32_splat(H + from), arg = v128.load32_splat(idx + from);
  if (four) {
    g = v128.load(G + from);
    h = f32x4.mul(v128.load(H + from), f32x4.splat(ai));
    arg = v128.load(idx + from);
  } else {
    h = f32x4.mul(h, f32x4.splat(ai));
  }
  const step = (<usize>K) << 2, first = i32x4.mul(i32x4.add(i32x4.splat(c), i32x4(0, 1, 2, 3)), i32x4.splat(K));
  for (let k = K - 1; k >= 0; k--) {
    const r = (<usize>(c * K + k)) << 2, to = ((<usize>(i * cols * K)) << 2) + r;
    const hit = i32x4.eq(arg, i32x4.add(first, i32x4.splat(k)));
    const gv = v128.and(f32x4.mul(g, gather(b + r, step, four)), hit), hv = v128.and(h, hit);
    v128.store32_lane(G + to, gv, 0);
    v128.store32_lane(H + to, hv, 0);
    if (four) {
      v128.store32_lane(G + to + step, gv, 1);
      v128.store32_lane(H + to + step, hv, 1);
      v128.store32_lane(G + to + 2 * step, gv, 2);
      v128.store32_lane(H + to + 2 * step, hv, 2);
      v128.store32_lane(G + to + 3 * step, gv, 3);
      v128.store32_lane(H + to + 3 * step, hv, 3);
    }
  }
}

/**
 * `interTopK`'s first pass over one chunk of `cols` classes from class j0 (S [n, cols] the dot
 * products, or the class cosines with a = b = 1, as head_forward takes them): per row the k largest
 * non-label values of u = (S a) b, clamped to [lo, hi] and 0 above cut (ntc), as `ntLogit` takes
 * them, merged into vals [n, k] f64 (descending; equal values in class order: a later class does not
 * displace an earlier one), cls [n, k] i32 (their classes) and size [n] i32 (how many are held).
 */
export function head_topk(
  S: usize, n: i32, cols: i32, j0: i32, labels: usize, a: usize, b: usize, ntc: usize, k: i32,
  vals: usize, cls: usize, size: usize,
): void {
  const lo = load<f64>(ntc), hi = load<f64>(ntc + 8), cut = load<f64>(ntc + 40);
  for (let i = 0; i < n; i++) {
    const y = load<i32>(labels + ((<usize>i) << 2));
    if (y < 0) continue;
    const row = S + ((<usize>(i * cols)) << 2), ai = load<f32>(a + ((<usize>i) << 2));
    const vr = vals + ((<usize>(i * k)) << 3), cr = cls + ((<usize>(i * k)) << 2);
    let m = load<i32>(size + ((<usize>i) << 2));
    let kth: f64 = m == k ? load<f64>(vr + ((<usize>(k - 1)) << 3)) : -Infinity;
    for (let j = 0; j < cols; j++) {
      if (j0 + j == y) continue;
      const u = <f64>(load<f32>(row + ((<usize>j) << 2)) * ai * load<f32>(b + ((<usize>j) << 2)));
      let v = min(max(u, lo), hi);
      if (v > cut) v = 0;
      if (!(v > kth)) continue;
      let q = m < k ? m : k - 1;
      while (q > 0 && load<f64>(vr + ((<usize>(q - 1)) << 3)) < v) {
        store<f64>(vr + ((<usize>q) << 3), load<f64>(vr + ((<usize>(q - 1)) << 3)));
        store<i32>(cr + ((<usize>q) << 2), load<i32>(cr + ((<usize>(q - 1)) << 2)));
        q--;
      }
      store<f64>(vr + ((<usize>q) << 3), v);
      store<i32>(cr + ((<usize>q) << 2), j0 + j);
      if (m < k) m++;
      if (m == k) kth = load<f64>(vr + ((<usize>(k - 1)) << 3));
    }
    store<i32>(size + ((<usize>i) << 2), m);
  }
}
