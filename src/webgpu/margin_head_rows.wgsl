// Per-row and per-class steps of the embedding heads (src/webgpu/margin_head.ts), one
// invocation per row or class, in double-float32 (pairs hi + lo; products of 12-bit
// halves are exact, sums by two-sum). W (ws), bcls and dW are bound as a window of
// classes [g_off, g_off + k) where W does not fit one binding.
//   cls:     per class, ||W_j|| and b_j = 1/max(||W_j||, 1e-12) (1 when W is not
//            normalised) as pairs: bcls [k, 4] = (b hi, b lo, ||W_j|| hi, lo);
//   gather:  W_y of the rows labelled in the window: outv [N, D] (Wy);
//   combine: per row, the partial (max, sum-exp) of every class tile (aux [N, k, 2]) into
//            the row's reference r_i (the largest) and sum_j e^(z_ij - r_i): outv [N, 2];
//   fin_x:   dX in place (outv + aux, its compensation): with MH_NORMX the gradient
//            through x / ||x||, a_i (v - (x^ . v) x^), else v plus the label's term
//            fw W_y + fx x_i (ws: Wy; two terms that can nearly cancel, so taken in pairs);
//   fin_w:   dW in place: with MH_NORMW b_j (t - (W^ . t) W^), else t plus the label
//            terms hx_i x_i + hw_i W_j of the rows labelled j (aux: their index, CSR), by
//            blocks of rs_out columns (grid y).
// row_v: src/webgpu/margin_head_params.wgsl.

// #include "margin_head_params.wgsl"

@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read> ws: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<i32>;
@group(0) @binding(4) var<storage, read> row_v: array<f32>;
@group(0) @binding(5) var<storage, read> aux: array<u32>;
@group(0) @binding(6) var<storage, read_write> bcls: array<f32>;
@group(0) @binding(7) var<storage, read_write> outv: array<f32>;


// Invocation index (grid offset by a_off workgroups of 64).
fn item(wid: vec3<u32>, lid: u32) -> u32 { return (wid.x + P.a_off) * 64u + lid; }

@compute @workgroup_size(64)
fn cls(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  zero = P.zero;
  let j = item(wid, lid);
  if (j >= P.k) { return; }
  let d = P.d;
  var ss = vec2<f32>(0.0);
  for (var k = 0u; k < d; k++) {
    let w = ws[j * d + k];
    ss = dot_acc(ss, w, w);
  }
  let nrm = df_sqrt(two_sum(ss.x, ss.y));
  var b = vec2<f32>(1.0, 0.0);
  if ((P.flags & MH_NORMW) != 0u) {
    if (nrm.x > 1e-12) { b = df_div(vec2<f32>(1.0, 0.0), nrm); } else { b = vec2<f32>(1e12, 0.0); }
  }
  bcls[4u * j] = b.x;
  bcls[4u * j + 1u] = b.y;
  bcls[4u * j + 2u] = nrm.x;
  bcls[4u * j + 3u] = nrm.y;
}

@compute @workgroup_size(64)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = item(wid, lid);
  if (i >= P.n) { return; }
  let y = labels[i];
  if (y < i32(P.g_off) || y >= i32(P.g_off + P.k)) { return; }
  let d = P.d;
  let o = (u32(y) - P.g_off) * d;
  for (var k = 0u; k < d; k++) { outv[i * d + k] = ws[o + k]; }
}

@compute @workgroup_size(64)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  zero = P.zero;
  let i = item(wid, lid);
  if (i >= P.n) { return; }
  let nt = P.k;
  var r = NEG;
  // (a NaN logit: its tile's sum is NaN, its maximum the implementation's; r is then NaN)
  for (var q = 0u; q < nt; q++) {
    let o = 2u * (i * nt + q);
    let sq = bitcast<f32>(aux[o + 1u]);
    r = maxn(r, select(bitcast<f32>(aux[o]), sq, is_nan(sq)));
  }
  var s = vec2<f32>(0.0);
  for (var q = 0u; q < nt; q++) {
    let o = 2u * (i * nt + q);
    let sq = bitcast<f32>(aux[o + 1u]);
    if (sq > 0.0 || is_nan(sq)) {
      let h = two_sum(s.x, sq * exp(bitcast<f32>(aux[o]) - r));
      s = vec2<f32>(h.x, s.y + h.y);
    }
  }
  outv[2u * i] = r;
  outv[2u * i + 1u] = s.x + s.y;
}

