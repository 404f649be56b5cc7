// The GPU side of a loss's finish step for a call with `readback: false` (src/webgpu/finish.ts
// evaluates the expressions of src/kernels/deferred.ts): each dispatch computes one node of
// an expression into dst, reading src at element off + i * stride for i < n.
//   sum:   dst[0] = sum_i src_i                       (one workgroup; float pairs)
//   axpy:  dst[i] = (acc != 0 ? dst[i] : c) + k src_i (a grid-strided loop)
//   recip: dst[i] = 1 / src_i

struct FinishParams {
  n: u32,       // elements of src
  off: u32,     // element offset of src_0
  stride: u32,  // elements between src_i and src_i+1
  acc: u32,     // axpy: add into dst (1) or start from c (0)
  k: f32,       // axpy: the coefficient
  c: f32,       // axpy: the constant
  zero: u32,    // 0 (float pairs, src/webgpu/common.wgsl)
}
@group(0) @binding(0) var<uniform> P: FinishParams;

@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

var<workgroup> his: array<f32, WG>;
var<workgroup> los: array<f32, WG>;

@compute @workgroup_size(WG)
fn sum(@builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  var s = vec2<f32>(0.0);
  for (var i = t; i < P.n; i += WG) { s = df_add(s, df(src[P.off + i * P.stride])); }
  his[t] = s.x;
  los[t] = s.y;
  workgroupBarrier();
  for (var w = WG / 2u; w > 0u; w = w >> 1u) {
    if (t < w) {
      let r = df_add(vec2<f32>(his[t], los[t]), vec2<f32>(his[t + w], los[t + w]));
      his[t] = r.x;
      los[t] = r.y;
    }
    workgroupBarrier();
  }
  if (t == 0u) { dst[0] = his[0] + los[0]; }
}

@compute @workgroup_size(64)
fn axpy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  for (var i = gid.x; i < P.n; i += groups.x * 64u) {
    let base = select(P.c, dst[i], P.acc != 0u);
    dst[i] = base + P.k * src[P.off + i * P.stride];
  }
}

@compute @workgroup_size(64)
fn recip(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  for (var i = gid.x; i < P.n; i += groups.x * 64u) { dst[i] = 1.0 / src[P.off + i * P.stride]; }
}
