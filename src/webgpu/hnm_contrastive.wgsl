// hnmContrastive (src/webgpu/hnm_contrastive.ts), the math of src/reference/hnm_contrastive.ts
// in three dispatches (a workgroup per logit, one per row, an invocation per entry of the gradient):
// row i's k + 1 logits L_0 = fh_i . ph_{y_i} / t (the positive) and
// L_j = fh_i . ph_{hard_ij} / t (fh, ph: f and the prototypes L2-normalised as F.normalize):
//   row_out[i] = log(e^L_0 + mean_j e^L_j) - L_0;
//   (F_GRAD) the gradient w.r.t. fh_i is sum_c a_c ph_c with a_j = s e^(L_j - m) /
//   (k (E0 + N) t) for the negatives (m the largest logit, E0 = e^(L_0 - m),
//   N = mean_j e^(L_j - m)) and a_0 = -sum_j a_j for the positive (its e^(L_0 - lse) - 1);
//   through the normalisation of f (gh - fh (fh . gh)) / ||f_i||, that is
//   g_i = sum_j a_j ((ph_j - ph_0) - fh (cos_j - cos_0)) / ||f_i|| (gh / 1e-12 below the
//   clamp). Written so, in float pairs, nothing cancels: the positive's and the negatives'
//   terms, and the projection, nearly cancel in float32 (a gradient of 1e-3 from terms of
//   1 / t).
// The logits are float pairs (the dots, norms, their quotient and 1/t: about 48 bits):
// at t = 1e-4 a float32 cosine, times 1/t, would move a logit by 1e-3, the probabilities'
// relative error; L - m is rounded to float32 only once it is small where it matters.

struct HnmParams {
  b: u32,            // rows
  c: u32,            // classes (prototypes)
  d: u32,            // embedding width
  k: u32,            // hard negatives per row
  flags: u32,        // F_GRAD
  zero: u32,         // always 0 (src/webgpu/common.wgsl's `zero`)
  inv_t: vec2<f32>,  // 1 / temperature as a pair
}
@group(0) @binding(0) var<uniform> P: HnmParams;

@group(0) @binding(1) var<storage, read> f: array<f32>;
@group(0) @binding(2) var<storage, read> protos: array<f32>;
// labels [b], then hard [b, k].
@group(0) @binding(3) var<storage, read> ints: array<i32>;
@group(0) @binding(4) var<storage, read> scales: array<f32>;
// Per row (5 (k + 1) + 2 values): the cosines as pairs [2 (k + 1)], the prototypes' clamped norms
// as pairs [2 (k + 1)], the coefficients a_c [k + 1], ||f_i|| as a pair.
@group(0) @binding(5) var<storage, read_write> work: array<f32>;
@group(0) @binding(6) var<storage, read_write> row_out: array<f32>;
@group(0) @binding(7) var<storage, read_write> g: array<f32>;

// #include "wg_sum2.wgsl"

// Class of logit position c of row i (0: the label, j + 1: hard negative j).
fn cls(i: u32, c: u32) -> u32 {
  if (c == 0u) { return u32(ints[i]); }
  return u32(ints[P.b + i * P.k + c - 1u]);
}

fn clamp_norm(v: vec2<f32>) -> vec2<f32> { return select(v, df(1e-12), v.x < 1e-12); }

// Grid: (logits, rows). Logit c of row i: its cosine and its prototype's clamped norm into the row's work
// (a workgroup per logit: one invocation's loops stay within llvmpipe's budget, src/webgpu/loops.ts).
@compute @workgroup_size(256)
fn cosines(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let c = wid.x;
  let i = wid.y;
  let d = P.d;
  let n = P.k + 1u;
  let base = row_base(i);
  let p = cls(i, c);
  var ff = vec2<f32>(0.0);
  var fp = vec2<f32>(0.0);
  var pp = vec2<f32>(0.0);
  for (var q = t; q < d; q += WG) {
    let x = f[i * d + q];
    let v = protos[p * d + q];
    ff = dot_acc(ff, x, x);
    fp = dot_acc(fp, x, v);
    pp = dot_acc(pp, v, v);
  }
  let nf = df_sqrt(wg_sum2(ff, t));
  let np = clamp_norm(df_sqrt(wg_sum2(pp, t)));
  let dot = wg_sum2(fp, t);
  let cosv = df_div(two_sum(dot.x, dot.y), df_mul(clamp_norm(nf), np));
  if (t == 0u) {
    work[base + 2u * c] = cosv.x;
    work[base + 2u * c + 1u] = cosv.y;
    work[base + 2u * (n + c)] = np.x;
    work[base + 2u * (n + c) + 1u] = np.y;
    if (c == 0u) {
      work[base + 5u * n] = nf.x;
      work[base + 5u * n + 1u] = nf.y;
    }
  }
}

