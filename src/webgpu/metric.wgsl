// The `metric` family (ntXent, tripletMargin, multiSimilarity, proxyAnchor; src/webgpu/metric.ts),
// the math of src/reference/metric.ts and assembly/metric.ts in one pass of seven to ten dispatches
// (proxyAnchor walks with walk_proxy):
//   norm:   one invocation per row of f and of the proxies: its norm in float pairs, the
//           normalised row h = f / max(||f||, 1e-12) as a float pair, hi into work (the
//           proxies' after f's) and lo after G, and per row [||h||^2, 1 / max(||f||, 1e-12) as
//           a pair, ||f|| >= 1e-12] into stats;
//   sims:   S = h h^T ([B, B]; proxyAnchor h p^T, [B, C]) into s by the tiled product
//           (src/webgpu/gemm_loop.wgsl);
//   dist:   (tripletMargin) an invocation per entry of S: the distances (below);
//   walk:   one workgroup per anchor row (walk_proxy: one per proxy column): the
//           row's loss terms and its count (the loss's denominator: ntXent's positives, the triplets with
//           l > 0, 1 per anchor, proxyAnchor 1 in all) into stats, and in place of S the
//           derivatives A = dL/dS (tripletMargin: W = (dL/dd) / d, 0 at d = 0). The mining is
//           in this walk over the row of distances: no list of triplets; "all", "hard" and
//           "semihard" sum per anchor-positive pair over the negatives, the negatives' shares
//           over the anchor's positives (`pairs`, below); and (not tripletMargin) whether the
//           row (proxy) holds a near pair (d^2 = 2 - 2 S < NEAR with another row), as `live` 2
//           in stats;
//   pairs, walk_end (walk_proxy_end): where one invocation's loops would go past llvmpipe's
//           budget (src/webgpu/loops.ts) the walk stops after its first stage, `pairs` takes
//           an invocation per entry of S (the exact exponents, D each; tripletMargin's mining
//           but batchHard, B each) and walk_end does the rest (else they dispatch nothing);
//   reduce: one workgroup: the sums of the rows' terms and counts, the loss (0 without a
//           count) and the gradient scale upstream / count into stats[0], stats[1], and
//           (proxyAnchor) whether any proxy holds a near pair into stats[2];
//   grad:   G = (A + A^T) h ([B, D]; proxyAnchor A p), grad_p: proxyAnchor's A^T h, both by the
//           tiled product as float pairs, hi into work after h and lo into gf (gp); a tile of 64
//           rows that holds a row with a near pair takes E = G - r h instead (r the rows' sums of
//           the coefficients; below);
//   back_h: (tripletMargin) one invocation per entry: scale (r_i h_i - G_i + the near pairs' terms),
//           r_i the row and column sums of W, into gf (gp);
//   back:   one invocation per row: through the normalisation, (g - h (h . g)) / ||f||, or
//           g / 1e-12 where ||f|| < 1e-12, into gf (or gp); g = back_h's (tripletMargin), else
//           scale G (or E) projected in float pairs and rounded once: a proxy's G over a large batch
//           lies mostly along it (100 times its projection at B = 22,000 and 4 proxies), where
//           a float32 G, dot and difference came to 1.1 of SPEC's bound.
// Nearly parallel rows: the normalisation's backward (G - h (h . G)) / ||f|| is also that of
// E = sum_j B_ij (h_j - h_i) (B the coefficients of G = B h; h_i . h_i = 1; E = G where
// ||f|| < 1e-12). Where rows are near (0.01 apart: G 100 times its projection) forming G in
// float32 and projecting it would cancel the result's digits (3e-4 of the largest gradient
// element off at 0.001 apart), so there each product B_ij (h_j - h_i) is formed from the
// difference (gemm_rel) of the rows' float pairs (hi_j - hi_i, then lo_j - lo_i: a float32 h
// alone is off by 6e-8, 6e-5 of a difference of 0.001): every term is as small as the result
// and nothing cancels. Far pairs (d^2 >= NEAR) cancel at most by about 1 / d; tripletMargin's
// near pairs have their own terms (below), so it never takes E.
// Exact exponents (`exact`: ntXent's 1/t, multiSimilarity's alpha or beta, proxyAnchor's alpha
// above 64, e.g. t = 1e-4 or alpha = 1e4): a float32 cosine's rounding times that scale would move
// an exponent by more than SPEC allows, so the exponents are taken again from the raw rows in
// float pairs, k (cos + shift) rounded once (`precise_exp`; as physics_contrastive.wgsl): ntXent's
// (cos - m) / t, multiSimilarity's -alpha (cos - base) and beta (cos - base), proxyAnchor's
// -alpha (cos - margin) and alpha (cos + margin), with t, alpha, beta, base, margin as pairs. Near pairs of
// tripletMargin (d^2 < 0.1 from S) have h_a - h_j taken again from the raw rows in float
// pairs (assembly/metric.ts's float64 step): the cancellation in ||h_a||^2 + ||h_j||^2 - 2 S_aj
// would leave identical rows apart, and their gradient c (h_a - h_j) / d is formed from that
// difference in `back` (kept apart from W, where it would cancel in float32).

