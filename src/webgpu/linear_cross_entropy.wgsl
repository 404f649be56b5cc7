// linearCrossEntropy on the GPU (src/webgpu/linear_cross_entropy.ts), the math of
// src/reference/linear_cross_entropy.ts over chunks of classes [j0, j0 + cols) (the [N, V]
// logits never exist: s holds one chunk's [N, cols] block):
//   dots:   s = x W_J^T + b_J by the heads' 64 x 64 tiles (src/webgpu/gemm_tile.wgsl), before the cap;
//   stats:  one workgroup per row: the chunk's max m, sum of e^(z - m) over its non-label
//           classes, sum w_j (m - z_j) (smoothing), largest non-label logit and the label's
//           logit, merged into the row's running values in st as shards merge
//           (src/kernels/shards.ts): M' = max(M, m), S' = S e^(M - M') + s e^(m - M'),
//           B' = B + W_seen (M' - M) + b + W_chunk (M' - m);
//   finish: one invocation per row, after the last chunk: lse = M + log(S + e^(z_y - M)), the
//           row's loss (1 - eps) w_y (lse - z_y) + (eps / C) (B + W_all (lse - M)), its z-loss
//           term k lse^2 and whether it is correct (no non-label logit above z_y);
//   grad:   (second pass, s recomputed by `dots`) s := du = dL/du per element:
//           (s_i (q_sum p_j - q_j) + zs_i 2 k lse p_j) cap'(u_j), the label's 1 - p_y as
//           S / (S + e^(z_y - M)) (no cancellation where p_y is near 1).
// The per-row upstream (reduction "none") is inside s_i and zs_i (rin), so it weighs du
// before the products that form dX, dW and db (src/webgpu/linear_cross_entropy_mm.wgsl).

// #include "linear_ce_params.wgsl"

@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read> ws: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
// rin [N, 3]: the label (i32 bits; -1 ignored), s_i, zs_i (the gradient scales).
@group(0) @binding(5) var<storage, read> rin: array<f32>;
@group(0) @binding(6) var<storage, read_write> s: array<f32>;
@group(0) @binding(7) var<storage, read_write> st: array<f32>;

// #include "gemm_tile.wgsl"

fn label_of(i: u32) -> i32 { return bitcast<i32>(rin[3u * i]); }

fn weight_of(j: u32) -> f32 {
  if (P.has_weight != 0u) { return weight[j]; }
  return 1.0;
}

// The capped logit c tanh(u / c) and its slope (u and 1 without a cap).
fn logit(u: f32) -> vec2<f32> {
  if (P.softcap == 0.0) { return vec2(u, 1.0); }
  let t = tanh_(u / P.softcap);
  return vec2(P.softcap * t.x, t.y);
}

// Grid: (row tiles, class tiles of the chunk).
@compute @workgroup_size(64)
fn dots(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let i0 = wid.x * 64u;
  let c0 = wid.y * 64u;
  let n = P.n;
  let d = P.d;
  let cols = P.cols;
  var out: array<vec4<f32>, 16>;
  for (var q = 0u; q < 16u; q++) { out[q] = vec4<f32>(0.0); }
  for (var k0 = 0u; k0 < d; k0 += TK) {
    for (var e = 0u; e < 16u; e++) {
      let idx = t + 64u * e;
      let kk = idx & 15u;
      let r = idx >> 4u;
      let k = k0 + kk;
      var va = 0.0;
      var vb = 0.0;
      if (k < d && i0 + r < n) { va = xs[(i0 + r) * d + k]; }
      if (k < d && c0 + r < cols) { vb = ws[(c0 + r) * d + k]; }
      As[kk * 16u + (r >> 2u)][r & 3u] = va;
      Bs[kk * 16u + (r >> 2u)][r & 3u] = vb;
    }
    workgroupBarrier();
    block(&out, t);
    workgroupBarrier();
  }
  for (var r = 0u; r < 8u; r++) {
    let i = i0 + 8u * (t >> 3u) + r;
    if (i >= n) { continue; }
    for (var cc = 0u; cc < 8u; cc++) {
      let jl = c0 + 8u * (t & 7u) + cc;
      if (jl >= cols) { continue; }
      var u = out[2u * r + (cc >> 2u)][cc & 3u];
      if (P.has_bias != 0u) { u += bias[P.j0 + jl]; }
      s[i * cols + jl] = u;
    }
  }
}

