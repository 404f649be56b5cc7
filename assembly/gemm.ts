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
  let m = 0;
  for (; m + 4 <= rows; m += 4) {
    const o0 = out + ((<usize>(m * ldo)) << 2);
    const o1 = o0 + ((<usize>ldo) << 2), o2 = o1 + ((<usize>ldo) << 2), o3 = o2 + ((<usize>ldo) << 2);
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
      for (let k = 0; k < depth; k++) {
        const s = src + ((<usize>(k * lds)) << 2) + jo;
        const v0 = v128.load(s), v1 = v128.load(s, 16);
        const c0 = splat(coef, m, sm, k, sk), c1 = splat(coef, m + 1, sm, k, sk);
        const c2 = splat(coef, m + 2, sm, k, sk), c3 = splat(coef, m + 3, sm, k, sk);
        a0 = madd(c0, v0, a0); b0 = madd(c0, v1, b0);
        a1 = madd(c1, v0, a1); b1 = madd(c1, v1, b1);
        a2 = madd(c2, v0, a2); b2 = madd(c2, v1, b2);
        a3 = madd(c3, v0, a3); b3 = madd(c3, v1, b3);
      }
      v128.store(o0 + jo, a0); v128.store(o0 + jo, b0, 16);
      v128.store(o1 + jo, a1); v128.store(o1 + jo, b1, 16);
      v128.store(o2 + jo, a2); v128.store(o2 + jo, b2, 16);
      v128.store(o3 + jo, a3); v128.store(o3 + jo, b3, 16);
    }
    // Column tail of the 4-row tile: one float at a time.
    for (; j < n; j++) {
      const jo = (<usize>j) << 2;
      let t0: f32 = accumulate ? load<f32>(o0 + jo) : 0, t1: f32 = accumulate ? load<f32>(o1 + jo) : 0;
      let t2: f32 = accumulate ? load<f32>(o2 + jo) : 0, t3: f32 = accumulate ? load<f32>(o3 + jo) : 0;
      for (let k = 0; k < depth; k++) {
        const v = load<f32>(src + ((<usize>(k * lds)) << 2) + jo);
        t0 += load<f32>(coef + ((<usize>(m * sm + k * sk)) << 2)) * v;
        t1 += load<f32>(coef + ((<usize>((m + 1) * sm + k * sk)) << 2)) * v;
        t2 += load<f32>(coef + ((<usize>((m + 2) * sm + k * sk)) << 2)) * v;
        t3 += load<f32>(coef + ((<usize>((m + 3) * sm + k * sk)) << 2)) * v;
      }
      store<f32>(o0 + jo, t0); store<f32>(o1 + jo, t1); store<f32>(o2 + jo, t2); store<f32>(o3 + jo, t3);
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
      let t: f32 = accumulate ? load<f32>(o + jo) : 0;
      for (let k = 0; k < depth; k++) t += load<f32>(coef + ((<usize>(m * sm + k * sk)) << 2)) * load<f32>(src + ((<usize>(k * lds)) << 2) + jo);
      store<f32>(o + jo, t);
    }
  }
}

/** dst[d, b] = src[b, d] for a [rows, cols] block (transpose into a [cols, rows] buffer). */
export function transpose(src: usize, rows: i32, cols: i32, dst: usize): void {
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      store<f32>(dst + ((<usize>(c * rows + r)) << 2), load<f32>(src + ((<usize>(r * cols + c)) << 2)));
    }
  }
}
