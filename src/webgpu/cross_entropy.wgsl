// The fused softmax cross-entropy kernel with hard labels: `crossEntropy`, `focal` and
// every margin loss on cosines, one workgroup per row, loss and gradient in one
// dispatch (`main`). The math is assembly/cross_entropy.ts's (read it there):
//   z_j = scale * x_j (x_j clamped to [-1, 1] first with F_CLAMP), the label's logit
//   replaced by s phi(x_y) (P.tg, src/webgpu/margin.wgsl: the margin losses), which `targets`
//   evaluates first, one invocation per row, into h: [N, 2] (z_y, dz_y / dx_y) (inline,
//   its code would slow `main` down by half on llvmpipe, even where it does not run);
//   nll = log(sum_j e^(z_j - m)) - (z_y - m), the label kept out of the sum S of the
//   others so that 1 - p_y = S / (S + e^(z_y - m)) keeps its relative accuracy.
// One pass reads the row for an online (max, sum-exp) per invocation, a second writes
// the gradient.
// row_in: [N, rs_in] = (gradient scale s_i[, z term's scale]). row_out: [N, rs_out] = (row loss[, z term]).
// crossEntropy's large-vocabulary options (scale 1, no clamp, no target, gamma 0), uniform
// branches: P.softcap c != 0 caps every logit to c tanh(z / c) (derivative 1 - tanh^2);
// P.zloss k != 0 adds the row term k lse^2 (row_out's second column, rs_out = 2) whose
// gradient zs_i 2 k lse p_j (zs_i = row_in's second column, rs_in = 2) joins the row's.
//
// The margin losses computed per row on the host (adaface, curricularFace, magface): with
// F_HOST_TG the label's (z_y, dz_y / dx_y) come in row_in's columns 2, 3 (rs_in = 6); with F_NT
// the non-target transform (src/kernels/hard_label.ts's NonTarget; `nt_logit`) takes the row's
// (thr, tie) from row_in's columns 4, 5. Neither runs in the long rows' segments.
//
// The margin losses' sub-centres (P.sub = K > 1, SPEC section 7): a row of a is c = C K columns, class j's
// j K .. j K + K - 1; every invocation reads its classes' K columns (`sub_max`: the winning column,
// the largest clamped to [-1, 1], ties to the smaller, the first NaN wins; src/kernels/hard_label.ts's
// `subcenter`) and runs on those class cosines (C of them);
// the gradient goes to each class's winning column, 0 to its other K - 1. Not in the long rows.
//
// Rows longer than one storage binding run in segments of columns (`seg_stats` per row
// and segment, `seg_finish` per row, `seg_grad` per row and segment): the segments'
// (max, sum-exp) are merged by m = max m_s, S = sum_s S_s e^(m_s - m).

struct CrossEntropyParams {
  // #include "row_params.wgsl"
  eps: f32,     // label smoothing
  gamma: f32,   // focal exponent
  scale: f32,   // logit scale
  wsum: f32,    // sum of the class weights (C without weights)
  k: u32,       // long rows: columns per segment
  col0: u32,    // long rows: first column of this segment
  seg: u32,     // long rows: this segment's index
  nseg: u32,    // long rows: segments per row
  row_c: u32,   // long rows: the whole row's length (c is the segment's)
  zero: u32,    // always 0 (src/webgpu/common.wgsl's `zero`)
  softcap: f32, // crossEntropy's logit cap c, 0 for none
  zloss: f32,   // crossEntropy's z-loss coefficient k, 0 for none
  nt_lo: f32,   // F_NT: the clamp of the cosines [nt_lo, nt_hi] ...
  nt_hi: f32,
  nt_a: f32,    // ... and a hard non-target's logit s (a x + b x^2 + g sqrt(1 - x^2))
  nt_b: f32,
  nt_g: f32,
  nt_cut: f32,  // ... after non-targets above nt_cut become 0
  sub: u32,     // the margin losses' sub-centres K per class (0 or 1: none; c is then C K)
  nt_k: u32,    // F_TOPK: interTopK's k (< C - 1)
  tq0: u32,     // targets: the first class of this dispatch's window of the top-k scan (0: also the targets) ...
  tql: u32,     // ... and its classes (src/webgpu/loops.ts's topKWindow)
  // #include "margin_params.wgsl"
}
@group(0) @binding(0) var<uniform> P: CrossEntropyParams;

