// The one matrix-product micro-kernel of the embedding heads (`marginHead`,
// `sphereface`, `lsoftmax`):
//
//   out[m, 0..n) = (accumulate ? out[m, 0..n) : 0) + sum_k coef[m*sm + k*sk] * src[k*lds + 0..n)
//
// With coef strides (sm, sk) it computes all three products of a head: the logits
// X W^T (coef = X, src = W^T), dX += G W (coef = G) and dW = H^T X (coef = H read
// by columns, sm = 1). Register blocking: a tile of R rows of `out` by 8 columns (two
// f32x4 per row) keeps 2R accumulators in registers while k runs; each step loads two
// vectors of `src` and splats R coefficients, 2R multiply-adds against 2 + R loads. R = 6
// (12 accumulators) in the relaxed build; R = 4 in the plain one, whose separate multiply
// and add need the registers that 6 rows would take (6 x 8 spills there: 0.55x of 4 x 8).
// Every entry is one chain of multiply-adds over k in order, whichever tile or tail
// computes it, so an entry does not depend on where it lies (nor on R).
import { madd } from "./math";

/** Rows per tile of `gemm` (see above). */
const TILE_ROWS: i32 = ASC_FEATURE_RELAXED_SIMD ? 6 : 4;

/** The R x 8 tile of `out` at row m and column j (byte offsets of its rows: o, o + lo, ...). */
// @ts-ignore: decorator
@inline function tile(
  R: i32, o: usize, lo: usize, cr: usize, cm: usize, ck: usize, s: usize, sl: usize, depth: i32, accumulate: i32,
): void {
  let a0 = f32x4.splat(0), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0, a4 = a0, b4 = a0, a5 = a0, b5 = a0;
  if (accumulate) {
    a0 = v128.load(o); b0 = v128.load(o, 16);
    if (R > 1) { a1 = v128.load(o + lo); b1 = v128.load(o + lo, 16); }
    if (R > 2) { a2 = v128.load(o + 2 * lo); b2 = v128.load(o + 2 * lo, 16); }
    if (R > 3) { a3 = v128.load(o + 3 * lo); b3 = v128.load(o + 3 * lo, 16); }
    if (R > 4) { a4 = v128.load(o + 4 * lo); b4 = v128.load(o + 4 * lo, 16); }
    if (R > 5) { a5 = v128.load(o + 5 * lo); b5 = v128.load(o + 5 * lo, 16); }
  }
  let c = cr;
  for (let k = 0; k < depth; k++) {
    const v0 = v128.load(s), v1 = v128.load(s, 16);
    if (R == 6) {
      // one coefficient register at a time (12 accumulators leave no room for six)
      let w = v128.load32_splat(c);
      a0 = madd(w, v0, a0); b0 = madd(w, v1, b0);
      w = v128.load32_splat(c + cm); a1 = madd(w, v0, a1); b1 = madd(w, v1, b1);
      w = v128.load32_splat(c + 2 * cm); a2 = madd(w, v0, a2); b2 = madd(w, v1, b2);
      w = v128.load32_splat(c + 3 * cm); a3 = madd(w, v0, a3); b3 = madd(w, v1, b3);
      w = v128.load32_splat(c + 4 * cm); a4 = madd(w, v0, a4); b4 = madd(w, v1, b4);
      w = v128.load32_splat(c + 5 * cm); a5 = madd(w, v0, a5); b5 = madd(w, v1, b5);
    } else {
      // the coefficients first (measured 10% faster for R = 4 under V8)
      const w0 = v128.load32_splat(c);
      const w1 = R > 1 ? v128.load32_splat(c + cm) : w0;
      const w2 = R > 2 ? v128.load32_splat(c + 2 * cm) : w0;
      const w3 = R > 3 ? v128.load32_splat(c + 3 * cm) : w0;
      a0 = madd(w0, v0, a0); b0 = madd(w0, v1, b0);
      if (R > 1) { a1 = madd(w1, v0, a1); b1 = madd(w1, v1, b1); }
      if (R > 2) { a2 = madd(w2, v0, a2); b2 = madd(w2, v1, b2); }
      if (R > 3) { a3 = madd(w3, v0, a3); b3 = madd(w3, v1, b3); }
    }
    s += sl;
    c += ck;
  }
  v128.store(o, a0); v128.store(o, b0, 16);
  if (R > 1) { v128.store(o + lo, a1); v128.store(o + lo, b1, 16); }
  if (R > 2) { v128.store(o + 2 * lo, a2); v128.store(o + 2 * lo, b2, 16); }
  if (R > 3) { v128.store(o + 3 * lo, a3); v128.store(o + 3 * lo, b3, 16); }
  if (R > 4) { v128.store(o + 4 * lo, a4); v128.store(o + 4 * lo, b4, 16); }
  if (R > 5) { v128.store(o + 5 * lo, a5); v128.store(o + 5 * lo, b5, 16); }
}

