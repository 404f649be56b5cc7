// Declarations every kernel shares, prepended to each kernel's source by src/webgpu/build.ts.
// Each kernel family declares its own uniform struct (bound as `P`) in its own file; the
// row kernels' shared fields are src/webgpu/row_params.wgsl.

const F_GRAD: u32 = 1u;    // write the gradient of a
const F_CLAMP: u32 = 2u;   // clamp a to [-1, 1] first (cosines)
const F_WEIGHT: u32 = 4u;  // cls holds per-class weights
const F_LOG: u32 = 16u;    // log-softmax / log-target
const F_GRAD_B: u32 = 32u; // write the gradient of b
const F_HOST_TG: u32 = 64u; // cross_entropy: the label targets come from the host, in row_in
const F_NT: u32 = 128u;     // cross_entropy: the margin losses' non-target transform
const F_ROW_TG: u32 = 256u; // cross_entropy: each row's target constants in row_in (a per-row margin)
const F_TOPK: u32 = 512u;   // cross_entropy: interTopK's thresholds found on the GPU (`targets`), in h

const WG: u32 = 256u;
// The reductions below leave their result in a slot of its own (red_out, redu_out), which the next
// call writes only after its whole tree: Dawn's OpenGL ES backend emits workgroupBarrier as GLSL
// barrier() without memoryBarrierShared(), and Mesa's llvmpipe then lets a load of red[0] just
// before it happen after it, where the next call's red[t] = v (thread 0) has overwritten it: the
// invocations of the workgroup's second SIMD batch on (t >= 8) read the next call's input (seen as
// wrong multiSimilarity gradients from B = 9 and wrong crossEntropy rows (C = 100 too); docs/RUNTIMES.md).
var<workgroup> red: array<f32, WG>;
var<workgroup> red_out: f32;

// Sum of v over the workgroup (every invocation gets it). Call from uniform control flow.
fn wg_sum(v: f32, t: u32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 1u; s = s >> 1u) {
    if (t < s) { red[t] = red[t] + red[t + s]; }
    workgroupBarrier();
  }
  if (t == 0u) { red_out = red[0] + red[1]; }
  workgroupBarrier();
  let r = red_out;
  workgroupBarrier();
  return r;
}

// Maximum of v over the workgroup (NaN where any v is). Call from uniform control flow.
fn wg_max(v: f32, t: u32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 1u; s = s >> 1u) {
    if (t < s) { red[t] = maxn(red[t], red[t + s]); }
    workgroupBarrier();
  }
  if (t == 0u) { red_out = maxn(red[0], red[1]); }
  workgroupBarrier();
  let r = red_out;
  workgroupBarrier();
  return r;
}

// NaN (IEEE arithmetic, as PyTorch and the CPU backends): a NaN anywhere in a row's logits makes the
// row's loss and gradient NaN. WGSL leaves min, max, clamp and frexp of a NaN to the implementation
// (llvmpipe gives the other operand: a NaN cosine clamped to [-1, 1] became -1, a NaN label logit
// lost in the row's maximum, and its row's loss finite), so a row's maximum is taken by `maxn`
// (wg_max too), every clamp of a logit's input is `clampn` (a gradient passes it where `kept`), and
// log_ of a NaN is NaN; the sums carry a NaN logit (e^(NaN - m) is NaN; `online` adds it to its sum).
// is_nan tests the bits: a compiler may fold x != x to false.
fn is_nan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
// max(a, b), NaN where either is.
fn maxn(a: f32, b: f32) -> f32 { return select(max(a, b), a + b, is_nan(a) || is_nan(b)); }
// x clamped to [lo, hi], NaN kept.
fn clampn(x: f32, lo: f32, hi: f32) -> f32 { return select(clamp(x, lo, hi), x, is_nan(x)); }
// Whether the clamp of x to xc let x through (its gradient passes): unchanged, or NaN.
fn kept(xc: f32, x: f32) -> bool { return xc == x || is_nan(x); }

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
var<workgroup> redu_out: u32;

