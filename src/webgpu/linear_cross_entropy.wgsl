// linearCrossEntropy on the GPU (src/webgpu/linear_cross_entropy.ts), the math of
// src/reference/linear_cross_entropy.ts over chunks of classes [j0, j0 + cols) (the [N, V]
// logits never exist: s holds one chunk's [N, cols] block):
//   dots:   s = x W_J^T + b_J by the 64 x 64 tiles of src/webgpu/gemm_loop.wgsl, before the cap,
//           by windows of D [k0, k0 + kn) (one dispatch each, the pairs kept in s between them; where
//           D > src/webgpu/loops.ts's DEPTH_WINDOW a tile's gate below is per window, against
//           P.bound over the windows: its float32 windows' errors add up to the one window's),
//           as pairs (hi, lo) [N, cols, 2]: a tile whose logits can be large (max ||x_i|| max ||W_j||
//           + max |b_j| > P.bound over its rows and classes, as the heads' "precise" mode) takes its
//           dot products in double-float32 (src/webgpu/gemm_precise.wgsl), so that
//           a logit of 1e4 is good to about 1e-7; elsewhere lo is 0. Every difference of two
//           logits is then formed from their pairs (`diff`: with a cap, the cap's difference), so
//           z - M is exact near a row's maximum M (the CPU's relative rows);
//   stats:  one workgroup per row: the chunk's max m, sum of e^(z - m) over its non-label
//           classes, sum w_j (m - z_j) (smoothing), largest non-label logit and the label's
//           logit, merged into the row's running values in st as shards merge
//           (src/kernels/shards.ts): M' = max(M, m), S' = S e^(M - M') + s e^(m - M'),
//           B' = B + W_seen (M' - M) + b + W_chunk (M' - m) (every difference by `diff`);
//   finish: one invocation per row, after the last chunk: lse = M + log(S + e^(z_y - M)), the
//           row's loss (1 - eps) w_y (lse - z_y) + (eps / C) (B + W_all (lse - M)), its z-loss
//           term k lse^2 and whether it is correct (no non-label logit above z_y);
//   grad:   (second pass, s recomputed by `dots`) du = dL/du per element into each pair's hi:
//           (s_i (q_sum p_j - q_j) + zs_i 2 k lse p_j) cap'(u_j), the label's 1 - p_y as
//           S / (S + e^(z_y - M)) (no cancellation where p_y is near 1).
// The per-row upstream (reduction "none") is inside s_i and zs_i (rin), so it weighs du
// before the products that form dX, dW and db (src/webgpu/linear_cross_entropy_mm.wgsl).

// #include "linear_ce_params.wgsl"

@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read> ws: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
// rin [N, 3]: the label (i32 bits; -1 ignored), s_i, zs_i (the gradient scales). s: the block [N, cols, 2].
@group(0) @binding(5) var<storage, read> rin: array<f32>;
@group(0) @binding(6) var<storage, read_write> s: array<f32>;
@group(0) @binding(7) var<storage, read_write> st: array<f32>;

// #include "gemm_loop.wgsl"
// #include "gemm_precise.wgsl"

fn label_of(i: u32) -> i32 { return bitcast<i32>(rin[3u * i]); }

fn weight_of(j: u32) -> f32 {
  if (P.has_weight != 0u) { return weight[j]; }
  return 1.0;
}

// Element `at` of the block: its dot product u (hi, lo), before the cap.
fn uof(at: u32) -> vec2<f32> { return vec2(s[2u * at], s[2u * at + 1u]); }

// (tanh(u / c), 1 - tanh^2) of a pair u for the cap c.
fn th(u: vec2<f32>) -> vec2<f32> { return tanh_((u.x + u.y) / P.softcap); }

// The capped logit of u, and its slope (u and 1 without a cap).
fn cap(u: vec2<f32>) -> f32 {
  if (P.softcap == 0.0) { return u.x + u.y; }
  return P.softcap * th(u).x;
}
fn slope(u: vec2<f32>) -> f32 {
  if (P.softcap == 0.0) { return 1.0; }
  return th(u).y;
}

