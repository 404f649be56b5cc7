// The per-row work of the face margin losses (adaface, curricularFace, magface; SPEC §7) on
// GPU-resident cosines, so that a call needs no round trip to the host: the twins of
// src/losses/{adaface,curricular_face,magface}.ts's rows (float64, the references), every step
// a float pair (src/webgpu/common.wgsl) and only the results rounded to float32. Its glue is
// src/webgpu/face_margin.ts; the cross-entropy itself is src/webgpu/cross_entropy.wgsl's
// (F_HOST_TG: the targets in row_in; F_NT: the non-target transform).
//   rows: one workgroup: the batch statistic over the labelled rows (AdaFace's mean and
//         unbiased std of the clipped norms, CurricularFace's mean label cosine) and the next
//         state, into out[0..4) (pairs) and out[4..6) (float32); then each labelled row's
//         label logit and its derivative into row_in's columns 2, 3; CurricularFace's t' into
//         column 1 (the hard non-targets' a, added to nt_a) and its threshold phi_i into
//         column 4; MagFace's g_i, d g_i / d norm_i and d z_y / d norm_i into out.
//   post: one workgroup, after the cross-entropy: each row's loss (rows' column 0) into out,
//         and MagFace's norms gradient s_i ((p_y - 1) d z_y / d norm + lambda d g / d norm).
// out: [0, 4) the state (mean, std or t, 0) as pairs, [4, 6) the same as float32, then per row i
// at 8 + 4 i: (loss, g, dg, dzy).

struct FaceParams {
  n: u32,
  c: u32,
  kind: u32,      // 0 adaface, 1 curricularFace, 2 magface
  flags: u32,     // F_GRAD
  rs: u32,        // stride of row_in and rows (6)
  zero: u32,      // always 0 (src/webgpu/common.wgsl's `zero`)
  st_gpu: u32,    // 1: the state input is a float32 GPU matrix, else pairs from the host
  easy: u32,      // magface's easyMargin
  scale: f32,
  lambda: f32,    // magface's lambda
  p_m: vec2<f32>,     // adaface's margin; magface's lowerMargin
  p_h: vec2<f32>,     // adaface's h; magface's slope (upperMargin - lowerMargin) / (upperNorm - lowerNorm)
  p_alpha: vec2<f32>, // adaface's alpha, curricularFace's momentum
  p_beta: vec2<f32>,  // 1 - p_alpha
  p_eps: vec2<f32>,   // adaface's eps
  p_lo: vec2<f32>,    // adaface's 0.001; magface's lowerNorm
  p_hi: vec2<f32>,    // adaface's 100; magface's upperNorm
  p_iu2: vec2<f32>,   // magface's 1 / upperNorm^2
  // #include "margin_params.wgsl"
}
@group(0) @binding(0) var<uniform> P: FaceParams;

// #include "margin.wgsl"

@group(0) @binding(1) var<storage, read> cosv: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> norms: array<f32>;
@group(0) @binding(4) var<storage, read> st: array<f32>;
@group(0) @binding(5) var<storage, read_write> row_in: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read> rows_ce: array<f32>;
@group(0) @binding(8) var<storage, read_write> gn: array<f32>;

const K_ADA: u32 = 0u;
const K_CURRICULAR: u32 = 1u;
const K_MAG: u32 = 2u;

var<workgroup> red2: array<vec2<f32>, WG>;

// Sum of pairs over the workgroup. Call from uniform control flow.
fn wg_sum2(v: vec2<f32>, t: u32) -> vec2<f32> {
  red2[t] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (t < s) { red2[t] = df_add(red2[t], red2[t + s]); }
    workgroupBarrier();
  }
  let r = red2[0];
  workgroupBarrier();
  return r;
}

// State value k as a pair.
fn state_in(k: u32) -> vec2<f32> {
  if (P.st_gpu != 0u) { return df(st[k]); }
  return vec2(st[2u * k], st[2u * k + 1u]);
}