// #include "margin.wgsl"

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> h: array<f32>;
@group(0) @binding(5) var<storage, read> labels: array<i32>;
@group(0) @binding(6) var<storage, read> row_in: array<f32>;
@group(0) @binding(7) var<storage, read> cls: array<f32>;
@group(0) @binding(8) var<storage, read_write> row_out: array<f32>;

fn logit_of(x: f32) -> f32 {
  let z = P.scale * select(x, clampn(x, -1.0, 1.0), (P.flags & F_CLAMP) != 0u);
  if (P.softcap != 0.0) { return capped(z).x; }
  return z;
}

// (c tanh(z / c), 1 - tanh^2) for c = P.softcap, by tanh_.
fn capped(z: f32) -> vec2<f32> {
  let t = tanh_(z / P.softcap);
  return vec2(P.softcap * t.x, t.y);
}

// Sub-centres: class j's winning column of the row at xa (of P.sub columns from j P.sub) and its
// value x (unclamped: the clamp then passes or cuts its gradient), by `subcenter`'s rule (the
// largest clamped to [-1, 1], ties to the smaller column, the first NaN wins). P.sub <= 1: column j.
struct Sub { x: f32, col: u32 }
fn sub_max(xa: u32, j: u32) -> Sub { return sub_pick(xa, j, NO_G); }

const NO_G: u32 = 0xffffffffu;
// sub_max, also writing 0 into the gradient row at xg (unless NO_G) at each of class j's columns on its way
// (the caller then writes the winner's): one loop of K per class, so that `main` at C = 1e5 and K = 64 stays
// within llvmpipe's loop budget (src/webgpu/loops.ts).
fn sub_pick(xa: u32, j: u32, xg: u32) -> Sub {
  if (P.sub <= 1u) { return Sub(a[xa + j], j); }
  let c0 = j * P.sub;
  var r = Sub(a[xa + c0], c0);
  var best = clamp(r.x, -1.0, 1.0);
  if (xg != NO_G) { g[xg + c0] = 0.0; }
  for (var q = 1u; q < P.sub; q++) {
    if (xg != NO_G) { g[xg + c0 + q] = 0.0; }
    let u = a[xa + c0 + q];
    let w = clamp(u, -1.0, 1.0);
    // the first NaN wins (checked on the values: clamp's result for a NaN is the implementation's)
    if (!is_nan(r.x) && (w > best || is_nan(u))) {
      best = w;
      r = Sub(u, c0 + q);
    }
  }
  return r;
}

fn weight_of(j: u32) -> f32 {
  if ((P.flags & F_WEIGHT) != 0u) { return cls[j]; }
  return 1.0;
}

// The label's logit z_y and dz_y / dx_y from the input x_y: the margin's target (pairs
// rounded once), or like the other logits.
fn label_logit(xy: f32) -> vec2<f32> {
  if (P.tg != TG_NONE) {
    let t = margin_target(df(xy));
    return vec2(t.v.x + t.v.y, t.d.x + t.d.y);
  }
  return plain_logit(xy);
}

fn plain_logit(xy: f32) -> vec2<f32> {
  let xc = select(xy, clampn(xy, -1.0, 1.0), (P.flags & F_CLAMP) != 0u);
  let zd = vec2(P.scale * xc, select(0.0, P.scale, kept(xc, xy)));
  if (P.softcap != 0.0) {
    let cz = capped(zd.x);
    return vec2(cz.x, zd.y * cz.y);
  }
  return zd;
}

