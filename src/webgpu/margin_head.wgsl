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
// The _p ("precise") entries take the dot products in double-float32: each x and W
// value split into 12-bit halves (whose products are exact), the high products summed
// error-free (two-sum) and the rest into a compensation term, so a logit of 1e4 is good
// to about 1e-7 (SphereFace and L-Softmax with long embeddings; the CPU's float64 mode).
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

const TK: u32 = 16u; // k per step, plain
const TKP: u32 = 8u; // k per step, precise

// Tiles [k][16] of vec4: 64 rows of x (A) or classes of W (B) per k.
var<workgroup> As: array<vec4<f32>, 256>;
var<workgroup> Bs: array<vec4<f32>, 256>;
// Precise: [TKP][16], the high and low halves.
var<workgroup> Ah: array<vec4<f32>, 128>;
var<workgroup> Al: array<vec4<f32>, 128>;
var<workgroup> Bh: array<vec4<f32>, 128>;
var<workgroup> Bl: array<vec4<f32>, 128>;
var<workgroup> rmx: array<f32, 512>; // [64 rows][8 invocations]
var<workgroup> rowm: array<f32, 64>;

// Invocation t owns rows 8 (t >> 3) + r and classes 8 (t & 7) + c of the tile:
// acc[2 r + c / 4][c % 4] (+ acl[..], precise) = x_row . W_class.
var<private> acc: array<vec4<f32>, 16>;
var<private> acl: array<vec4<f32>, 16>;



fn gemm_plain(i0: u32, j0: u32, t: u32) {
  let ty = t >> 3u;
  let tx = t & 7u;
  let n = P.n;
  let c = P.g_off + P.k; // the end of the window of W
  let d = P.d;
  // Loads: k = t & 15 of rows (t >> 4) + 4 q (adjacent invocations, adjacent k).
  let lk = t & 15u;
  let lr = t >> 4u;
  var a: array<vec4<f32>, 16>;
  for (var q = 0u; q < 16u; q++) { a[q] = vec4<f32>(0.0); }
  for (var k0 = 0u; k0 < d; k0 += TK) {
    let k = k0 + lk;
    for (var q = 0u; q < 16u; q++) {
      let r = lr + 4u * q;
      var va = 0.0;
      var vb = 0.0;
      if (i0 + r < n && k < d) { va = xs[(i0 + r) * d + k]; }
      if (j0 + r < c && k < d) { vb = ws[(j0 + r - P.g_off) * d + k]; }
      As[lk * 16u + (r >> 2u)][r & 3u] = va;
      Bs[lk * 16u + (r >> 2u)][r & 3u] = vb;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk++) {
      let a0 = As[kk * 16u + 2u * ty];
      let a1 = As[kk * 16u + 2u * ty + 1u];
      let b0 = Bs[kk * 16u + 2u * tx];
      let b1 = Bs[kk * 16u + 2u * tx + 1u];
      a[0] += a0.x * b0;
      a[1] += a0.x * b1;
      a[2] += a0.y * b0;
      a[3] += a0.y * b1;
      a[4] += a0.z * b0;
      a[5] += a0.z * b1;
      a[6] += a0.w * b0;
      a[7] += a0.w * b1;
      a[8] += a1.x * b0;
      a[9] += a1.x * b1;
      a[10] += a1.y * b0;
      a[11] += a1.y * b1;
      a[12] += a1.z * b0;
      a[13] += a1.z * b1;
      a[14] += a1.w * b0;
      a[15] += a1.w * b1;
    }
    workgroupBarrier();
  }
  acc = a;
  for (var q = 0u; q < 16u; q++) { acl[q] = vec4<f32>(0.0); }
}

struct Acc {
  s: vec4<f32>,
  l: vec4<f32>,
}

// s + l += a * b with a = ah + al, b = bh + bl: ah * bh is exact and summed by two-sum,
// the rest (2^-11 of it) goes to l.
fn acc_p(s: vec4<f32>, l: vec4<f32>, ah: f32, al: f32, bh: vec4<f32>, bl: vec4<f32>, b: vec4<f32>) -> Acc {
  let p = ah * bh;
  let s1 = opq4(s + p);
  let bp = opq4(s1 - s);
  let err = (s - (s1 - bp)) + (p - bp);
  return Acc(s1, l + (err + (ah * bl + al * b)));
}