// One workgroup per row, after `cosines`: the row loss and (F_GRAD) the coefficients a_c.
@compute @workgroup_size(256)
fn rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let i = wid.x;
  let n = P.k + 1u;
  let base = row_base(i);
  let grad = (P.flags & F_GRAD) != 0u;
  // The largest logit m as a pair: the largest hi, then the largest lo of the logits with that hi.
  var mh = NEG;
  for (var c = t; c < n; c += WG) { mh = max(mh, df_mul(pair(base, c), P.inv_t).x); }
  let m_hi = wg_max(mh, t);
  var ml = NEG;
  for (var c = t; c < n; c += WG) {
    let l = df_mul(pair(base, c), P.inv_t);
    if (l.x == m_hi) { ml = max(ml, l.y); }
  }
  let m = vec2<f32>(m_hi, wg_max(ml, t));
  var nt = 0.0;
  for (var c = 1u + t; c < n; c += WG) { nt += exp(shifted(base, c, m)); }
  let big_n = wg_sum(nt, t) / f32(P.k);
  let v0 = shifted(base, 0u, m);
  let den = exp(v0) + big_n;
  if (t == 0u) { row_out[i] = select(log_(den) - v0, log1p_(big_n), v0 == 0.0); }
  if (!grad) { return; }
  let st = scales[i] * P.inv_t.x / (f32(P.k) * den);
  for (var c = 1u + t; c < n; c += WG) { work[base + 4u * n + c] = st * exp(shifted(base, c, m)); }
}

// Grid: (D blocks of 64, rows), after `rows` (F_GRAD): entry q of row i's gradient, from the coefficients.
@compute @workgroup_size(64)
fn grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let i = wid.y;
  let q = wid.x * 64u + t;
  let d = P.d;
  if (q >= d) { return; }
  let n = P.k + 1u;
  let base = row_base(i);
  let nf = vec2<f32>(work[base + 5u * n], work[base + 5u * n + 1u]);
  let nfc = clamp_norm(nf);
  let tiny = nf.x < 1e-12;
  let cos0 = pair(base, 0u);
  let np0 = pair(base, n);
  let fh = df_div(df(f[i * d + q]), nfc);
  let ph0 = df_div(df(protos[cls(i, 0u) * d + q]), np0);
  var acc = vec2<f32>(0.0);
  for (var c = 1u; c < n; c++) {
    var term = df_add(df_div(df(protos[cls(i, c) * d + q]), pair(base, n + c)), -ph0);
    if (!tiny) { term = df_add(term, -df_mul(fh, df_add(pair(base, c), -cos0))); }
    acc = df_add(acc, df_mul(df(work[base + 4u * n + c]), term));
  }
  g[i * d + q] = df_div(acc, nfc).x;
}

// Where row i's work begins (5 (k + 1) + 2 values a row).
fn row_base(i: u32) -> u32 { return i * (5u * (P.k + 1u) + 2u); }

// The pair at position c of a row's work.
fn pair(base: u32, c: u32) -> vec2<f32> { return vec2<f32>(work[base + 2u * c], work[base + 2u * c + 1u]); }

// Logit c of the row minus the maximum m, rounded to float32 once small where it matters.
fn shifted(base: u32, c: u32, m: vec2<f32>) -> f32 { return df_add(df_mul(pair(base, c), P.inv_t), -m).x; }
