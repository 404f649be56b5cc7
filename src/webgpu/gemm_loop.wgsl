// The loops of the tiled products that read their operands from storage (src/webgpu/clip.wgsl,
// src/webgpu/physics_contrastive.wgsl, src/webgpu/metric.wgsl, the heads' and linearCrossEntropy's
// logits and gradients): a 64 x 64 output tile at (r0, c0) of A B, A [rows, kdim], B [kdim, cols],
// by the tiles of src/webgpu/gemm_tile.wgsl. The including kernel defines how its products read,
// by a product number `which` (and write: src/webgpu/gemm_store.wgsl):
//   fn tile_a(which: u32, i: u32, k: u32) -> f32     A[i, k] (called for i < rows, k < kdim)
//   fn tile_b(which: u32, k: u32, j: u32) -> f32     B[k, j] (called for k < kdim, j < cols)
// Entries outside the bounds are 0, so any size works.

// #include "gemm_tile.wgsl"

// Loads the tiles of product `which` at depth k0 into workgroup memory (As, Bs): A is read with
// k fastest; B with k fastest when `b_rows` (B^T's rows are in storage: the products h h^T) or
// with j fastest (B's rows are: the gradients G h). Call from uniform control flow.
fn gemm_load(t: u32, which: u32, r0: u32, rows: u32, c0: u32, cols: u32, kdim: u32, k0: u32, b_rows: bool) {
  for (var e = 0u; e < 16u; e++) {
    let idx = t + 64u * e;
    let kk = idx & 15u;
    let r = idx >> 4u;
    var va = 0.0;
    if (k0 + kk < kdim && r0 + r < rows) { va = tile_a(which, r0 + r, k0 + kk); }
    As[kk * 16u + (r >> 2u)][r & 3u] = va;
    // B's entry (kb, c) of the tile.
    var kb = kk;
    var c = r;
    if (!b_rows) {
      kb = idx >> 6u;
      c = idx & 63u;
    }
    var vb = 0.0;
    if (k0 + kb < kdim && c0 + c < cols) { vb = tile_b(which, k0 + kb, c0 + c); }
    Bs[kb * 16u + (c >> 2u)][c & 3u] = vb;
  }
}

// out = the tile at (r0, c0) of product `which` (b_rows: see gemm_load). Call from uniform
// control flow.
fn gemm_tiles(out: ptr<function, array<vec4<f32>, 16>>, t: u32, which: u32, r0: u32, rows: u32, c0: u32, cols: u32, kdim: u32, b_rows: bool) {
  for (var q = 0u; q < 16u; q++) { (*out)[q] = vec4<f32>(0.0); }
  for (var k0 = 0u; k0 < kdim; k0 += TK) {
    gemm_load(t, which, r0, rows, c0, cols, kdim, k0, b_rows);
    workgroupBarrier();
    block(out, t);
    workgroupBarrier();
  }
}