struct MetricParams {
  b: u32,         // rows of f
  d: u32,         // embedding width
  c: u32,         // rows of the proxies (0 without)
  cols: u32,      // columns of S: b, or c (proxyAnchor)
  loss: u32,      // 0 ntXent, 1 tripletMargin, 2 multiSimilarity, 3 proxyAnchor
  mining: u32,    // 0 all, 1 hard, 2 semihard, 3 batchHard
  soft: u32,      // tripletMargin: log(1 + e^v) rather than relu(v)
  exact: u32,     // exact exponents: ntXent's, multiSimilarity's, proxyAnchor's (see the top)
  zero: u32,      // always 0 (src/webgpu/common.wgsl's `zero`)
  margin: vec2<f32>, // tripletMargin's and proxyAnchor's margin (pairs: the exact exponents')
  alpha: vec2<f32>,  // multiSimilarity's and proxyAnchor's alpha
  beta: vec2<f32>,   // multiSimilarity's beta
  base: vec2<f32>,   // multiSimilarity's base
  upstream: f32,  // the upstream gradient
  present: f32,   // proxyAnchor's |P+|
  inv_t: vec2<f32>,  // ntXent's 1 / temperature as a pair
}
@group(0) @binding(0) var<uniform> P: MetricParams;

@group(0) @binding(1) var<storage, read> f: array<f32>;
@group(0) @binding(2) var<storage, read> proxies: array<f32>;
// labels [b]; for tripletMargin's split mining (`pairs`) after them the rows in the order of their labels [b]
// (stable), and each row's class as the range [from, to) of that order: from [b], to [b].
@group(0) @binding(3) var<storage, read> labels: array<i32>;
// h's hi [(b + c), d], then G (E) [(b + c), d], then h's lo [(b + c), d].
@group(0) @binding(4) var<storage, read_write> work: array<f32>;
// [loss, scale, any near pair, 0], per row of f and proxies [||h||^2, inv hi, inv lo, live (0 ||f|| < 1e-12,
// 1, or 2 with a near pair)], per walked row [sum, count].
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
// S [b, cols] (then A or W); tripletMargin: dL/dd [b, b] after it.
@group(0) @binding(6) var<storage, read_write> s: array<f32>;
@group(0) @binding(7) var<storage, read_write> gf: array<f32>;
@group(0) @binding(8) var<storage, read_write> gp: array<f32>;

// #include "gemm_store.wgsl"

// Below this squared distance (from S) a pair is near (see the top).
const NEAR: f32 = 0.1;

// Where row r's statistics and walked row i's sums are in stats.
fn row_stat(r: u32) -> u32 { return 4u + 4u * r; }
fn walk_stat(i: u32) -> u32 { return 4u + 4u * (P.b + P.c) + 2u * i; }

// Entry q of row r of [f; proxies].
fn raw(r: u32, q: u32) -> f32 {
  if (r < P.b) { return f[r * P.d + q]; }
  return proxies[(r - P.b) * P.d + q];
}

// 1 / max(||row r||, 1e-12) as a pair.
fn inv_norm(r: u32) -> vec2<f32> { return vec2<f32>(stats[row_stat(r) + 1u], stats[row_stat(r) + 2u]); }

// log(1 + e^x) and 1 / (1 + e^-x) without overflow.
fn softplus_(x: f32) -> f32 {
  if (x > 0.0) { return x + log1p_(exp(-x)); }
  return log1p_(exp(x));
}
fn sigmoid_(x: f32) -> f32 {
  if (x >= 0.0) { return 1.0 / (1.0 + exp(-x)); }
  let e = exp(x);
  return e / (1.0 + e);
}

// One invocation per row of f and of the proxies.
@compute @workgroup_size(64)
fn norm(@builtin(global_invocation_id) gid: vec3<u32>) {
  zero = P.zero;
  let r = gid.x;
  if (r >= P.b + P.c) { return; }
  let d = P.d;
  var acc = vec2<f32>(0.0);
  for (var q = 0u; q < d; q++) {
    let x = raw(r, q);
    acc = dot_acc(acc, x, x);
  }
  let n = df_sqrt(two_sum(acc.x, acc.y));
  let inv = df_div(df(1.0), df_max(n, df(1e-12)));
  var sq = 0.0;
  let lo = 2u * (P.b + P.c) * d;
  for (var q = 0u; q < d; q++) {
    let h = df_mul(df(raw(r, q)), inv);
    work[r * d + q] = h.x;
    work[lo + r * d + q] = h.y;
    sq += h.x * h.x;
  }
  let at = row_stat(r);
  stats[at] = sq;
  stats[at + 1u] = inv.x;
  stats[at + 2u] = inv.y;
  stats[at + 3u] = select(0.0, 1.0, n.x >= 1e-12);
}

