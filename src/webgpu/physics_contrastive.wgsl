// physicsContrastive (src/webgpu/physics_contrastive.ts), three dispatches of one pass, the math of
// src/reference/physics_contrastive.ts:
//   gram: the dots f_i . f_j into s [B, B] by the tiled product (src/webgpu/gemm_loop.wgsl), and
//         the squared norms f_i . f_i into row_out[2 i + 1];
//   rows: one workgroup per anchor i: the logits S_ij = s_ij / tau shifted by m_i, their
//         largest value among the denominator's terms (w_ij = 1 - R_ij > 0), the row loss
//         log sum_j e^(S_ij - m_i) w_ij - sum_j P_ij (S_ij - m_i) / |P_i| into row_out[2 i]
//         and (F_GRAD) in place of row i of s the coefficients
//         A_ij = scale_i (e^(S_ij - lse_i) w_ij - P_ij / |P_i|) / tau (0 for j = i and for
//         anchors that are not valid);
//   grad: g = (A + A^T) f by the same tiles (S_ij sends its coefficient to f_i and f_j).
// "Precise" anchors (sqrt(||f_i||^2 max_j ||f_j||^2) / tau > 64, e.g. unit rows at
// tau < 1/64): a float32 dot, times 1/tau, would move a logit by more than SPEC allows where
// two nearly tie, so their logits are taken again in float pairs, S_ij - m_i rounded to
// float32 only once it is small where it matters (the WebAssembly kernel's float64 step).

struct ContrastiveParams {
  b: u32,           // rows (anchors)
  d: u32,           // embedding width
  k: u32,           // classes of the rule
  flags: u32,       // F_GRAD
  has_rule: u32,    // 1 when rule is bound, else R = 0
  zero: u32,        // always 0 (src/webgpu/common.wgsl's `zero`)
  inv_tau: vec2<f32>,    // 1 / tau as a pair
  threshold: vec2<f32>,  // the positives' threshold as a pair (compared to float32 R exactly)
}
@group(0) @binding(0) var<uniform> P: ContrastiveParams;

@group(0) @binding(1) var<storage, read> f: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> rule: array<f32>;
// Per anchor: valid (1 or 0), |P_i|, the gradient scale.
@group(0) @binding(4) var<storage, read> anchors: array<f32>;
@group(0) @binding(5) var<storage, read_write> s: array<f32>;
@group(0) @binding(6) var<storage, read_write> row_out: array<f32>;
@group(0) @binding(7) var<storage, read_write> g: array<f32>;

// #include "gemm_store.wgsl"

// Logits above this are taken in float pairs (see the top).
const PRECISE_ABOVE: f32 = 64.0;

// The products (src/webgpu/gemm_loop.wgsl): 0 the dots f f^T into s (the squared norms into
// row_out[2 i + 1]), 1 g = (A + A^T) f.
fn tile_a(which: u32, i: u32, k: u32) -> f32 {
  if (which == 0u) { return f[i * P.d + k]; }
  return s[i * P.b + k] + s[k * P.b + i];
}
fn tile_b(which: u32, k: u32, j: u32) -> f32 {
  if (which == 0u) { return f[j * P.d + k]; }
  return f[k * P.d + j];
}
fn tile_put(which: u32, i: u32, j: u32, v: f32) {
  if (which == 0u) {
    s[i * P.b + j] = v;
    if (i == j) { row_out[2u * i + 1u] = v; }
  } else {
    g[i * P.d + j] = v;
  }
}

// Grid: (row tiles, column tiles) of s.
@compute @workgroup_size(64)
fn gram(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  var out: array<vec4<f32>, 16>;
  gemm_tiles(&out, t, 0u, wid.x * 64u, P.b, wid.y * 64u, P.b, P.d, true);
  gemm_store(&out, t, 0u, wid.x * 64u, P.b, wid.y * 64u, P.b);
}

// The rule's similarity of anchor i's class and row j's.
fn rule_of(yi: i32, yj: i32) -> f32 {
  if (P.has_rule == 0u) { return 0.0; }
  return rule[u32(yi) * P.k + u32(yj)];
}

// Whether j is a positive of anchor i (j != i).
fn positive(yi: i32, yj: i32, r: f32) -> bool {
  return yi == yj || df_gt(df(r), P.threshold);
}

