// centerRegularization (src/webgpu/center_regularization.ts), four dispatches of one pass, the
// math of src/reference/center_regularization.ts, with M = A + A^T:
//   norms:   one workgroup per class c: ch_c = centers_c / max(||centers_c||, 1e-12) as a float
//            pair (hi, lo) and the clamped norm;
//   rows:    one workgroup per row i: vals[i] = 1 - f_i . ch_{y_i} and (F_GRAD)
//            gf_i = -(u / B) ch_{y_i};
//   parts:   one workgroup per class c, block of 256 columns and window of the class's terms
//            (its C rule terms, then its rows, listed by the host: no atomics, the same order
//            every call), at most P.win of them (src/webgpu/loops.ts: no invocation loops past
//            llvmpipe's budget, whatever C and the rows of one class): the window's share of
//            ch_c . (M ch)_c and (F_GRAD) of the gradient w.r.t. ch_c, gch_c = -(u / B)
//            sum_{i: y_i = c} f_i - (u w / C) (M ch)_c, per column (window 0 in gc, the others
//            after ch; no barriers);
//   classes: one workgroup per class c, the windows summed in order: vals[B + c] =
//            1 - ch_c . (M ch)_c / 2 (their sum over c is that of 1 - ch_c . (A ch)_c), and
//            (F_GRAD) gch_c, then through the normalisation: (gch - ch (ch . gch)) / ||centers_c||,
//            or gch / 1e-12 below the clamp.
// The host sums vals[0 .. B + C) in float64 (the means of the two parts).
// Nearly parallel centres (and features): the projection (g - ch (ch . g)) keeps 1/100 to 1/1000
// of g where the centres are 0.01 to 0.001 apart, so a float32 g formed in full loses those
// digits (2.8e-5 of the largest element off). The projection is also that of g + s ch for any s,
// so each part is formed relative to ch_c (the metric family's relative products, metric.wgsl):
// the rule's as sum_l M_cl (ch_l - ch_c) on ch's float pairs (hi_l - hi_c, then
// lo_l - lo_c: every term as small as the result), the rows' (per window) as F - s ch_c with
// F = sum f_i in float pairs and s = sum_i f_i . ch_c (the rows' values: any s near ch_c . F will
// do), rounded once. Both are as small as the result, so nothing cancels; far centres lose nothing either.
// (A centre below the clamp takes the plain sums: its gradient is not projected.)

struct CenterRegParams {
  b: u32,      // rows
  c: u32,      // classes
  d: u32,      // embedding width
  flags: u32,  // F_GRAD
  u_b: f32,    // upstream / B
  uw_c: f32,   // upstream prototypeWeight / C
  zero: u32,   // always 0 (src/webgpu/common.wgsl's `zero`)
  win: u32,    // the terms of one window
  nw: u32,     // windows: ceil((C + the most rows of one class) / win)
}
@group(0) @binding(0) var<uniform> P: CenterRegParams;

@group(0) @binding(1) var<storage, read> f: array<f32>;
@group(0) @binding(2) var<storage, read> centers: array<f32>;
// labels [b], then the rows sorted by class [b], then each class's first index in them [c + 1].
@group(0) @binding(3) var<storage, read> ints: array<i32>;
// M = A + A^T [c, c] (A: the rule without its diagonal, rows divided by their sums).
@group(0) @binding(4) var<storage, read> a: array<f32>;
// ch's hi [c, d], then the clamped norms [c], then ch's lo [c, d], then (F_GRAD) the gradient's
// windows 1 .. nw - 1 [nw - 1, c, d].
@group(0) @binding(5) var<storage, read_write> ch: array<f32>;
// The rows' values [b], the classes' [c], then the windows' shares of ch_c . (M ch)_c per column
// [nw, c, d].
@group(0) @binding(6) var<storage, read_write> vals: array<f32>;
@group(0) @binding(7) var<storage, read_write> gf: array<f32>;
@group(0) @binding(8) var<storage, read_write> gc: array<f32>;

// #include "wg_sum2.wgsl"

// Entry q of ch_j's lo.
fn lo_at(j: u32, q: u32) -> f32 { return ch[P.c * P.d + P.c + j * P.d + q]; }

@compute @workgroup_size(256)
fn norms(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let j = wid.x;
  let d = P.d;
  var acc = vec2<f32>(0.0);
  for (var q = t; q < d; q += WG) { acc = dot_acc(acc, centers[j * d + q], centers[j * d + q]); }
  let nrm = df_sqrt(wg_sum2(two_sum(acc.x, acc.y), t));
  let inv = df_div(df(1.0), df_max(nrm, df(1e-12)));
  let lo = P.c * d + P.c;
  for (var q = t; q < d; q += WG) {
    let h = df_mul(df(centers[j * d + q]), inv);
    ch[j * d + q] = h.x;
    ch[lo + j * d + q] = h.y;
  }
  if (t == 0u) { ch[P.c * d + j] = nrm.x; }
}