/** Rows [m0, m1) of `out` over the columns [0, J) (J a multiple of 8) in R x 8 tiles, m1 - m0 a multiple of R. */
// @ts-ignore: decorator
@inline function tiles(
  R: i32, m0: i32, m1: i32, J: i32, out: usize, lo: usize, coef: usize, cm: usize, ck: usize, src: usize, sl: usize,
  depth: i32, accumulate: i32,
): void {
  for (let m = m0; m < m1; m += R) {
    const o = out + <usize>m * lo, cr = coef + <usize>m * cm;
    for (let j = 0; j < J; j += 8) {
      const jo = (<usize>j) << 2;
      tile(R, o + jo, lo, cr, cm, ck, src + jo, sl, depth, accumulate);
    }
  }
}

/** The product above; sizes in elements, strides in elements. */
export function gemm(
  out: usize, ldo: i32, rows: i32, n: i32, depth: i32,
  coef: usize, sm: i32, sk: i32, src: usize, lds: i32, accumulate: i32,
): void {
  // Byte strides: the k loop advances its addresses by increments (recomputing
  // (m sm + k sk) << 2 for each splat cost a third of the time under V8; same arithmetic).
  const cm = (<usize>sm) << 2, ck = (<usize>sk) << 2, sl = (<usize>lds) << 2, lo = (<usize>ldo) << 2;
  const J = n & ~7;
  // Rows: tiles of TILE_ROWS, then of 4 (a remainder of 2 or 3 rows after the 6-row tiles is
  // taken with one 6-row tile fewer, as 4 + 4 or 4 + 4 + 1), then single rows.
  let big = TILE_ROWS == 6 ? rows / 6 : 0;
  if (big > 0 && (rows - 6 * big == 2 || rows - 6 * big == 3)) big--;
  const m6 = big * 6, m4 = m6 + ((rows - m6) & ~3);
  if (m6 > 0) tiles(6, 0, m6, J, out, lo, coef, cm, ck, src, sl, depth, accumulate);
  tiles(4, m6, m4, J, out, lo, coef, cm, ck, src, sl, depth, accumulate);
  tiles(1, m4, rows, J, out, lo, coef, cm, ck, src, sl, depth, accumulate);
  // Column tail (n - J < 8 columns): four rows at a time, one column each, the four rows
  // in one vector with the tiles' arithmetic (madd); then single rows.
  let m = 0;
  for (; m + 4 <= rows; m += 4) {
    const o0 = out + <usize>m * lo, o1 = o0 + lo, o2 = o1 + lo, o3 = o2 + lo;
    const cr = coef + <usize>m * cm;
    for (let j = J; j < n; j++) {
      const jo = (<usize>j) << 2;
      let t = f32x4.splat(0);
      if (accumulate) {
        t = f32x4.replace_lane(f32x4.replace_lane(f32x4.replace_lane(f32x4.splat(load<f32>(o0 + jo)), 1, load<f32>(o1 + jo)), 2, load<f32>(o2 + jo)), 3, load<f32>(o3 + jo));
      }
      let s = src + jo, c = cr;
      for (let k = 0; k < depth; k++) {
        let cv = v128.load32_splat(c);
        cv = v128.load32_lane(c + cm, cv, 1);
        cv = v128.load32_lane(c + 2 * cm, cv, 2);
        cv = v128.load32_lane(c + 3 * cm, cv, 3);
        t = madd(cv, v128.load32_splat(s), t);
        s += sl;
        c += ck;
      }
      store<f32>(o0 + jo, f32x4.extract_lane(t, 0)); store<f32>(o1 + jo, f32x4.extract_lane(t, 1));
      store<f32>(o2 + jo, f32x4.extract_lane(t, 2)); store<f32>(o3 + jo, f32x4.extract_lane(t, 3));
    }
  }
  for (; m < rows; m++) {
    const o = out + <usize>m * lo, cr = coef + <usize>m * cm;
    for (let j = J; j < n; j++) {
      const jo = (<usize>j) << 2;
      let t = f32x4.splat(accumulate ? load<f32>(o + jo) : 0);
      let s = src + jo, c = cr;
      for (let k = 0; k < depth; k++) {
        t = madd(v128.load32_splat(c), v128.load32_splat(s), t);
        s += sl;
        c += ck;
      }
      store<f32>(o + jo, f32x4.extract_lane(t, 0));
    }
  }
}