// Minimum of v over the workgroup (first indices: an invocation's candidate, or
// 0xffffffff for none). Call from uniform control flow.
fn wg_min_u32(v: u32, t: u32) -> u32 {
  redu[t] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 1u; s = s >> 1u) {
    if (t < s) { redu[t] = min(redu[t], redu[t + s]); }
    workgroupBarrier();
  }
  if (t == 0u) { redu_out = min(redu[0], redu[1]); }
  workgroupBarrier();
  let r = redu_out;
  workgroupBarrier();
  return r;
}

// Float pairs hi + lo (vec2<f32>, |lo| <= ulp(hi) / 2: about 48 bits), for the heads' exact
// sums and products and the label targets. A uniform zero (each entry point that uses
// pairs sets it from its struct's `zero`, always 0): x ^ zero hides x's origin from the
// compiler, which would otherwise simplify two-sum's (a + b) - a to b (llvmpipe does).
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

// a * b = p + e exactly (Dekker; p hidden from the compiler, which could otherwise fuse
// a * b into the subtraction).
fn two_prod(a: f32, b: f32) -> vec2<f32> {
  let p = opq(a * b);
  let sa = split(a);
  let sb = split(b);
  return vec2<f32>(p, ((sa.x * sb.x - p) + sa.x * sb.y + sa.y * sb.x) + sa.y * sb.y);
}

fn df_add(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let s = two_sum(a.x, b.x);
  return two_sum(s.x, s.y + (a.y + b.y));
}

fn df_mul(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let p = two_prod(a.x, b.x);
  return two_sum(p.x, p.y + (a.x * b.y + a.y * b.x));
}

fn df_div(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let q1 = a.x / b.x;
  let r = df_add(a, -df_mul(vec2<f32>(q1, 0.0), b));
  return two_sum(q1, r.x / b.x);
}

// sqrt(a), 0 for a <= 0.
fn df_sqrt(a: vec2<f32>) -> vec2<f32> {
  if (a.x <= 0.0) { return vec2<f32>(0.0); }
  let s = sqrt(a.x);
  let r = df_add(a, -two_prod(s, s));
  return two_sum(s, r.x / (2.0 * s));
}

// s += a * b (s a pair, not normalised).
fn dot_acc(s: vec2<f32>, a: f32, b: f32) -> vec2<f32> {
  let q = two_prod(a, b);
  let h = two_sum(s.x, q.x);
  return vec2<f32>(h.x, s.y + (h.y + q.y));
}

// The pair of a float32 value, and comparisons of pairs.
fn df(v: f32) -> vec2<f32> { return vec2<f32>(v, 0.0); }
fn df_gt(a: vec2<f32>, b: vec2<f32>) -> bool { return a.x > b.x || (a.x == b.x && a.y > b.y); }
fn df_max(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> { return select(b, a, df_gt(a, b)); }

// Natural logarithm good to about 1 ulp (WGSL's builtin promises only an absolute
// 2^-21 near 1): x = f 2^e with f in [sqrt(1/2), sqrt(2)), log f = 2 atanh(s),
// s = (f - 1) / (f + 1), |s| < 0.172, by its odd series to s^9. x > 0, finite; NaN gives NaN.
fn log_(x: f32) -> f32 {
  if (is_nan(x)) { return x; }
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

// (tanh u, 1 - tanh^2 u) to a few ulp for every finite u (the builtin is sinh / cosh, which
// overflows): below |u| = 0.5 its odd series to u^13, else (1 - e) / (1 + e), e = e^(-2|u|),
// with 1 - tanh^2 = 4 e / (1 + e)^2 (no cancellation as tanh -> 1).
fn tanh_(u: f32) -> vec2<f32> {
  let a = abs(u);
  if (a < 0.5) {
    let q = u * u;
    let t = u * (1.0 + q * (-0.33333333 + q * (0.13333333 + q * (-0.053968254 + q * (0.021869488 + q * (-0.0088632355 + q * 0.0035921280))))));
    return vec2(t, 1.0 - t * t);
  }
  let e = exp(-2.0 * a);
  let t = (1.0 - e) / (1.0 + e);
  return vec2(select(t, -t, u < 0.0), 4.0 * e / ((1.0 + e) * (1.0 + e)));
}