// The row loss and the gradient coefficients dz_j = ca p_j - cu w_j (j != y), dz_y = cb,
// from the max m, the sum S of e^(z_j - m) over j != y, wz = sum_j w_j (z_j - z_y), z_y and w_y;
// py = p_y, z the z term, and lse.
struct Row { loss: f32, ca: f32, cu: f32, cb: f32, sum: f32, py: f32, z: f32, lse: f32 }
fn finish_row(m: f32, S: f32, wz: f32, zy: f32, wy: f32, c: u32) -> Row {
  let ey = exp(zy - m);
  let sum = S + ey;
  var nll: f32;
  if (zy - m < -80.0) { nll = m - zy + log_(S); } else { nll = log1p_(S / ey); }
  let om = S / sum; // 1 - p_y
  var r: Row;
  r.sum = sum;
  r.py = ey / sum;
  if (P.zloss != 0.0) {
    r.lse = m + log_(sum);
    r.z = P.zloss * r.lse * r.lse;
  }
  if (P.gamma == 0.0) {
    let epsC = P.eps / f32(c);
    var tail = 0.0;
    // sum_j w_j (lse - z_j) = W log(sum) + W (m - z_y) - sum_j w_j (z_j - z_y)
    if (P.eps != 0.0) { tail = epsC * (P.wsum * (log_(sum) + (m - zy)) - wz); }
    r.loss = (1.0 - P.eps) * wy * nll + tail;
    r.ca = (1.0 - P.eps) * wy + epsC * P.wsum;
    r.cu = epsC;
    r.cb = epsC * P.wsum * (1.0 - om) - (1.0 - P.eps) * wy * om - epsC * wy;
  } else {
    let pw = pow(om, P.gamma);
    r.loss = wy * pw * nll;
    var tl = 0.0;
    if (om != 0.0) { tl = P.gamma * pow(om, P.gamma - 1.0) * (1.0 - om) * nll; }
    r.ca = wy * (pw + tl);
    r.cu = 0.0;
    r.cb = -r.ca * om;
  }
  return r;
}

// The gradient of entry j != y: s_i scale (ca p_j - cu w_j) = ga e^(z_j - m) - gu w_j, 0 where the clamp cut x_j
// (with the softcap times 1 - tanh^2).
fn grad_of(x: f32, col: u32, m: f32, ga: f32, gu: f32) -> f32 {
  if ((P.flags & F_CLAMP) != 0u && (x > 1.0 || x < -1.0)) { return 0.0; }
  if (P.softcap != 0.0) {
    let cz = capped(P.scale * x);
    var v = ga * exp(cz.x - m);
    if (gu != 0.0) { v -= gu * weight_of(col); }
    return v * cz.y;
  }
  var v = ga * exp(P.scale * x - m);
  if (gu != 0.0) { v -= gu * weight_of(col); }
  return v;
}

// h's stride: (z_y, dz_y / dx_y), with F_TOPK then (thr, tie) and the row's top list of nt_k values and
// nt_k classes (`topk_row`).
fn h_stride() -> u32 { return select(2u, 4u + 2u * P.nt_k, (P.flags & F_TOPK) != 0u); }

// Row i's non-target threshold and tie: from `targets`'s scan in h (F_TOPK), else from row_in's columns 4, 5.
fn thr_tie(i: u32) -> vec2<f32> {
  if ((P.flags & F_TOPK) != 0u) { return vec2(h[i * h_stride() + 2u], h[i * h_stride() + 3u]); }
  return vec2(row_in[i * P.rs_in + 4u], row_in[i * P.rs_in + 5u]);
}

// F_TOPK: row i's (at a's row r, label y) k = nt_k largest non-label class cosines, clamped to [nt_lo, nt_hi]
// and filtered (0 above nt_cut), found by one invocation going through the classes in order and keeping its
// list in h (a heap of values and their classes, src/webgpu/topk.wgsl, shared with the head's
// src/webgpu/margin_head_topk.wgsl `topk_scan`): a value enters only above the k-th, after its equals (ties to
// the smaller class, as src/losses/margin.ts's `interClass`). The classes go by windows [tq0, tq0 + tql), one
// dispatch each (src/webgpu/loops.ts: no invocation loops more than llvmpipe allows), the list's size in h's
// column 2 between them; after the last, (thr, tie) = the k-th's value and class in columns 2, 3, or
// (-FLT_MAX, -1) where fewer than k (NaN cosines).
fn tk_get(q: u32) -> f32 { return h[q]; }
fn tk_put(q: u32, v: f32) { h[q] = v; }
// #include "topk.wgsl"