fn label_cos(i: u32) -> f32 { return cosv[i * P.c + u32(labels[i])]; }

// AdaFace's clipped norm.
fn clipped(i: u32) -> vec2<f32> { return df_clamp(df(norms[i]), P.p_lo, P.p_hi); }

// Whether pair x equals float32 u (the clamp passed it), or u is NaN.
fn passed(x: vec2<f32>, u: f32) -> bool { return (x.x == u && x.y == 0.0) || u != u; }

fn put(i: u32, t: Tg) {
  row_in[i * P.rs + 2u] = t.v.x + t.v.y;
  row_in[i * P.rs + 3u] = t.d.x + t.d.y;
}

// AdaFace's target: g = clip(h (n - mean') / (std' + eps), -1, 1); x = clip(u, -1 + eps, 1 - eps);
// theta' = clip(acos x - m g, eps, pi - eps); s (cos theta' - m - m g), derivative
// s sin(theta') / sin(theta_d) (0 where a clip cut).
fn ada_target(u: f32, nc: vec2<f32>, mean: vec2<f32>, sd: vec2<f32>) -> Tg {
  let eps = P.p_eps;
  let g = df_clamp(df_div(df_mul(P.p_h, df_add(nc, -mean)), df_add(sd, eps)), df(-1.0), df(1.0));
  let x = df_clamp(df(u), df_add(df(-1.0), eps), df_add(df(1.0), -eps));
  let mg = df_mul(P.p_m, g);
  let th = df_add(df_acos(x), -mg);
  let tc = df_clamp(th, eps, df_add(2.0 * PIO2, -eps));
  let sc = df_sincos(tc);
  let v = df_mul(df(P.scale), df_add(sc.c, -df_add(P.p_m, mg)));
  var slope = df(1.0);
  if (P.tg_const == 0u) {
    slope = df(0.0);
    if (all(tc == th)) { slope = df_div(sc.s, df_sin_of(df_clamp(x, -DC, DC))); }
  }
  var d = df(0.0);
  if (passed(x, u)) { d = df_mul(df(P.scale), slope); }
  return Tg(v, d);
}

@compute @workgroup_size(WG)
fn rows(@builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let n = P.n;
  // The statistic: its count, sum and (AdaFace) the squared deviations' sum.
  var cnt = 0.0;
  var s1 = df(0.0);
  for (var i = t; i < n; i += WG) {
    if (labels[i] < 0) { continue; }
    cnt += 1.0;
    if (P.kind == K_ADA) { s1 = df_add(s1, clipped(i)); }
    if (P.kind == K_CURRICULAR) { s1 = df_add(s1, df(clamp(label_cos(i), -1.0, 1.0))); }
  }
  let k = wg_sum(cnt, t);
  let mu = df_div(wg_sum2(s1, t), df(max(k, 1.0)));
  var q = df(0.0);
  if (P.kind == K_ADA) {
    for (var i = t; i < n; i += WG) {
      if (labels[i] < 0) { continue; }
      let d = df_add(clipped(i), -mu);
      q = df_add(q, df_mul(d, d));
    }
  }
  let qs = wg_sum2(q, t);
  var s0 = state_in(0u);
  var s1n = state_in(1u);
  if (P.kind == K_MAG) {
    s0 = df(0.0);
    s1n = df(0.0);
  }
  if (P.kind != K_MAG && k > 0.0) { s0 = df_add(df_mul(P.p_alpha, mu), df_mul(P.p_beta, s0)); }
  if (P.kind == K_ADA && k > 1.0) {
    s1n = df_add(df_mul(P.p_alpha, df_sqrt(df_div(qs, df(k - 1.0)))), df_mul(P.p_beta, s1n));
  }
  if (P.kind == K_CURRICULAR) { s1n = df(0.0); }
  if (t == 0u) {
    out[0] = s0.x;
    out[1] = s0.y;
    out[2] = s1n.x;
    out[3] = s1n.y;
    out[4] = s0.x + s0.y;
    out[5] = s1n.x + s1n.y;
  }
  for (var i = t; i < n; i += WG) {
    let o = 8u + 4u * i;
    out[o + 1u] = 0.0;
    out[o + 2u] = 0.0;
    out[o + 3u] = 0.0;
    if (P.kind == K_CURRICULAR) { row_in[i * P.rs + 1u] = s0.x + s0.y; }
    if (labels[i] < 0) { continue; }
    let u = label_cos(i);
    if (P.kind == K_ADA) {
      put(i, ada_target(u, clipped(i), s0, s1n));
    } else if (P.kind == K_CURRICULAR) {
      put(i, margin_target(df(u)));
      // The hard negatives' threshold cos(theta_y + m), before ArcFace's branch.
      let x = df_clamp(df(u), df(-1.0), df(1.0));
      let thr = df_add(df_mul(x, P.tg_cm), -df_mul(df_sin_of(x), P.tg_sm));
      row_in[i * P.rs + 4u] = thr.x + thr.y;
    } else {
      mag_row(i, u);
    }
  }
}

