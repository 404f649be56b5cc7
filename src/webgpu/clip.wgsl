// clip and siglip (the `paired` family; src/webgpu/clip.ts), the math of assembly/clip.ts on
// strips of the N x N similarities: a strip is `rows` rows of S = a b^T from row i0 (the host
// sizes it so that it fits one binding), and each strip is one job of the same submission.
//   sims:        S[r, j] = a_(i0 + r) . b_j by the tiled product (src/webgpu/gemm_loop.wgsl);
//   clip_rows:   one workgroup per row: its maximum m and sum of e^(scale (S - m)) without the
//                diagonal's term into stats (rm, rx), and S_ii into row_out[3 i];
//   clip_cols:   one invocation per column: the running maximum and sum without the diagonal's
//                term (cm, cx) merged with the strip's (the first strip starts them);
//   clip_finish: one invocation per index, after the last strip: the whole sums
//                Rs_i = rx_i + e^(scale (S_ii - rm_i)), Cs_i alike (the diagonal's term kept apart
//                so that 1 - p = rx / Rs keeps its accuracy where p is near 1), and index i's
//                loss terms into row_out[3 i] (in place of S_ii);
//   clip_grad:   one workgroup per row (second pass, after every strip's statistics):
//                G = c (e^(scale (S - rm_i)) / Rs_i + e^(scale (S - cm_j)) / Cs_j) off the diagonal,
//                G_ii = -c (rx_i / Rs_i + cx_i / Cs_i), sum_j G S into row_out[3 i + 1], and
//                scale G in place of S;
//   siglip_rows: one workgroup per row: x = scale S + bias, y = z x (z = 1 on the diagonal,
//                else -1), the terms max(-y, 0) + log1p(e^-|y|), G = -z c sigmoid(-y), and
//                the row's loss, sum G S and sum G into row_out[3 i ..], scale G in place of S;
//   grad_a:      ga[i0 + r] = sum_j G[r, j] b_j (each strip writes its own rows);
//   grad_b:      gb[j] (+)= sum_r G[r, j] a_(i0 + r) (the first strip writes, the others add).

struct PairedParams {
  n: u32,      // rows of a and b
  d: u32,      // embedding width
  i0: u32,     // the strip's first row
  rows: u32,   // the strip's rows
  flags: u32,  // F_GRAD
  first: u32,  // 1 for the first strip of a pass
  scale: f32,  // the logit scale
  bias: f32,   // siglip's bias
  c: f32,      // upstream / 2N (clip), upstream / N (siglip)
}
@group(0) @binding(0) var<uniform> P: PairedParams;

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> s: array<f32>;
// rm [n], rx [n], cm [n], cx [n], Rs [n], Cs [n].
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> row_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> ga: array<f32>;
@group(0) @binding(7) var<storage, read_write> gb: array<f32>;

// #include "gemm_store.wgsl"

// The products (src/webgpu/gemm_loop.wgsl): 0 S = a_(i0 + r) b^T (into s), 1 ga = G b (into
// ga from row i0), 2 gb (+)= G^T a_(i0 + r) (the first strip writes, the others add).
fn tile_a(which: u32, i: u32, k: u32) -> f32 {
  if (which == 0u) { return a[(P.i0 + i) * P.d + k]; }
  if (which == 1u) { return s[i * P.n + k]; }
  return s[k * P.n + i];
}
fn tile_b(which: u32, k: u32, j: u32) -> f32 {
  if (which == 0u) { return b[j * P.d + k]; }
  if (which == 1u) { return b[k * P.d + j]; }
  return a[(P.i0 + k) * P.d + j];
}
fn tile_put(which: u32, i: u32, j: u32, v: f32) {
  if (which == 0u) {
    s[i * P.n + j] = v;
  } else if (which == 1u) {
    ga[(P.i0 + i) * P.d + j] = v;
  } else if (P.first == 1u) {
    gb[i * P.d + j] = v;
  } else {
    gb[i * P.d + j] += v;
  }
}

// Grid: (strip row tiles, column tiles).
@compute @workgroup_size(64)
fn sims(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  var out: array<vec4<f32>, 16>;
  gemm_tiles(&out, t, 0u, wid.x * 64u, P.rows, wid.y * 64u, P.n, P.d, true);
  gemm_store(&out, t, 0u, wid.x * 64u, P.rows, wid.y * 64u, P.n);
}

// One workgroup per strip row.
@compute @workgroup_size(256)
fn clip_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let n = P.n;
  let r = wid.x;
  let i = P.i0 + r;
  let base = r * n;
  var mt = NEG;
  for (var j = t; j < n; j += WG) { mt = max(mt, s[base + j]); }
  let m = wg_max(mt, t);
  var st = 0.0;
  for (var j = t; j < n; j += WG) {
    if (j != i) { st += exp(P.scale * (s[base + j] - m)); }
  }
  let sum = wg_sum(st, t);
  if (t == 0u) {
    stats[i] = m;
    stats[n + i] = sum;
    row_out[3u * i] = s[base + i];
  }
}