// The products (src/webgpu/gemm_loop.wgsl): 0 S = h h^T or h p^T; 1 G = (A + A^T) h;
// 2 G = A p (proxyAnchor); 3 G_p = A^T h (proxyAnchor). The gradient products run over
// their depth in chunks from k_off (see grad_tiles), relative to the output row's own
// direction (tile_own, gemm_rel), on h's hi, or with LO added on its lo.
const LO: u32 = 4u;
var<private> k_off: u32;
fn tile_a(which: u32, i: u32, k: u32) -> f32 {
  if (which == 0u) { return work[i * P.d + k]; }
  let kk = k + k_off;
  let w = which & 3u;
  if (w == 1u) { return s[i * P.b + kk] + s[kk * P.b + i]; }
  if (w == 2u) { return s[i * P.c + kk]; }
  return s[kk * P.c + i];
}
// Entry j of row r of [h; p], hi, or lo with LO.
fn h_at(which: u32, r: u32, j: u32) -> f32 {
  return work[select(0u, 2u * (P.b + P.c) * P.d, (which & LO) != 0u) + r * P.d + j];
}
fn tile_b(which: u32, k: u32, j: u32) -> f32 {
  if (which == 0u) { return work[(select(0u, P.b, P.loss == 3u) + j) * P.d + k]; }
  return h_at(which, select(0u, P.b, (which & 3u) == 2u) + k + k_off, j);
}
// Entry j of output row i's own direction (0 where ||f|| < 1e-12: G itself there).
fn tile_own(which: u32, i: u32, j: u32) -> f32 {
  let r = select(0u, P.b, (which & 3u) == 3u) + i;
  return select(0.0, h_at(which, r, j), stats[row_stat(r) + 3u] > 0.0);
}
// A gradient product's hi after h, or with LO its lo into gf (gp: G_p), where `back` reads it first.
fn tile_put(which: u32, i: u32, j: u32, v: f32) {
  if (which == 0u) {
    s[i * P.cols + j] = v;
  } else if ((which & LO) != 0u) {
    if ((which & 3u) == 3u) { gp[i * P.d + j] = v; } else { gf[i * P.d + j] = v; }
  } else {
    work[(P.b + P.c + select(0u, P.b, which == 3u) + i) * P.d + j] = v;
  }
}

// The depth of one float32 block of a gradient product: the blocks add up in float pairs
// (proxyAnchor's products run over up to 1e5 proxies, where one float32 sum would lose
// about depth * 6e-8 of its size).
const CHUNK: u32 = 128u;

// out = the tile at (r0, c0) of product `which` relative to the output rows' own directions:
// sum_k A[i, k] (B[k, j] - tile_own(which, i, j)), each difference before its product (see the
// top). Call from uniform control flow.
fn gemm_rel(out: ptr<function, array<vec4<f32>, 16>>, t: u32, which: u32, r0: u32, rows: u32, c0: u32, cols: u32, kdim: u32) {
  var own: array<vec4<f32>, 16>;
  for (var r = 0u; r < 8u; r++) {
    let i = r0 + 8u * (t >> 3u) + r;
    for (var cc = 0u; cc < 8u; cc++) {
      let j = c0 + 8u * (t & 7u) + cc;
      var v = 0.0;
      if (i < rows && j < cols) { v = tile_own(which, i, j); }
      own[2u * r + (cc >> 2u)][cc & 3u] = v;
    }
  }
  for (var q = 0u; q < 16u; q++) { (*out)[q] = vec4<f32>(0.0); }
  let ty = t >> 3u;
  let tx = t & 7u;
  for (var k0 = 0u; k0 < kdim; k0 += TK) {
    gemm_load(t, which, r0, rows, c0, cols, kdim, k0, false);
    workgroupBarrier();
    // src/webgpu/gemm_tile.wgsl's block, each B entry less the output row's own.
    for (var kk = 0u; kk < TK; kk++) {
      let a0 = As[kk * 16u + 2u * ty];
      let a1 = As[kk * 16u + 2u * ty + 1u];
      let b0 = Bs[kk * 16u + 2u * tx];
      let b1 = Bs[kk * 16u + 2u * tx + 1u];
      (*out)[0] += a0.x * (b0 - own[0]);
      (*out)[1] += a0.x * (b1 - own[1]);
      (*out)[2] += a0.y * (b0 - own[2]);
      (*out)[3] += a0.y * (b1 - own[3]);
      (*out)[4] += a0.z * (b0 - own[4]);
      (*out)[5] += a0.z * (b1 - own[5]);
      (*out)[6] += a0.w * (b0 - own[6]);
      (*out)[7] += a0.w * (b1 - own[7]);
      (*out)[8] += a1.x * (b0 - own[8]);
      (*out)[9] += a1.x * (b1 - own[9]);
      (*out)[10] += a1.y * (b0 - own[10]);
      (*out)[11] += a1.y * (b1 - own[11]);
      (*out)[12] += a1.z * (b0 - own[12]);
      (*out)[13] += a1.z * (b1 - own[13]);
      (*out)[14] += a1.w * (b0 - own[14]);
      (*out)[15] += a1.w * (b1 - own[15]);
    }
    workgroupBarrier();
  }
}

// The tile at (r0, c0) of gradient product `which` over `depth` in blocks of CHUNK; where one
// of its rows holds a near pair, relative to the rows' own directions (gemm_rel, E; see the
// top): on h's hi in blocks, plus on its lo (terms of 6e-8 of the others: one float32 sum).
fn grad_tiles(t: u32, which: u32, r0: u32, rows: u32, c0: u32, cols: u32, depth: u32) {
  let rel = uniform_i32(select(0, 1, rows_near(select(0u, P.b, which == 3u) + r0, min(64u, rows - r0))), t) != 0;
  var out: array<vec4<f32>, 16>;
  var hi: array<vec4<f32>, 16>;
  var lo: array<vec4<f32>, 16>;
  for (var q = 0u; q < 16u; q++) {
    hi[q] = vec4<f32>(0.0);
    lo[q] = vec4<f32>(0.0);
  }
  for (var k = 0u; k < depth; k += CHUNK) {
    k_off = k;
    if (rel) {
      gemm_rel(&out, t, which, r0, rows, c0, cols, min(CHUNK, depth - k));
    } else {
      gemm_tiles(&out, t, which, r0, rows, c0, cols, min(CHUNK, depth - k), false);
    }
    // hi + out = sum + err exactly (two-sum, elementwise; opq4 keeps it from being simplified).
    for (var q = 0u; q < 16u; q++) {
      let sum = opq4(hi[q] + out[q]);
      let bv = opq4(sum - hi[q]);
      lo[q] += (hi[q] - (sum - bv)) + (out[q] - bv);
      hi[q] = sum;
    }
  }
  if (rel) {
    k_off = 0u;
    gemm_rel(&out, t, which | LO, r0, rows, c0, cols, depth);
  } else {
    for (var q = 0u; q < 16u; q++) { out[q] = vec4<f32>(0.0); }
  }
  // The product as a pair (hi, lo), both stored: `back` projects it in pairs.
  for (var q = 0u; q < 16u; q++) {
    let e = lo[q] + out[q];
    let sum = opq4(hi[q] + e);
    let bv = opq4(sum - hi[q]);
    lo[q] = (hi[q] - (sum - bv)) + (e - bv);
    hi[q] = sum;
  }
  gemm_store(&hi, t, which, r0, rows, c0, cols);
  gemm_store(&lo, t, which | LO, r0, rows, c0, cols);
}

