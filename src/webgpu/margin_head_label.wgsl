// The embedding heads' per-row label terms (src/webgpu/margin_head.ts), on the GPU so that a
// call runs in one submission: the host's twins are src/losses/margin_head.ts's
// `targetFrom` (with its kinds' targets) and src/wasm/margin_head.ts's per-row steps.
// In float pairs throughout, one invocation per row:
//   label:  ||x_i||, ||W_y|| and x_i . W_y (xs, wy = W_y), a_i, u_iy = (x_i . W_y) a_i b_y,
//           and the label's logit T_i with its partial derivatives (src/webgpu/margin.wgsl; with
//           MH_ROWM each row's own margin, `row_tg`):
//           row_v slots 0, 13 .. 24;
//   bound:  one workgroup per window of W: max ||x_i|| (the first window) and the running
//           max ||W_j|| (bcls) at row_v[N MH_RS ..], for the precise mode's gate;
//   finish: from the forward's (r_i, S_i) (comb), the row loss (losses) and the
//           backward's per-row values, row_v slots 1 .. 12:
//             t = T_i - r_i, loss = log(1 + S_i e^-t), l_i = t + loss, 1 - p_y = S / (S + e^t),
//             du_iy = -s_i (1 - p_y) dT/du and the label's terms of fin_x and fin_w.
// row_v: src/webgpu/margin_head_params.wgsl.

// #include "margin_head_params.wgsl"
// #include "margin.wgsl"

@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read> wy: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<i32>;
@group(0) @binding(4) var<storage, read> scales: array<f32>;
@group(0) @binding(5) var<storage, read> comb: array<f32>;
@group(0) @binding(6) var<storage, read> bcls: array<f32>;
@group(0) @binding(7) var<storage, read_write> row_v: array<f32>;
@group(0) @binding(8) var<storage, read_write> losses: array<f32>;

const EPS: f32 = 1e-12;

fn set_pair(at: u32, v: vec2<f32>) {
  row_v[at] = v.x;
  row_v[at + 1u] = v.y;
}

fn pair_at(at: u32) -> vec2<f32> { return vec2<f32>(row_v[at], row_v[at + 1u]); }

// Invocation index (grid offset by a_off workgroups of 64).
fn item(wid: vec3<u32>, lid: u32) -> u32 { return (wid.x + P.a_off) * 64u + lid; }

// Row i's target constants: with MH_ROWM (marginHead's margin per row, ElasticFace) its own m2, m3,
// cos m2, sin m2, cos(pi - m2), m2 sin(pi - m2) as pairs, [N, 12] in `comb` (which `label` does not
// otherwise read), the host's float64 values; else the uniform's.
fn row_tg(i: u32) -> TgM {
  if ((P.flags & MH_ROWM) == 0u) { return tg_uniform(); }
  let o = 12u * i;
  var q: array<f32, 12>;
  for (var k = 0u; k < 12u; k++) { q[k] = comb[o + k]; }
  return tg_row(q);
}

// The label's logit T and dT/du, dT/d||x||, dT/d||W_y|| from xw = x_i . W_y, nx = ||x_i||,
// nw = ||W_y|| and den, the normalisations' product (u = xw / den). Cosines are taken
// by one division of xw, so that exactly (anti)parallel x_i and W_y with exact norms
// give a cosine of exactly +-1, as on the host.
struct Label { t: vec2<f32>, t1: vec2<f32>, t2: vec2<f32>, t3: vec2<f32> }
fn label_target(xw: vec2<f32>, den: vec2<f32>, nx: vec2<f32>, nw: vec2<f32>, i: u32) -> Label {
  let zero2 = df(0.0);
  if (P.tg == TG_SPHERE) {
    // u = ||x|| cos; T = ||x|| g(cos) / (1 + lambda), g = lambda cos + psi (src/losses/sphereface.ts)
    let nxe = df_max(nx, df(EPS));
    let raw = df_div(xw, df_mul(den, nxe));
    let c = df_clamp(raw, df(-1.0), df(1.0));
    let inside = all(c == raw);
    let p = psi(c);
    let g = df_add(df_mul(P.tg_a, c), p.v);
    let dg = df_add(P.tg_a, p.d);
    var t1 = zero2;
    if (inside) { t1 = df_mul(df_div(df_mul(nx, dg), nxe), P.tg_inv); }
    var t2 = g;
    if (inside && nx.x > EPS) { t2 = df_add(g, -df_mul(dg, c)); }
    return Label(df_mul(df_mul(nx, g), P.tg_inv), t1, df_mul(t2, P.tg_inv), zero2);
  }
  if (P.tg == TG_LSOFTMAX) {
    // cos = u / max(||x|| ||W_y||, 1e-12), u = xw; T = (||x|| ||W_y|| psi(cos) + beta u) / (1 + beta)
    let nn = df_mul(nx, nw);
    let dn = df_max(nn, df(EPS));
    let raw = df_div(xw, dn);
    let c = df_clamp(raw, df(-1.0), df(1.0));
    let inside = all(c == raw);
    let p = psi(c);
    var tail = p.v;
    if (inside && nn.x > EPS) { tail = df_add(tail, -df_mul(p.d, c)); }
    var t1 = P.tg_a;
    if (inside) { t1 = df_add(t1, df_div(df_mul(nn, p.d), dn)); }
    let t = df_add(df_mul(nn, p.v), df_mul(P.tg_a, xw));
    let tt = df_mul(tail, P.tg_inv);
    return Label(df_mul(t, P.tg_inv), df_mul(t1, P.tg_inv), df_mul(nw, tt), df_mul(nx, tt));
  }
  let m = margin_target_m(df_div(xw, den), row_tg(i));
  return Label(m.v, m.d, zero2, zero2);
}

