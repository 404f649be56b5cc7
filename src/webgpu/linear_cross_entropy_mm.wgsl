// The gradient products of linearCrossEntropy over one chunk of classes [j0, j0 + cols)
// (src/webgpu/linear_cross_entropy.ts), from du [N, cols] (linear_cross_entropy.wgsl's grad, in the
// hi slots of the block's pairs: du_ij at 2 (i cols + j)):
//   grad_x: dX += du W_J      (grid: row tiles, D tiles), the chunks' sums added in two-float
//           (gx and gxlo, its compensation; the first chunk writes), so that x's gradient, a sum
//           over every class, keeps its accuracy however many chunks there are;
//   grad_w: dW_J = du^T X     (grid: class tiles, D tiles), each class's rows written once: a float32
//           product per block of RB rows, the blocks' products added in two-float (a pair per
//           element, in registers), so that dW's error does not grow with N (docs/LOSSES.md);
//   grad_b: db_J = sum_i du   (one invocation per class, in two-float);
//   both by ranges of rows [r0, r0 + rn), one dispatch each (no invocation loops more than llvmpipe
//   allows: src/webgpu/loops.ts), the pairs kept between ranges in dW (hi) and gwlo (lo; db's after
//   cols D), so that the result is the one range's bit for bit;
//   fin_x:  gx += gxlo, after the last chunk.
// 64 x 64 output tiles (src/webgpu/gemm_store.wgsl); every output element has one owner. W and
// dW are bound from the chunk's first class on.

// #include "linear_ce_params.wgsl"

@group(0) @binding(1) var<storage, read> du: array<f32>;
@group(0) @binding(2) var<storage, read> xs: array<f32>;
@group(0) @binding(3) var<storage, read> ws: array<f32>;
@group(0) @binding(4) var<storage, read_write> gx: array<f32>;
@group(0) @binding(5) var<storage, read_write> gxlo: array<f32>;
@group(0) @binding(6) var<storage, read_write> gw: array<f32>;
@group(0) @binding(7) var<storage, read_write> gb: array<f32>;
@group(0) @binding(8) var<storage, read_write> gwlo: array<f32>;

// #include "gemm_store.wgsl"

// Rows per block of dW's product (a float32 chain of at most RB terms per element).
const RB: u32 = 256u;
// grad_w: the first row of the block in hand.
var<private> kb: u32;

// The products (src/webgpu/gemm_store.wgsl): 0 dX (+)= du W_J (the first chunk writes, the others
// add in two-float), 1 dW_J's share of rows [kb, kb + RB): du^T X.
fn tile_a(which: u32, i: u32, k: u32) -> f32 {
  if (which == 0u) { return du[2u * (i * P.cols + k)]; }
  return du[2u * ((kb + k) * P.cols + i)];
}
fn tile_b(which: u32, k: u32, j: u32) -> f32 {
  if (which == 0u) { return ws[k * P.d + j]; }
  return xs[(kb + k) * P.d + j];
}
fn tile_put(which: u32, i: u32, j: u32, v: f32) {
  let o = i * P.d + j;
  if (which == 1u) {
    gw[o] = v;
  } else if (which == 2u) {
    gwlo[o] = v;
  } else if (P.first != 0u) {
    gx[o] = v;
    gxlo[o] = 0.0;
  } else {
    let sm = two_sum(gx[o], v);
    gx[o] = sm.x;
    gxlo[o] += sm.y;
  }
}

// Grid: (row tiles, D tiles).
@compute @workgroup_size(64)
fn grad_x(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  var out: array<vec4<f32>, 16>;
  gemm_tiles(&out, t, 0u, wid.x * 64u, P.n, wid.y * 64u, P.d, P.cols, false);
  gemm_store(&out, t, 0u, wid.x * 64u, P.n, wid.y * 64u, P.d);
}

// Grid: (class tiles of the chunk, D tiles).
@compute @workgroup_size(64)
fn grad_w(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  var out: array<vec4<f32>, 16>;
  var hi: array<vec4<f32>, 16>;
  var lo: array<vec4<f32>, 16>;
  for (var q = 0u; q < 16u; q++) {
    hi[q] = vec4<f32>(0.0);
    lo[q] = vec4<f32>(0.0);
  }
  let j0 = wid.x * 64u;
  let d0 = wid.y * 64u;
  // (a later range: the pairs the earlier ones left, in gemm_store's order)
  if (P.r0 != 0u) {
    for (var r = 0u; r < 8u; r++) {
      let i = j0 + 8u * (t >> 3u) + r;
      for (var cc = 0u; cc < 8u; cc++) {
        let j = d0 + 8u * (t & 7u) + cc;
        if (i < P.cols && j < P.d) {
          hi[2u * r + (cc >> 2u)][cc & 3u] = gw[i * P.d + j];
          lo[2u * r + (cc >> 2u)][cc & 3u] = gwlo[i * P.d + j];
        }
      }
    }
  }
  let end = P.r0 + P.rn;
  for (var b0 = P.r0; b0 < end; b0 += RB) {
    kb = b0;
    gemm_tiles(&out, t, 1u, j0, P.cols, d0, P.d, min(RB, end - b0), false);
    // hi + lo += out, two-sum per element.
    for (var q = 0u; q < 16u; q++) {
      let s = opq4(hi[q] + out[q]);
      let bp = opq4(s - hi[q]);
      lo[q] += (hi[q] - (s - bp)) + (out[q] - bp);
      hi[q] = s;
    }
  }
  if (end < P.n) {
    gemm_store(&hi, t, 1u, j0, P.cols, d0, P.d);
    gemm_store(&lo, t, 2u, j0, P.cols, d0, P.d);
    return;
  }
  for (var q = 0u; q < 16u; q++) { out[q] = hi[q] + lo[q]; }
  gemm_store(&out, t, 1u, j0, P.cols, d0, P.d);
}

// One invocation per class of the chunk.
@compute @workgroup_size(64)
fn grad_b(@builtin(global_invocation_id) gid: vec3<u32>) {
  zero = P.zero;
  let jl = gid.x;
  let cols = P.cols;
  if (jl >= cols) { return; }
  var acc = vec2<f32>(0.0);
  let lo = cols * P.d + jl;
  if (P.r0 != 0u) { acc = vec2(gb[P.j0 + jl], gwlo[lo]); }
  let end = P.r0 + P.rn;
  for (var i = P.r0; i < end; i++) {
    let sm = two_sum(acc.x, du[2u * (i * cols + jl)]);
    acc = vec2(sm.x, acc.y + sm.y);
  }
  if (end < P.n) {
    gb[P.j0 + jl] = acc.x;
    gwlo[lo] = acc.y;
    return;
  }
  gb[P.j0 + jl] = acc.x + acc.y;
}

// One invocation per element of dX (beyond the grid in steps of its size).
@compute @workgroup_size(64)
fn fin_x(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let total = P.n * P.d;
  for (var e = gid.x; e < total; e += nwg.x * 64u) { gx[e] += gxlo[e]; }
}