fn topk_row(i: u32, r: u32, y: u32) {
  let kk = P.nt_k;
  let o = i * h_stride();
  let vo = o + 4u;
  let co = vo + kk;
  let xa = P.a_off + r * P.c;
  let cc = P.c / max(P.sub, 1u);
  var size = 0u;
  if (P.tq0 != 0u) { size = u32(h[o + 2u]); }
  var kth = tk_kth(vo, size, kk);
  let end = min(cc, P.tq0 + P.tql);
  for (var j = P.tq0; j < end; j++) {
    if (j == y) { continue; }
    var v = clamp(sub_max(xa, j).x, P.nt_lo, P.nt_hi);
    if (v > P.nt_cut) { v = 0.0; }
    if (!(v > kth)) { continue; }
    size = tk_offer(vo, co, size, kk, v, f32(j));
    kth = tk_kth(vo, size, kk);
  }
  if (end < cc) {
    h[o + 2u] = f32(size);
    return;
  }
  h[o + 2u] = select(NEG, h[vo], size == kk);
  h[o + 3u] = select(-1.0, h[co], size == kk);
}

// F_NT: the logit of entry x of column j != y of row i and its derivative over the scale: x
// clamped to [nt_lo, nt_hi] (derivative 0 where cut), 0 above nt_cut (derivative 0); then hard
// (x > thr, or x == thr and j <= tie) it is s (a x + b x^2 + g sqrt(1 - x^2)), derivative
// a + 2 b x - g xd / sqrt(1 - xd^2) (xd clamped to [-1 + 1e-6, 1 - 1e-6]); otherwise s x.
fn nt_logit(x: f32, j: u32, i: u32) -> vec2<f32> {
  var v = clampn(x, P.nt_lo, P.nt_hi);
  var d = select(0.0, 1.0, kept(v, x));
  if (v > P.nt_cut) {
    v = 0.0;
    d = 0.0;
  }
  var z = v;
  let tt = thr_tie(i);
  if (v > tt.x || (v == tt.x && f32(j) <= tt.y)) {
    // (a: nt_a, plus row_in's column 1 where the face kernel wrote CurricularFace's t' there)
    let a = P.nt_a + row_in[i * P.rs_in + 1u];
    z = a * v + P.nt_b * v * v;
    var slope = a + 2.0 * P.nt_b * v;
    if (P.nt_g != 0.0) {
      // sqrt((1 - |v|)(1 + |v|)): 1 - |v| is exact near 1; at the clamp, 1 - (1 - 1e-6) from the pair DC.
      let av = abs(v);
      var q = 1.0 - av;
      var ad = av;
      if (av > DC.x) {
        q = (1.0 - DC.x) - DC.y;
        ad = DC.x;
      }
      z += P.nt_g * sqrt(max(0.0, (1.0 - av) * (1.0 + av)));
      slope -= P.nt_g * sign(v) * ad / sqrt(q * (1.0 + ad));
    }
    d *= slope;
  }
  return vec2(P.scale * z, d);
}

// The z term's gradient coefficient zs_i 2 k lse (0 without zLoss or gradient).
fn z_coef(i: u32, row: Row) -> f32 {
  if (P.zloss == 0.0 || (P.flags & F_GRAD) == 0u) { return 0.0; }
  return row_in[i * P.rs_in + 1u] * 2.0 * P.zloss * row.lse;
}

// Row i's target constants: with F_ROW_TG (a per-row margin, ElasticFace) its own m2, m3, cos m2,
// sin m2, cos(pi - m2), m2 sin(pi - m2) as pairs in row_in's columns 6 .. 17 (the host's float64
// values, as the head's src/webgpu/margin_head_label.wgsl `row_tg`); else the uniform's.
fn row_tg(i: u32) -> TgM {
  if ((P.flags & F_ROW_TG) == 0u) { return tg_uniform(); }
  let o = i * P.rs_in + 6u;
  var q: array<f32, 12>;
  for (var k = 0u; k < 12u; k++) { q[k] = row_in[o + k]; }
  return tg_row(q);
}