@compute @workgroup_size(64)
fn label(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  zero = P.zero;
  let i = item(wid, lid);
  if (i >= P.n) { return; }
  let d = P.d;
  let y = labels[i];
  var xx = vec2<f32>(0.0);
  var ww = vec2<f32>(0.0);
  var xw = vec2<f32>(0.0);
  for (var k = 0u; k < d; k++) {
    let x = xs[i * d + k];
    xx = dot_acc(xx, x, x);
    if (y >= 0) {
      let w = wy[i * d + k];
      ww = dot_acc(ww, w, w);
      xw = dot_acc(xw, x, w);
    }
  }
  let nx = df_sqrt(two_sum(xx.x, xx.y));
  let nw = df_sqrt(two_sum(ww.x, ww.y));
  // a_i = 1 / max(||x_i||, 1e-12) where x is normalised; den = its product with W_y's.
  var nxe = df(1.0);
  if ((P.flags & MH_NORMX) != 0u) { nxe = df_max(nx, df(EPS)); }
  var den = nxe;
  if ((P.flags & MH_NORMW) != 0u) { den = df_mul(den, df_max(nw, df(EPS))); }
  let base = i * MH_RS;
  let a = df_div(df(1.0), nxe);
  row_v[base] = a.x + a.y;
  set_pair(base + 21u, nx);
  set_pair(base + 23u, nw);
  var l = Label(df(0.0), df(0.0), df(0.0), df(0.0));
  if (y >= 0) { l = label_target(two_sum(xw.x, xw.y), den, nx, nw, i); }
  set_pair(base + 13u, l.t);
  set_pair(base + 15u, l.t1);
  set_pair(base + 17u, l.t2);
  set_pair(base + 19u, l.t3);
  if ((P.flags & MH_NT) != 0u) { set_pair(base + 25u, df_div(two_sum(xw.x, xw.y), den)); }
}

@compute @workgroup_size(WG)
fn bound(@builtin(local_invocation_index) t: u32) {
  let o = P.n * MH_RS;
  var mw = 0.0;
  for (var j = t; j < P.k; j += WG) { mw = max(mw, bcls[4u * j + 2u] + bcls[4u * j + 3u]); }
  mw = wg_max(mw, t);
  var mx = 0.0;
  if (P.g_off == 0u) {
    for (var i = t; i < P.n; i += WG) { mx = max(mx, row_v[i * MH_RS + 21u] + row_v[i * MH_RS + 22u]); }
  }
  mx = wg_max(mx, t);
  if (t == 0u) {
    if (P.g_off == 0u) {
      row_v[o] = mx;
      row_v[o + 1u] = mw;
    } else {
      row_v[o + 1u] = max(row_v[o + 1u], mw);
    }
  }
}

@compute @workgroup_size(64)
fn finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  zero = P.zero;
  let i = item(wid, lid);
  if (i >= P.n) { return; }
  let base = i * MH_RS;
  let y = labels[i];
  let r = comb[2u * i];
  let S = comb[2u * i + 1u];
  // The loss relative to r (float32 logits of 1e4 differ in their last bits: t from the pair T).
  var loss = 0.0;
  var lse = 0.0;
  var om = 0.0;
  if (y >= 0 && S != 0.0) {
    let T = pair_at(base + 13u);
    let t = (T.x - r) + T.y;
    let ey = exp(t);
    if (t < -80.0) { loss = -t + log_(S); } else { loss = log1p_(S / ey); }
    // l = log(S + e^t), from whichever side is small (S >= 1: it holds the row's maximum),
    // not as t + loss, which cancels when t << 0.
    if (t > 0.0) { lse = t + loss; } else { lse = log_(S + ey); }
    om = S / (S + ey);
  }
  losses[i] = loss;
  if ((P.flags & F_GRAD) == 0u) { return; }
  var si = 0.0;
  if (y >= 0) { si = scales[i]; }
  let dzy = df(-si * om);
  let t1 = pair_at(base + 15u);
  let nx = pair_at(base + 21u);
  let nw = pair_at(base + 23u);
  row_v[base + 1u] = r;
  row_v[base + 2u] = lse;
  row_v[base + 3u] = si * P.scale;
  let dt1 = df_mul(dzy, t1);
  row_v[base + 4u] = dt1.x + dt1.y;
  // The label's own terms where a side is not normalised (they can nearly cancel against
  // the rest of the row's gradient: pairs).
  if ((P.flags & MH_NORMX) == 0u) {
    var by = df(1.0);
    if ((P.flags & MH_NORMW) != 0u) { by = df_div(df(1.0), df_max(nw, df(EPS))); }
    set_pair(base + 5u, df_mul(dt1, by));
    var fx = df(0.0);
    if (nx.x > 0.0) { fx = df_div(df_mul(dzy, pair_at(base + 17u)), nx); }
    set_pair(base + 7u, fx);
  }
  if ((P.flags & MH_NORMW) == 0u) {
    set_pair(base + 9u, df_mul(dt1, df(row_v[base])));
    var hw = df(0.0);
    if (nw.x > 0.0) { hw = df_div(df_mul(dzy, pair_at(base + 19u)), nw); }
    set_pair(base + 11u, hw);
  }
}
