// The one matrix-product micro-kernel of the embedding heads (`marginHead`,
// `sphereface`, `lsoftmax`):
//
//   out[m, 0..n) = (accumulate ? out[m, 0..n) : 0) + sum_k coef[m*sm + k*sk] * src[k*lds + 0..n)
//
// With coef strides (sm, sk) it computes all three products of a head: the logits
// X W^T (coef = X, src = W^T), dX += G W (coef = G) and dW = H^T X (coef = H read
// by columns, sm = 1). Register blocking: a tile of 4 rows of `out` by 8 columns
// (two f32x4) keeps 8 accumulators in registers while k runs; each step loads two
// vectors of `src` and splats four coefficients.
import { madd } from "./math";

// @ts-ignore: decorator
@inline function splat(coef: usize, m: i32, sm: i32, k: i32, sk: i32): v128 {
  return v128.load32_splat(coef + ((<usize>(m * sm + k * sk)) << 2));
}

/** The product above; sizes in elements, strides in elements. */
export function gemm(
  out: usize, ldo: i32, rows: i32, n: i32, depth: i32,
  coef: usize, sm: i32, sk: i32, src: usize, lds: i32, accumulate: i32,
): void {
  // Byte strides: the k loop advances its addresses by increments (recomputing
  // (m sm + k sk) << 2 for each splat cost a third of the time under V8; same arithmetic).
  const cm = (<usize>sm) << 2, ck = (<usize>sk) << 2, sl = (<usize>lds) << 2;
  let m = 0;
  for (; m + 4 <= rows; m += 4) {
    const o0 = out + ((<usize>(m * ldo)) << 2);
    const o1 = o0 + ((<usize>ldo) << 2), o2 = o1 + ((<usize>ldo) << 2), o3 = o2 + ((<usize>ldo) << 2);
    const cr = coef + <usize>m * cm;
    let j = 0;
    for (; j + 8 <= n; j += 8) {
      const jo = (<usize>j) << 2;
      let a0 = f32x4.splat(0), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;
      if (accumulate) {
        a0 = v128.load(o0 + jo); b0 = v128.load(o0 + jo, 16);
        a1 = v128.load(o1 + jo); b1 = v128.load(o1 + jo, 16);
        a2 = v128.load(o2 + jo); b2 = v128.load(o2 + jo, 16);
        a3 = v128.load(o3 + jo); b3 = v128.load(o3 + jo, 16);
      }
      let s = src + jo, c = cr;
      for (let k = 0; k < depth; k++) {
        const v0 = v128.load(s), v1 = v128.load(s, 16);
        const c0 = v128.load32_splat(c), c1 = v128.load32_splat(c + cm);
        const c2 = v128.load32_splat(c + 2 * cm), c3 = v128.load32_splat(c + 3 * cm);
        a0 = madd(c0, v0, a0); b0 = madd(c0, v1, b0);
        a1 = madd(c1, v0, a1); b1 = madd(c1, v1, b1);
        a2 = madd(c2, v0, a2); b2 = madd(c2, v1, b2);
        a3 = madd(c3, v0, a3); b3 = madd(c3, v1, b3);
        s += sl;
        c += ck;
      }
      v128.store(o0 + jo, a0); v128.store(o0 + jo, b0, 16);
      v128.store(o1 + jo, a1); v128.store(o1 + jo, b1, 16);
      v128.store(o2 + jo, a2); v128.store(o2 + jo, b2, 16);
      v128.store(o3 + jo, a3); v128.store(o3 + jo, b3, 16);
    }
    // Column tail of the 4-row tile: one column at a time, its four rows in one vector, with
    // the tiles' arithmetic (madd), so that an entry does not depend on where it lies.
    for (; j < n; j++) {
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
  // Row tail: one row at a time, four columns per vector.
  for (; m < rows; m++) {
    const o = out + ((<usize>(m * ldo)) << 2);
    let j = 0;
    for (; j + 4 <= n; j += 4) {
      const jo = (<usize>j) << 2;
      let a = accumulate ? v128.load(o + jo) : f32x4.splat(0);
      for (let k = 0; k < depth; k++) a = madd(splat(coef, m, sm, k, sk), v128.load(src + ((<usize>(k * lds)) << 2) + jo), a);
      v128.store(o + jo, a);
    }
    for (; j < n; j++) {
      const jo = (<usize>j) << 2;
      let t = f32x4.splat(accumulate ? load<f32>(o + jo) : 0);
      for (let k = 0; k < depth; k++) t = madd(splat(coef, m, sm, k, sk), v128.load32_splat(src + ((<usize>(k * lds)) << 2) + jo), t);
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
