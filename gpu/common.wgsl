// Declarations every kernel shares, prepended to each kernel's source by gpu/build.ts.
// `Params` is the one uniform struct of every dispatch: gpu/build.ts reads its fields
// (all 4-byte scalars, in order) and generates their offsets for the host side, so the
// two sides cannot drift.

struct Params {
  n: u32,       // rows in this dispatch
  c: u32,       // columns (classes)
  d: u32,       // embedding width (heads)
  row0: u32,    // index of this dispatch's first row in the per-row arrays
  a_off: u32,   // element offset of row 0 in a
  b_off: u32,   // element offset of row 0 in b
  g_off: u32,   // element offset of row 0 in g
  h_off: u32,   // element offset of row 0 in h
  flags: u32,   // the F_* bits below
  k: u32,       // top-k (accuracy); class chunk (heads)
  rs_in: u32,   // stride of row_in
  rs_out: u32,  // stride of row_out
  eps: f32,     // label smoothing
  gamma: f32,   // focal exponent
  scale: f32,   // logit scale
  wsum: f32,    // sum of the class weights (C without weights)
  temp: f32,    // temperature (distillation)
  alpha: f32,   // distillation weight
  f0: f32,      // kernel-specific
  f1: f32,      // kernel-specific
  col0: u32,    // long rows: first column of this segment
  seg: u32,     // long rows: this segment's index
  nseg: u32,    // long rows: segments per row
  row_c: u32,   // long rows: the whole row's length (c is the segment's)
}

const F_GRAD: u32 = 1u;    // write the gradient of a
const F_CLAMP: u32 = 2u;   // clamp a to [-1, 1] first (cosines)
const F_WEIGHT: u32 = 4u;  // cls holds per-class weights
const F_TARGET: u32 = 8u;  // row_in holds the label's logit and its derivative
const F_LOG: u32 = 16u;    // log-softmax / log-target
const F_GRAD_B: u32 = 32u; // write the gradient of b

@group(0) @binding(0) var<uniform> P: Params;

const WG: u32 = 256u;
var<workgroup> red: array<f32, WG>;

// Sum of v over the workgroup (every invocation gets it). Call from uniform control flow.
fn wg_sum(v: f32, t: u32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (t < s) { red[t] = red[t] + red[t + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

// Maximum of v over the workgroup. Call from uniform control flow.
fn wg_max(v: f32, t: u32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (t < s) { red[t] = max(red[t], red[t + s]); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

// -FLT_MAX, at or below every finite float32: the start of a running maximum. (The literal
// -3.4028235e38 lies beyond it, and Tint, the WGSL compiler of Chromium and Dawn, rejects it.)
const NEG: f32 = -3.4028234e38;

// One more logit into an invocation's online (max, sum of e^(z - max)).
fn online(mt: ptr<function, f32>, st: ptr<function, f32>, z: f32) {
  if (z > *mt) {
    *st = *st * exp(*mt - z) + 1.0;
    *mt = z;
  } else {
    *st += exp(z - *mt);
  }
}

var<workgroup> redu: array<u32, WG>;

// Minimum of v over the workgroup (first indices: an invocation's candidate, or
// 0xffffffff for none). Call from uniform control flow.
fn wg_min_u32(v: u32, t: u32) -> u32 {
  redu[t] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (t < s) { redu[t] = min(redu[t], redu[t + s]); }
    workgroupBarrier();
  }
  let r = redu[0];
  workgroupBarrier();
  return r;
}

// Float pairs (the heads' exact sums and products). A uniform zero (each entry point sets
// it from P.h_off = 0): x ^ zero hides x's origin from the compiler, which would otherwise
// simplify two-sum's (a + b) - a to b (llvmpipe does).
var<private> zero: u32;
fn opq(v: f32) -> f32 { return bitcast<f32>(bitcast<u32>(v) ^ zero); }
fn opq4(v: vec4<f32>) -> vec4<f32> { return bitcast<vec4<f32>>(bitcast<vec4<u32>>(v) ^ vec4<u32>(zero)); }

// a + b = s + e exactly.
fn two_sum(a: f32, b: f32) -> vec2<f32> {
  let s = opq(a + b);
  let bp = opq(s - a);
  return vec2<f32>(s, (a - (s - bp)) + (b - bp));
}

// v = hi + lo, hi rounded to 12 significant bits (|lo| <= 2^-12 |v|): products of halves
// are exact (Veltkamp's split, by the bits).
fn split(v: f32) -> vec2<f32> {
  let h = bitcast<f32>((bitcast<u32>(v) + 0x800u) & 0xfffff000u);
  return vec2<f32>(h, v - h);
}

// Natural logarithm good to about 1 ulp (WGSL's builtin promises only an absolute
// 2^-21 near 1): x = f 2^e with f in [sqrt(1/2), sqrt(2)), log f = 2 atanh(s),
// s = (f - 1) / (f + 1), |s| < 0.172, by its odd series to s^9. x > 0, finite.
fn log_(x: f32) -> f32 {
  let fr = frexp(x);          // x = fract * 2^exp, fract in [0.5, 1)
  var f = fr.fract;
  var e = f32(fr.exp);
  if (f < 0.70710678) { f = f * 2.0; e = e - 1.0; }
  let s = (f - 1.0) / (f + 1.0);
  let s2 = s * s;
  let p = 1.0 + s2 * (0.33333333 + s2 * (0.2 + s2 * (0.14285715 + s2 * 0.11111111)));
  return e * 0.69314718 + (2.0 * s) * p + e * -1.9046542e-9;
}

// log(1 + x) for x > -1, accurate for small x: 2 atanh(s), s = x / (2 + x), by the same
// series as log_ where |s| < 0.172, else log_(1 + x). (The classic log(u) x / (u - 1),
// u = 1 + x, does not survive compilers that fold (1 + x) - 1 to x, as llvmpipe does.)
fn log1p_(x: f32) -> f32 {
  if (x < -0.29289322 || x > 0.41421356) { return log_(1.0 + x); }
  let s = x / (2.0 + x);
  let s2 = s * s;
  return (2.0 * s) * (1.0 + s2 * (0.33333333 + s2 * (0.2 + s2 * (0.14285715 + s2 * 0.11111111))));
}

// Broadcasts a value from invocation 0 to the workgroup as a uniform value.
var<workgroup> bcast: i32;
fn uniform_i32(v: i32, t: u32) -> i32 {
  if (t == 0u) { bcast = v; }
  return workgroupUniformLoad(&bcast);
}
