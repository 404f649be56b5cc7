// The per-row math of the face margin kinds (adaface, curricularFace, magface; SPEC §7), the
// twins of src/losses/{adaface,curricular_face,magface}.ts's rows (float64, the references), in
// float pairs, shared by src/webgpu/face_margin.wgsl (losses on cosines) and
// src/webgpu/margin_head_face.wgsl (the head). The including kernel's struct holds
// src/webgpu/face_params.wgsl's fields and `scale`, it binds `labels` (i32), `st` (the state
// input) and `fout` (the outputs: [0, 4) the state as pairs, [4, 6) as float32, then per row i
// at 8 + 4 i: (loss, g, dg, dT/dnorm)), and it defines `face_stat(i)`: row i's value of the
// batch statistic (AdaFace: its norm; CurricularFace: its label cosine), as a pair.

const K_ADA: u32 = 0u;
const K_CURRICULAR: u32 = 1u;
const K_MAG: u32 = 2u;

// #include "wg_sum2.wgsl"

// State value k as a pair.
fn state_in(k: u32) -> vec2<f32> {
  if (P.st_gpu != 0u) { return df(st[k]); }
  return vec2(st[2u * k], st[2u * k + 1u]);
}

// Whether the clamp passed u (x == u), or u is NaN.
fn passed(x: vec2<f32>, u: vec2<f32>) -> bool { return all(x == u) || is_nan(u.x); }

// AdaFace's clipped norm.
fn clipped(norm: vec2<f32>) -> vec2<f32> { return df_clamp(norm, P.p_lo, P.p_hi); }

// The statistic's value: AdaFace's clipped norm, CurricularFace's label cosine clamped to [-1, 1].
fn stat_of(i: u32) -> vec2<f32> {
  if (P.face == K_ADA) { return clipped(face_stat(i)); }
  return df_clamp(face_stat(i), df(-1.0), df(1.0));
}

// The next state (mean', std') or (t', 0) from the state input and the n rows' statistics
// (labelled rows only), for workgroup invocation t. Call from uniform control flow.
struct State { a: vec2<f32>, b: vec2<f32> }
fn next_state(n: u32, t: u32) -> State {
  var cnt = 0.0;
  var s1 = df(0.0);
  for (var i = t; i < n; i += WG) {
    if (labels[i] < 0) { continue; }
    cnt += 1.0;
    if (P.face != K_MAG) { s1 = df_add(s1, stat_of(i)); }
  }
  let k = wg_sum(cnt, t);
  let mu = df_div(wg_sum2(s1, t), df(max(k, 1.0)));
  var q = df(0.0);
  if (P.face == K_ADA) {
    for (var i = t; i < n; i += WG) {
      if (labels[i] < 0) { continue; }
      let d = df_add(stat_of(i), -mu);
      q = df_add(q, df_mul(d, d));
    }
  }
  let qs = wg_sum2(q, t);
  if (P.face == K_MAG) { return State(df(0.0), df(0.0)); }
  var a = state_in(0u);
  var b = df(0.0);
  if (P.face == K_ADA) { b = state_in(1u); }
  if (k > 0.0) { a = df_add(df_mul(P.p_alpha, mu), df_mul(P.p_beta, a)); }
  if (P.face == K_ADA && k > 1.0) {
    b = df_add(df_mul(P.p_alpha, df_sqrt(df_div(qs, df(k - 1.0)))), df_mul(P.p_beta, b));
  }
  return State(a, b);
}

// Writes the next state s into fout (invocation 0).
fn put_state(s: State, t: u32) {
  if (t != 0u) { return; }
  fout[0] = s.a.x;
  fout[1] = s.a.y;
  fout[2] = s.b.x;
  fout[3] = s.b.y;
  fout[4] = s.a.x + s.a.y;
  fout[5] = s.b.x + s.b.y;
}

// Writes row i's MagFace values g, dg/dnorm, dT/dnorm into fout (0 for the other kinds' rows).
fn put_mag(i: u32, g: vec2<f32>, dg: vec2<f32>, dz: vec2<f32>) {
  let o = 8u + 4u * i;
  fout[o + 1u] = g.x + g.y;
  fout[o + 2u] = dg.x + dg.y;
  fout[o + 3u] = dz.x + dz.y;
}

// AdaFace's target from the label cosine u and the norm: g = clip(h (clip(norm) - mean') /
// (std' + eps), -1, 1); x = clip(u, -1 + eps, 1 - eps); theta' = clip(acos x - m g, eps, pi - eps);
// s (cos theta' - m - m g), derivative s sin(theta') / sin(theta_d) (0 where a clip cut).
fn ada_target(u: vec2<f32>, norm: vec2<f32>, st: State) -> Tg {
  let eps = P.p_eps;
  let g = df_clamp(df_div(df_mul(P.p_h, df_add(clipped(norm), -st.a)), df_add(st.b, eps)), df(-1.0), df(1.0));
  let x = df_clamp(u, df_add(df(-1.0), eps), df_add(df(1.0), -eps));
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

// CurricularFace's hard negatives' threshold cos(theta_y + m) (ArcFace's margin P.tg_*, before
// its branch) of the label cosine u.
fn hard_threshold(u: vec2<f32>) -> vec2<f32> {
  let x = df_clamp(u, df(-1.0), df(1.0));
  return df_add(df_mul(x, P.tg_cm), -df_mul(df_sin_of(x), P.tg_sm));
}

// MagFace's row from the label cosine u and the norm: a = clamp(norm, l, u), m(a) = slope
// (a - l) + lowerMargin; target s cos(theta + m(a)) (easyMargin: where x > 0, else s x; else
// ArcFace's threshold rule), g = a / u^2 + 1 / a and the derivatives in the norm (0 where the
// clamp cut it).
struct Mag { t: Tg, g: vec2<f32>, dg: vec2<f32>, dz: vec2<f32> }
fn mag_target(u: vec2<f32>, norm: vec2<f32>) -> Mag {
  let a = df_clamp(norm, P.p_lo, P.p_hi);
  let m = df_add(df_mul(P.p_h, df_add(a, -P.p_lo)), P.p_m);
  let sc = df_sincos(m);
  let x = df_clamp(u, df(-1.0), df(1.0));
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
  let ia = df_div(df(1.0), a);
  var r = Mag(Tg(df_mul(df(P.scale), value), d), df_add(df_mul(a, P.p_iu2), ia), df(0.0), df(0.0));
  if (passed(a, norm)) {
    r.dg = df_add(P.p_iu2, -df_mul(ia, ia));
    r.dz = df_mul(df_mul(df(P.scale), dm), P.p_h);
  }
  return r;
}
