// featureDiversity (src/webgpu/feature_diversity.ts), two dispatches of one pass, the math of
// src/reference/feature_diversity.ts. The E feature matrices [B, D] are stacked in one
// buffer (expert e at e B D: one storage binding however many experts):
//   dists: one workgroup per row i: dist[i, s, t] = ||f_s[i] - f_t[i]|| for every pair, and
//          row_out[i] = sum over ordered pairs of the distances;
//   grads: one workgroup per row i and 256 columns (F_GRAD): g_s[i] =
//          2 scale sum_{t != s} (f_s[i] - f_t[i]) / dist[i, s, t], a distance of exactly 0
//          left out (its gradient is 0).

struct DiversityParams {
  e: u32,      // experts
  b: u32,      // rows
  d: u32,      // feature width
  flags: u32,  // F_GRAD
  scale: f32,  // the gradient's factor (-lambda / (B E (E - 1)) times the upstream)
}
@group(0) @binding(0) var<uniform> P: DiversityParams;

@group(0) @binding(1) var<storage, read> feats: array<f32>;
@group(0) @binding(2) var<storage, read_write> dist: array<f32>;
@group(0) @binding(3) var<storage, read_write> row_out: array<f32>;
@group(0) @binding(4) var<storage, read_write> g: array<f32>;

@compute @workgroup_size(256)
fn dists(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let i = wid.x;
  let e = P.e;
  let d = P.d;
  let m = P.b * d;
  var row = 0.0;
  for (var s = 0u; s < e; s++) {
    for (var u = s + 1u; u < e; u++) {
      var acc = 0.0;
      for (var k = t; k < d; k += WG) {
        let diff = feats[s * m + i * d + k] - feats[u * m + i * d + k];
        acc += diff * diff;
      }
      let r = sqrt(wg_sum(acc, t));
      row += 2.0 * r;
      if (t == 0u) {
        dist[(i * e + s) * e + u] = r;
        dist[(i * e + u) * e + s] = r;
      }
    }
  }
  if (t == 0u) { row_out[i] = row; }
}

// Grid: (rows, column blocks of 256).
@compute @workgroup_size(256)
fn grads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let i = wid.x;
  let k = wid.y * WG + t;
  let e = P.e;
  let d = P.d;
  let m = P.b * d;
  if (k >= d) { return; }
  for (var s = 0u; s < e; s++) {
    let fs = feats[s * m + i * d + k];
    var acc = 0.0;
    for (var u = 0u; u < e; u++) {
      let r = dist[(i * e + s) * e + u];
      if (u != s && r > 0.0) { acc += (fs - feats[u * m + i * d + k]) / r; }
    }
    // (+0, not the -0 of a negative scale times 0, where nothing contributes)
    g[s * m + i * d + k] = select(2.0 * P.scale * acc, 0.0, acc == 0.0);
  }
}
