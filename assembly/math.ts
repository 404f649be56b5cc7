// Vectorised exp and log for f32x4, written once and shared by every kernel.
//
// The constants live in a small table in memory and are loaded with
// `v128.load32_splat` where they are used: V8 re-materialises `v128.const` inside
// hot loops, and loads from a table were 1.3-1.8x faster there (shared/PERF-NOTES.md).
//
// Measured maximum relative error over float32 inputs (tests/math_test.ts):
// see the table in docs/BACKENDS.md (exp on [-87, 88], log on positive floats).

// exp: x = n ln2 + r, |r| <= ln2/2, e^x = 2^n p(r) with p a degree-5 near-minimax
// polynomial with p(0) = 1 exactly, so e^0 = 1 (a row's maximum contributes exactly 1),
// fitted for relative error: 9.2e-8 in exact arithmetic, 1.7e-7 in float32.
// n is rounded to nearest by adding the shifter 1.5 * 2^23 + 127, which also leaves
// n + 127 (the biased exponent of 2^n) in the low mantissa bits of t, so that 2^n
// is t shifted left by 23. ln2 is split in two (Cody-Waite) so r is exact.
const EXP: usize = memory.data<f32>([
  1.4426950408889634, // 0: log2(e)
  12583039.0, // 4: 1.5 * 2^23 + 127, the round-to-nearest shifter with the exponent bias
  0.693359375, // 8: ln2 high part (exact in 9 bits)
  -2.12194440e-4, // 12: ln2 low part
  1.0, // 16: p0
  0.9999997019767761, // 20: p1
  0.4999915063381195, // 24: p2
  0.1666763573884964, // 28: p3
  0.04189791530370712, // 32: p4
  0.008290302939713001, // 36: p5
  -64.0, // 40: softmax clamp: e^-64 = 1.6e-28 is as good as 0 next to the row maximum's 1,
  //         and clamping there keeps every scaled gradient value clear of float32 denormals
  -87.0, // 44: general clamps: e^-87 = 1.6e-38 is the smallest normal result,
  88.0, // 48: e^88 = 1.65e38 the largest
], 16);

/**
 * a * b + c. The "relaxed" build (ASC_FEATURE_RELAXED_SIMD) uses relaxed_madd, fused
 * where the CPU can (V8: +22% exp throughput here); the plain build multiplies and adds
 * (faster under JavaScriptCore, which is 20% slower with relaxed_madd).
 */
// @ts-ignore: decorator
@inline export function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

/** c - a * b, fused in the relaxed build. */
// @ts-ignore: decorator
@inline export function nmadd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_nmadd(a, b, c);
  return f32x4.sub(c, f32x4.mul(a, b));
}

/** The table's constant i (its float at EXP + 4 i) in every lane. */
// @ts-ignore: decorator
@inline export function expK(i: i32): v128 {
  return v128.load32_splat(EXP + (<usize>i << 2));
}

/** e^x for x already in [-87, 88]: range reduction, polynomial, scale by 2^n. */
// @ts-ignore: decorator
@inline function expCore(x: v128): v128 {
  return expCoreK(x, expK(0), expK(1), expK(2), expK(3), expK(4), expK(5), expK(6), expK(7), expK(8), expK(9));
}

/**
 * `expCore` with the table's constants 0 .. 9 given: a loop that stores between its
 * exponentials loads them once, before it (V8 loads them again after every store to memory).
 */
// @ts-ignore: decorator
@inline function expCoreK(x: v128, k0: v128, k1: v128, k2: v128, k3: v128, k4: v128, k5: v128, k6: v128, k7: v128, k8: v128, k9: v128): v128 {
  const t = madd(x, k0, k1);
  const n = f32x4.sub(t, k1);
  const r = nmadd(n, k3, nmadd(n, k2, x));
  let p = madd(k9, r, k8);
  p = madd(p, r, k7);
  p = madd(p, r, k6);
  p = madd(p, r, k5);
  p = madd(p, r, k4);
  return f32x4.mul(p, i32x4.shl(t, 23));
}

/** `expNeg` with the table's constants 0 .. 10 given (`expK(i)`, loaded before a loop). */
// @ts-ignore: decorator
@inline export function expNegK(x: v128, k0: v128, k1: v128, k2: v128, k3: v128, k4: v128, k5: v128, k6: v128, k7: v128, k8: v128, k9: v128, k10: v128): v128 {
  return expCoreK(f32x4.pmax(x, k10), k0, k1, k2, k3, k4, k5, k6, k7, k8, k9);
}

/**
 * e^x for softmax arguments x = z - max <= 0 (so no upper clamp): inputs below -64
 * give e^-64 = 1.6e-28 (see the table). NaN stays NaN.
 */
// @ts-ignore: decorator
@inline export function expNeg(x: v128): v128 {
  return expCore(f32x4.pmax(x, v128.load32_splat(EXP + 40)));
}

/** e^x for any x: clamped to [e^-87, e^88], NaN stays NaN. */
// @ts-ignore: decorator
@inline export function expv(x: v128): v128 {
  return expCore(f32x4.pmin(f32x4.pmax(x, v128.load32_splat(EXP + 44)), v128.load32_splat(EXP + 48)));
}

