// `softCrossEntropy` on soft target rows t (probabilities, any mass T), one workgroup
// per row, loss and both gradients in one dispatch. The math is
// assembly/soft_cross_entropy.ts's (read it there):
//   loss_i = T log(sum_c e^(z_c - m)) + sum_c t_c (m - z_c)   (m the row maximum)
//   dz_c   = s_i (T p_c - t_c),   dt_c = s_i (lse - z_c) = -s_i log p_c
// The row's argmax r is left out of the sums: with S_o = sum_{c != r} e^(z_c - m),
// S = 1 + S_o and T p_r - t_r = ((T - t_r) - t_r S_o) / S, accurate when the target puts
// nearly all its mass where p does.
// Pass 1 finds the maximum and its first index, pass 2 the sums, pass 3 writes the
// gradients.
// row_in: [N, rs_in] = (gradient scale s_i). row_out: [N, rs_out] = (row loss).

struct SoftCrossEntropyParams {
  // #include "row_params.wgsl"
}
@group(0) @binding(0) var<uniform> P: SoftCrossEntropyParams;

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> h: array<f32>;
@group(0) @binding(6) var<storage, read> row_in: array<f32>;
@group(0) @binding(8) var<storage, read_write> row_out: array<f32>;


@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let r0 = wid.x;
  let i = P.row0 + r0;
  let c = P.c;
  let za = P.a_off + r0 * c;
  let tb = P.b_off + r0 * c;
  let grad = (P.flags & F_GRAD) != 0u;

  // The maximum and its first index (0 for a row of NaN), in one pass: each invocation's
  // first index of its own maximum, the least of those that reach the row's.
  var mt = NEG;
  var ft = 0xffffffffu;
  for (var j = t; j < c; j += WG) {
    let z = a[za + j];
    if (z > mt) {
      mt = z;
      ft = j;
    }
  }
  let m = wg_max(mt, t);
  var r = wg_min_u32(select(0xffffffffu, ft, mt == m), t);
  if (r >= c) { r = 0u; }

  var to = 0.0;    // sum of t without r
  var below = 0.0; // sum t_c (m - z_c)
  var so = 0.0;    // sum of e^(z_c - m) without r
  for (var j = t; j < c; j += WG) {
    let z = a[za + j];
    let tj = b[tb + j];
    below += tj * (m - z);
    if (j == r) { continue; }
    to += tj;
    so += exp(z - m);
  }
  let To = wg_sum(to, t);
  let Below = wg_sum(below, t);
  let So = wg_sum(so, t);
  let tr = b[tb + r];
  let T = To + tr;
  let S = 1.0 + So;
  let logS = log1p_(So);
  if (t == 0u) { row_out[i * P.rs_out] = T * logS + Below; }
  if (!grad) { return; }

  let s = row_in[i * P.rs_in];
  let ga = s * T / S;
  let gr = s * ((To - tr * So) / S);
  let xg = P.g_off + r0 * c;
  let xh = P.h_off + r0 * c;
  for (var j = t; j < c; j += WG) {
    let z = a[za + j];
    let tj = b[tb + j];
    var v: f32;
    if (j == r) { v = gr; } else { v = ga * exp(z - m) - s * tj; }
    g[xg + j] = v;
    h[xh + j] = -s * ((z - m) - logS);
  }
}