// S_ij - m in float pairs, rounded once.
fn precise_logit(i: u32, j: u32, m: f32) -> f32 {
  let d = P.d;
  var acc = vec2<f32>(0.0);
  for (var q = 0u; q < d; q++) { acc = dot_acc(acc, f[i * d + q], f[j * d + q]); }
  let v = df_add(df_mul(two_sum(acc.x, acc.y), P.inv_tau), df(-m));
  return v.x + v.y;
}

// One workgroup per anchor.
@compute @workgroup_size(256)
fn rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let b = P.b;
  let i = wid.x;
  let base = i * b;
  let grad = (P.flags & F_GRAD) != 0u;
  if (uniform_i32(i32(anchors[3u * i]), t) == 0) {
    for (var j = t; j < b; j += WG) { s[base + j] = 0.0; }
    if (t == 0u) { row_out[2u * i] = 0.0; }
    return;
  }
  let npos = anchors[3u * i + 1u];
  let scale = anchors[3u * i + 2u];
  let inv_tau = P.inv_tau.x;
  let yi = labels[i];
  // The gate: the largest logit this row may hold, from the norms.
  var big = 0.0;
  for (var j = t; j < b; j += WG) { big = max(big, row_out[2u * j + 1u]); }
  big = wg_max(big, t);
  let exact = sqrt(row_out[2u * i + 1u] * big) * inv_tau > PRECISE_ABOVE;
  // x_ij = S_ij - m0 (m0: the float32 logits' largest among the denominator's terms, w > 0),
  // in float pairs for exact rows; then m, the largest x_ij among those terms, and r, the
  // first term at m, whose exponential is exactly 1: den = w_r + others, so that the loss
  // is log1p((w_r - 1) + others) and a lone positive's coefficient -others / den, without
  // the cancellation of w_r / den - 1 (the WebAssembly kernel's way).
  var mt = NEG;
  for (var j = t; j < b; j += WG) {
    if (j != i && rule_of(yi, labels[j]) < 1.0) { mt = max(mt, s[base + j] * inv_tau); }
  }
  let m0 = wg_max(mt, t);
  mt = NEG;
  for (var j = t; j < b; j += WG) {
    var x = s[base + j] * inv_tau - m0;
    if (exact) { x = precise_logit(i, j, m0); }
    s[base + j] = x;
    if (j != i && rule_of(yi, labels[j]) < 1.0) { mt = max(mt, x); }
  }
  let m = wg_max(mt, t);
  var first = 0xffffffffu;
  for (var j = t; j < b; j += WG) {
    if (j != i && rule_of(yi, labels[j]) < 1.0 && s[base + j] == m) { first = min(first, j); }
  }
  let rr = wg_min_u32(first, t);
  var others = 0.0;
  var pos = 0.0;
  for (var j = t; j < b; j += WG) {
    let sh = s[base + j] - m;
    var e = 0.0;
    if (j != i) {
      let yj = labels[j];
      let r = rule_of(yi, yj);
      if (r < 1.0 && j != rr) { e = exp(sh) * (1.0 - r); }
      if (positive(yi, yj, r)) { pos += sh; }
    }
    others += e;
    s[base + j] = e;
  }
  others = wg_sum(others, t);
  pos = wg_sum(pos, t);
  let yr = labels[rr];
  let wr = 1.0 - rule_of(yi, yr);
  if (t == 0u) { row_out[2u * i] = log1p_((wr - 1.0) + others) - pos / npos; }
  if (!grad) { return; }
  // A_ij = c (e_j / den - P_ij / |P_i|), c = scale_i / tau; A_ir as above.
  let den = wr + others;
  let c = scale * inv_tau;
  for (var j = t; j < b; j += WG) {
    var a = 0.0;
    let pj = j != i && positive(yi, labels[j], rule_of(yi, labels[j]));
    if (j == rr) {
      if (pj && npos == 1.0) { a = -others / den; } else { a = wr / den - select(0.0, 1.0 / npos, pj); }
    } else if (j != i) {
      a = s[base + j] / den - select(0.0, 1.0 / npos, pj);
    }
    s[base + j] = c * a;
  }
}

// Grid: (row tiles, D tiles) of g.
@compute @workgroup_size(64)
fn grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  var out: array<vec4<f32>, 16>;
  gemm_tiles(&out, t, 1u, wid.x * 64u, P.b, wid.y * 64u, P.d, P.b, false);
  gemm_store(&out, t, 1u, wid.x * 64u, P.b, wid.y * 64u, P.d);
}