// Grid: (row tiles, column tiles) of S.
@compute @workgroup_size(64)
fn sims(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  var out: array<vec4<f32>, 16>;
  gemm_tiles(&out, t, 0u, wid.x * 64u, P.b, wid.y * 64u, P.cols, P.d, true);
  gemm_store(&out, t, 0u, wid.x * 64u, P.b, wid.y * 64u, P.cols);
}

// Whether a cosine makes a near pair (d^2 = 2 - 2 cos < NEAR).
fn is_near(cosine: f32) -> bool { return 2.0 - 2.0 * cosine < NEAR; }

// Row r of [f; proxies] holds a near pair where its largest cosine `top` with another row
// (proxyAnchor: with a proxy, or a proxy's with a row) is near: `live` 2 in stats.
fn flag_near(r: u32, top: f32) {
  let at = row_stat(r) + 3u;
  if (stats[at] > 0.0 && is_near(top)) { stats[at] = 2.0; }
}

// Whether any of rows r .. r + n - 1 of [f; proxies] holds a near pair (proxyAnchor's rows of
// f: whether any proxy does, from `reduce`).
fn rows_near(r: u32, n: u32) -> bool {
  if (P.loss == 3u && r < P.b) { return stats[2] > 0.0; }
  for (var i = 0u; i < n; i++) {
    if (stats[row_stat(r + i) + 3u] > 1.5) { return true; }
  }
  return false;
}

// k (cos(r, j) + shift) - m from the raw rows r and j of [f; proxies] in float pairs, rounded once
// (an exponent of 1e4 rounded to float32 would be off by 5e-4: m, its group's maximum, comes off first).
fn precise_exp(r: u32, j: u32, shift: vec2<f32>, k: vec2<f32>, m: f32) -> f32 {
  var acc = vec2<f32>(0.0);
  for (var q = 0u; q < P.d; q++) { acc = dot_acc(acc, raw(r, q), raw(j, q)); }
  let cosine = df_mul(df_mul(two_sum(acc.x, acc.y), inv_norm(r)), inv_norm(j));
  let v = df_add(df_mul(df_add(cosine, shift), k), df(-m));
  return v.x + v.y;
}

// ntXent, anchor a: with L the log-sum-exp of its negatives' logits, each positive p adds
// softplus(L - x_p); A_ap = -sigmoid(L - x_p) / t, A_an = (sum_p sigmoid(.)) e^(x_n - L) / t.
// Stage 0 the whole walk; with exact exponents stage 1 ends at the maximum m (kept with the count of
// positives in the row's sums), `pairs` takes the exponents (`pair_exp`) and `walk_end` (stage 2) the rest.
fn walk_ntxent(a: u32, t: u32, stage: u32) {
  let b = P.b;
  let base = a * b;
  let ya = labels[a];
  var m = stats[walk_stat(a)];
  var npos = stats[walk_stat(a) + 1u];
  if (stage != 2u) {
    var mt = NEG;
    var np = 0.0;
    var top = NEG;
    for (var j = t; j < b; j += WG) {
      if (j != a) { top = max(top, s[base + j]); }
      if (labels[j] != ya) { mt = max(mt, s[base + j]); } else if (j != a) { np += 1.0; }
    }
    let near = wg_max(top, t);
    m = wg_max(mt, t);
    npos = wg_sum(np, t);
    if (t == 0u) {
      flag_near(a, near);
      stats[walk_stat(a)] = m;
      stats[walk_stat(a) + 1u] = npos;
    }
    if (stage == 1u) { return; }
  }
  var st = 0.0;
  for (var j = t; j < b; j += WG) {
    var x = s[base + j];
    if (stage == 0u) {
      x = (x - m) * P.inv_t.x;
      s[base + j] = x;
    }
    if (labels[j] != ya) { st += exp(x); }
  }
  let sum = wg_sum(st, t);
  // No negative: every l_ap is log 1 = 0, and so is the row of A.
  let has_neg = sum > 0.0;
  let lse = log_(select(1.0, sum, has_neg));
  var lt = 0.0;
  var sh = 0.0;
  for (var j = t; j < b; j += WG) {
    if (j != a && labels[j] == ya) {
      let z = lse - s[base + j];
      var g = 0.0;
      if (has_neg) {
        lt += softplus_(z);
        g = sigmoid_(z);
      }
      sh += g;
      s[base + j] = -g * P.inv_t.x;
    }
  }
  let loss = wg_sum(lt, t);
  let shares = wg_sum(sh, t);
  for (var j = t; j < b; j += WG) {
    if (labels[j] != ya) {
      s[base + j] = shares * exp(s[base + j] - lse) * P.inv_t.x;
    } else if (j == a) {
      s[base + j] = 0.0;
    }
  }
  if (t == 0u) {
    stats[walk_stat(a)] = loss;
    stats[walk_stat(a) + 1u] = npos;
  }
}

