// The `experts` family (src/webgpu/experts.ts: mixOutputs, iclMoe, physMoe's expert terms), the math
// of assembly/experts.ts in float32: E expert logit matrices stacked in z [E, B, C], one
// softmax per expert and row, q_e = softmax(z_e) (p_e = softmax(z_e + s) for the CE term with
// a log prior s, else p_e = q_e):
//   ce[e][i]  = (1 - p_t)^gamma_e nll,  nll = -log p_e[y_i], p_t = e^-nll   (gamma 0: nll)
//   col[e][i] = KL(t_i || q_e), t = softmax(u), u = sum_k gating[:, k] z_k (the gated
//               ensemble, a constant target)
//   pairs[i]  = sum_e <q_e, D_e>,  D_e = E log q_e - sum_k log q_k
// and the gradient w.r.t. z_e, with a = w_ce[e] f'(nll) (f the focal term), w_col, w_pairs
// (the terms' weights divided by B):
//   g = a (p - onehot_y) + w_col (q - t) + w_pairs ((E q - sum_k q_k) + q (D_e - <q_e, D_e>)).
// Five dispatches of one pass:
//   ensemble: one workgroup per row: u = sum_k gating[i, k] z_k[i] by float pairs, rounded once
//             (the float64 reference's float32 target); or (mean, without a gating) the
//             mean logits (1/E) sum_k z_k[i], likewise;
//   stats:    one workgroup per row and expert: the softmax statistics, the CE/focal term and
//             the collaboration term;
//   pairs:    one workgroup per row: <q_e, D_e - D_e[r_e]> and D_e[r_e] per expert, the pair term;
//   weights:  one workgroup: each expert's mean CE term and the weights of ExpertWeights
//             (src/losses/experts.ts, ceWeights), as data: mixOutputs' parallel term makes
//             them depend on the means;
//   grads:    one workgroup per row and expert: the gradient.
//
// Accuracy, as assembly/experts.ts: each softmax is kept as (m, o, r): its maximum, the sum of
// e^(z - m) over the positions other than its first argmax r, and r, so that 1 - q_r = o / (1 + o)
// is accurate as q_r -> 1; the CE term's 1 - p_y is o / (1 + o) when y is the argmax, else
// 1 - p_y (p_y <= 1/2 there). In the gradient, the differences of values near 1 are taken by
// their complements: p_y - 1 = -(1 - p_y), q_r - t_r = (1 - t_r) - (1 - q_r) where the target
// peaks at r too, and q_er - q_kr = (1 - q_kr) - (1 - q_er) for experts that peak at r alike;
// D_e - <q_e, D_e> is (D_e - D_er) - sum_j q_j (D_ej - D_er), exactly 0 - qd at r (the big term
// q_r (D_r - D_r) of a nearly one-hot q_r is 0, not a difference of two values of |D| ~ 1e4).

struct ExpertsParams {
  e: u32,          // experts
  b: u32,          // rows
  c: u32,          // classes
  flags: u32,      // F_GRAD
  has_shift: u32,  // vals holds a log prior after gamma
  has_gating: u32, // the collaboration term (gating bound)
  pairs: u32,      // the pair term
  mean: u32,       // ens holds the mean logits (without a gating)
  zero: u32,       // 0 (float pairs, src/webgpu/common.wgsl)
  ce_w: f32,       // ExpertWeights: ce, parallel, eps, col, pairs
  parallel: f32,
  eps: f32,
  col_w: f32,
  pairs_w: f32,
}
@group(0) @binding(0) var<uniform> P: ExpertsParams;

@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read> gating: array<f32>;
// gamma [e] (0: cross-entropy), then the log prior [c] (has_shift).
@group(0) @binding(3) var<storage, read> vals: array<f32>;
@group(0) @binding(4) var<storage, read> labels: array<i32>;
@group(0) @binding(5) var<storage, read_write> ens: array<f32>;
// ST floats per (row, expert), then the CE weights [e] (divided by b).
@group(0) @binding(6) var<storage, read_write> st: array<f32>;
// ce [e, b], col [e, b], pairs [b].
@group(0) @binding(7) var<storage, read_write> rows: array<f32>;
@group(0) @binding(8) var<storage, read_write> g: array<f32>;

// A record's fields: q's m, o, r; the CE softmax's max and 1 + o; 1 - p_y; f'(nll); the target's
// m, o, r; <q, D - D_r> and D_r (the indices r as exact float32 values: C < 2^24).
const ST: u32 = 16u;
const S_M: u32 = 0u;
const S_O: u32 = 1u;
const S_R: u32 = 2u;
const S_MU: u32 = 3u;
const S_SU: u32 = 4u;
const S_OM: u32 = 5u;
const S_SLOPE: u32 = 6u;
const S_MT: u32 = 7u;
const S_OT: u32 = 8u;
const S_RT: u32 = 9u;
const S_QD: u32 = 10u;
const S_DR: u32 = 11u;

