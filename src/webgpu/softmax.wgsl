// The `softmax` / `logSoftmax` transforms (F_LOG) and their vector-Jacobian products,
// one workgroup per row; the math is assembly/softmax.ts's (softmax_rows, softmax_vjp).
// Without F_GRAD: g = softmax(a) or log_softmax(a).
// With F_GRAD, the vector-Jacobian product with the upstream rows u (b):
//   softmax      g = y ((u - u_r) + sum_k y_k (u_r - u_k)),  y = softmax(a), r the argmax
//                (the big term y_r (u_r - u_r) is exactly 0 when y is nearly one-hot)
//   log_softmax  g = u - softmax(a) sum_k u_k

struct SoftmaxParams {
  // #include "row_params.wgsl"
}
@group(0) @binding(0) var<uniform> P: SoftmaxParams;

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> g: array<f32>;

// The row maximum m, sum_j e^(a_j - m) and the first index of the maximum (0xffffffff for
// a row of NaN), in one pass: an online (max, sum) per invocation, and its first index.
struct Stats { m: f32, s: f32, r: u32 }
fn row_stats(xa: u32, c: u32, t: u32) -> Stats {
  var mt = NEG;
  var st = 0.0;
  var ft = 0xffffffffu;
  for (var j = t; j < c; j += WG) {
    let z = a[xa + j];
    if (z > mt) { ft = j; }
    online(&mt, &st, z);
  }
  let m = wg_max(mt, t);
  return Stats(m, wg_sum(st * exp(mt - m), t), wg_min_u32(select(0xffffffffu, ft, mt == m), t));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  if ((P.flags & F_GRAD) != 0u) { vjp(wid.x, t); } else { transform(wid.x, t); }
}

fn transform(r: u32, t: u32) {
  let c = P.c;
  let xa = P.a_off + r * c;
  let xg = P.g_off + r * c;
  let ms = row_stats(xa, c, t);
  let m = ms.m;
  if ((P.flags & F_LOG) != 0u) {
    let l = log_(ms.s);
    for (var j = t; j < c; j += WG) { g[xg + j] = (a[xa + j] - m) - l; }
  } else {
    let inv = 1.0 / ms.s;
    for (var j = t; j < c; j += WG) { g[xg + j] = exp(a[xa + j] - m) * inv; }
  }
}

fn vjp(r: u32, t: u32) {
  let c = P.c;
  let xa = P.a_off + r * c;
  let ub = P.b_off + r * c;
  let xg = P.g_off + r * c;
  let ms = row_stats(xa, c, t);
  let m = ms.m;
  let inv = 1.0 / ms.s;
  if ((P.flags & F_LOG) != 0u) {
    var ut = 0.0;
    for (var j = t; j < c; j += WG) { ut += b[ub + j]; }
    let k = -wg_sum(ut, t) * inv;
    for (var j = t; j < c; j += WG) { g[xg + j] = exp(a[xa + j] - m) * k + b[ub + j]; }
  } else {
    // The first index of the maximum (the last for a row of NaN, as softmax_vjp).
    let rr = min(ms.r, c - 1u);
    let ur = b[ub + rr];
    var dt = 0.0;
    for (var j = t; j < c; j += WG) { dt += exp(a[xa + j] - m) * inv * (ur - b[ub + j]); }
    let dot = wg_sum(dt, t);
    for (var j = t; j < c; j += WG) { g[xg + j] = exp(a[xa + j] - m) * inv * ((b[ub + j] - ur) + dot); }
  }
}