// z(a) - z(b) from the pairs, exact where a and b are close: without a cap (a - b) in pairs; with
// one c tanh((a - b) / c) (1 - tanh(a / c) tanh(b / c)), the last factor as a sum of positive terms
// (1 -+ tanh from 1 - tanh^2, no cancellation where both saturate).
fn diff(a: vec2<f32>, b: vec2<f32>) -> f32 {
  let d = (a.x - b.x) + (a.y - b.y);
  if (P.softcap == 0.0) { return d; }
  let ta = th(a);
  let tb = th(b);
  let ma = select(1.0 - ta.x, ta.y / (1.0 + ta.x), ta.x >= 0.0);
  let pa = select(ta.y / (1.0 - ta.x), 1.0 + ta.x, ta.x >= 0.0);
  let mb = select(1.0 - tb.x, tb.y / (1.0 + tb.x), tb.x >= 0.0);
  let pb = select(tb.y / (1.0 - tb.x), 1.0 + tb.x, tb.x >= 0.0);
  return P.softcap * tanh_(d / P.softcap).x * 0.5 * (ma * pb + pa * mb);
}

// The one product x W_J^T (src/webgpu/gemm_loop.wgsl): A = x, B^T = the chunk's W_J.
fn tile_a(which: u32, i: u32, k: u32) -> f32 { return xs[i * P.d + P.k0 + k]; }
fn tile_b(which: u32, k: u32, j: u32) -> f32 { return ws[j * P.d + P.k0 + k]; }

var<workgroup> gate: u32;

// Whether the tile at (i0, c0) takes its dot products in pairs (uniform over the workgroup).
fn precise_tile(i0: u32, c0: u32, t: u32) -> bool {
  let d = P.d;
  var sx = 0.0;
  var sw = 0.0;
  var b = 0.0;
  let k1 = P.k0 + P.kn;
  if (i0 + t < P.n) { for (var k = P.k0; k < k1; k++) { sx += xs[(i0 + t) * d + k] * xs[(i0 + t) * d + k]; } }
  if (c0 + t < P.cols) {
    for (var k = P.k0; k < k1; k++) { sw += ws[(c0 + t) * d + k] * ws[(c0 + t) * d + k]; }
    if (P.has_bias != 0u) { b = abs(bias[P.j0 + c0 + t]); }
  }
  As[t] = vec4(sx, sw, b, 0.0);
  workgroupBarrier();
  if (t == 0u) {
    var m = vec4<f32>(0.0);
    for (var q = 0u; q < 64u; q++) { m = max(m, As[q]); }
    gate = select(0u, 1u, sqrt(m.x) * sqrt(m.y) + m.z > P.bound);
  }
  return workgroupUniformLoad(&gate) == 1u;
}