fn rec(i: u32, e: u32) -> u32 { return (i * P.e + e) * ST; }
fn zrow(e: u32, i: u32) -> u32 { return (e * P.b + i) * P.c; }

// Row values: z (part 0), the CE logits (z - m0) + s (part 1), the target u (part 2).
fn val(part: u32, base: u32, m0: f32, j: u32) -> f32 {
  if (part == 0u) { return z[base + j]; }
  if (part == 1u) { return (z[base + j] - m0) + vals[P.e + j]; }
  return ens[base + j];
}

struct Stats {
  m: f32,
  o: f32,
  r: u32,
}

fn row_stats(part: u32, base: u32, m0: f32, t: u32) -> Stats {
  let c = P.c;
  var mt = NEG;
  for (var j = t; j < c; j += WG) { mt = max(mt, val(part, base, m0, j)); }
  let m = wg_max(mt, t);
  var first = 0xffffffffu;
  for (var j = t; j < c; j += WG) {
    if (val(part, base, m0, j) == m) { first = min(first, j); }
  }
  let r = min(wg_min_u32(first, t), c - 1u);
  var ot = 0.0;
  for (var j = t; j < c; j += WG) {
    if (j != r) { ot += exp(val(part, base, m0, j) - m); }
  }
  return Stats(m, wg_sum(ot, t), r);
}

@compute @workgroup_size(256)
fn ensemble(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let i = wid.x;
  let gated = P.has_gating != 0u;
  for (var j = t; j < P.c; j += WG) {
    var s = vec2<f32>(0.0);
    for (var k = 0u; k < P.e; k++) { s = dot_acc(s, select(1.0, gating[i * P.e + k], gated), z[zrow(k, i) + j]); }
    if (!gated) { s = df_div(s, df(f32(P.e))); }
    ens[i * P.c + j] = s.x + s.y;
  }
}

@compute @workgroup_size(256)
fn stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let i = wid.x;
  let e = wid.y;
  let b = P.b;
  let c = P.c;
  let zb = zrow(e, i);
  let at = rec(i, e);
  let q = row_stats(0u, zb, 0.0, t);
  var u = q;
  if (P.has_shift != 0u) { u = row_stats(1u, zb, q.m, t); }
  var tg = Stats(0.0, 0.0, 0u);
  var kt = 0.0;
  if (P.has_gating != 0u) {
    tg = row_stats(2u, i * c, 0.0, t);
    // sum_j t_j ((u_j - mt) - (z_j - m)): t = e^(u - mt) / (1 + ot)
    var dt = 0.0;
    for (var j = t; j < c; j += WG) {
      let d = (ens[i * c + j] - tg.m) - (z[zb + j] - q.m);
      dt += exp(ens[i * c + j] - tg.m) * d;
    }
    kt = wg_sum(dt, t) / (1.0 + tg.o);
  }
  if (t != 0u) { return; }
  let y = u32(labels[i]);
  let part = select(0u, 1u, P.has_shift != 0u);
  let den = 1.0 + u.o;
  var nll = log1p_(u.o);
  var om = u.o / den;
  var pt = 1.0 / den;
  if (y != u.r) {
    let zy = val(part, zb, q.m, y) - u.m;
    nll = nll - zy;
    pt = exp(zy) / den;
    om = 1.0 - pt;
  }
  let gm = vals[e];
  var value = nll;
  var slope = 1.0;
  if (gm != 0.0) {
    // f(nll) = (1-p)^g nll, f' = (1-p)^g + g (1-p)^(g-1) p nll (the second term 0 at p = 1)
    let pw = select(pow(om, gm), 0.0, om == 0.0);
    value = pw * nll;
    slope = pw + select(gm * pow(om, gm - 1.0) * pt * nll, 0.0, om == 0.0);
  }
  st[at + S_M] = q.m;
  st[at + S_O] = q.o;
  st[at + S_R] = f32(q.r);
  st[at + S_MU] = u.m;
  st[at + S_SU] = den;
  st[at + S_OM] = om;
  st[at + S_SLOPE] = slope;
  st[at + S_MT] = tg.m;
  st[at + S_OT] = tg.o;
  st[at + S_RT] = f32(tg.r);
  rows[e * b + i] = value;
  // KL(t || q_e) >= 0: rounding can leave -1e-9 where the two agree
  rows[(P.e + e) * b + i] = select(0.0, max(kt - (log1p_(tg.o) - log1p_(q.o)), 0.0), P.has_gating != 0u);
}

// sum_k log q_k at column j of row i.
fn sum_log(i: u32, j: u32) -> f32 {
  var sl = 0.0;
  for (var k = 0u; k < P.e; k++) {
    let a = rec(i, k);
    sl += (z[zrow(k, i) + j] - st[a + S_M]) - log1p_(st[a + S_O]);
  }
  return sl;
}