// log(1 + sum_j e^(x_j)) from m >= max(0, x_j) and s = e^-m + sum_j e^(x_j - m).
fn lse1(m: f32, s_: f32) -> f32 { return m + log_(s_); }

// multiSimilarity, anchor a: (1/alpha) log(1 + sum_p e^(-alpha (S_ap - base)))
// + (1/beta) log(1 + sum_n e^(beta (S_an - base))); A_ap = -e^(.) / (1 + sum), A_an = e^(.) / (1 + sum).
// The exponents x_aj replace S, then x_aj - m with m the maximum of its group (exact ones from the
// raw rows, see the top: stage 1 ends at the maxima, kept in the row's sums, `pairs` takes them
// (`pair_exp`) and `walk_end`, stage 2, the rest; stage 0 the whole walk).
fn walk_ms(a: u32, t: u32, stage: u32) {
  let b = P.b;
  let base = a * b;
  let ya = labels[a];
  var mp = stats[walk_stat(a)];
  var mn = stats[walk_stat(a) + 1u];
  if (stage != 2u) {
    var mpt = 0.0;
    var mnt = 0.0;
    var top = NEG;
    for (var j = t; j < b; j += WG) {
      if (j == a) { continue; }
      top = max(top, s[base + j]);
      let x = select(-P.alpha.x, P.beta.x, labels[j] != ya) * (s[base + j] - P.base.x);
      s[base + j] = x;
      if (labels[j] != ya) { mnt = max(mnt, x); } else { mpt = max(mpt, x); }
    }
    mp = wg_max(mpt, t);
    mn = wg_max(mnt, t);
    let near = wg_max(top, t);
    if (t == 0u) {
      flag_near(a, near);
      stats[walk_stat(a)] = mp;
      stats[walk_stat(a) + 1u] = mn;
    }
    if (stage == 1u) { return; }
  }
  var spt = 0.0;
  var snt = 0.0;
  for (var j = t; j < b; j += WG) {
    if (j == a) { continue; }
    let neg = labels[j] != ya;
    var x = s[base + j];
    if (stage == 0u) {
      x -= select(mp, mn, neg);
      s[base + j] = x;
    }
    if (neg) { snt += exp(x); } else { spt += exp(x); }
  }
  let sp = wg_sum(spt, t) + exp(-mp);
  let sn = wg_sum(snt, t) + exp(-mn);
  for (var j = t; j < b; j += WG) {
    let x = s[base + j];
    var g = 0.0;
    if (labels[j] != ya) { g = exp(x) / sn; } else if (j != a) { g = -exp(x) / sp; }
    s[base + j] = g;
  }
  if (t == 0u) {
    stats[walk_stat(a)] = lse1(mp, sp) / P.alpha.x + lse1(mn, sn) / P.beta.x;
    stats[walk_stat(a) + 1u] = 1.0;
  }
}

// proxyAnchor, proxy k (column k of S [b, c]; a workgroup each): x_ik = -alpha (S_ik - margin) for its rows (y_i = k),
// alpha (S_ik + margin) for the others; pos_k = log(1 + sum e^x) over its rows (a class
// present only), neg_k over the others; the term pos_k / |P+| + neg_k / C, and
// A_ik = -alpha e^(x - mp)/sp / |P+| (its rows), alpha e^(x - mn)/sn / C (the others).
// (A workgroup per proxy, its invocations taking the rows in turn. Stage 0 the whole walk; with exact exponents
// stage 1 ends at the maxima mp, mn, kept in the proxy's sums, `pairs` takes the exponents (`pair_exp`) and
// `walk_proxy_end`, stage 2, the rest.)
fn walk_proxy_k(k: u32, t: u32, stage: u32) {
  let b = P.b;
  let c = P.c;
  // The exponents x_ik in place of S, then x_ik - m with m the maximum of its group (exact ones
  // from the raw rows, see the top).
  var mp = stats[walk_stat(k)];
  var mn = stats[walk_stat(k) + 1u];
  if (stage != 2u) {
    var mpt = 0.0;
    var mnt = 0.0;
    var top = NEG;
    for (var i = t; i < b; i += WG) {
      top = max(top, s[i * c + k]);
      let mine = u32(labels[i]) == k;
      let x = select(P.alpha.x, -P.alpha.x, mine) * (s[i * c + k] + select(P.margin.x, -P.margin.x, mine));
      s[i * c + k] = x;
      if (mine) { mpt = max(mpt, x); } else { mnt = max(mnt, x); }
    }
    mp = wg_max(mpt, t);
    mn = wg_max(mnt, t);
    let near = wg_max(top, t);
    if (t == 0u) {
      flag_near(b + k, near);
      stats[walk_stat(k)] = mp;
      stats[walk_stat(k) + 1u] = mn;
    }
    if (stage == 1u) { return; }
  }
  var spt = 0.0;
  var snt = 0.0;
  var ownt = 0.0;
  for (var i = t; i < b; i += WG) {
    let mine = u32(labels[i]) == k;
    var x = s[i * c + k];
    if (stage == 0u) {
      x -= select(mn, mp, mine);
      s[i * c + k] = x;
    }
    if (mine) {
      spt += exp(x);
      ownt = 1.0;
    } else {
      snt += exp(x);
    }
  }
  let sp = wg_sum(spt, t) + exp(-mp);
  let sn = wg_sum(snt, t) + exp(-mn);
  let own = wg_max(ownt, t) > 0.0;
  let cf = f32(c);
  for (var i = t; i < b; i += WG) {
    let x = s[i * c + k];
    var g: f32;
    if (u32(labels[i]) == k) {
      g = -P.alpha.x * exp(x) / sp / P.present;
    } else {
      g = P.alpha.x * exp(x) / sn / cf;
    }
    s[i * c + k] = g;
  }
  if (t == 0u) {
    stats[walk_stat(k)] = select(0.0, lse1(mp, sp) / P.present, own) + lse1(mn, sn) / cf;
    stats[walk_stat(k) + 1u] = select(0.0, 1.0, k == 0u);
  }
}

