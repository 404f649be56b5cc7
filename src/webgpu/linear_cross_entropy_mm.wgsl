// The gradient products of linearCrossEntropy over one chunk of classes [j0, j0 + cols)
// (src/webgpu/linear_cross_entropy.ts), from du [N, cols] (linear_cross_entropy.wgsl's grad, in the
// hi slots of the block's pairs: du_ij at 2 (i cols + j)):
//   grad_x: dX += du W_J      (grid: row tiles, D tiles), the chunks' sums added in two-float
//           (gx and gxlo, its compensation; the first chunk writes), so that x's gradient, a sum
//           over every class, keeps its accuracy however many chunks there are;
//   grad_w: dW_J = du^T X     (grid: class tiles, D tiles), each class's rows written once;
//   grad_b: db_J = sum_i du   (one invocation per class, in two-float);
//   fin_x:  gx += gxlo, after the last chunk.
// 64 x 64 output tiles (src/webgpu/gemm_tile.wgsl); every output element has one owner. W and
// dW are bound from the chunk's first class on.

// #include "linear_ce_params.wgsl"

@group(0) @binding(1) var<storage, read> du: array<f32>;
@group(0) @binding(2) var<storage, read> xs: array<f32>;
@group(0) @binding(3) var<storage, read> ws: array<f32>;
@group(0) @binding(4) var<storage, read_write> gx: array<f32>;
@group(0) @binding(5) var<storage, read_write> gxlo: array<f32>;
@group(0) @binding(6) var<storage, read_write> gw: array<f32>;
@group(0) @binding(7) var<storage, read_write> gb: array<f32>;

// #include "gemm_tile.wgsl"

// Grid: (row tiles, D tiles).
@compute @workgroup_size(64)
fn grad_x(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let i0 = wid.x * 64u;
  let q0 = wid.y * 64u;
  let n = P.n;
  let d = P.d;
  let cols = P.cols;
  var out: array<vec4<f32>, 16>;
  for (var q = 0u; q < 16u; q++) { out[q] = vec4<f32>(0.0); }
  for (var k0 = 0u; k0 < cols; k0 += TK) {
    for (var e = 0u; e < 16u; e++) {
      let idx = t + 64u * e;
      let kk = idx & 15u;
      let r = idx >> 4u;
      let k = k0 + kk;
      var va = 0.0;
      if (k < cols && i0 + r < n) { va = du[2u * ((i0 + r) * cols + k)]; }
      As[kk * 16u + (r >> 2u)][r & 3u] = va;
      let c = idx & 63u;
      let kb = k0 + (idx >> 6u);
      var vb = 0.0;
      if (kb < cols && q0 + c < d) { vb = ws[kb * d + q0 + c]; }
      Bs[(idx >> 6u) * 16u + (c >> 2u)][c & 3u] = vb;
    }
    workgroupBarrier();
    block(&out, t);
    workgroupBarrier();
  }
  for (var r = 0u; r < 8u; r++) {
    let i = i0 + 8u * (t >> 3u) + r;
    if (i >= n) { continue; }
    for (var cc = 0u; cc < 8u; cc++) {
      let q = q0 + 8u * (t & 7u) + cc;
      if (q >= d) { continue; }
      let o = i * d + q;
      let v = out[2u * r + (cc >> 2u)][cc & 3u];
      if (P.first != 0u) {
        gx[o] = v;
        gxlo[o] = 0.0;
      } else {
        let sm = two_sum(gx[o], v);
        gx[o] = sm.x;
        gxlo[o] += sm.y;
      }
    }
  }
}

// Grid: (class tiles of the chunk, D tiles).
@compute @workgroup_size(64)
fn grad_w(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let c0 = wid.x * 64u;
  let q0 = wid.y * 64u;
  let n = P.n;
  let d = P.d;
  let cols = P.cols;
  var out: array<vec4<f32>, 16>;
  for (var q = 0u; q < 16u; q++) { out[q] = vec4<f32>(0.0); }
  for (var k0 = 0u; k0 < n; k0 += TK) {
    for (var e = 0u; e < 16u; e++) {
      let idx = t + 64u * e;
      let kk = idx & 15u;
      let r = idx >> 4u;
      let k = k0 + kk;
      var va = 0.0;
      if (k < n && c0 + r < cols) { va = du[2u * (k * cols + c0 + r)]; }
      As[kk * 16u + (r >> 2u)][r & 3u] = va;
      let c = idx & 63u;
      let kb = k0 + (idx >> 6u);
      var vb = 0.0;
      if (kb < n && q0 + c < d) { vb = xs[kb * d + q0 + c]; }
      Bs[(idx >> 6u) * 16u + (c >> 2u)][c & 3u] = vb;
    }
    workgroupBarrier();
    block(&out, t);
    workgroupBarrier();
  }
  for (var r = 0u; r < 8u; r++) {
    let jl = c0 + 8u * (t >> 3u) + r;
    if (jl >= cols) { continue; }
    for (var cc = 0u; cc < 8u; cc++) {
      let q = q0 + 8u * (t & 7u) + cc;
      if (q < d) { gw[jl * d + q] = out[2u * r + (cc >> 2u)][cc & 3u]; }
    }
  }
}

// One invocation per class of the chunk.
@compute @workgroup_size(64)
fn grad_b(@builtin(global_invocation_id) gid: vec3<u32>) {
  zero = P.zero;
  let jl = gid.x;
  let cols = P.cols;
  if (jl >= cols) { return; }
  var acc = vec2<f32>(0.0);
  for (var i = 0u; i < P.n; i++) {
    let sm = two_sum(acc.x, du[2u * (i * cols + jl)]);
    acc = vec2(sm.x, acc.y + sm.y);
  }
  gb[P.j0 + jl] = acc.x + acc.y;
}

// One invocation per element of dX (beyond the grid in steps of its size).
@compute @workgroup_size(64)
fn fin_x(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let total = P.n * P.d;
  for (var e = gid.x; e < total; e += nwg.x * 64u) { gx[e] += gxlo[e]; }
}
