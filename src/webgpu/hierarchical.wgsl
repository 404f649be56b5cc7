// hierarchical (src/webgpu/hierarchical.ts), the math of src/reference/hierarchical.ts: one
// workgroup per row i, g = the row's coarse label:
//   rows_out[i]     = lse(coarse_i) - coarse_i[g], gc_i = s_i (softmax(coarse_i) - e_g);
//   rows_out[b + i] = lse over the children of g of fine_i - fine_i[y_i], and on those
//                     children gf_i = s_i (softmax over the children - e_y); every other
//                     fine class's gradient is written as exactly 0.
// The children of g are children[start[g] .. start[g + 1]) (the host's counting sort), so
// the fine log-sum-exp reads only them; f2c (the coarse class of each fine class) picks the
// zeros, so each element is written by exactly one invocation.
//
// Each softmax is kept as (m, q*, o): the maximum m, its first position q* and
// o = sum over the other positions of e^(z - m), the denominator being 1 + o. The log-sum-exp
// m + log(1 + o) is never formed in float32 (at logits of 1e4 its rounding, ulp 1e-3, would
// be the probabilities' relative error): the row is log1p(o) - (z_y - m), exact near the
// maximum, and a label at the maximum has the gradient -o / (1 + o), not 1 / (1 + o) - 1,
// which would cancel to a few ulps of 1 when the row is confident.

struct HierParams {
  b: u32,      // rows
  k: u32,      // coarse classes
  c: u32,      // fine classes
  flags: u32,  // F_GRAD
}
@group(0) @binding(0) var<uniform> P: HierParams;

@group(0) @binding(1) var<storage, read> coarse: array<f32>;
@group(0) @binding(2) var<storage, read> fine: array<f32>;
// labels [b], coarse labels [b], start [k + 1], children [c], f2c [c].
@group(0) @binding(3) var<storage, read> ints: array<i32>;
@group(0) @binding(4) var<storage, read> scales: array<f32>;
@group(0) @binding(5) var<storage, read_write> rows_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> gc: array<f32>;
@group(0) @binding(7) var<storage, read_write> gf: array<f32>;

// A softmax's statistics (m, o, q*) over the positions [0, n): the coarse row i (part 0),
// or the fine row i at the children children[lo ..) (part 1).
struct Stats {
  m: f32,
  o: f32,
  at: u32,
}

fn z_at(part: u32, i: u32, lo: u32, q: u32) -> f32 {
  if (part == 0u) { return coarse[i * P.k + q]; }
  return fine[i * P.c + u32(ints[2u * P.b + P.k + 1u + lo + q])];
}

fn stats(part: u32, i: u32, lo: u32, n: u32, t: u32) -> Stats {
  var mt = NEG;
  for (var q = t; q < n; q += WG) { mt = max(mt, z_at(part, i, lo, q)); }
  let m = wg_max(mt, t);
  var first = 0xffffffffu;
  for (var q = t; q < n; q += WG) {
    if (z_at(part, i, lo, q) == m) { first = min(first, q); }
  }
  let at = wg_min_u32(first, t);
  var ot = 0.0;
  for (var q = t; q < n; q += WG) {
    if (q != at) { ot += exp(z_at(part, i, lo, q) - m); }
  }
  return Stats(m, wg_sum(ot, t), at);
}

// The row's cross-entropy at label position `y`.
fn row_ce(part: u32, i: u32, lo: u32, y: u32, st: Stats) -> f32 {
  return log1p_(st.o) - (z_at(part, i, lo, y) - st.m);
}

// The gradient at position q (label position y), times s.
fn grad_at(part: u32, i: u32, lo: u32, q: u32, y: u32, st: Stats, s: f32) -> f32 {
  let den = 1.0 + st.o;
  if (q == st.at) { return s * select(1.0, -st.o, q == y) / den; }
  return s * (exp(z_at(part, i, lo, q) - st.m) / den - select(0.0, 1.0, q == y));
}

@compute @workgroup_size(256)
fn rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let i = wid.x;
  let b = P.b;
  let k = P.k;
  let c = P.c;
  let grad = (P.flags & F_GRAD) != 0u;
  let y = u32(ints[i]);
  let g = u32(ints[b + i]);
  let s = scales[i];

  let sc = stats(0u, i, 0u, k, t);
  if (t == 0u) { rows_out[i] = row_ce(0u, i, 0u, g, sc); }
  if (grad) {
    for (var j = t; j < k; j += WG) { gc[i * k + j] = grad_at(0u, i, 0u, j, g, sc, s); }
  }

  let ch = 2u * b + k + 1u;
  let lo = u32(ints[2u * b + g]);
  let n = u32(ints[2u * b + g + 1u]) - lo;
  // The label's position among the children (ascending: a uniform search would do, but n
  // reads by the invocations are as cheap).
  var yt = 0xffffffffu;
  for (var q = t; q < n; q += WG) {
    if (u32(ints[ch + lo + q]) == y) { yt = q; }
  }
  let yq = wg_min_u32(yt, t);
  let sf = stats(1u, i, lo, n, t);
  if (t == 0u) { rows_out[b + i] = row_ce(1u, i, lo, yq, sf); }
  if (!grad) { return; }
  for (var q = t; q < n; q += WG) { gf[i * c + u32(ints[ch + lo + q])] = grad_at(1u, i, lo, q, yq, sf, s); }
  let f2c = ch + c;
  for (var j = t; j < c; j += WG) {
    if (u32(ints[f2c + j]) != g) { gf[i * c + j] = 0.0; }
  }
}
