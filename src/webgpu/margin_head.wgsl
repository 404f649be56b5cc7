// The logit tiles of the embedding heads `marginHead`, `sphereface` and `lsoftmax`
// (src/webgpu/margin_head.ts drives them; the math is assembly/margin_head.ts's). One workgroup
// of 64 invocations computes a 64 x 64 tile of X W^T through workgroup memory, each
// invocation an 8 x 8 register block, then turns its dot products into logits
//   u_ij = (x_i . W_j) a_i b_j,  z_ij = s * clamp?(u_ij)
// and, the [N, C] logits never being stored:
//   fwd / fwd_p:   per (row, class tile) the tile's max r_t over the non-label logits and
//                  sum_j e^(z_ij - r_t): parts [N, P.rs_out, 2] (tile b_off + wid.y);
//   grad / grad_p: du_ij = dL/du_ij of one chunk of classes [row0, row0 + k):
//                  g_i e^(z_ij - r_i - l_i) (0 where the clamp cut u), the label's from
//                  row_v (when MH_LABEL): du [N, k].
// The _p ("precise") entries take the dot products in double-float32 (src/webgpu/gemm_precise.wgsl),
// so a logit of 1e4 is good to about 1e-7 (SphereFace and L-Softmax with long embeddings; the
// CPU's float64 mode).
// A logit is then a pair (zh, zl), zh = z rounded; a row's reference r is a float32
// value, and zh - r is exact where it matters (Sterbenz).
//
// W (ws) and bcls are bound as a window of classes [g_off, g_off + k) (whole when they fit
// one binding); in grad the window is the chunk (row0 = g_off).
// row_v [N, MH_RS]: a_i, r_i, l_i, g_i, du_iy (src/webgpu/margin_head_params.wgsl). With MH_GATED
// both entries of a pair are dispatched and each runs only in its own mode: precise where
// max ||x_i|| max ||W_j|| > P.bound (src/webgpu/margin_head_label.wgsl's `bound`, at row_v's end).
// bcls [window, 4]: b_j as a pair (hi, lo), ||W_j|| as a pair.

// #include "margin_head_params.wgsl"

@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read> ws: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<i32>;
@group(0) @binding(4) var<storage, read> row_v: array<f32>;
@group(0) @binding(5) var<storage, read> bcls: array<f32>;
@group(0) @binding(6) var<storage, read_write> outv: array<f32>;

// #include "gemm_loop.wgsl"
// #include "gemm_precise.wgsl"
// #include "margin_head_inter.wgsl"

var<workgroup> rmx: array<f32, 512>; // [64 rows][8 invocations]
var<workgroup> rowm: array<f32, 64>;

// Invocation t owns rows 8 (t >> 3) + r and classes 8 (t & 7) + c of the tile:
// acc[2 r + c / 4][c % 4] (+ acl[..], precise) = x_row . W_class.
var<private> acc: array<vec4<f32>, 16>;
var<private> acl: array<vec4<f32>, 16>;

// The one product x W^T (src/webgpu/gemm_loop.wgsl): A = x, B^T = the window of W.
fn tile_a(which: u32, i: u32, k: u32) -> f32 { return xs[i * P.d + k]; }
fn tile_b(which: u32, k: u32, j: u32) -> f32 { return ws[(j - P.g_off) * P.d + k]; }

fn gemm_plain(i0: u32, j0: u32, t: u32) {
  var a: array<vec4<f32>, 16>;
  gemm_tiles(&a, t, 0u, i0, P.n, j0, P.g_off + P.k, P.d, true);
  acc = a;
  for (var q = 0u; q < 16u; q++) { acl[q] = vec4<f32>(0.0); }
}

fn gemm_pair(i0: u32, j0: u32, t: u32) {
  var s: array<vec4<f32>, 16>;
  var l: array<vec4<f32>, 16>;
  gemm_precise(&s, &l, t, 0u, i0, P.n, j0, P.g_off + P.k, P.d);
  acc = s;
  acl = l;
}