// The 4 x 4 block of rows r0..r3 transposed, one row of the result each (its column 0..3).
// @ts-ignore: decorator
@inline export function tr0(r0: v128, r1: v128, r2: v128, r3: v128): v128 {
  return i32x4.shuffle(i32x4.shuffle(r0, r1, 0, 4, 1, 5), i32x4.shuffle(r2, r3, 0, 4, 1, 5), 0, 1, 4, 5);
}
// @ts-ignore: decorator
@inline export function tr1(r0: v128, r1: v128, r2: v128, r3: v128): v128 {
  return i32x4.shuffle(i32x4.shuffle(r0, r1, 0, 4, 1, 5), i32x4.shuffle(r2, r3, 0, 4, 1, 5), 2, 3, 6, 7);
}
// @ts-ignore: decorator
@inline export function tr2(r0: v128, r1: v128, r2: v128, r3: v128): v128 {
  return i32x4.shuffle(i32x4.shuffle(r0, r1, 2, 6, 3, 7), i32x4.shuffle(r2, r3, 2, 6, 3, 7), 0, 1, 4, 5);
}
// @ts-ignore: decorator
@inline export function tr3(r0: v128, r1: v128, r2: v128, r3: v128): v128 {
  return i32x4.shuffle(i32x4.shuffle(r0, r1, 2, 6, 3, 7), i32x4.shuffle(r2, r3, 2, 6, 3, 7), 2, 3, 6, 7);
}

/**
 * dst[d, b] = src[b, d] for a [rows, cols] block (transpose into a [cols, rows] buffer):
 * 4 x 4 blocks moved as four f32x4 rows, transposed in registers; the edges one float at
 * a time.
 */
export function transpose(src: usize, rows: i32, cols: i32, dst: usize): void {
  const sr = (<usize>cols) << 2, dr = (<usize>rows) << 2;
  const r4 = rows & ~3, c4 = cols & ~3;
  for (let r = 0; r < r4; r += 4) {
    const s = src + <usize>r * sr, d = dst + ((<usize>r) << 2);
    for (let c = 0; c < c4; c += 4) {
      const p = s + ((<usize>c) << 2), q = d + <usize>c * dr;
      const a0 = v128.load(p), a1 = v128.load(p + sr), a2 = v128.load(p + 2 * sr), a3 = v128.load(p + 3 * sr);
      v128.store(q, tr0(a0, a1, a2, a3));
      v128.store(q + dr, tr1(a0, a1, a2, a3));
      v128.store(q + 2 * dr, tr2(a0, a1, a2, a3));
      v128.store(q + 3 * dr, tr3(a0, a1, a2, a3));
    }
  }
  for (let r = 0; r < rows; r++) {
    for (let c = r < r4 ? c4 : 0; c < cols; c++) {
      store<f32>(dst + ((<usize>(c * rows + r)) << 2), load<f32>(src + ((<usize>(r * cols + c)) << 2)));
    }
  }
}

/** Lanes 2-3 of an f32x4 as a float64x2. */
// @ts-ignore: decorator
@inline function promoteHigh(v: v128): v128 {
  return f64x2.promote_low_f32x4(i32x4.shuffle(v, v, 2, 3, 0, 1));
}

// @ts-ignore: decorator
@inline function hsum64(a: v128, b: v128): f64 {
  const s = f64x2.add(a, b);
  return f64x2.extract_lane(s, 0) + f64x2.extract_lane(s, 1);
}

