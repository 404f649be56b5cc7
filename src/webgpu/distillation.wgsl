// `distillation` (Hinton et al. 2015), student s (a), teacher t (b), labels y, one
// workgroup per row. The math is assembly/distillation.ts's (read it there):
//   P = softmax(t/T), Q = softmax(s/T), p = softmax(s)
//   d_c = (t_c - s_c) - (mt - ms)   (mt, ms the row maxima)
//   L = log(St / Sq) = log1p(sum_c (e^((t_c-mt)/T) - e^((s_c-ms)/T)) / Sq), each
//       difference taken as e^((s_c-ms)/T) expm1(d_c/T) where |d_c/T| <= 1/2
//   kl_i = sum_c P_c (d_c/T - L) = (1/T) sum_c P_c d_c - L
//   ce_i = log(Sp) + (ms - s_y)   (0 for ignored rows)
//   ds_c = ka_i (Q_c - P_c) + ca_i (p_c - [c = y]),  Q_c - P_c = -Q_c expm1(d_c/T - L)
// The argmaxima rt of t and rs of s are left out of the float32 sums (their exponentials
// are 1), S = 1 + S_others, and p_y - 1 at y = rs is taken as -Sp_others / Sp.
// (The kernel takes kl through L rather than log St - log Sq: no float64 here to hold
// the difference of two large logarithms.)
// P.inv_t = 1/T. row_in: [N, 2] = (ka_i, ca_i). row_out: [N, 2] = (kl_i, ce_i).

struct DistillationParams {
  // #include "row_params.wgsl"
  inv_t: f32,   // 1 / temperature
}
@group(0) @binding(0) var<uniform> P: DistillationParams;

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> g: array<f32>;
@group(0) @binding(5) var<storage, read> labels: array<i32>;
@group(0) @binding(6) var<storage, read> row_in: array<f32>;
@group(0) @binding(8) var<storage, read_write> row_out: array<f32>;

var<workgroup> red4: array<vec4<f32>, WG>;

// Sum of v over the workgroup, four at once. Call from uniform control flow.
fn wg_sum4(v: vec4<f32>, t: u32) -> vec4<f32> {
  red4[t] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (t < s) { red4[t] = red4[t] + red4[t + s]; }
    workgroupBarrier();
  }
  let r = red4[0];
  workgroupBarrier();
  return r;
}

// e^x - 1 for |x| <= 1/2: its Taylor polynomial to x^8 (assembly/math.ts expm1Near).
fn expm1_near(x: f32) -> f32 {
  var p = 0.0000248015873015873 * x + 0.0001984126984126984;
  p = p * x + 0.001388888888888889;
  p = p * x + 0.008333333333333333;
  p = p * x + 0.041666666666666664;
  p = p * x + 0.16666666666666666;
  p = p * x + 0.5;
  return (x * x) * p + x;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let r = wid.x;
  let i = P.row0 + r;
  let c = P.c;
  let sa = P.a_off + r * c;
  let tb = P.b_off + r * c;
  let grad = (P.flags & F_GRAD) != 0u;
  let invT = P.inv_t;
  let y = labels[i];

  // The maxima and their first indices (0 for a row of NaN), in one pass: each
  // invocation's first index of its own maximum, the least of those that reach the row's.
  var lms = NEG;
  var lmt = NEG;
  var fs = 0xffffffffu;
  var ft = 0xffffffffu;
  for (var j = t; j < c; j += WG) {
    let s = a[sa + j];
    let u = b[tb + j];
    if (s > lms) {
      lms = s;
      fs = j;
    }
    if (u > lmt) {
      lmt = u;
      ft = j;
    }
  }
  let ms = wg_max(lms, t);
  let mt = wg_max(lmt, t);
  var rs = wg_min_u32(select(0xffffffffu, fs, lms == ms), t);
  var rt = wg_min_u32(select(0xffffffffu, ft, lmt == mt), t);
  if (rs >= c) { rs = 0u; }
  if (rt >= c) { rt = 0u; }

  // (SPo, sum_c eP_c d_c, SQo, Spo) without rt (the first two) or rs (the last two),
  // and St - Sq term by term.
  let dm = mt - ms;
  var acc = vec4<f32>(0.0);
  var diff = 0.0;
  for (var j = t; j < c; j += WG) {
    let sj = a[sa + j];
    let tj = b[tb + j];
    let eP = exp((tj - mt) * invT);
    let eQ = exp((sj - ms) * invT);
    let d = (tj - sj) - dm;
    if (j != rt) { acc += vec4<f32>(eP, eP * d, 0.0, 0.0); }
    if (j != rs) { acc += vec4<f32>(0.0, 0.0, eQ, exp(sj - ms)); }
    let x = d * invT;
    diff += select(eP - eQ, eQ * expm1_near(x), abs(x) <= 0.5);
  }
  let sums = wg_sum4(acc, t);
  let dsum = wg_sum(diff, t);
  let SPo = sums.x;
  let sumPd = sums.y + (ms - a[sa + rt]); // d_rt = ms - s_rt
  let SQo = sums.z;
  let Spo = sums.w;
  let St = 1.0 + SPo;
  let Sq = 1.0 + SQo;
  let Sp = 1.0 + Spo;
  let q = dsum / Sq;
  var L: f32;
  if (q < -0.5) { L = log_(St / Sq); } else { L = log1p_(q); }
  let kl = maxn(invT * sumPd / St - L, 0.0);
  var ce = 0.0;
  if (y >= 0) { ce = log1p_(Spo) + (ms - a[sa + u32(y)]); }
  if (t == 0u) {
    row_out[i * P.rs_out] = kl;
    row_out[i * P.rs_out + 1u] = ce;
  }
  if (!grad) { return; }

  let kf = row_in[i * P.rs_in];
  var cf = 0.0;
  if (y >= 0) { cf = row_in[i * P.rs_in + 1u]; }
  let invSq = 1.0 / Sq;
  let invSt = 1.0 / St;
  let bp = cf / Sp;
  let xg = P.g_off + r * c;
  let yu = select(0xffffffffu, u32(y), y >= 0);
  for (var j = t; j < c; j += WG) {
    let sj = a[sa + j];
    let tj = b[tb + j];
    let x = ((tj - sj) - dm) * invT - L;
    let Q = exp((sj - ms) * invT) * invSq;
    let Pc = exp((tj - mt) * invT) * invSt;
    let qmp = select(Q - Pc, -Q * expm1_near(x), abs(x) <= 0.5);
    let ep = exp(sj - ms);
    var v: f32;
    if (j == yu) {
      var pm: f32;
      if (j == rs) { pm = -Spo / Sp; } else { pm = ep / Sp - 1.0; }
      v = kf * qmp + cf * pm;
    } else {
      v = kf * qmp + bp * ep;
    }
    g[xg + j] = v;
  }
}