// The logit of a dot product (s + l) for class j: (zh, zl, cut), cut = 1 where the clamp
// changed u (marginHead; no gradient passes there).
fn logit(s: f32, l: f32, ai: f32, i: u32, j: u32, dbl: bool) -> vec3<f32> {
  let jw = j - P.g_off;
  let bh = bcls[4u * jw];
  if (!dbl) {
    let u = s * ai * bh;
    if ((P.flags & MH_NT) != 0u) {
      let f = nt_logit(u, i, j);
      return vec3<f32>(f.x, 0.0, f.z);
    }
    var uc = u;
    if ((P.flags & F_CLAMP) != 0u) { uc = clampn(u, -1.0, 1.0); }
    return vec3<f32>(P.scale * uc, 0.0, select(1.0, 0.0, kept(uc, u)));
  }
  // (s + l)(bh + bl): the high halves' product exact, the rest small.
  let bl = bcls[4u * jw + 1u];
  let ss = split(s);
  let sb = split(bh);
  let p1 = (ss.x * sb.y + ss.y * bh) + (s * bl + l * bh);
  let z = two_sum(ss.x * sb.x, p1);
  return vec3<f32>(z.x, z.y, 0.0);
}

// MH_NT (the face kinds): a non-label cosine u of row i clamped to [nt_lo, nt_hi] (cut where that
// changed it), then hard where above the row's threshold: s u (t' + u), slope t' + 2 u
// (CurricularFace), else s u: (z, dz/du over s, cut). MH_INTER: inter_logit's.
fn nt_logit(u: f32, i: u32, j: u32) -> vec3<f32> {
  if ((P.flags & MH_INTER) != 0u) { return inter_logit(u, i, j); }
  let uc = clampn(u, P.nt_lo, P.nt_hi);
  var z = uc;
  var slope = 1.0;
  if (uc > row_v[i * MH_RS + 27u]) {
    let a = row_v[P.n * MH_RS + 2u];
    z = uc * (a + uc);
    slope = a + 2.0 * uc;
  }
  return vec3<f32>(P.scale * z, slope, select(1.0, 0.0, kept(uc, u)));
}

// The logit of row r, class c of this invocation's block, or NEG when (i, j) is out of
// range, ignored or the label.
fn block_logit(i0: u32, j0: u32, t: u32, r: u32, c: u32, dbl: bool) -> vec2<f32> {
  if (P.subs > 1u) { return sub_block_logit(i0, j0, t, r, c); }
  let i = i0 + 8u * (t >> 3u) + r;
  let j = j0 + 8u * (t & 7u) + c;
  if (i >= P.n || j >= P.g_off + P.k) { return vec2<f32>(NEG, 0.0); }
  let y = labels[i];
  if (y < 0 || j == u32(y)) { return vec2<f32>(NEG, 0.0); }
  let q = 2u * r + (c >> 2u);
  return logit(acc[q][c & 3u], acl[q][c & 3u], row_v[i * MH_RS], i, j, dbl).xy;
}

fn finish_fwd(i0: u32, j0: u32, ct: u32, t: u32, dbl: bool) {
  let ty = t >> 3u;
  let tx = t & 7u;
  for (var r = 0u; r < 8u; r++) {
    var m = NEG;
    for (var c = 0u; c < 8u; c++) { m = max(m, block_logit(i0, j0, t, r, c, dbl).x); }
    rmx[(8u * ty + r) * 8u + tx] = m;
  }
  workgroupBarrier();
  var ms: array<f32, 8>;
  for (var r = 0u; r < 8u; r++) {
    var m = NEG;
    for (var q = 0u; q < 8u; q++) { m = max(m, rmx[(8u * ty + r) * 8u + q]); }
    ms[r] = m;
  }
  workgroupBarrier();
  for (var r = 0u; r < 8u; r++) {
    var se = 0.0;
    for (var c = 0u; c < 8u; c++) {
      let z = block_logit(i0, j0, t, r, c, dbl);
      if (z.x != NEG) { se += exp((z.x - ms[r]) + z.y); }
    }
    rmx[(8u * ty + r) * 8u + tx] = se;
    if (tx == 0u) { rowm[8u * ty + r] = ms[r]; }
  }
  workgroupBarrier();
  let i = i0 + t;
  if (i < P.n) {
    var s = 0.0;
    for (var q = 0u; q < 8u; q++) { s += rmx[t * 8u + q]; }
    let o = (i * P.rs_out + ct) * 2u;
    outv[o] = rowm[t];
    outv[o + 1u] = s;
  }
}

