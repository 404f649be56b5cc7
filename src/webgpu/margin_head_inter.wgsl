// marginHead's inter-class options on the GPU (SPEC.md section 7; the host's twins are
// src/kernels/hard_label.ts's NonTarget, isHard and hardLogit): with MH_INTER a non-label cosine u
// of row i, class j is clamped to [nt_lo, nt_hi], then replaced by 0 (no gradient) above nt_cut
// (interclassFilteringThreshold; inf: off); with MH_TOPK it is then hard where (j the class, or with
// sub-centres the row of W of its winner: class j / subs)
//   x > thr_i, or x == thr_i and j <= tie_i      (row_v slots 27 and 28: the row's k-th largest
//                                                  and the last class taken at it, ties to the smaller class)
// and its logit is s (a x + b x^2 + g sqrt(1 - x^2)) (interTopK: a = cos m', b = 0, g = sin m'),
// derivative over s a + 2 b x - g xd / sqrt(1 - xd^2), xd = x clamped to [-1 + 1e-6, 1 - 1e-6].
// Included by src/webgpu/margin_head.wgsl; src/webgpu/margin_head_topk.wgsl takes each row's top k
// from the same float32 values (clamped, then filtered), so the comparisons agree exactly.

// xd / sqrt(1 - xd^2) at xd = 1 - 1e-6 (float64's value; float32 cannot hold 1 - 1e-6 closely enough).
const INTER_EDGE: f32 = 707.10625084227;

// (x, cut): the cosine u clamped and filtered, cut = 1 where no gradient passes.
fn inter_value(u: f32) -> vec2<f32> {
  let uc = clampn(u, P.nt_lo, P.nt_hi);
  if (uc > P.nt_cut) { return vec2<f32>(0.0, 1.0); }
  return vec2<f32>(uc, select(1.0, 0.0, kept(uc, u)));
}

// (z, dz/du over s, cut) of a non-label cosine u of row i, class j.
fn inter_logit(u: f32, i: u32, j: u32) -> vec3<f32> {
  let v = inter_value(u);
  let x = v.x;
  if ((P.flags & MH_TOPK) != 0u) {
    let thr = row_v[i * MH_RS + 27u];
    if (x > thr || (x == thr && f32(j / P.subs) <= row_v[i * MH_RS + 28u])) {
      var r = INTER_EDGE; // xd / sqrt(1 - xd^2); 1 - x is exact near 1
      if (x < -0.999999) {
        r = -INTER_EDGE;
      } else if (!(x > 0.999999)) {
        r = x / sqrt((1.0 - x) * (1.0 + x));
      }
      let z = P.nt_a * x + P.nt_b * x * x + P.nt_g * sqrt(max(0.0, (1.0 - x) * (1.0 + x)));
      return vec3<f32>(P.scale * z, P.nt_a + 2.0 * P.nt_b * x - P.nt_g * r, v.y);
    }
  }
  return vec3<f32>(P.scale * x, 1.0, v.y);
}
