// src/webgpu/gemm_loop.wgsl's tiled products, written through the including kernel's
//   fn tile_put(which: u32, i: u32, j: u32, v: f32)  the result (called for i < rows, j < cols)

// #include "gemm_loop.wgsl"

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