// The margin losses' label targets of the rows (before `main`): h[hs i ..] = (z_y, dz_y / dx_y) (hs = h_stride()),
// and with F_TOPK the row's interTopK threshold and tie (`topk_row`, one dispatch per window of classes).
@compute @workgroup_size(64)
fn targets(@builtin(global_invocation_id) gid: vec3<u32>) {
  zero = P.zero;
  if (gid.x >= P.n) { return; }
  let i = P.row0 + gid.x;
  let y = labels[i];
  if (y < 0) { return; }
  if (P.tq0 == 0u) {
    let t = margin_target_m(df(sub_max(P.a_off + gid.x * P.c, u32(y)).x), row_tg(i));
    let zd = vec2(t.v.x + t.v.y, t.d.x + t.d.y);
    h[h_stride() * i] = zd.x;
    h[h_stride() * i + 1u] = zd.y;
  }
  if ((P.flags & F_TOPK) != 0u) { topk_row(i, gid.x, u32(y)); }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let r = wid.x;
  let i = P.row0 + r;
  let c = P.c;
  let xa = P.a_off + r * c;
  let xg = P.g_off + r * c;
  let grad = (P.flags & F_GRAD) != 0u;
  let y = uniform_i32(labels[i], t);
  if (y < 0) {
    if (t == 0u) {
      row_out[i * P.rs_out] = 0.0;
      if (P.zloss != 0.0) { row_out[i * P.rs_out + 1u] = 0.0; }
    }
    if (grad) { for (var j = t; j < c; j += WG) { g[xg + j] = 0.0; } }
    return;
  }
  let yu = u32(y);
  // (sub-centres: the row's c columns are cc classes of k)
  let k = max(P.sub, 1u);
  let cc = c / k;
  var zd: vec2<f32>;
  if (P.tg != TG_NONE) {
    zd = vec2(h[h_stride() * i], h[h_stride() * i + 1u]);
  } else if ((P.flags & F_HOST_TG) != 0u) {
    zd = vec2(row_in[i * P.rs_in + 2u], row_in[i * P.rs_in + 3u]);
  } else {
    zd = plain_logit(sub_max(xa, yu).x);
  }
  let zy = zd.x;
  let nt = (P.flags & F_NT) != 0u;

  // Pass 1: per invocation an online max and sum of e^(z - max) over the other
  // classes, and (smoothing) sum_j w_j (z_j - z_y).
  var mt = NEG;
  var st = 0.0;
  var wz = 0.0;
  for (var j = t; j < cc; j += WG) {
    var x: f32;
    if (k > 1u) { x = sub_max(xa, j).x; } else { x = a[xa + j]; }
    var z: f32;
    if (nt) { z = nt_logit(x, j, i).x; } else { z = logit_of(x); }
    if (P.eps != 0.0) { wz += weight_of(j) * (z - zy); }
    if (j != yu) { online(&mt, &st, z); }
  }
  let m = maxn(wg_max(mt, t), zy);
  let S = wg_sum(st * exp(mt - m), t);
  var wzs = 0.0;
  if (P.eps != 0.0) { wzs = wg_sum(wz, t); }
  let row = finish_row(m, S, wzs, zy, weight_of(yu), cc);
  if (t == 0u) {
    row_out[i * P.rs_out] = row.loss;
    if (P.zloss != 0.0) { row_out[i * P.rs_out + 1u] = row.z; }
  }
  if (!grad) { return; }

  // Pass 2: the gradient row.
  let si = row_in[i * P.rs_in];
  let zk = z_coef(i, row);
  let ga = (si * row.ca + zk) * P.scale / row.sum;
  let gu = si * row.cu * P.scale;
  let gy = (si * row.cb + zk * row.py) * zd.y;
  if (k > 1u) {
    // sub-centres: each class's gradient at its winning column, 0 at the others
    for (var j = t; j < cc; j += WG) {
      let s = sub_pick(xa, j, xg);
      var v: f32;
      if (j == yu) {
        v = gy;
      } else if (nt) {
        let zn = nt_logit(s.x, j, i);
        v = ga * exp(zn.x - m) * zn.y;
      } else {
        v = grad_of(s.x, j, m, ga, gu);
      }
      g[xg + s.col] = v;
    }
    return;
  }
  for (var j = t; j < c; j += WG) {
    if (j == yu) {
      g[xg + j] = gy;
    } else if (nt) {
      let zn = nt_logit(a[xa + j], j, i);
      g[xg + j] = ga * exp(zn.x - m) * zn.y;
    } else {
      g[xg + j] = grad_of(a[xa + j], j, m, ga, gu);
    }
  }
}

