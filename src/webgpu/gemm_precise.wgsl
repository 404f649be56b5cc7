// The tiled product of src/webgpu/gemm_loop.wgsl (include it first) with the dot products in
// double-float32 (the "precise" logits of src/webgpu/margin_head.wgsl and
// src/webgpu/linear_cross_entropy.wgsl): each A and B value split into 12-bit halves (whose
// products are exact), the high products summed error-free (two-sum) and the rest into a
// compensation term, so a dot product of 1e4 is good to about 1e-7. Operands as gemm_tiles'
// with b_rows (A and B^T both read with k fastest); the halves in gemm_tile.wgsl's As and Bs
// ([0, 128): high, [128, 256): low).

const TKP: u32 = 8u; // k per step

struct Acc {
  s: vec4<f32>,
  l: vec4<f32>,
}

// s + l += a * b with a = ah + al, b = bh + bl: ah * bh is exact and summed by two-sum,
// the rest (2^-11 of it) goes to l.
fn acc_p(s: vec4<f32>, l: vec4<f32>, ah: f32, al: f32, bh: vec4<f32>, bl: vec4<f32>, b: vec4<f32>) -> Acc {
  let p = ah * bh;
  let s1 = opq4(s + p);
  let bp = opq4(s1 - s);
  let err = (s - (s1 - bp)) + (p - bp);
  return Acc(s1, l + (err + (ah * bl + al * b)));
}

// (out, lo) = the tile at (r0, c0) of product `which`, as gemm_tiles' out (block layout) in
// pairs. Call from uniform control flow, after `zero = P.zero`.
fn gemm_precise(
  out: ptr<function, array<vec4<f32>, 16>>,
  lo: ptr<function, array<vec4<f32>, 16>>,
  t: u32,
  which: u32,
  r0: u32,
  rows: u32,
  c0: u32,
  cols: u32,
  kdim: u32,
) {
  let ty = t >> 3u;
  let tx = t & 7u;
  // Loads: k = t & 7 of rows (t >> 3) + 8 q.
  let lk = t & 7u;
  let lr = t >> 3u;
  for (var q = 0u; q < 16u; q++) {
    (*out)[q] = vec4<f32>(0.0);
    (*lo)[q] = vec4<f32>(0.0);
  }
  for (var k0 = 0u; k0 < kdim; k0 += TKP) {
    let k = k0 + lk;
    for (var q = 0u; q < 8u; q++) {
      let r = lr + 8u * q;
      var va = 0.0;
      var vb = 0.0;
      if (r0 + r < rows && k < kdim) { va = tile_a(which, r0 + r, k); }
      if (c0 + r < cols && k < kdim) { vb = tile_b(which, k, c0 + r); }
      let sa = split(va);
      let sb = split(vb);
      let at = lk * 16u + (r >> 2u);
      As[at][r & 3u] = sa.x;
      As[128u + at][r & 3u] = sa.y;
      Bs[at][r & 3u] = sb.x;
      Bs[128u + at][r & 3u] = sb.y;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TKP; kk++) {
      let bh0 = Bs[kk * 16u + 2u * tx];
      let bh1 = Bs[kk * 16u + 2u * tx + 1u];
      let bl0 = Bs[128u + kk * 16u + 2u * tx];
      let bl1 = Bs[128u + kk * 16u + 2u * tx + 1u];
      let b0 = bh0 + bl0;
      let b1 = bh1 + bl1;
      for (var h = 0u; h < 2u; h++) {
        let ah = As[kk * 16u + 2u * ty + h];
        let al = As[128u + kk * 16u + 2u * ty + h];
        for (var e = 0u; e < 4u; e++) {
          let q = 8u * h + 2u * e;
          let x0 = acc_p((*out)[q], (*lo)[q], ah[e], al[e], bh0, bl0, b0);
          let x1 = acc_p((*out)[q + 1u], (*lo)[q + 1u], ah[e], al[e], bh1, bl1, b1);
          (*out)[q] = x0.s;
          (*lo)[q] = x0.l;
          (*out)[q + 1u] = x1.s;
          (*lo)[q + 1u] = x1.l;
        }
      }
    }
    workgroupBarrier();
  }
}
