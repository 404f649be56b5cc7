// The workgroup sum of float pairs (src/webgpu/common.wgsl's wg_sum, in pairs), of
// src/webgpu/face_rows.wgsl and src/webgpu/hnm_contrastive.wgsl.

var<workgroup> red2: array<vec2<f32>, WG>;

// Sum of pairs over the workgroup (every invocation gets it). Call from uniform control flow.
fn wg_sum2(v: vec2<f32>, t: u32) -> vec2<f32> {
  red2[t] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (t < s) { red2[t] = df_add(red2[t], red2[t + s]); }
    workgroupBarrier();
  }
  let r = red2[0];
  workgroupBarrier();
  return r;
}
