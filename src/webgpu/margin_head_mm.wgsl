// The gradient products of the embedding heads over one chunk of classes
// [row0, row0 + k) (src/webgpu/margin_head.ts): from du [N, k] (src/webgpu/margin_head.wgsl's grad),
//   dx: v_i += sum_j du_ij b_j W_j     into dX [N, D] (grid: row tiles, D tiles);
//       the label's du is left out with MH_SKIP_LABEL (x not normalised: the host's
//       label term is added by margin_head_rows' fin_x instead, in double-float32);
//   dw: t_j  = sum_i du_ij a_i x_i     into dW [C, D] (grid: class tiles, D tiles).
// W, bcls and dW are bound from the chunk's first class (row0) on.
// 64 x 64 output tiles (src/webgpu/gemm_tile.wgsl). Each output element has one owner: no
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

// #include "gemm_tile.wgsl"

// Grid: (row tiles, D tiles), offset by (a_off, b_off) tiles.
@compute @workgroup_size(64)
fn dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let i0 = (wid.x + P.a_off) * 64u;
  let d0 = (wid.y + P.b_off) * 64u;
  let n = P.n;
  let d = P.d;
  let cols = P.k;
  let j0 = P.row0;
  let skip = (P.flags & MH_SKIP_LABEL) != 0u;
  // A: du[i0 + (t >> 4) + 4 q, jj + (t & 15)] b_j; B: W[j0 + jj + (t >> 2), d0 + 16 (t & 3) + ..].
  let ak = t & 15u;
  let bk = t >> 2u;
  let bq = (t & 3u) * 4u;
  var out: array<vec4<f32>, 16>;
  for (var q = 0u; q < 16u; q++) { out[q] = vec4<f32>(0.0); }
  for (var jj = 0u; jj < cols; jj += TK) {
    let jl = jj + ak;
    var bj = 0.0;
    if (jl < cols) { bj = bcls[4u * jl]; }
    for (var q = 0u; q < 16u; q++) {
      let r = (t >> 4u) + 4u * q;
      let i = i0 + r;
      var va = 0.0;
      if (i < n && jl < cols) {
        va = du[i * cols + jl] * bj;
        if (skip && labels[i] == i32(j0 + jl)) { va = 0.0; }
      }
      As[ak * 16u + (r >> 2u)][r & 3u] = va;
    }
    let jb = jj + bk;
    for (var v = 0u; v < 4u; v++) {
      var vb = vec4<f32>(0.0);
      for (var e = 0u; e < 4u; e++) {
        let k = d0 + 4u * (bq + v) + e;
        if (jb < cols && k < d) { vb[e] = ws[jb * d + k]; }
      }
      Bs[bk * 16u + bq + v] = vb;
    }
    workgroupBarrier();
    block(&out, t);
    workgroupBarrier();
  }
  for (var r = 0u; r < 8u; r++) {
    let i = i0 + 8u * (t >> 3u) + r;
    if (i >= n) { continue; }
    for (var c = 0u; c < 8u; c++) {
      let k = d0 + 8u * (t & 7u) + c;
      if (k >= d) { continue; }
      let o = i * d + k;
      let s = two_sum(outv[o], out[2u * r + (c >> 2u)][c & 3u]);
      outv[o] = s.x;
      lov[o] += s.y;
    }
  }
}

// Grid: (class tiles of the chunk, D tiles), offset by (a_off, b_off) tiles.
@compute @workgroup_size(64)
fn dw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let jl0 = (wid.x + P.a_off) * 64u;
  let d0 = (wid.y + P.b_off) * 64u;
  let n = P.n;
  let d = P.d;
  let cols = P.k;
  // A: du[ii + (t >> 2), jl0 + 16 (t & 3) + ..] a_i; B: x[ii + (t >> 2), d0 + 16 (t & 3) + ..].
  let ik = t >> 2u;
  let q4 = (t & 3u) * 4u;
  var out: array<vec4<f32>, 16>;
  for (var q = 0u; q < 16u; q++) { out[q] = vec4<f32>(0.0); }
  for (var ii = 0u; ii < n; ii += TK) {
    let i = ii + ik;
    var ai = 0.0;
    if (i < n) { ai = row_v[i * MH_RS]; }
    for (var v = 0u; v < 4u; v++) {
      var va = vec4<f32>(0.0);
      var vb = vec4<f32>(0.0);
      for (var e = 0u; e < 4u; e++) {
        let jl = jl0 + 4u * (q4 + v) + e;
        if (i < n && jl < cols) { va[e] = du[i * cols + jl] * ai; }
        let k = d0 + 4u * (q4 + v) + e;
        if (i < n && k < d) { vb[e] = xs[i * d + k]; }
      }
      As[ik * 16u + q4 + v] = va;
      Bs[ik * 16u + q4 + v] = vb;
    }
    workgroupBarrier();
    block(&out, t);
    workgroupBarrier();
  }
  for (var r = 0u; r < 8u; r++) {
    let jl = jl0 + 8u * (t >> 3u) + r;
    if (jl >= cols) { continue; }
    for (var c = 0u; c < 8u; c++) {
      let k = d0 + 8u * (t & 7u) + c;
      if (k < d) { outv[jl * d + k] = out[2u * r + (c >> 2u)][c & 3u]; }
    }
  }
}
