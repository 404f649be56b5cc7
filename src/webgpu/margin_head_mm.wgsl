// The gradient products of the embedding heads over one chunk of classes
// [row0, row0 + k) (src/webgpu/margin_head.ts): from du [N, k] (src/webgpu/margin_head.wgsl's grad),
//   dx: v_i += sum_j du_ij b_j W_j     into dX [N, D] (grid: row tiles, D tiles);
//       the label's du is left out with MH_SKIP_LABEL (x not normalised: the host's
//       label term is added by margin_head_rows' fin_x instead, in double-float32);
//   dw: t_j  = sum_i du_ij a_i x_i     into dW [C, D] (grid: class tiles, D tiles), by ranges of rows
//       [r0, r0 + rn), one dispatch each (llvmpipe's loop budget, src/webgpu/loops.ts), the later ones
//       adding theirs.
// W, bcls and dW are bound from the chunk's first class (row0) on.
// 64 x 64 output tiles (src/webgpu/gemm_store.wgsl). Each output element has one owner: no
// atomics. dX adds the chunk's sum to what the earlier chunks left, in two-float (outv and
// lov, its compensation) so the order of the chunks costs no accuracy.

// #include "margin_head_params.wgsl"

@group(0) @binding(1) var<storage, read> du: array<f32>;
@group(0) @binding(2) var<storage, read> xs: array<f32>;
@group(0) @binding(3) var<storage, read> ws: array<f32>;
@group(0) @binding(4) var<storage, read> labels: array<i32>;
@group(0) @binding(5) var<storage, read> row_v: array<f32>;
@group(0) @binding(6) var<storage, read> bcls: array<f32>;
@group(0) @binding(7) var<storage, read_write> outv: array<f32>;
@group(0) @binding(8) var<storage, read_write> lov: array<f32>;

// #include "gemm_store.wgsl"

// The products (src/webgpu/gemm_store.wgsl): 0 dX += (du b) W (two-float, see the top), 1 dW = (du a)^T X.
fn tile_a(which: u32, i: u32, k: u32) -> f32 {
  if (which == 0u) {
    if ((P.flags & MH_SKIP_LABEL) != 0u && labels[i] == i32(P.row0 + k)) { return 0.0; }
    return du[i * P.k + k] * bcls[4u * k];
  }
  return du[(P.r0 + k) * P.k + i] * row_v[(P.r0 + k) * MH_RS];
}
fn tile_b(which: u32, k: u32, j: u32) -> f32 {
  if (which == 0u) { return ws[k * P.d + j]; }
  return xs[(P.r0 + k) * P.d + j];
}
fn tile_put(which: u32, i: u32, j: u32, v: f32) {
  let o = i * P.d + j;
  if (which == 1u) {
    outv[o] = select(outv[o] + v, v, P.r0 == 0u);
  } else {
    let s = two_sum(outv[o], v);
    outv[o] = s.x;
    lov[o] += s.y;
  }
}

// Grid: (row tiles, D tiles), offset by (a_off, b_off) tiles.
@compute @workgroup_size(64)
fn dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let i0 = (wid.x + P.a_off) * 64u;
  let d0 = (wid.y + P.b_off) * 64u;
  var out: array<vec4<f32>, 16>;
  gemm_tiles(&out, t, 0u, i0, P.n, d0, P.d, P.k, false);
  gemm_store(&out, t, 0u, i0, P.n, d0, P.d);
}

// Grid: (class tiles of the chunk, D tiles), offset by (a_off, b_off) tiles.
@compute @workgroup_size(64)
fn dw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let jl0 = (wid.x + P.a_off) * 64u;
  let d0 = (wid.y + P.b_off) * 64u;
  var out: array<vec4<f32>, 16>;
  gemm_tiles(&out, t, 1u, jl0, P.k, d0, P.d, P.rn, false);
  gemm_store(&out, t, 1u, jl0, P.k, d0, P.d);
}
