// The label targets of the margin losses and heads, evaluated on the GPU so that a call
// needs no round trip to the host between reading the label's cosine and using its
// target. They are the twins of src/losses/{arcface,cosface,normface,combined_margin,
// margin_head,sphereface,lsoftmax}.ts (float64, the references): every step here is a
// float pair (about 48 bits, src/webgpu/common.wgsl) and only the results are rounded to
// float32, so a target logit is as good as the host's float64 value rounded once. (WGSL's
// builtin sin, cos and acos promise far less: an absolute 2^-11, or 4096 ulp.)
// Included by src/webgpu/cross_entropy.wgsl and src/webgpu/margin_head_label.wgsl, whose structs hold
// the fields of src/webgpu/margin_params.wgsl and `scale`.

const TG_NONE: u32 = 0u;     // no target: the label's logit is like the others
const TG_COS: u32 = 1u;      // phi = cos(theta + m2) - m3 from cos and sin (m1 = 1)
const TG_ANGLE: u32 = 2u;    // phi = cos(m1 theta + m2) - m3 through theta = acos(cos)
const TG_SPHERE: u32 = 3u;   // SphereFace: ||x|| (lambda cos + psi) / (1 + lambda)
const TG_LSOFTMAX: u32 = 4u; // L-Softmax: (||x|| ||W_y|| psi + beta x.W_y) / (1 + beta)
const TG_B_NONE: u32 = 0u;
const TG_B_THRESHOLD: u32 = 1u;
const TG_B_EASY: u32 = 2u;

const PIO2 = vec2<f32>(0x1.921fb6p+0f, -0x1.777a5cp-25f); // pi / 2
const DC = vec2<f32>(0x1.ffffdep-1f, 0x1.c842fap-27f);    // 1 - 1e-6 (as the float64 1 - 1e-6)

struct SinCos { s: vec2<f32>, c: vec2<f32> }

// sin and cos of a pair: a = k pi/2 + r with |r| <= pi/4, then the Taylor series of sin r
// (to r^15 / 15!) and cos r (to r^14 / 14!) by Horner, each term under 1e-14.
fn df_sincos(a: vec2<f32>) -> SinCos {
  let k = round(a.x / PIO2.x);
  let r = df_add(a, -df_mul(df(k), PIO2));
  let r2 = df_mul(r, r);
  var s = df(1.0);
  var c = df(1.0);
  for (var j = 7; j >= 1; j--) {
    let n = f32(2 * j);
    s = df_add(df(1.0), -df_div(df_mul(r2, s), df(n * (n + 1.0))));
    c = df_add(df(1.0), -df_div(df_mul(r2, c), df((n - 1.0) * n)));
  }
  s = df_mul(r, s);
  let q = i32(k) & 3;
  if (q == 0) { return SinCos(s, c); }
  if (q == 1) { return SinCos(c, -s); }
  if (q == 2) { return SinCos(-s, -c); }
  return SinCos(-c, s);
}

// asin(v) for v in [0, sqrt(1/2)] (where cos >= sqrt(1/2)): Newton's method on sin from
// float32's asin, three steps (quadratic convergence from WGSL's 4096 ulp).
fn df_asin(v: vec2<f32>) -> vec2<f32> {
  var h = df(asin(v.x));
  for (var k = 0; k < 3; k++) {
    let sc = df_sincos(h);
    h = df_add(h, -df_div(df_add(sc.s, -v), sc.c));
  }
  return h;
}

// acos(x) for x in [-1, 1], as twice the half angle h: sin h = sqrt((1 - x) / 2) and
// cos h = sqrt((1 + x) / 2) keep their accuracy near +-1 (1 -+ x is exact in pairs); h is
// taken from the smaller of the two.
fn df_acos(x: vec2<f32>) -> vec2<f32> {
  let sh = df_sqrt(0.5 * df_add(df(1.0), -x));
  let ch = df_sqrt(0.5 * df_add(df(1.0), x));
  if (df_gt(sh, ch)) { return 2.0 * df_add(PIO2, -df_asin(ch)); }
  return 2.0 * df_asin(sh);
}

// x clamped to [lo, hi], NaN kept (common.wgsl's clampn: a compiler may make the tests below a min and max).
fn df_clamp(x: vec2<f32>, lo: vec2<f32>, hi: vec2<f32>) -> vec2<f32> {
  if (is_nan(x.x)) { return x; }
  if (df_gt(x, hi)) { return hi; }
  if (df_gt(lo, x)) { return lo; }
  return x;
}

// sqrt(1 - x^2) as sqrt((1 - x)(1 + x)), accurate near +-1.
fn df_sin_of(x: vec2<f32>) -> vec2<f32> {
  return df_sqrt(df_mul(df_add(df(1.0), -x), df_add(df(1.0), x)));
}

// A target and its derivative.
struct Tg { v: vec2<f32>, d: vec2<f32> }