// D_e at column j (log q_e = (z - m) - l).
fn pair_d(zj: f32, sl: f32, m: f32, l: f32) -> f32 { return f32(P.e) * ((zj - m) - l) - sl; }

@compute @workgroup_size(256)
fn pairs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let i = wid.x;
  let c = P.c;
  var pair = 0.0;
  for (var e = 0u; e < P.e; e++) {
    let a = rec(i, e);
    let m = st[a + S_M];
    let l = log1p_(st[a + S_O]);
    let r = u32(st[a + S_R]);
    let inv = 1.0 / (1.0 + st[a + S_O]);
    let zb = zrow(e, i);
    let dr = pair_d(m, sum_log(i, r), m, l);
    var qt = 0.0;
    for (var j = t; j < c; j += WG) {
      if (j != r) { qt += exp(z[zb + j] - m) * inv * (pair_d(z[zb + j], sum_log(i, j), m, l) - dr); }
    }
    let qd = wg_sum(qt, t);
    if (t == 0u) {
      st[a + S_QD] = qd;
      st[a + S_DR] = dr;
    }
    pair += dr + qd;
  }
  if (t == 0u) { rows[2u * P.e * P.b + i] = pair; }
}

@compute @workgroup_size(256)
fn weights(@builtin(local_invocation_index) t: u32) {
  let b = P.b;
  let e = P.e;
  let w = b * e * ST;
  for (var k = 0u; k < e; k++) {
    var s = 0.0;
    for (var i = t; i < b; i += WG) { s += rows[k * b + i]; }
    let mean = wg_sum(s, t) / f32(b);
    if (t == 0u) { st[w + k] = mean; }
  }
  if (t != 0u) { return; }
  // d parallel / d m_e = parallel^2 / (E (m_e + eps)^2), parallel = E / sum_k 1/(m_k + eps)
  var inv = 0.0;
  for (var k = 0u; k < e; k++) { inv += 1.0 / (st[w + k] + P.eps); }
  let par = f32(e) / inv;
  for (var k = 0u; k < e; k++) {
    var wk = P.ce_w;
    if (P.parallel != 0.0) {
      let d = st[w + k] + P.eps;
      wk = P.ce_w * (1.0 + (P.parallel * par * par) / (f32(e) * d * d));
    }
    st[w + k] = wk / f32(b);
  }
}

@compute @workgroup_size(256)
fn grads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let i = wid.x;
  let e = wid.y;
  let c = P.c;
  let at = rec(i, e);
  let zb = zrow(e, i);
  let y = u32(labels[i]);
  let m = st[at + S_M];
  let o = st[at + S_O];
  let r = u32(st[at + S_R]);
  let inv = 1.0 / (1.0 + o);
  let l = log1p_(o);
  let mu = st[at + S_MU];
  let inv_su = 1.0 / st[at + S_SU];
  let a = st[P.b * P.e * ST + e] * st[at + S_SLOPE];
  let bc = select(0.0, P.col_w / f32(P.b), P.has_gating != 0u);
  let dp = select(0.0, P.pairs_w / f32(P.b), P.pairs != 0u);
  let mt = st[at + S_MT];
  let ot = st[at + S_OT];
  let rt = u32(st[at + S_RT]);
  let dr = st[at + S_DR];
  let qd = st[at + S_QD];
  for (var j = t; j < c; j += WG) {
    let zj = z[zb + j];
    let q = exp(zj - m) * inv;
    var p = q;
    if (P.has_shift != 0u) { p = exp(((zj - m) + vals[P.e + j]) - mu) * inv_su; }
    var gj = a * select(p, -st[at + S_OM], j == y);
    if (bc != 0.0) {
      let tj = exp(ens[i * c + j] - mt) / (1.0 + ot);
      gj += bc * select(q - tj, ot / (1.0 + ot) - o / (1.0 + o), j == r && j == rt);
    }
    if (dp != 0.0) {
      // E q_j - sum_k q_kj = sum_k (q_j - q_kj), by complements where both peak at j
      var spread = 0.0;
      for (var k = 0u; k < P.e; k++) {
        let ak = rec(i, k);
        let ok = st[ak + S_O];
        let both = j == r && j == u32(st[ak + S_R]);
        let qk = exp(z[zrow(k, i) + j] - st[ak + S_M]) / (1.0 + ok);
        spread += select(q - qk, ok / (1.0 + ok) - o / (1.0 + o), both);
      }
      let dd = select(pair_d(zj, sum_log(i, j), m, l) - dr, 0.0, j == r);
      gj += dp * (spread + q * (dd - qd));
    }
    g[zb + j] = gj;
  }
}