// Grid: proxies.
@compute @workgroup_size(256)
fn walk_proxy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  walk_proxy_k(wid.x, t, P.exact);
}

@compute @workgroup_size(256)
fn walk_proxy_end(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  walk_proxy_k(wid.x, t, 2u);
}

// The exact exponent of row a and column j of S (see the top), in place, from the maxima the walk's
// stage 1 left in the row's (proxy's) sums.
fn pair_exp(a: u32, j: u32) {
  let b = P.b;
  if (P.loss == 3u) {
    let mine = u32(labels[a]) == j;
    let m = stats[walk_stat(j) + select(1u, 0u, mine)];
    s[a * P.c + j] = precise_exp(a, b + j, select(P.margin, -P.margin, mine), select(P.alpha, -P.alpha, mine), m);
  } else if (P.loss == 0u) {
    s[a * b + j] = precise_exp(a, j, df(-stats[walk_stat(a)]), P.inv_t, 0.0);
  } else if (j != a) {
    let neg = labels[j] != labels[a];
    let m = stats[walk_stat(a) + select(0u, 1u, neg)];
    s[a * b + j] = precise_exp(a, j, -P.base, select(-P.alpha, P.beta, neg), m);
  }
}

// Entry q of h_a - h_j from the raw rows in float pairs, rounded once (a near pair).
fn near_diff(a: u32, j: u32, q: u32) -> f32 {
  let d = P.d;
  let x = df_add(df_mul(df(f[a * d + q]), inv_norm(a)), -df_mul(df(f[j * d + q]), inv_norm(j)));
  return x.x + x.y;
}

// ||h_a - h_j||^2 from the raw rows (a near pair).
fn near_sq(a: u32, j: u32) -> f32 {
  var sq = 0.0;
  for (var q = 0u; q < P.d; q++) {
    let x = near_diff(a, j, q);
    sq += x * x;
  }
  return sq;
}

// Whether tripletMargin's mining keeps the triplet of distances dp (positive), dn (negative).
fn mined(dp: f32, dn: f32) -> bool {
  let gap = dn - dp;
  if (P.mining == 1u) { return gap <= 0.0; }
  if (P.mining == 2u) { return gap > 0.0 && gap <= P.margin.x; }
  return true;
}

// A triplet's loss l (relu or softplus of v) and dl/dv.
fn triplet(v: f32) -> vec2<f32> {
  if (P.soft == 1u) { return vec2<f32>(softplus_(v), sigmoid_(v)); }
  return vec2<f32>(max(v, 0.0), 1.0);
}

// tripletMargin, anchor a, after `dist` (the distances d_aj in place of S): the mined triplets' loss
// and count, c_aj = dL/dd_aj (positives +, negatives -) after S, then W_aj = c_aj / d_aj in place
// (`triplet_w`). Mining but batchHard goes through the negatives per positive and the positives
// per negative (B per pair): there the walk does nothing, `pairs` mines (an invocation per pair of
// rows, `mine_pair`) and `walk_end` adds the partial sums and takes W.
fn walk_triplet(a: u32, t: u32) {
  let b = P.b;
  let base = a * b;
  let coef = b * b + base;
  let ya = labels[a];
  if (P.mining != 3u) { return; }
  var lt = 0.0;
  var ct = 0.0;
  // The farthest positive and the nearest negative, ties to the smaller index.
  var fp = -1.0;
  var nn = 3.4e38;
  for (var j = t; j < b; j += WG) {
    let dj = abs(s[base + j]);
    if (labels[j] != ya) { nn = min(nn, dj); } else if (j != a) { fp = max(fp, dj); }
  }
  let far = wg_max(fp, t);
  let closest = -wg_max(-nn, t);
  var ip = 0xffffffffu;
  var ineg = 0xffffffffu;
  for (var j = t; j < b; j += WG) {
    let dj = abs(s[base + j]);
    if (labels[j] != ya) { if (dj == closest) { ineg = min(ineg, j); } } else if (j != a && dj == far) { ip = min(ip, j); }
  }
  let p = wg_min_u32(ip, t);
  let n = wg_min_u32(ineg, t);
  if (t == 0u && p != 0xffffffffu && n != 0xffffffffu) {
    let l = triplet(abs(s[base + p]) - abs(s[base + n]) + P.margin.x);
    if (l.x > 0.0) {
      lt = l.x;
      ct = 1.0;
      s[coef + p] = l.y;
      s[coef + n] = -l.y;
    }
  }
  triplet_w(a, t, wg_sum(lt, t), wg_sum(ct, t));
}

