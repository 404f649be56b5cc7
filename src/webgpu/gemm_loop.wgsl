// The loops of the tiled products that read their operands from storage (src/webgpu/clip.wgsl,
// src/webgpu/physics_contrastive.wgsl, src/webgpu/metric.wgsl): a 64 x 64 output tile at
// (r0, c0) of A B, A [rows, kdim], B [kdim, cols], by the tiles of src/webgpu/gemm_tile.wgsl.
// The including kernel defines how its products read and write, by a product number `which`:
//   fn tile_a(which: u32, i: u32, k: u32) -> f32     A[i, k] (called for i < rows, k < kdim)
//   fn tile_b(which: u32, k: u32, j: u32) -> f32     B[k, j] (called for k < kdim, j < cols)
//   fn tile_put(which: u32, i: u32, j: u32, v: f32)  the result (called for i < rows, j < cols)
// Entries outside the bounds are 0, so any size works.

// #include "gemm_tile.wgsl"

// out = the tile at (r0, c0) of product `which`. A is read with k fastest; B with k fastest
// when `b_rows` (B^T's rows are in storage: the products h h^T) or with j fastest
// (B's rows are: the gradients G h). Call from uniform control flow.
fn gemm_tiles(out: ptr<function, array<vec4<f32>, 16>>, t: u32, which: u32, r0: u32, rows: u32, c0: u32, cols: u32, kdim: u32, b_rows: bool) {
  for (var q = 0u; q < 16u; q++) { (*out)[q] = vec4<f32>(0.0); }
  for (var k0 = 0u; k0 < kdim; k0 += TK) {
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
    workgroupBarrier();
    block(out, t);
    workgroupBarrier();
  }
}

// Writes the 8 x 8 block of invocation t of the tile at (r0, c0) through tile_put.
fn gemm_store(out: ptr<function, array<vec4<f32>, 16>>, t: u32, which: u32, r0: u32, rows: u32, c0: u32, cols: u32) {
  for (var r = 0u; r < 8u; r++) {
    let i = r0 + 8u * (t >> 3u) + r;
    if (i >= rows) { continue; }
    for (var cc = 0u; cc < 8u; cc++) {
      let j = c0 + 8u * (t & 7u) + cc;
      if (j < cols) { tile_put(which, i, j, (*out)[2u * r + (cc >> 2u)][cc & 3u]); }
    }
  }
}