// One workgroup per row (rows beyond the grid in steps of its size).
@compute @workgroup_size(256)
fn stats(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) t: u32,
) {
  let n = P.n;
  let cols = P.cols;
  let j0 = P.j0;
  for (var i = wid.x; i < n; i += nwg.x) {
    let y = uniform_i32(label_of(i), t);
    if (y < 0) { continue; }
    let yl = y - i32(j0);
    let base = i * cols;
    var mt = NEG;
    var tt = NEG;
    for (var jl = t; jl < cols; jl += WG) {
      let z = logit(s[base + jl]).x;
      mt = max(mt, z);
      if (i32(jl) != yl) { tt = max(tt, z); }
    }
    let m = wg_max(mt, t);
    let top = wg_max(tt, t);
    var sx = 0.0;
    var bx = 0.0;
    var wx = 0.0;
    for (var jl = t; jl < cols; jl += WG) {
      let z = logit(s[base + jl]).x;
      if (i32(jl) != yl) { sx += exp(z - m); }
      if (P.eps != 0.0) {
        let w = weight_of(j0 + jl);
        bx += w * (m - z);
        wx += w;
      }
    }
    let sum = wg_sum(sx, t);
    let below = wg_sum(bx, t);
    let wc = wg_sum(wx, t);
    if (t == 0u) {
      let o = i * LCE_RS;
      var zy = select(st[o + 4u], 0.0, P.first != 0u);
      if (yl >= 0 && yl < i32(cols)) { zy = logit(s[base + u32(yl)]).x; }
      if (P.first != 0u) {
        st[o] = m;
        st[o + 1u] = sum;
        st[o + 2u] = below;
        st[o + 3u] = top;
      } else {
        let m0 = st[o];
        let m1 = max(m0, m);
        st[o] = m1;
        st[o + 1u] = st[o + 1u] * exp(m0 - m1) + sum * exp(m - m1);
        st[o + 2u] = st[o + 2u] + P.wseen * (m1 - m0) + below + wc * (m1 - m);
        st[o + 3u] = max(st[o + 3u], top);
      }
      st[o + 4u] = zy;
    }
  }
}

// One invocation per row, after the last chunk's stats.
@compute @workgroup_size(64)
fn finish(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= P.n) { return; }
  let o = i * LCE_RS;
  let y = label_of(i);
  if (y < 0) {
    for (var q = 5u; q < 9u; q++) { st[o + q] = 0.0; }
    return;
  }
  let m = st[o];
  let zy = st[o + 4u];
  // log(S + e^dr) with dr = z_y - M <= 0, as log1p (0 where the label is the only term).
  let dr = zy - m;
  let l = log1p_(exp(dr) - 1.0 + st[o + 1u]);
  let lse = m + l;
  var loss = (1.0 - P.eps) * weight_of(u32(y)) * (l - dr);
  if (P.eps != 0.0) { loss += P.eps / f32(P.c) * (st[o + 2u] + P.wall * l); }
  st[o + 5u] = lse;
  st[o + 6u] = loss;
  st[o + 7u] = P.zloss * lse * lse;
  st[o + 8u] = select(0.0, 1.0, st[o + 3u] <= zy);
}

// Grid: (class tiles of the chunk, rows; rows beyond the grid in steps of its size).
@compute @workgroup_size(64)
fn grad(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) t: u32,
) {
  let jl = wid.x * 64u + t;
  let cols = P.cols;
  if (jl >= cols) { return; }
  let j = P.j0 + jl;
  let ec = P.eps / f32(P.c);
  let wj = weight_of(j);
  for (var i = wid.y; i < P.n; i += nwg.y) {
    let at = i * cols + jl;
    let y = label_of(i);
    if (y < 0) {
      s[at] = 0.0;
      continue;
    }
    let o = i * LCE_RS;
    let zc = logit(s[at]);
    let lse = st[o + 5u];
    let si = rin[3u * i + 1u];
    let zs = rin[3u * i + 2u];
    let wy = weight_of(u32(y));
    var g: f32;
    if (i32(j) == y) {
      // p_y = e^dr / (S + e^dr) and 1 - p_y = S / (S + e^dr) from the merged sums.
      let er = exp(st[o + 4u] - st[o]);
      let tot = st[o + 1u] + er;
      let py = er / tot;
      g = si * (ec * (P.wall * py - wy) - (1.0 - P.eps) * wy * (st[o + 1u] / tot)) + zs * 2.0 * P.zloss * lse * py;
    } else {
      let p = exp(zc.x - lse);
      g = si * (((1.0 - P.eps) * wy + ec * P.wall) * p - ec * wj) + zs * 2.0 * P.zloss * lse * p;
    }
    s[at] = g * zc.y;
  }
}