// MagFace's row: a = clamp(norm, l, u), m(a) = slope (a - l) + lowerMargin; target
// s cos(theta + m(a)) (easyMargin: where x > 0, else s x; else ArcFace's threshold rule),
// g = a / u^2 + 1 / a and the derivatives in the norm (0 where the clamp cut it).
fn mag_row(i: u32, u: f32) {
  let norm = norms[i];
  let a = df_clamp(df(norm), P.p_lo, P.p_hi);
  let inside = passed(a, norm);
  let m = df_add(df_mul(P.p_h, df_add(a, -P.p_lo)), P.p_m);
  let sc = df_sincos(m);
  let x = df_clamp(df(u), df(-1.0), df(1.0));
  let sn = df_sin_of(x);
  let xd = df_clamp(x, -DC, DC);
  var value = df_add(df_mul(x, sc.c), -df_mul(sn, sc.s));
  var dx = df_add(sc.c, df_div(df_mul(sc.s, xd), df_sin_of(xd)));
  var dm = -df_add(df_mul(x, sc.s), df_mul(sn, sc.c));
  var cut = !df_gt(x, -sc.c);
  if (P.easy != 0u) { cut = !(x.x > 0.0); }
  if (cut) {
    dx = df(1.0);
    if (P.easy != 0u) {
      value = x;
      dm = df(0.0);
    } else {
      value = df_add(x, -df_mul(m, sc.s));
      dm = -df_add(sc.s, df_mul(m, sc.c));
    }
  }
  var d = df(0.0);
  if (passed(x, u)) { d = df_mul(df(P.scale), select(dx, df(1.0), P.tg_const != 0u)); }
  put(i, Tg(df_mul(df(P.scale), value), d));
  let o = 8u + 4u * i;
  let ia = df_div(df(1.0), a);
  let g = df_add(df_mul(a, P.p_iu2), ia);
  out[o + 1u] = g.x + g.y;
  if (inside) {
    let dg = df_add(P.p_iu2, -df_mul(ia, ia));
    let dz = df_mul(df_mul(df(P.scale), dm), P.p_h);
    out[o + 2u] = dg.x + dg.y;
    out[o + 3u] = dz.x + dz.y;
  }
}

@compute @workgroup_size(WG)
fn post(@builtin(local_invocation_index) t: u32) {
  for (var i = t; i < P.n; i += WG) {
    let o = 8u + 4u * i;
    let ce = rows_ce[i * P.rs];
    out[o] = ce;
    if (P.kind == K_MAG && (P.flags & F_GRAD) != 0u) {
      gn[i] = row_in[i * P.rs] * ((exp(-ce) - 1.0) * out[o + 3u] + P.lambda * out[o + 2u]);
    }
  }
}