fn pair(base: u32) -> vec2<f32> { return vec2<f32>(row_v[base], row_v[base + 1u]); }

@compute @workgroup_size(64)
fn fin_x(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  zero = P.zero;
  let i = item(wid, lid);
  if (i >= P.n) { return; }
  let d = P.d;
  let base = i * MH_RS;
  let o = i * d;
  if ((P.flags & MH_NORMX) != 0u) {
    var vx = vec2<f32>(0.0);
    var xx = vec2<f32>(0.0);
    for (var k = 0u; k < d; k++) {
      let x = xs[o + k];
      vx = dot_acc(vx, outv[o + k], x);
      vx = dot_acc(vx, bitcast<f32>(aux[o + k]), x);
      xx = dot_acc(xx, x, x);
    }
    xx = two_sum(xx.x, xx.y);
    var coef = vec2<f32>(0.0);
    if (xx.x > 1e-24) { coef = df_div(two_sum(vx.x, vx.y), xx); }
    let ai = row_v[base];
    for (var k = 0u; k < d; k++) {
      let v = vec2<f32>(outv[o + k], bitcast<f32>(aux[o + k]));
      let g = df_add(v, -df_mul(coef, vec2<f32>(xs[o + k], 0.0)));
      outv[o + k] = ai * (g.x + g.y);
    }
    return;
  }
  let y = labels[i];
  let fw = pair(base + 5u);
  let fx = pair(base + 7u);
  for (var k = 0u; k < d; k++) {
    var g = vec2<f32>(outv[o + k], bitcast<f32>(aux[o + k]));
    if (y >= 0) {
      let lab = df_add(df_mul(fw, vec2<f32>(ws[o + k], 0.0)), df_mul(fx, vec2<f32>(xs[o + k], 0.0)));
      g = df_add(g, lab);
    }
    outv[o + k] = g.x + g.y;
  }
}

@compute @workgroup_size(64)
fn fin_w(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  zero = P.zero;
  let j = item(wid, lid);
  if (j >= P.k) { return; }
  let d = P.d;
  let o = j * d;
  if ((P.flags & MH_NORMW) != 0u) {
    if (wid.y + P.b_off != 0u) { return; }
    var tw = vec2<f32>(0.0);
    var ww = vec2<f32>(0.0);
    for (var k = 0u; k < d; k++) {
      let w = ws[o + k];
      tw = dot_acc(tw, outv[o + k], w);
      ww = dot_acc(ww, w, w);
    }
    ww = two_sum(ww.x, ww.y);
    var coef = vec2<f32>(0.0);
    if (ww.x > 1e-24) { coef = df_div(two_sum(tw.x, tw.y), ww); }
    let b = vec2<f32>(bcls[4u * j], bcls[4u * j + 1u]);
    for (var k = 0u; k < d; k++) {
      let g = df_add(vec2<f32>(outv[o + k], 0.0), -df_mul(coef, vec2<f32>(ws[o + k], 0.0)));
      let h = df_mul(b, g);
      outv[o + k] = h.x + h.y;
    }
    return;
  }
  let c = P.c;
  let r0 = aux[P.g_off + j];
  let r1 = aux[P.g_off + j + 1u];
  if (r0 == r1) { return; }
  // (columns [k0, k0 + rs_out) of dW_j: the host's blocks keep (rows + 1) rs_out within llvmpipe's loop budget)
  let k0 = (wid.y + P.b_off) * P.rs_out;
  for (var k = k0; k < min(d, k0 + P.rs_out); k++) {
    let w = ws[o + k];
    var g = vec2<f32>(outv[o + k], 0.0);
    for (var q = r0; q < r1; q++) {
      let i = aux[c + 1u + q];
      let base = i * MH_RS;
      g = df_add(g, df_add(df_mul(pair(base + 9u), vec2<f32>(xs[i * d + k], 0.0)), df_mul(pair(base + 11u), vec2<f32>(w, 0.0))));
    }
    outv[o + k] = g.x + g.y;
  }
}
