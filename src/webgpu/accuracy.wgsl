// `accuracy`, one workgroup per row: a row is a hit when fewer than k logits are
// strictly greater than the label's logit (ties count in the label's favour), as
// assembly/accuracy.ts. P.k = min(k, C). row_out: [N, rs_out] = (1 for a hit, else 0;
// 0 for an ignored row).

struct AccuracyParams {
  // #include "row_params.wgsl"
  k: u32,       // min(k, C)
}
@group(0) @binding(0) var<uniform> P: AccuracyParams;

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(5) var<storage, read> labels: array<i32>;
@group(0) @binding(8) var<storage, read_write> row_out: array<f32>;

var<workgroup> above: atomic<u32>; // zero at the start of each workgroup

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let r = wid.x;
  let i = P.row0 + r;
  let c = P.c;
  let za = P.a_off + r * c;
  let y = uniform_i32(labels[i], t);
  if (y < 0) {
    if (t == 0u) { row_out[i * P.rs_out] = 0.0; }
    return;
  }
  let zy = a[za + u32(y)];
  var n = 0u;
  for (var j = t; j < c; j += WG) {
    if (a[za + j] > zy) { n += 1u; }
  }
  if (n > 0u) { atomicAdd(&above, n); }
  workgroupBarrier();
  if (t == 0u) { row_out[i * P.rs_out] = select(0.0, 1.0, atomicLoad(&above) < P.k); }
}