// One invocation per column.
@compute @workgroup_size(64)
fn clip_cols(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n = P.n;
  let j = gid.x;
  if (j >= n) { return; }
  var m = NEG;
  var sum = 0.0;
  if (P.first == 0u) {
    m = stats[2u * n + j];
    sum = stats[3u * n + j];
  }
  var mb = m;
  for (var r = 0u; r < P.rows; r++) { mb = max(mb, s[r * n + j]); }
  sum = sum * exp(P.scale * (m - mb));
  for (var r = 0u; r < P.rows; r++) {
    if (P.i0 + r != j) { sum += exp(P.scale * (s[r * n + j] - mb)); }
  }
  stats[2u * n + j] = mb;
  stats[3u * n + j] = sum;
}

// One invocation per index.
@compute @workgroup_size(64)
fn clip_finish(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n = P.n;
  let i = gid.x;
  if (i >= n) { return; }
  let d = row_out[3u * i];
  let dr = P.scale * (d - stats[i]);
  let dc = P.scale * (d - stats[2u * n + i]);
  stats[4u * n + i] = stats[n + i] + exp(dr);
  stats[5u * n + i] = stats[3u * n + i] + exp(dc);
  // Index i's loss terms (lse of row i - L_ii) + (lse of column i - L_ii), each as
  // log1p(e^dr - 1 + rx) - dr (dr <= 0: 0 where the diagonal is the maximum, else rx >= 1).
  row_out[3u * i] = log1p_(exp(dr) - 1.0 + stats[n + i]) - dr + log1p_(exp(dc) - 1.0 + stats[3u * n + i]) - dc;
}

// One workgroup per strip row.
@compute @workgroup_size(256)
fn clip_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let n = P.n;
  let r = wid.x;
  let i = P.i0 + r;
  let base = r * n;
  let rm = stats[i];
  let rs = stats[4u * n + i];
  var ds = 0.0;
  for (var j = t; j < n; j += WG) {
    let x = s[base + j];
    var g: f32;
    if (j == i) {
      g = -P.c * (stats[n + i] / rs + stats[3u * n + i] / stats[5u * n + i]);
    } else {
      g = P.c * (exp(P.scale * (x - rm)) / rs + exp(P.scale * (x - stats[2u * n + j])) / stats[5u * n + j]);
    }
    ds += g * x;
    s[base + j] = P.scale * g;
  }
  ds = wg_sum(ds, t);
  if (t == 0u) { row_out[3u * i + 1u] = ds; }
}

// One workgroup per strip row.
@compute @workgroup_size(256)
fn siglip_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let n = P.n;
  let r = wid.x;
  let i = P.i0 + r;
  let base = r * n;
  let grad = (P.flags & F_GRAD) != 0u;
  var lt = 0.0;
  var dt = 0.0;
  var db = 0.0;
  for (var j = t; j < n; j += WG) {
    let x0 = s[base + j];
    let x = P.scale * x0 + P.bias;
    let z = select(-1.0, 1.0, j == i);
    let y = z * x;
    let e = exp(-abs(y));
    lt += max(-y, 0.0) + log1p_(e);
    // G = -z c sigmoid(-y)
    let g = -z * P.c * select(1.0, e, y > 0.0) / (1.0 + e);
    dt += g * x0;
    db += g;
    if (grad) { s[base + j] = P.scale * g; }
  }
  lt = wg_sum(lt, t);
  dt = wg_sum(dt, t);
  db = wg_sum(db, t);
  if (t == 0u) {
    row_out[3u * i] = lt;
    row_out[3u * i + 1u] = dt;
    row_out[3u * i + 2u] = db;
  }
}

// Grid: (strip row tiles, D tiles): ga[i0 + r, q] = sum_k G[r, k] b[k, q].
@compute @workgroup_size(64)
fn grad_a(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  var out: array<vec4<f32>, 16>;
  gemm_tiles(&out, t, 1u, wid.x * 64u, P.rows, wid.y * 64u, P.d, P.n, false);
  gemm_store(&out, t, 1u, wid.x * 64u, P.rows, wid.y * 64u, P.d);
}

// Grid: (column tiles, D tiles): gb[j, q] (+)= sum_r G[r, j] a[i0 + r, q].
@compute @workgroup_size(64)
fn grad_b(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  var out: array<vec4<f32>, 16>;
  gemm_tiles(&out, t, 2u, wid.x * 64u, P.n, wid.y * 64u, P.d, P.rows, false);
  gemm_store(&out, t, 2u, wid.x * 64u, P.n, wid.y * 64u, P.d);
}