/**
 * out[i, j] = (x_i . w_j b64[j] - off[i]) / b[j]: dot products in float64 (the products of
 * float32 values are exact there), scaled and offset before rounding to float32. For logits
 * that may be large (SphereFace, L-Softmax with long embeddings): with off the row's running
 * maximum, z - max is small and exact wherever a probability matters, which a float32 logit
 * of 1e4 (good to 6e-4) is not; and the kernels' out * b is z - max with the column scale
 * b64 exact (b [cols] float32 alone would move a logit of 5000 by 3e-4). x [rows, d],
 * w [cols, d] (rows of W), off [rows] float64, b [cols] float32 and b64 [cols] float64 (the
 * heads' column scale), out [rows, cols]. Tiles of 2 x 2 dot products.
 */
export function dots64(out: usize, x: usize, rows: i32, w: usize, cols: i32, d: i32, off: usize, b: usize, b64: usize): void {
  const rowBytes = (<usize>d) << 2;
  for (let i = 0; i < rows; i += 2) {
    const two = i + 1 < rows;
    const x0 = x + <usize>i * rowBytes, x1 = two ? x0 + rowBytes : x0;
    const f0 = load<f64>(off + ((<usize>i) << 3)), f1 = two ? load<f64>(off + ((<usize>i + 1) << 3)) : 0;
    for (let j = 0; j < cols; j += 2) {
      const pair = j + 1 < cols;
      const w0 = w + <usize>j * rowBytes, w1 = pair ? w0 + rowBytes : w0;
      let a0 = f64x2.splat(0), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, e0 = a0, e1 = a0;
      let k = 0;
      for (; k + 4 <= d; k += 4) {
        const o = (<usize>k) << 2;
        const u0 = v128.load(x0 + o), u1 = v128.load(x1 + o), v0 = v128.load(w0 + o), v1 = v128.load(w1 + o);
        const u0l = f64x2.promote_low_f32x4(u0), u0h = promoteHigh(u0), u1l = f64x2.promote_low_f32x4(u1), u1h = promoteHigh(u1);
        const v0l = f64x2.promote_low_f32x4(v0), v0h = promoteHigh(v0), v1l = f64x2.promote_low_f32x4(v1), v1h = promoteHigh(v1);
        a0 = f64x2.add(a0, f64x2.mul(u0l, v0l)); a1 = f64x2.add(a1, f64x2.mul(u0h, v0h));
        b0 = f64x2.add(b0, f64x2.mul(u0l, v1l)); b1 = f64x2.add(b1, f64x2.mul(u0h, v1h));
        c0 = f64x2.add(c0, f64x2.mul(u1l, v0l)); c1 = f64x2.add(c1, f64x2.mul(u1h, v0h));
        e0 = f64x2.add(e0, f64x2.mul(u1l, v1l)); e1 = f64x2.add(e1, f64x2.mul(u1h, v1h));
      }
      let s00 = hsum64(a0, a1), s01 = hsum64(b0, b1), s10 = hsum64(c0, c1), s11 = hsum64(e0, e1);
      for (; k < d; k++) {
        const o = (<usize>k) << 2;
        const xa = <f64>load<f32>(x0 + o), xb = <f64>load<f32>(x1 + o);
        const wa = <f64>load<f32>(w0 + o), wb = <f64>load<f32>(w1 + o);
        s00 += xa * wa; s01 += xa * wb; s10 += xb * wa; s11 += xb * wb;
      }
      const g0 = <f64>load<f32>(b + ((<usize>j) << 2)), g1 = pair ? <f64>load<f32>(b + ((<usize>j + 1) << 2)) : 1;
      const h0 = load<f64>(b64 + ((<usize>j) << 3)), h1 = pair ? load<f64>(b64 + ((<usize>j + 1) << 3)) : 1;
      const o0 = out + ((<usize>(i * cols + j)) << 2);
      store<f32>(o0, <f32>((s00 * h0 - f0) / g0));
      if (pair) store<f32>(o0 + 4, <f32>((s01 * h1 - f0) / g1));
      if (two) {
        const o1 = o0 + ((<usize>cols) << 2);
        store<f32>(o1, <f32>((s10 * h0 - f1) / g0));
        if (pair) store<f32>(o1 + 4, <f32>((s11 * h1 - f1) / g1));
      }
    }
  }
}