fn finish_grad(i0: u32, j0: u32, t: u32, dbl: bool) {
  let end = P.row0 + P.k;
  for (var r = 0u; r < 8u; r++) {
    let i = i0 + 8u * (t >> 3u) + r;
    if (i >= P.n) { continue; }
    let y = labels[i];
    let base = i * MH_RS;
    let ai = row_v[base];
    let ri = row_v[base + 1u];
    let li = row_v[base + 2u];
    let gi = row_v[base + 3u];
    for (var c = 0u; c < 8u; c++) {
      let j = j0 + 8u * (t & 7u) + c;
      if (j >= end) { continue; }
      var du = 0.0;
      if (y >= 0) {
        if (j == u32(y)) {
          if ((P.flags & MH_LABEL) != 0u) { du = row_v[base + 4u]; }
        } else if (gi != 0.0) {
          let q = 2u * r + (c >> 2u);
          let z = logit(acc[q][c & 3u], acl[q][c & 3u], ai, i, j, dbl);
          if (z.z == 0.0) { du = gi * exp(((z.x - ri) + z.y) - li); }
          if ((P.flags & MH_NT) != 0u) { du *= nt_logit(acc[q][c & 3u] * ai * bcls[4u * (j - P.g_off)], i, j).y; }
        }
      }
      outv[i * P.k + (j - P.row0)] = du;
    }
  }
}

// With MH_GATED, whether this entry (precise or not) is not the one to run.
fn skip(dbl: bool) -> bool {
  if ((P.flags & MH_GATED) == 0u) { return false; }
  let o = P.n * MH_RS;
  var bw = row_v[o + 1u];
  if ((P.flags & MH_NORMW) != 0u) { bw = 1.0; }
  return (row_v[o] * bw > P.bound) != dbl;
}

// Grid: (row tiles, class tiles), offset by (a_off, b_off) tiles.
@compute @workgroup_size(64)
fn fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  if (skip(false)) { return; }
  zero = P.zero;
  let ct = wid.y + P.b_off;
  let i0 = (wid.x + P.a_off) * 64u;
  gemm_plain(i0, ct * 64u, t);
  finish_fwd(i0, ct * 64u, ct, t, false);
}

@compute @workgroup_size(64)
fn fwd_p(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  if (skip(true)) { return; }
  zero = P.zero;
  let ct = wid.y + P.b_off;
  let i0 = (wid.x + P.a_off) * 64u;
  gemm_pair(i0, ct * 64u, t);
  finish_fwd(i0, ct * 64u, ct, t, true);
}

// Grid: (row tiles, class tiles of the chunk starting at class row0).
@compute @workgroup_size(64)
fn grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  if (skip(false)) { return; }
  zero = P.zero;
  let i0 = (wid.x + P.a_off) * 64u;
  let j0 = P.row0 + (wid.y + P.b_off) * 64u;
  gemm_plain(i0, j0, t);
  finish_grad(i0, j0, t, false);
}

@compute @workgroup_size(64)
fn grad_p(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  if (skip(true)) { return; }
  zero = P.zero;
  let i0 = (wid.x + P.a_off) * 64u;
  let j0 = P.row0 + (wid.y + P.b_off) * 64u;
  gemm_pair(i0, j0, t);
  finish_grad(i0, j0, t, true);
}

// #include "margin_head_sub.wgsl"