// Grid: (row tiles, class tiles of the chunk).
@compute @workgroup_size(64)
fn dots(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let i0 = wid.x * 64u;
  let c0 = wid.y * 64u;
  let n = P.n;
  let d = P.d;
  let cols = P.cols;
  var out: array<vec4<f32>, 16>;
  var lo: array<vec4<f32>, 16>;
  for (var q = 0u; q < 16u; q++) {
    out[q] = vec4<f32>(0.0);
    lo[q] = vec4<f32>(0.0);
  }
  if (precise_tile(i0, c0, t)) {
    gemm_precise(&out, &lo, t, 0u, i0, n, c0, cols, P.kn);
  } else {
    gemm_tiles(&out, t, 0u, i0, n, c0, cols, P.kn, true);
  }
  for (var r = 0u; r < 8u; r++) {
    let i = i0 + 8u * (t >> 3u) + r;
    if (i >= n) { continue; }
    for (var cc = 0u; cc < 8u; cc++) {
      let jl = c0 + 8u * (t & 7u) + cc;
      if (jl >= cols) { continue; }
      let at = 2u * (i * cols + jl);
      var u = vec2(out[2u * r + (cc >> 2u)][cc & 3u], lo[2u * r + (cc >> 2u)][cc & 3u]);
      // (a later window of D: the earlier windows' pair, kept as it was, added exactly)
      if (P.k0 > 0u) {
        let e = two_sum(s[at], u.x);
        u = vec2(e.x, e.y + (s[at + 1u] + u.y));
      }
      if (P.k0 + P.kn < d) {
        s[at] = u.x;
        s[at + 1u] = u.y;
        continue;
      }
      u = two_sum(u.x, u.y);
      if (P.has_bias != 0u) {
        let e = two_sum(u.x, bias[P.j0 + jl]);
        u = two_sum(e.x, e.y + u.y);
      }
      s[at] = u.x;
      s[at + 1u] = u.y;
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
    // The chunk's largest u (all classes) and largest non-label u, as pairs (hi first, then lo).
    var mt = NEG;
    var tt = NEG;
    for (var jl = t; jl < cols; jl += WG) {
      let u = uof(base + jl);
      mt = max(mt, u.x);
      if (i32(jl) != yl) { tt = max(tt, u.x); }
    }
    let mh = wg_max(mt, t);
    let toph = wg_max(tt, t);
    var ml = NEG;
    var tl = NEG;
    for (var jl = t; jl < cols; jl += WG) {
      let u = uof(base + jl);
      if (u.x == mh) { ml = max(ml, u.y); }
      if (i32(jl) != yl && u.x == toph) { tl = max(tl, u.y); }
    }
    let m = vec2(mh, wg_max(ml, t));
    let top = vec2(toph, wg_max(tl, t));
    var sx = 0.0;
    var bx = 0.0;
    var wx = 0.0;
    for (var jl = t; jl < cols; jl += WG) {
      let u = uof(base + jl);
      let dz = diff(u, m);
      if (i32(jl) != yl) { sx += exp(dz); }
      if (P.eps != 0.0) {
        let w = weight_of(j0 + jl);
        bx -= w * dz;
        wx += w;
      }
    }
    let sum = wg_sum(sx, t);
    let below = wg_sum(bx, t);
    let wc = wg_sum(wx, t);
    if (t == 0u) {
      let o = i * LCE_RS;
      if (yl >= 0 && yl < i32(cols)) {
        let u = uof(base + u32(yl));
        st[o + 4u] = u.x;
        st[o + 9u] = u.y;
      } else if (P.first != 0u) {
        st[o + 4u] = 0.0;
        st[o + 9u] = 0.0;
      }
      if (P.first != 0u) {
        st[o] = m.x;
        st[o + 12u] = m.y;
        st[o + 1u] = sum;
        st[o + 2u] = below;
        st[o + 3u] = top.x;
        st[o + 10u] = top.y;
      } else {
        let u0 = vec2(st[o], st[o + 12u]);
        let u1 = df_max(u0, m);
        let d0 = diff(u0, u1);
        let d1 = diff(m, u1);
        st[o] = u1.x;
        st[o + 12u] = u1.y;
        st[o + 1u] = st[o + 1u] * exp(d0) + sum * exp(d1);
        st[o + 2u] = st[o + 2u] - P.wseen * d0 + below - wc * d1;
        if (df_gt(top, vec2(st[o + 3u], st[o + 10u]))) {
          st[o + 3u] = top.x;
          st[o + 10u] = top.y;
        }
      }
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
    for (var q = 5u; q < 12u; q++) {
      if (q != 9u && q != 10u) { st[o + q] = 0.0; }
    }
    return;
  }
  let um = vec2(st[o], st[o + 12u]);
  let uy = vec2(st[o + 4u], st[o + 9u]);
  // log(S + e^dr) with dr = z_y - z_max <= 0 (exact near the maximum), as log1p (0 where the label is the only term).
  let dr = diff(uy, um);
  let l = log1p_(exp(dr) - 1.0 + st[o + 1u]);
  let lse = cap(um) + l;
  var loss = (1.0 - P.eps) * weight_of(u32(y)) * (l - dr);
  if (P.eps != 0.0) { loss += P.eps / f32(P.c) * (st[o + 2u] + P.wall * l); }
  st[o + 5u] = lse;
  st[o + 11u] = l;
  st[o + 6u] = loss;
  st[o + 7u] = P.zloss * lse * lse;
  // correct: no non-label logit above z_y (the cap is monotone: the pairs compared)
  st[o + 8u] = select(1.0, 0.0, df_gt(vec2(st[o + 3u], st[o + 10u]), uy));
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
      s[2u * at] = 0.0;
      continue;
    }
    let o = i * LCE_RS;
    let u = uof(at);
    let um = vec2(st[o], st[o + 12u]);
    let lse = st[o + 5u];
    let si = rin[3u * i + 1u];
    let zs = rin[3u * i + 2u];
    let wy = weight_of(u32(y));
    var g: f32;
    if (i32(j) == y) {
      // p_y = e^dr / (S + e^dr) and 1 - p_y = S / (S + e^dr) from the merged sums.
      let er = exp(diff(u, um));
      let tot = st[o + 1u] + er;
      let py = er / tot;
      g = si * (ec * (P.wall * py - wy) - (1.0 - P.eps) * wy * (st[o + 1u] / tot)) + zs * 2.0 * P.zloss * lse * py;
    } else {
      let p = exp(diff(u, um) - st[o + 11u]);
      g = si * (((1.0 - P.eps) * wy + ec * P.wall) * p - ec * wj) + zs * 2.0 * P.zloss * lse * p;
    }
    s[2u * at] = g * slope(u);
  }
}