// The target's constants (src/webgpu/margin_params.wgsl's pairs): the uniform's, or one row's own
// (the heads' per-row margins, src/webgpu/margin_head_label.wgsl).
struct TgM { m1: vec2<f32>, m2: vec2<f32>, m3: vec2<f32>, cm: vec2<f32>, sm: vec2<f32>, th: vec2<f32>, mm: vec2<f32> }
fn tg_uniform() -> TgM { return TgM(P.tg_m1, P.tg_m2, P.tg_m3, P.tg_cm, P.tg_sm, P.tg_th, P.tg_mm); }

// One row's own constants (a per-row margin, ElasticFace): m2, m3, cos m2, sin m2, cos(pi - m2),
// m2 sin(pi - m2) as six (hi, lo) pairs, the host's float64 values (src/webgpu/margin.ts's
// `rowMarginPairs`); m1 the uniform's.
fn tg_row(q: array<f32, 12>) -> TgM {
  return TgM(P.tg_m1, vec2<f32>(q[0], q[1]), vec2<f32>(q[2], q[3]), vec2<f32>(q[4], q[5]), vec2<f32>(q[6], q[7]),
    vec2<f32>(q[8], q[9]), vec2<f32>(q[10], q[11]));
}

// phi(x) and d phi / dx for a cosine x in [-1, 1] (src/losses/margin.ts's target
// functions): cos(m1 theta + m2) - m3 with ArcFace's threshold branch (x > cos(pi - m2),
// else x - m2 sin(pi - m2)) or its easy margin (x > 0, else x). The derivative is taken
// at x clamped to [-1 + 1e-6, 1 - 1e-6] (finite at +-1, as on the host).
fn phi(x: vec2<f32>) -> Tg { return phi_m(x, tg_uniform()); }

fn phi_m(x: vec2<f32>, m: TgM) -> Tg {
  if (P.tg_branch == TG_B_THRESHOLD && !df_gt(x, m.th)) { return Tg(df_add(x, -m.mm), df(1.0)); }
  if (P.tg_branch == TG_B_EASY && !(x.x > 0.0)) { return Tg(x, df(1.0)); }
  let xd = df_clamp(x, -DC, DC);
  let sd = df_sin_of(xd);
  if (P.tg == TG_COS) {
    // cos(theta + m2) = x cos m2 - sin(theta) sin m2, d/dx = cos m2 + xd sin m2 / sin(theta_d)
    let v = df_add(df_mul(x, m.cm), -df_add(df_mul(df_sin_of(x), m.sm), m.m3));
    return Tg(v, df_add(m.cm, df_div(df_mul(xd, m.sm), sd)));
  }
  // d/dx = m1 sin(m1 theta_d + m2) / sin(theta_d)
  let th = df_acos(x);
  var thd = th;
  if (any(xd != x)) { thd = df_acos(xd); }
  let v = df_add(df_sincos(df_add(df_mul(m.m1, th), m.m2)).c, -m.m3);
  let d = df_div(df_mul(m.m1, df_sincos(df_add(df_mul(m.m1, thd), m.m2)).s), sd);
  return Tg(v, d);
}

// The target logit s phi(x) and its derivative w.r.t. the unclamped u (0 where the clamp to
// [-1, 1] cut u; s with marginGrad "constant"), for TG_COS and TG_ANGLE.
fn margin_target(u: vec2<f32>) -> Tg { return margin_target_m(u, tg_uniform()); }

fn margin_target_m(u: vec2<f32>, m: TgM) -> Tg {
  let x = df_clamp(u, df(-1.0), df(1.0));
  let t = phi_m(x, m);
  var d = df(0.0);
  if (all(x == u) || is_nan(u.x)) { d = df_mul(df(P.scale), select(t.d, df(1.0), P.tg_const != 0u)); }
  return Tg(df_mul(df(P.scale), t.v), d);
}

// SphereFace's and L-Softmax's psi(theta) = (-1)^k cos(m theta) - 2k for a cosine c in
// [-1, 1], k = floor(m theta / pi) (no gradient through k; k = m at c = -1), cos(m theta) =
// T_m(c) by the Chebyshev recurrence; and d psi / dc.
fn psi(c: vec2<f32>) -> Tg {
  let m = P.tg_m;
  var k = m;
  if (df_gt(c, df(-1.0))) {
    let q = df_div(df_mul(df(f32(m)), df_acos(c)), 2.0 * PIO2);
    k = u32(floor(q.x));
    if (f32(k) == q.x && q.y < 0.0) { k -= 1u; }
  }
  // T_0 = 1, T_1 = c, T_{j+1} = 2c T_j - T_{j-1}, and the derivatives alongside.
  var t0 = df(1.0);
  var t1 = c;
  var d0 = df(0.0);
  var d1 = df(1.0);
  for (var j = 1u; j < m; j++) {
    let t2 = df_add(df_mul(2.0 * c, t1), -t0);
    let d2 = df_add(df_add(2.0 * t1, df_mul(2.0 * c, d1)), -d0);
    t0 = t1;
    t1 = t2;
    d0 = d1;
    d1 = d2;
  }
  let sg = select(1.0, -1.0, (k & 1u) == 1u);
  return Tg(df_add(sg * t1, df(-2.0 * f32(k))), sg * d1);
}
