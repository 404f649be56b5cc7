// The 64 x 64 output tile of the tiled GEMMs (src/webgpu/margin_head_mm.wgsl; the products of
// storage by src/webgpu/gemm_loop.wgsl): 64 invocations of an 8 x 8 register block each, k in
// steps of TK through workgroup memory.

const TK: u32 = 16u;

// Tiles [k][16] of vec4: 64 of the output's rows (A) and 64 of its columns (B) per k.
var<workgroup> As: array<vec4<f32>, 256>;
var<workgroup> Bs: array<vec4<f32>, 256>;

// The 8 x 8 block of invocation t (rows 8 (t >> 3) + r, columns 8 (t & 7) + c):
// out[2 r + c / 4][c % 4] += A B over the tiles in workgroup memory.
fn block(out: ptr<function, array<vec4<f32>, 16>>, t: u32) {
  let ty = t >> 3u;
  let tx = t & 7u;
  for (var kk = 0u; kk < TK; kk++) {
    let a0 = As[kk * 16u + 2u * ty];
    let a1 = As[kk * 16u + 2u * ty + 1u];
    let b0 = Bs[kk * 16u + 2u * tx];
    let b1 = Bs[kk * 16u + 2u * tx + 1u];
    (*out)[0] += a0.x * b0;
    (*out)[1] += a0.x * b1;
    (*out)[2] += a0.y * b0;
    (*out)[3] += a0.y * b1;
    (*out)[4] += a0.z * b0;
    (*out)[5] += a0.z * b1;
    (*out)[6] += a0.w * b0;
    (*out)[7] += a0.w * b1;
    (*out)[8] += a1.x * b0;
    (*out)[9] += a1.x * b1;
    (*out)[10] += a1.y * b0;
    (*out)[11] += a1.y * b1;
    (*out)[12] += a1.z * b0;
    (*out)[13] += a1.z * b1;
    (*out)[14] += a1.w * b0;
    (*out)[15] += a1.w * b1;
  }
}