// Grid: (column blocks of 256, rows) of S, tripletMargin's first step: the distance d_aj in place of
// S_aj (a near pair's from the raw rows, D: an invocation each, src/webgpu/loops.ts), c_aj zeroed.
@compute @workgroup_size(256)
fn dist(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let a = wid.y;
  let j = wid.x * WG + t;
  let b = P.b;
  if (j >= b) { return; }
  // (A near pair's distance is kept negated, to be told apart below.)
  var d2 = stats[row_stat(a)] + stats[row_stat(j)] - 2.0 * s[a * b + j];
  var sign = 1.0;
  if (d2 < NEAR) {
    d2 = near_sq(a, j);
    sign = -1.0;
  }
  s[a * b + j] = sign * sqrt(max(d2, 0.0));
  s[b * b + a * b + j] = 0.0;
}

// Mining but batchHard, anchor a and row j (an invocation of `pairs`): a positive j's triplets (over the
// negatives) give their loss, count and c_aj; a negative j's (over the positives) c_aj, minus the shares
// of the triplets it is in. Returns (loss, count).
fn mine_pair(a: u32, j: u32) -> vec2<f32> {
  let b = P.b;
  let base = a * b;
  let ya = labels[a];
  let yj = labels[j];
  var lt = 0.0;
  var ct = 0.0;
  if (j == a) { return vec2<f32>(0.0); }
  let dj = abs(s[base + j]);
  var g = 0.0;
  if (yj == ya) {
    for (var n = 0u; n < b; n++) {
      if (labels[n] == ya) { continue; }
      let dn = abs(s[base + n]);
      if (!mined(dj, dn)) { continue; }
      let l = triplet(dj - dn + P.margin.x);
      if (l.x > 0.0) {
        lt += l.x;
        ct += 1.0;
        g += l.y;
      }
    }
  } else {
    // (the anchor's class only: its rows, in order, from the host's ranges after the labels)
    for (var r = u32(labels[2u * b + a]); r < u32(labels[3u * b + a]); r++) {
      let q = u32(labels[b + r]);
      if (q == a) { continue; }
      let dq = abs(s[base + q]);
      if (!mined(dq, dj)) { continue; }
      let l = triplet(dq - dj + P.margin.x);
      if (l.x > 0.0) { g -= l.y; }
    }
  }
  s[b * b + base + j] = g;
  return vec2<f32>(lt, ct);
}

// Where `pairs` leaves the partial sums (loss, count) of block `blk` of anchor a's row: after the walked rows'.
fn part_stat(a: u32, blk: u32) -> u32 { return walk_stat(P.cols) + 2u * (a * ((P.b + WG - 1u) / WG) + blk); }

// tripletMargin's end of anchor a: W_aj = c_aj / d_aj in place of the distance (far pairs) or of c_aj
// (near pairs), and the row's loss and count.
fn triplet_w(a: u32, t: u32, loss: f32, count: f32) {
  let b = P.b;
  let base = a * b;
  let coef = b * b + base;
  storageBarrier();
  workgroupBarrier();
  for (var j = t; j < b; j += WG) {
    let x = s[base + j];
    let w = select(0.0, s[coef + j] / abs(x), x != 0.0);
    s[base + j] = select(w, 0.0, x < 0.0);
    s[coef + j] = select(0.0, w, x < 0.0);
  }
  if (t == 0u) {
    stats[walk_stat(a)] = loss;
    stats[walk_stat(a) + 1u] = count;
  }
}

// One workgroup per anchor row (not proxyAnchor's: walk_proxy): the whole walk, or (exact exponents, or
// tripletMargin's mining but batchHard) its first stage.
@compute @workgroup_size(256)
fn walk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let i = wid.x;
  if (P.loss == 0u) {
    walk_ntxent(i, t, P.exact);
  } else if (P.loss == 1u) {
    walk_triplet(i, t);
  } else {
    walk_ms(i, t, P.exact);
  }
}

// Grid: (column blocks of 256, rows) of S, between the walk's stages (a pass of its own keeps each
// invocation's loops within llvmpipe's budget, src/webgpu/loops.ts): an exact exponent per entry, or
// tripletMargin's mining per pair with the block's sums into stats.
@compute @workgroup_size(256)
fn pairs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let a = wid.y;
  let j = wid.x * WG + t;
  if (P.loss != 1u) {
    if (j < P.cols) { pair_exp(a, j); }
    return;
  }
  var v = vec2<f32>(0.0);
  if (j < P.b) { v = mine_pair(a, j); }
  let loss = wg_sum(v.x, t);
  let count = wg_sum(v.y, t);
  if (t == 0u) {
    stats[part_stat(a, wid.x)] = loss;
    stats[part_stat(a, wid.x) + 1u] = count;
  }
}

// One workgroup per anchor row, after `pairs`: the walk's last stage.
@compute @workgroup_size(256)
fn walk_end(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let a = wid.x;
  if (P.loss == 0u) {
    walk_ntxent(a, t, 2u);
  } else if (P.loss == 1u) {
    var lt = 0.0;
    var ct = 0.0;
    for (var blk = t; blk < (P.b + WG - 1u) / WG; blk += WG) {
      lt += stats[part_stat(a, blk)];
      ct += stats[part_stat(a, blk) + 1u];
    }
    triplet_w(a, t, wg_sum(lt, t), wg_sum(ct, t));
  } else {
    walk_ms(a, t, 2u);
  }
}

