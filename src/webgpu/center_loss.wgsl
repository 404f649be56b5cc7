// centerLoss (src/webgpu/center_loss.ts), two dispatches of one pass, the math of
// src/reference/center_loss.ts:
//   rows:    one workgroup per row i: row_out[i] = ||x_i - c_{y_i}||^2 and (F_GRAD)
//            gx_i = 2 s_i (x_i - c_{y_i});
//   centers: one workgroup per class j and 256 columns: gc_j = -sum_{i: y_i = j} 2 s_i
//            (x_i - c_j) over the class's rows (listed by the host: no atomics, and the
//            same order every call), by ranges of its rows (one dispatch each, where a class
//            has more than ROW_RANGE: no invocation loops past llvmpipe's budget).

struct CenterParams {
  n: u32,      // rows
  c: u32,      // classes
  d: u32,      // embedding width
  flags: u32,  // F_GRAD
  r0: u32,     // class_grad: this dispatch's range of each class's rows, [r0, r0 + ROW_RANGE) ...
  rn: u32,     // ... its length (src/webgpu/loops.ts's ROW_RANGE), the sums kept in gc between ranges
}
@group(0) @binding(0) var<uniform> P: CenterParams;

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> centers: array<f32>;
// labels [n], then the rows sorted by class [n], then each class's first index in them [c + 1].
@group(0) @binding(3) var<storage, read> ints: array<i32>;
@group(0) @binding(4) var<storage, read> scales: array<f32>;
@group(0) @binding(5) var<storage, read_write> row_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> gx: array<f32>;
@group(0) @binding(7) var<storage, read_write> gc: array<f32>;

@compute @workgroup_size(256)
fn rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let i = wid.x;
  let d = P.d;
  let y = u32(ints[i]);
  let grad = (P.flags & F_GRAD) != 0u;
  let s2 = 2.0 * scales[i];
  var acc = 0.0;
  for (var k = t; k < d; k += WG) {
    let diff = x[i * d + k] - centers[y * d + k];
    acc += diff * diff;
    if (grad) { gx[i * d + k] = s2 * diff; }
  }
  acc = wg_sum(acc, t);
  if (t == 0u) { row_out[i] = acc; }
}

// Grid: (classes, column blocks of 256).
@compute @workgroup_size(256)
fn class_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let j = wid.x;
  let k = wid.y * WG + t;
  let d = P.d;
  let n = P.n;
  if (k >= d) { return; }
  let cj = centers[j * d + k];
  var acc = 0.0;
  // (a later range of the class's rows: the earlier ranges' float32 sum, as one loop would hold it)
  if (P.r0 > 0u) { acc = gc[j * d + k]; }
  let first = ints[2u * n + j] + i32(P.r0);
  for (var q = first; q < min(ints[2u * n + j + 1u], first + i32(P.rn)); q++) {
    let i = u32(ints[n + u32(q)]);
    acc -= 2.0 * scales[i] * (x[i * d + k] - cj);
  }
  gc[j * d + k] = acc;
}
