// The `combine` family (src/webgpu/combine.ts, src/losses/combine.ts): a composite's terms'
// gradients combined in place on the GPU, one job per operation:
//   add:   into += from over n elements (a grid-strided loop);
//   gated: the gated ensemble's vector-Jacobian product for expert k, one workgroup per row i:
//          into_i += gating[i, k] dfine_i and gg[i, k] = <z_i, dfine_i> (the dot by float pairs
//          per invocation, then summed).

struct CombineParams {
  n: u32,     // add: elements
  b: u32,     // gated: rows
  c: u32,     // gated: columns
  e: u32,     // gated: experts (the gating's columns)
  k: u32,     // gated: this expert
  zero: u32,  // 0 (float pairs, src/webgpu/common.wgsl)
}
@group(0) @binding(0) var<uniform> P: CombineParams;

// add: from; gated: dfine, z, gating.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> zk: array<f32>;
@group(0) @binding(3) var<storage, read> gating: array<f32>;
@group(0) @binding(4) var<storage, read_write> into: array<f32>;
@group(0) @binding(5) var<storage, read_write> gg: array<f32>;

@compute @workgroup_size(256)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  for (var j = gid.x; j < P.n; j += groups.x * WG) { into[j] += x[j]; }
}

@compute @workgroup_size(256)
fn gated(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let i = wid.x;
  let c = P.c;
  let w = gating[i * P.e + P.k];
  var s = vec2<f32>(0.0);
  for (var j = t; j < c; j += WG) {
    let dj = x[i * c + j];
    s = dot_acc(s, zk[i * c + j], dj);
    into[i * c + j] += w * dj;
  }
  let dot = wg_sum(s.x, t) + wg_sum(s.y, t);
  if (t == 0u) { gg[i * P.e + P.k] = dot; }
}