fn gemm_precise(i0: u32, j0: u32, t: u32) {
  let ty = t >> 3u;
  let tx = t & 7u;
  let n = P.n;
  let c = P.g_off + P.k;
  let d = P.d;
  // Loads: k = t & 7 of rows (t >> 3) + 8 q.
  let lk = t & 7u;
  let lr = t >> 3u;
  var s: array<vec4<f32>, 16>;
  var l: array<vec4<f32>, 16>;
  for (var q = 0u; q < 16u; q++) {
    s[q] = vec4<f32>(0.0);
    l[q] = vec4<f32>(0.0);
  }
  for (var k0 = 0u; k0 < d; k0 += TKP) {
    let k = k0 + lk;
    for (var q = 0u; q < 8u; q++) {
      let r = lr + 8u * q;
      var va = 0.0;
      var vb = 0.0;
      if (i0 + r < n && k < d) { va = xs[(i0 + r) * d + k]; }
      if (j0 + r < c && k < d) { vb = ws[(j0 + r - P.g_off) * d + k]; }
      let sa = split(va);
      let sb = split(vb);
      let at = lk * 16u + (r >> 2u);
      Ah[at][r & 3u] = sa.x;
      Al[at][r & 3u] = sa.y;
      Bh[at][r & 3u] = sb.x;
      Bl[at][r & 3u] = sb.y;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TKP; kk++) {
      let bh0 = Bh[kk * 16u + 2u * tx];
      let bh1 = Bh[kk * 16u + 2u * tx + 1u];
      let bl0 = Bl[kk * 16u + 2u * tx];
      let bl1 = Bl[kk * 16u + 2u * tx + 1u];
      let b0 = bh0 + bl0;
      let b1 = bh1 + bl1;
      for (var h = 0u; h < 2u; h++) {
        let ah = Ah[kk * 16u + 2u * ty + h];
        let al = Al[kk * 16u + 2u * ty + h];
        for (var e = 0u; e < 4u; e++) {
          let q = 8u * h + 2u * e;
          let x0 = acc_p(s[q], l[q], ah[e], al[e], bh0, bl0, b0);
          let x1 = acc_p(s[q + 1u], l[q + 1u], ah[e], al[e], bh1, bl1, b1);
          s[q] = x0.s;
          l[q] = x0.l;
          s[q + 1u] = x1.s;
          l[q + 1u] = x1.l;
        }
      }
    }
    workgroupBarrier();
  }
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
      let f = nt_logit(u, i);
      return vec3<f32>(f.x, 0.0, f.z);
    }
    var uc = u;
    if ((P.flags & F_CLAMP) != 0u) { uc = clamp(u, -1.0, 1.0); }
    return vec3<f32>(P.scale * uc, 0.0, select(0.0, 1.0, uc != u));
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
// (CurricularFace), else s u: (z, dz/du over s, cut).
fn nt_logit(u: f32, i: u32) -> vec3<f32> {
  let uc = clamp(u, P.nt_lo, P.nt_hi);
  var z = uc;
  var slope = 1.0;
  if (uc > row_v[i * MH_RS + 27u]) {
    let a = row_v[P.n * MH_RS + 2u];
    z = uc * (a + uc);
    slope = a + 2.0 * uc;
  }
  return vec3<f32>(P.scale * z, slope, select(0.0, 1.0, uc != u));
}

// The logit of row r, class c of this invocation's block, or NEG when (i, j) is out of
// range, ignored or the label.
fn block_logit(i0: u32, j0: u32, t: u32, r: u32, c: u32, dbl: bool) -> vec2<f32> {
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
          if ((P.flags & MH_NT) != 0u) { du *= nt_logit(acc[q][c & 3u] * ai * bcls[4u * (j - P.g_off)], i).y; }
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
  gemm_precise(i0, ct * 64u, t);
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
  gemm_precise(i0, j0, t);
  finish_grad(i0, j0, t, true);
}