// One workgroup: the loss and the gradient scale.
@compute @workgroup_size(256)
fn reduce(@builtin(local_invocation_index) t: u32) {
  let rows = select(P.b, P.c, P.loss == 3u);
  var lt = 0.0;
  var ct = 0.0;
  var nt = 0.0;
  for (var i = t; i < rows; i += WG) {
    lt += stats[walk_stat(i)];
    ct += stats[walk_stat(i) + 1u];
    if (P.loss == 3u && stats[row_stat(P.b + i) + 3u] > 1.5) { nt = 1.0; }
  }
  let loss = wg_sum(lt, t);
  let count = wg_sum(ct, t);
  let near = wg_max(nt, t);
  if (t == 0u) {
    stats[0] = select(0.0, loss / count, count > 0.0);
    stats[1] = select(0.0, P.upstream / count, count > 0.0);
    stats[2] = near;
  }
}

// Grid: (row tiles, D tiles) of G.
@compute @workgroup_size(64)
fn grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let proxy = P.loss == 3u;
  grad_tiles(t, select(1u, 2u, proxy), wid.x * 64u, P.b, wid.y * 64u, P.d, select(P.b, P.c, proxy));
}

// Grid: (proxy tiles, D tiles) of proxyAnchor's G_p.
@compute @workgroup_size(64)
fn grad_p(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  grad_tiles(t, 3u, wid.x * 64u, P.c, wid.y * 64u, P.d, P.b);
}

// tripletMargin's gradient w.r.t. h_r, entry q: scale (rs h - G), and the near pairs.
fn grad_h(r: u32, q: u32, scale: f32, rs: f32) -> f32 {
  let d = P.d;
  let g = scale * work[(P.b + P.c + r) * d + q];
  // The near pairs' c (h_r - h_j) / d from the raw rows (see the top).
  let b = P.b;
  var near = 0.0;
  for (var j = 0u; j < b; j++) {
    let w = s[b * b + r * b + j] + s[b * b + j * b + r];
    if (w != 0.0) { near += w * near_diff(r, j, q); }
  }
  return scale * (rs * work[r * d + q] + near) - g;
}

// tripletMargin, one invocation per entry (r, q) of f (grid: row groups, D): grad_h's value into gf,
// which `back` then reads (grad_h's sums over the batch in an invocation of their own: one per row,
// D of them, went past llvmpipe's loop budget at B = 256 and D = 128, src/webgpu/loops.ts).
@compute @workgroup_size(64)
fn back_h(@builtin(global_invocation_id) gid: vec3<u32>) {
  zero = P.zero;
  let r = gid.x;
  let q = gid.y;
  let b = P.b;
  let d = P.d;
  if (r >= b + P.c) { return; }
  // The row and column sums of W (the far pairs).
  var rs = 0.0;
  for (var j = 0u; j < b; j++) { rs += s[r * b + j] + s[j * b + r]; }
  let g = grad_h(r, q, stats[1], rs);
  if (r < b) { gf[r * d + q] = g; } else { gp[(r - b) * d + q] = g; }
}

// Entry q of row r's product G (or E) as a pair: hi after h, lo in gf or gp (`back` then overwrites it).
fn g_pair(r: u32, q: u32) -> vec2<f32> { return vec2<f32>(work[(P.b + P.c + r) * P.d + q], h_of(r, q)); }
// Entry q of row r of h as a pair.
fn h_pair(r: u32, q: u32) -> vec2<f32> { return vec2<f32>(h_at(0u, r, q), h_at(LO, r, q)); }

// One invocation per row of f and of the proxies, after back_h (tripletMargin) or the products.
@compute @workgroup_size(64)
fn back(@builtin(global_invocation_id) gid: vec3<u32>) {
  zero = P.zero;
  let r = gid.x;
  let b = P.b;
  let d = P.d;
  if (r >= b + P.c) { return; }
  if (P.loss != 1u) {
    // scale (G - h (h . G)) / ||f|| in pairs, rounded once (see the top).
    let at = row_stat(r);
    let k = df_mul(df(stats[1]), vec2<f32>(stats[at + 1u], stats[at + 2u]));
    let live = stats[at + 3u] > 0.0;
    var dot = vec2<f32>(0.0);
    for (var q = 0u; q < d; q++) { dot = df_add(dot, df_mul(g_pair(r, q), h_pair(r, q))); }
    for (var q = 0u; q < d; q++) {
      let g = g_pair(r, q);
      var v = (g.x + g.y) * stats[1] * 1e12;
      if (live) {
        let e = df_mul(df_add(g, -df_mul(h_pair(r, q), dot)), k);
        v = e.x + e.y;
      }
      if (r < b) { gf[r * d + q] = v; } else { gp[(r - b) * d + q] = v; }
    }
    return;
  }
  var dot = 0.0;
  for (var q = 0u; q < d; q++) { dot += work[r * d + q] * h_of(r, q); }
  let at = row_stat(r);
  let live = stats[at + 3u] > 0.0;
  let inv = stats[at + 1u] + stats[at + 2u];
  for (var q = 0u; q < d; q++) {
    let g = h_of(r, q);
    var v = g * 1e12;
    if (live) { v = (g - work[r * d + q] * dot) * inv; }
    if (r < b) { gf[r * d + q] = v; } else { gp[(r - b) * d + q] = v; }
  }
}

// back_h's value of entry (r, q).
fn h_of(r: u32, q: u32) -> f32 {
  if (r < P.b) { return gf[r * P.d + q]; }
  return gp[(r - P.b) * P.d + q];
}