/**
 * The weight gradient of the precise heads, in float64 until it is final:
 *   t_j = sum_i h[i * cols + j] x_i,  out_j = b_j (t_j - [project] (t_j . w_j / ||w_j||^2) w_j)
 * (the projection through w_j / max(||w_j||, 1e-12), taken when ||w_j|| > 1e-12, cancels
 * most of t_j, which would magnify any rounding of t_j). h [rows, cols], x [rows, d],
 * w [cols, d], b [cols] float32, out [cols, d]; scratch: d float64.
 */
export function gemm_tn64(
  out: usize, h: usize, rows: i32, cols: i32, x: usize, d: i32, w: usize, b: usize, project: i32, scratch: usize,
): void {
  for (let j = 0; j < cols; j++) {
    let k = 0;
    for (; k + 2 <= d; k += 2) {
      let acc = f64x2.splat(0);
      for (let i = 0; i < rows; i++) {
        const c = f64x2.splat(<f64>load<f32>(h + ((<usize>(i * cols + j)) << 2)));
        acc = f64x2.add(acc, f64x2.mul(c, f64x2.promote_low_f32x4(v128.load64_zero(x + ((<usize>(i * d + k)) << 2)))));
      }
      v128.store(scratch + ((<usize>k) << 3), acc);
    }
    for (; k < d; k++) {
      let s: f64 = 0;
      for (let i = 0; i < rows; i++) {
        s += <f64>load<f32>(h + ((<usize>(i * cols + j)) << 2)) * <f64>load<f32>(x + ((<usize>(i * d + k)) << 2));
      }
      store<f64>(scratch + ((<usize>k) << 3), s);
    }
    const wr = w + ((<usize>(j * d)) << 2);
    let dot: f64 = 0, ss: f64 = 0;
    for (k = 0; k < d; k++) {
      const wv = <f64>load<f32>(wr + ((<usize>k) << 2));
      dot += load<f64>(scratch + ((<usize>k) << 3)) * wv;
      ss += wv * wv;
    }
    const coef = project && Math.sqrt(ss) > 1e-12 ? dot / ss : 0;
    const bj = <f64>load<f32>(b + ((<usize>j) << 2));
    const o = out + ((<usize>(j * d)) << 2);
    for (k = 0; k < d; k++) {
      const t = load<f64>(scratch + ((<usize>k) << 3)) - coef * <f64>load<f32>(wr + ((<usize>k) << 2));
      store<f32>(o + ((<usize>k) << 2), <f32>(bj * t));
    }
  }
}

/**
 * The multiply-add peak probe of the benchmarks (bench/margin_head_bench.ts): `iters` steps of
 * 12 independent f32x4 multiply-add chains a = a m + x (`madd`: fused in the relaxed build),
 * 96 flops a step, no memory traffic; returns a sum of the chains so that none is optimised
 * away. (m is an argument: V8 re-materialises a constant vector inside the loop, 2x slower.)
 */
export function fma_peak(iters: i32, x: f32, m: f32): f32 {
  const vm = f32x4.splat(m), c = f32x4.splat(x);
  let a0 = f32x4.splat(x), a1 = f32x4.add(a0, c), a2 = f32x4.add(a1, c), a3 = f32x4.add(a2, c);
  let a4 = f32x4.add(a3, c), a5 = f32x4.add(a4, c), a6 = f32x4.add(a5, c), a7 = f32x4.add(a6, c);
  let a8 = f32x4.add(a7, c), a9 = f32x4.add(a8, c), a10 = f32x4.add(a9, c), a11 = f32x4.add(a10, c);
  for (let i = 0; i < iters; i++) {
    a0 = madd(a0, vm, c); a1 = madd(a1, vm, c); a2 = madd(a2, vm, c); a3 = madd(a3, vm, c);
    a4 = madd(a4, vm, c); a5 = madd(a5, vm, c); a6 = madd(a6, vm, c); a7 = madd(a7, vm, c);
    a8 = madd(a8, vm, c); a9 = madd(a9, vm, c); a10 = madd(a10, vm, c); a11 = madd(a11, vm, c);
  }
  const s = f32x4.add(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)), f32x4.add(f32x4.add(a4, a5), f32x4.add(a6, a7)));
  const t = f32x4.add(s, f32x4.add(f32x4.add(a8, a9), f32x4.add(a10, a11)));
  return f32x4.extract_lane(t, 0) + f32x4.extract_lane(t, 3);
}
