// centerRegularization (src/webgpu/center_regularization.ts), three dispatches of one pass, the
// math of src/reference/center_regularization.ts:
//   norms:   one workgroup per class c: ch_c = centers_c / max(||centers_c||, 1e-12) as a float
//            pair (hi, lo) and the clamped norm;
//   rows:    one workgroup per row i: vals[i] = 1 - f_i . ch_{y_i} and (F_GRAD)
//            gf_i = -(u / B) ch_{y_i};
//   classes: one workgroup per class c, with M = A + A^T: vals[B + c] = 1 - ch_c . (M ch)_c / 2
//            (their sum over c is that of 1 - ch_c . (A ch)_c) and (F_GRAD) the gradient w.r.t.
//            ch_c, gch_c = -(u / B) sum_{i: y_i = c} f_i - (u w / C) (M ch)_c over the class's
//            rows (listed by the host: no atomics, the same order every call), then through the
//            normalisation: (gch - ch (ch . gch)) / ||centers_c||, or gch / 1e-12 below the clamp.
// The host sums vals in float64 (the means of the two parts).
// Nearly parallel centres (and features): the projection (g - ch (ch . g)) keeps 1/100 to 1/1000
// of g where the centres are 0.01 to 0.001 apart, so a float32 g formed in full loses those
// digits (2.8e-5 of the largest element off). The projection is also that of g + s ch for any s,
// so each part is formed relative to ch_c (the metric family's relative products, metric.wgsl):
// the rule's as sum_l M_cl (ch_l - ch_c) on ch's float pairs (hi_l - hi_c, then
// lo_l - lo_c: every term as small as the result), the rows' as F - s ch_c with F = sum f_i in
// float pairs and s = sum_i f_i . ch_c (the rows' values: any s near ch_c . F will do), rounded
// once. Both are as small as the result, so nothing cancels; far centres lose nothing either.
// (A centre below the clamp takes the plain sums: its gradient is not projected.)

struct CenterRegParams {
  b: u32,      // rows
  c: u32,      // classes
  d: u32,      // embedding width
  flags: u32,  // F_GRAD
  u_b: f32,    // upstream / B
  uw_c: f32,   // upstream prototypeWeight / C
  zero: u32,   // always 0 (src/webgpu/common.wgsl's `zero`)
}
@group(0) @binding(0) var<uniform> P: CenterRegParams;

@group(0) @binding(1) var<storage, read> f: array<f32>;
@group(0) @binding(2) var<storage, read> centers: array<f32>;
// labels [b], then the rows sorted by class [b], then each class's first index in them [c + 1].
@group(0) @binding(3) var<storage, read> ints: array<i32>;
// M = A + A^T [c, c] (A: the rule without its diagonal, rows divided by their sums).
@group(0) @binding(4) var<storage, read> a: array<f32>;
// ch's hi [c, d], then the clamped norms [c], then ch's lo [c, d].
@group(0) @binding(5) var<storage, read_write> ch: array<f32>;
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

@compute @workgroup_size(256)
fn classes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let j = wid.x;
  let d = P.d;
  let c = P.c;
  let b = P.b;
  let grad = (P.flags & F_GRAD) != 0u;
  let nrm = ch[c * d + j];
  let live = nrm >= 1e-12;
  let r0 = ints[2u * b + j];
  let r1 = ints[2u * b + j + 1u];
  // s = sum_i f_i . ch_c over the class's rows (0 below the clamp: the plain sums).
  var s = 0.0;
  if (grad && live) {
    for (var r = r0; r < r1; r++) { s += 1.0 - vals[u32(ints[b + u32(r)])]; }
  }
  var dot = 0.0;
  var hg = 0.0;
  for (var q = t; q < d; q += WG) {
    let h = ch[j * d + q];
    let hl = lo_at(j, q);
    let own = select(0.0, h, live);
    let own_lo = select(0.0, hl, live);
    // rel = sum_l M_jl (ch_l - own), rs = sum_l M_jl: (M ch)_j = rel + rs own.
    var rel = 0.0;
    var rs = 0.0;
    for (var l = 0u; l < c; l++) {
      let m = a[j * c + l];
      rs += m;
      rel += m * ((ch[l * d + q] - own) + (lo_at(l, q) - own_lo));
    }
    dot += h * (rel + rs * (own + own_lo));
    if (grad) {
      var fs = vec2<f32>(0.0);
      for (var r = r0; r < r1; r++) { fs = df_add(fs, df(f[u32(ints[b + u32(r)]) * d + q])); }
      // F - s ch_c, rounded once.
      let p = df_mul(df(s), vec2<f32>(h, hl));
      let g = -P.u_b * ((fs.x - p.x) + (fs.y - p.y)) - P.uw_c * rel;
      gc[j * d + q] = g;
      hg += h * g;
    }
  }
  dot = wg_sum(dot, t);
  if (t == 0u) { vals[b + j] = 1.0 - 0.5 * dot; }
  if (!grad) { return; }
  hg = wg_sum(hg, t);
  for (var q = t; q < d; q += WG) {
    let g = gc[j * d + q];
    gc[j * d + q] = select(g / 1e-12, (g - ch[j * d + q] * hg) / nrm, live);
  }
}
