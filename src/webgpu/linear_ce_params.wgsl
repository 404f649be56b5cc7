// The uniform struct of linearCrossEntropy's kernels (src/webgpu/linear_cross_entropy.wgsl and
// linear_cross_entropy_mm.wgsl) and the layout of their per-row values.

struct LinearCeParams {
  n: u32,          // rows
  c: u32,          // classes of the softmax (V, or S with classes)
  d: u32,          // hidden width
  j0: u32,         // the chunk's first class
  cols: u32,       // classes in the chunk
  first: u32,      // 1 for the first chunk of a pass
  has_bias: u32,   // 1: bias[j] is added to the logits
  has_weight: u32, // 1: weight[j] holds the class weights (else all 1)
  zero: u32,       // always 0 (src/webgpu/common.wgsl's `zero`)
  eps: f32,        // label smoothing
  softcap: f32,    // the logit cap c, 0 for none
  zloss: f32,      // the z-loss coefficient k
  wall: f32,       // the sum of the class weights (c without weights)
  wseen: f32,      // the sum of the class weights of the classes before j0
  bound: f32,      // dots: a tile's dot products are precise where max ||x_i|| max ||W_j|| + max |b_j| > bound
  r0: u32,         // grad_w, grad_b: the first row of this dispatch's range of rows ...
  rn: u32,         // ... and its rows (src/webgpu/loops.ts's ROW_RANGE; the pairs kept between ranges in gwlo)
  k0: u32,         // dots: the first column of x and W of this dispatch's window of D ...
  kn: u32,         // ... and its columns (src/webgpu/loops.ts's DEPTH_WINDOW; the pairs kept between windows in s)
}
@group(0) @binding(0) var<uniform> P: LinearCeParams;

// The dot products u are pairs hi + lo (src/webgpu/common.wgsl's float pairs; lo 0 where a tile's dot
// products are plain float32), kept before the cap: every difference of two logits is formed from
// their pairs (`diff`, the cap's difference), so it is exact near a row's maximum. st [N, LCE_RS]
// per row: 0, 12 U (the running maximum of u, hi and lo), 1 S (sum of e^(z_j - cap(U)) over the
// non-label classes), 2 B (sum_j w_j (cap(U) - z_j), with smoothing), 3, 10 the largest non-label
// u, 4, 9 the label's u; after `finish`: 5 lse, 11 l = lse - cap(U), 6 the row's loss, 7 its z-loss
// term, 8 1 when the row is correct.
const LCE_RS: u32 = 14u;
