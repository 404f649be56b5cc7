// Row-vector helpers of the metric-learning kernels (centerLoss, featureDiversity,
// centerRegularization, hnmContrastive): dot products, squared distances and norms of
// float32 rows, and the updates of their gradients.
//
// Dot products and distances run in float64 (f64x2): a product or a difference of two
// float32 values is exact there, so these O(rows * d) sums carry only float64 rounding
// (the O(n^2 d) products of the losses run in float32 through assembly/gemm.ts).

// @ts-ignore: decorator
@inline function lo(v: v128): v128 {
  return f64x2.promote_low_f32x4(v);
}

// @ts-ignore: decorator
@inline function hi(v: v128): v128 {
  return f64x2.promote_low_f32x4(i32x4.shuffle(v, v, 2, 3, 0, 1));
}

// @ts-ignore: decorator
@inline function hsum64(v: v128): f64 {
  return f64x2.extract_lane(v, 0) + f64x2.extract_lane(v, 1);
}

/** sum_k a[k] b[k] in float64. */
export function rowDot(a: usize, b: usize, d: i32): f64 {
  let s0 = f64x2.splat(0), s1 = s0;
  let k = 0;
  for (; k + 4 <= d; k += 4) {
    const o = (<usize>k) << 2;
    const u = v128.load(a + o), v = v128.load(b + o);
    s0 = f64x2.add(s0, f64x2.mul(lo(u), lo(v)));
    s1 = f64x2.add(s1, f64x2.mul(hi(u), hi(v)));
  }
  let s = hsum64(f64x2.add(s0, s1));
  for (; k < d; k++) s += <f64>load<f32>(a + ((<usize>k) << 2)) * <f64>load<f32>(b + ((<usize>k) << 2));
  return s;
}

/** sum_k (a[k] - b[k])^2 in float64. */
export function rowSqDist(a: usize, b: usize, d: i32): f64 {
  let s0 = f64x2.splat(0), s1 = s0;
  let k = 0;
  for (; k + 4 <= d; k += 4) {
    const o = (<usize>k) << 2;
    const u = v128.load(a + o), v = v128.load(b + o);
    const e0 = f64x2.sub(lo(u), lo(v)), e1 = f64x2.sub(hi(u), hi(v));
    s0 = f64x2.add(s0, f64x2.mul(e0, e0));
    s1 = f64x2.add(s1, f64x2.mul(e1, e1));
  }
  let s = hsum64(f64x2.add(s0, s1));
  for (; k < d; k++) {
    const e = <f64>load<f32>(a + ((<usize>k) << 2)) - <f64>load<f32>(b + ((<usize>k) << 2));
    s += e * e;
  }
  return s;
}

/** out[k] += s (a[k] - b[k]) (float32; out may be neither a nor b). */
export function rowAddDiff(out: usize, a: usize, b: usize, d: i32, s: f32): void {
  const vs = f32x4.splat(s);
  let k = 0;
  for (; k + 4 <= d; k += 4) {
    const o = (<usize>k) << 2;
    v128.store(out + o, f32x4.add(v128.load(out + o), f32x4.mul(vs, f32x4.sub(v128.load(a + o), v128.load(b + o)))));
  }
  for (; k < d; k++) {
    const o = (<usize>k) << 2;
    store<f32>(out + o, load<f32>(out + o) + s * (load<f32>(a + o) - load<f32>(b + o)));
  }
}

/**
 * Normalises `rows` rows of d floats as `F.normalize` does: out_r = src_r / max(||src_r||, 1e-12),
 * the norm in float64; inv[r] (float32, when not 0) gets the factor and inv64[r] (float64,
 * when not 0) too. out may equal src.
 */
export function normalize_rows(src: usize, rows: i32, d: i32, out: usize, inv: usize, inv64: usize): void {
  for (let r = 0; r < rows; r++) {
    const o = (<usize>r * <usize>d) << 2;
    const f = 1 / max(Math.sqrt(rowDot(src + o, src + o, d)), 1e-12);
    const f32 = <f32>f;
    for (let k = 0; k < d; k++) store<f32>(out + o + ((<usize>k) << 2), <f32>(<f64>load<f32>(src + o + ((<usize>k) << 2)) * f));
    if (inv) store<f32>(inv + ((<usize>r) << 2), f32);
    if (inv64) store<f64>(inv64 + ((<usize>r) << 3), f);
  }
}