// Long rows, pass 1, one dispatch per row P.row0 and segment P.seg (columns col0 ..
// col0 + c, bound at a_off): row_out[(i nseg + seg) 4 ..] = (max and sum-exp of the
// segment's logits other than the label's, sum_j w_j z_j, x_y if the label is here).
@compute @workgroup_size(WG)
fn seg_stats(@builtin(local_invocation_index) t: u32) {
  let i = P.row0;
  let y = uniform_i32(labels[i], t);
  var mt = NEG;
  var st = 0.0;
  var wz = 0.0;
  for (var j = t; j < P.c; j += WG) {
    let col = P.col0 + j;
    let z = logit_of(a[P.a_off + j]);
    if (P.eps != 0.0) { wz += weight_of(col) * z; }
    if (i32(col) != y) { online(&mt, &st, z); }
  }
  let m = wg_max(mt, t);
  let S = wg_sum(st * exp(mt - m), t);
  var wzs = 0.0;
  if (P.eps != 0.0) { wzs = wg_sum(wz, t); }
  if (t == 0u) {
    let o = (i * P.nseg + P.seg) * 4u;
    row_out[o] = m;
    row_out[o + 1u] = S;
    row_out[o + 2u] = wzs;
    var xy = 0.0;
    if (y >= i32(P.col0) && y < i32(P.col0 + P.c)) { xy = a[P.a_off + u32(y) - P.col0]; }
    row_out[o + 3u] = xy;
  }
}

// Long rows, pass 2, one invocation per row: merges the segments' statistics (bound as
// b; segments of P.k columns) and writes row_out[i 6 ..] = (loss, m, ga, gu, gradient of the label's entry, z term).
@compute @workgroup_size(64)
fn seg_finish(@builtin(global_invocation_id) gid: vec3<u32>) {
  zero = P.zero;
  let i = P.row0 + gid.x;
  if (gid.x >= P.n) { return; }
  let o = i * 6u;
  let y = labels[i];
  if (y < 0) {
    for (var q = 0u; q < 6u; q++) { row_out[o + q] = 0.0; }
    return;
  }
  let zd = label_logit(b[(i * P.nseg + u32(y) / P.k) * 4u + 3u]);
  var m = zd.x;
  for (var s = 0u; s < P.nseg; s++) { m = maxn(m, b[(i * P.nseg + s) * 4u]); }
  var S = 0.0;
  var wz = 0.0;
  for (var s = 0u; s < P.nseg; s++) {
    let q = (i * P.nseg + s) * 4u;
    S += b[q + 1u] * exp(b[q] - m);
    wz += b[q + 2u];
  }
  let row = finish_row(m, S, wz - zd.x * P.wsum, zd.x, weight_of(u32(y)), P.row_c);
  let si = row_in[i * P.rs_in];
  let zk = z_coef(i, row);
  row_out[o] = row.loss;
  row_out[o + 1u] = m;
  row_out[o + 2u] = (si * row.ca + zk) * P.scale / row.sum;
  row_out[o + 3u] = si * row.cu * P.scale;
  row_out[o + 4u] = (si * row.cb + zk * row.py) * zd.y;
  row_out[o + 5u] = row.z;
}

// Long rows, pass 3, one dispatch per row and segment: the segment's gradient, from the
// coefficients of seg_finish (bound as b).
@compute @workgroup_size(WG)
fn seg_grad(@builtin(local_invocation_index) t: u32) {
  let i = P.row0;
  let y = labels[i];
  let o = i * 6u;
  for (var j = t; j < P.c; j += WG) {
    let col = P.col0 + j;
    var v = 0.0;
    if (y >= 0) {
      if (i32(col) == y) { v = b[o + 4u]; } else { v = grad_of(a[P.a_off + j], col, b[o + 1u], b[o + 2u], b[o + 3u]); }
    }
    g[P.g_off + j] = v;
  }
}