@compute @workgroup_size(256)
fn rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let i = wid.x;
  let d = P.d;
  let y = u32(ints[i]);
  let grad = (P.flags & F_GRAD) != 0u;
  var acc = 0.0;
  for (var q = t; q < d; q += WG) {
    let h = ch[y * d + q];
    acc += f[i * d + q] * h;
    if (grad) { gf[i * d + q] = -P.u_b * h; }
  }
  acc = wg_sum(acc, t);
  if (t == 0u) { vals[i] = 1.0 - acc; }
}

// Entry q of window w's share of ch_j . (M ch)_j in vals.
fn val_at(w: u32, j: u32, q: u32) -> u32 { return P.b + P.c + (w * P.c + j) * P.d + q; }

// Entry q of window w's part of gch_j (window 0 in gc).
fn part_at(w: u32, j: u32, q: u32) -> u32 { return 2u * P.c * P.d + P.c + ((w - 1u) * P.c + j) * P.d + q; }

// Grid: (C, blocks of columns times windows, the window's index w = y / nd).
@compute @workgroup_size(256)
fn parts(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let j = wid.x;
  let d = P.d;
  let c = P.c;
  let b = P.b;
  let nd = (d + WG - 1u) / WG;
  let w = wid.y / nd;
  let q = (wid.y % nd) * WG + t;
  let grad = (P.flags & F_GRAD) != 0u;
  let live = ch[c * d + j] >= 1e-12;
  // The window's terms [e0, e1) of the class's C + r: rule terms l < C, then rows.
  let e0 = w * P.win;
  let e1 = min(e0 + P.win, c + u32(ints[2u * b + j + 1u] - ints[2u * b + j]));
  if (q >= d) { return; }
  let h = ch[j * d + q];
  let hl = lo_at(j, q);
  let own = select(0.0, h, live);
  let own_lo = select(0.0, hl, live);
  // rel = sum_l M_jl (ch_l - own), rs = sum_l M_jl: the window's share of (M ch)_j is rel + rs own.
  var rel = 0.0;
  var rs = 0.0;
  for (var l = e0; l < min(e1, c); l++) {
    let m = a[j * c + l];
    rs += m;
    rel += m * ((ch[l * d + q] - own) + (lo_at(l, q) - own_lo));
  }
  vals[val_at(w, j, q)] = h * (rel + rs * (own + own_lo));
  if (grad) {
    // F = the window's rows' sum in float pairs, s their f_i . ch_j (0 below the clamp).
    var fs = vec2<f32>(0.0);
    var s = 0.0;
    let first = b + u32(ints[2u * b + j]);
    for (var e = max(e0, c); e < e1; e++) {
      let i = u32(ints[first + e - c]);
      fs = df_add(fs, df(f[i * d + q]));
      s += 1.0 - vals[i];
    }
    // F - s ch_j, rounded once.
    let p = df_mul(df(select(0.0, s, live)), vec2<f32>(h, hl));
    let g = -P.u_b * ((fs.x - p.x) + (fs.y - p.y)) - P.uw_c * rel;
    if (w == 0u) { gc[j * d + q] = g; } else { ch[part_at(w, j, q)] = g; }
  }
}

@compute @workgroup_size(256)
fn classes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let j = wid.x;
  let d = P.d;
  let c = P.c;
  let b = P.b;
  let grad = (P.flags & F_GRAD) != 0u;
  var v = 0.0;
  var hg = 0.0;
  for (var q = t; q < d; q += WG) {
    var g = 0.0;
    if (grad) { g = gc[j * d + q]; }
    for (var w = 0u; w < P.nw; w++) {
      v += vals[val_at(w, j, q)];
      if (grad && w > 0u) { g += ch[part_at(w, j, q)]; }
    }
    if (grad) {
      gc[j * d + q] = g;
      hg += ch[j * d + q] * g;
    }
  }
  v = wg_sum(v, t);
  if (t == 0u) { vals[b + j] = 1.0 - 0.5 * v; }
  if (!grad) { return; }
  hg = wg_sum(hg, t);
  let nrm = ch[c * d + j];
  for (var q = t; q < d; q += WG) {
    let g = gc[j * d + q];
    gc[j * d + q] = select(g / 1e-12, (g - ch[j * d + q] * hg) / nrm, nrm >= 1e-12);
  }
}
