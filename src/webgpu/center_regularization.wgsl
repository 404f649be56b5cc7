// centerRegularization (src/webgpu/center_regularization.ts), three dispatches of one pass, the
// math of src/reference/center_regularization.ts:
//   norms:   one workgroup per class c: ch_c = centers_c / max(||centers_c||, 1e-12) and the
//            clamped norm;
//   rows:    one workgroup per row i: vals[i] = 1 - f_i . ch_{y_i} and (F_GRAD)
//            gf_i = -(u / B) ch_{y_i};
//   classes: one workgroup per class c: vals[B + c] = 1 - ch_c . (A ch)_c and (F_GRAD)
//            gch_c = -(u / B) sum_{i: y_i = c} f_i - (u w / C) ((A ch)_c + (A^T ch)_c) over
//            the class's rows (listed by the host: no atomics, the same order every call),
//            then through the normalisation: (gch - ch (ch . gch)) / ||centers_c||, or
//            gch / 1e-12 below the clamp.
// The host sums vals in float64 (the means of the two parts).

struct CenterRegParams {
  b: u32,      // rows
  c: u32,      // classes
  d: u32,      // embedding width
  flags: u32,  // F_GRAD
  u_b: f32,    // upstream / B
  uw_c: f32,   // upstream prototypeWeight / C
}
@group(0) @binding(0) var<uniform> P: CenterRegParams;

@group(0) @binding(1) var<storage, read> f: array<f32>;
@group(0) @binding(2) var<storage, read> centers: array<f32>;
// labels [b], then the rows sorted by class [b], then each class's first index in them [c + 1].
@group(0) @binding(3) var<storage, read> ints: array<i32>;
// A [c, c]: the rule without its diagonal, rows divided by their sums.
@group(0) @binding(4) var<storage, read> a: array<f32>;
// ch [c, d], then the clamped norms [c].
@group(0) @binding(5) var<storage, read_write> ch: array<f32>;
@group(0) @binding(6) var<storage, read_write> vals: array<f32>;
@group(0) @binding(7) var<storage, read_write> gf: array<f32>;
@group(0) @binding(8) var<storage, read_write> gc: array<f32>;

@compute @workgroup_size(256)
fn norms(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let j = wid.x;
  let d = P.d;
  var acc = 0.0;
  for (var q = t; q < d; q += WG) { acc += centers[j * d + q] * centers[j * d + q]; }
  let nrm = sqrt(wg_sum(acc, t));
  let inv = 1.0 / max(nrm, 1e-12);
  for (var q = t; q < d; q += WG) { ch[j * d + q] = centers[j * d + q] * inv; }
  if (t == 0u) { ch[P.c * d + j] = nrm; }
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
  let j = wid.x;
  let d = P.d;
  let c = P.c;
  let b = P.b;
  let grad = (P.flags & F_GRAD) != 0u;
  var dot = 0.0;
  var hg = 0.0;
  for (var q = t; q < d; q += WG) {
    var ach = 0.0;
    var atch = 0.0;
    for (var l = 0u; l < c; l++) {
      ach += a[j * c + l] * ch[l * d + q];
      atch += a[l * c + j] * ch[l * d + q];
    }
    let h = ch[j * d + q];
    dot += h * ach;
    if (grad) {
      var fs = 0.0;
      for (var r = ints[2u * b + j]; r < ints[2u * b + j + 1u]; r++) { fs += f[u32(ints[b + u32(r)]) * d + q]; }
      let g = -P.u_b * fs - P.uw_c * (ach + atch);
      gc[j * d + q] = g;
      hg += h * g;
    }
  }
  dot = wg_sum(dot, t);
  if (t == 0u) { vals[b + j] = 1.0 - dot; }
  if (!grad) { return; }
  hg = wg_sum(hg, t);
  let nrm = ch[c * d + j];
  for (var q = t; q < d; q += WG) {
    let g = gc[j * d + q];
    gc[j * d + q] = select((g - ch[j * d + q] * hg) / nrm, g / 1e-12, nrm < 1e-12);
  }
}