// log: x = 2^e m with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m-1)/(m+1),
// |s| <= 0.1716, by its odd series to s^9 (truncation error below 1e-9).
const LOG: usize = memory.data<f32>([
  0.6666666666666666, // 0: 2/3
  0.4, // 1: 2/5
  0.2857142857142857, // 2: 2/7
  0.2222222222222222, // 3: 2/9
  0.693359375, // 4: ln2 high
  -2.12194440e-4, // 5: ln2 low
  1.17549435e-38, // 6: smallest normal float32
  8388608.0, // 7: 2^23, scales subnormals up
], 16);

/** log(x) for four floats: -inf at 0, NaN below 0, +inf at +inf. */
// @ts-ignore: decorator
@inline export function logv(x: v128): v128 {
  // Subnormals: multiply by 2^23 and take 23 off the exponent.
  const sub = f32x4.lt(x, v128.load32_splat(LOG + 24));
  const xs = v128.bitselect(f32x4.mul(x, v128.load32_splat(LOG + 28)), x, sub);
  const bias = v128.bitselect(i32x4.splat(127 + 23), i32x4.splat(127), sub);
  // Split so that m is in [sqrt(1/2), sqrt(2)): subtracting the bits of sqrt(1/2)
  // (0x3f3504f3) before taking the exponent moves the cut point there.
  const shifted = i32x4.sub(xs, i32x4.splat(0x3f3504f3));
  const e = i32x4.shr_s(shifted, 23);
  const m = i32x4.add(v128.and(shifted, i32x4.splat(0x007fffff)), i32x4.splat(0x3f3504f3));
  const ef = f32x4.convert_i32x4_s(i32x4.sub(i32x4.add(e, i32x4.splat(127)), bias));
  const one = f32x4.splat(1.0);
  const s = f32x4.div(f32x4.sub(m, one), f32x4.add(m, one));
  const s2 = f32x4.mul(s, s);
  let q = f32x4.add(f32x4.mul(v128.load32_splat(LOG + 12), s2), v128.load32_splat(LOG + 8));
  q = f32x4.add(f32x4.mul(q, s2), v128.load32_splat(LOG + 4));
  q = f32x4.add(f32x4.mul(q, s2), v128.load32_splat(LOG));
  // 2s + s * s2 * q = 2 atanh(s)
  const lm = f32x4.add(f32x4.add(s, s), f32x4.mul(f32x4.mul(s, s2), q));
  let r = f32x4.add(f32x4.mul(ef, v128.load32_splat(LOG + 20)), lm);
  r = f32x4.add(f32x4.mul(ef, v128.load32_splat(LOG + 16)), r);
  // Special values: 0 -> -inf, negative or NaN -> NaN, +inf -> +inf.
  r = v128.bitselect(f32x4.splat(-Infinity), r, f32x4.eq(x, f32x4.splat(0)));
  r = v128.bitselect(f32x4.splat(NaN), r, v128.not(f32x4.ge(x, f32x4.splat(0))));
  return v128.bitselect(x, r, f32x4.eq(x, f32x4.splat(Infinity)));
}

// expm1: for |x| <= 0.5 its Taylor polynomial to x^8 (relative error below 2e-8 plus
// rounding), beyond that e^x - 1, where no cancellation is left (|e^x - 1| >= 0.39).
const EXPM1: usize = memory.data<f32>([
  0.5, 0.16666666666666666, 0.041666666666666664, 0.008333333333333333,
  0.001388888888888889, 0.0001984126984126984, 0.0000248015873015873,
], 16);

/** (e^x - 1 - x) / x^2 = 1/2 + x/6 + x^2/24 + ... for four floats with |x| <= 0.5. */
// @ts-ignore: decorator
@inline export function expm1Tail(x: v128): v128 {
  let p = madd(v128.load32_splat(EXPM1 + 24), x, v128.load32_splat(EXPM1 + 20));
  p = madd(p, x, v128.load32_splat(EXPM1 + 16));
  p = madd(p, x, v128.load32_splat(EXPM1 + 12));
  p = madd(p, x, v128.load32_splat(EXPM1 + 8));
  p = madd(p, x, v128.load32_splat(EXPM1 + 4));
  return madd(p, x, v128.load32_splat(EXPM1));
}

/** e^x - 1 for four floats with |x| <= 0.5, accurate relative to itself near 0. */
// @ts-ignore: decorator
@inline export function expm1Near(x: v128): v128 {
  // x + x^2 (1/2 + x/6 + ...)
  return madd(f32x4.mul(x, x), expm1Tail(x), x);
}

/** Scalar float32 exp through the vector code, for loop tails (same numerics). */
// @ts-ignore: decorator
@inline export function exp1(x: f32): f32 {
  return f32x4.extract_lane(expv(f32x4.splat(x)), 0);
}

/** Scalar `expNeg` for loop tails. */
// @ts-ignore: decorator
@inline export function expNeg1(x: f32): f32 {
  return f32x4.extract_lane(expNeg(f32x4.splat(x)), 0);
}

/** Scalar float32 log through the vector code, for loop tails (same numerics). */
// @ts-ignore: decorator
@inline export function log1(x: f32): f32 {
  return f32x4.extract_lane(logv(f32x4.splat(x)), 0);
}
