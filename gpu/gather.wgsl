// Reads each row's label entry of a GPU-resident matrix (the margin losses' cosines of
// the labels, which the host turns into target logits): row_out[i] = a[i, y_i], 0 for
// an ignored row. One workgroup per row (the dispatch machinery of every row kernel).

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(5) var<storage, read> labels: array<i32>;
@group(0) @binding(8) var<storage, read_write> row_out: array<f32>;

@compute @workgroup_size(1)
fn main(@builtin(workgroup_id) wid: vec3<u32>) {
  let i = P.row0 + wid.x;
  let y = labels[i];
  var v = 0.0;
  if (y >= 0) { v = a[P.a_off + wid.x * P.c + u32(y)]; }
  row_out[i * P.rs_out] = v;
}
