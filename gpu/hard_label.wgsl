// The fused softmax cross-entropy kernel with hard labels: `crossEntropy`, `focal` and
// every margin loss on cosines, one workgroup per row, loss and gradient in one
// dispatch. The math is assembly/cross_entropy.ts's (read it there):
//   z_j = scale * x_j (x_j clamped to [-1, 1] first with F_CLAMP), the label's logit
//   replaced by row_in[1] (derivative row_in[2]) with F_TARGET;
//   nll = log(sum_j e^(z_j - m)) - (z_y - m), the label kept out of the sum S of the
//   others so that 1 - p_y = S / (S + e^(z_y - m)) keeps its relative accuracy.
// One pass reads the row for an online (max, sum-exp) per invocation, a second writes
// the gradient.
// row_in: [N, rs_in] = (gradient scale s_i, target logit, target derivative).
// row_out: [N, rs_out] = (row loss).

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> g: array<f32>;
@group(0) @binding(5) var<storage, read> labels: array<i32>;
@group(0) @binding(6) var<storage, read> row_in: array<f32>;
@group(0) @binding(7) var<storage, read> cls: array<f32>;
@group(0) @binding(8) var<storage, read_write> row_out: array<f32>;

fn logit_of(x: f32, clampOn: bool) -> f32 {
  return P.scale * select(x, clamp(x, -1.0, 1.0), clampOn);
}

fn weight_of(j: u32) -> f32 {
  if ((P.flags & F_WEIGHT) != 0u) { return cls[j]; }
  return 1.0;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let r = wid.x;
  let i = P.row0 + r;
  let c = P.c;
  let xa = P.a_off + r * c;
  let xg = P.g_off + r * c;
  let grad = (P.flags & F_GRAD) != 0u;
  let clampOn = (P.flags & F_CLAMP) != 0u;
  let y = uniform_i32(labels[i], t);
  if (y < 0) {
    if (t == 0u) { row_out[i * P.rs_out] = 0.0; }
    if (grad) { for (var j = t; j < c; j += WG) { g[xg + j] = 0.0; } }
    return;
  }
  let yu = u32(y);
  let xy = a[xa + yu];
  var zy: f32;
  var dy: f32;
  if ((P.flags & F_TARGET) != 0u) {
    zy = row_in[i * P.rs_in + 1u];
    dy = row_in[i * P.rs_in + 2u];
  } else {
    let xc = select(xy, clamp(xy, -1.0, 1.0), clampOn);
    zy = P.scale * xc;
    dy = select(0.0, P.scale, xc == xy);
  }
  let smoothing = P.eps != 0.0;

  // Pass 1: per invocation an online max and sum of e^(z - max) over the other
  // classes, and (smoothing) sum_j w_j (z_j - z_y).
  var mt = -3.4028235e38;
  var st = 0.0;
  var wz = 0.0;
  for (var j = t; j < c; j += WG) {
    let z = logit_of(a[xa + j], clampOn);
    if (smoothing) { wz += weight_of(j) * (z - zy); }
    if (j == yu) { continue; }
    if (z > mt) {
      st = st * exp(mt - z) + 1.0;
      mt = z;
    } else {
      st += exp(z - mt);
    }
  }
  let m = max(wg_max(mt, t), zy);
  let S = wg_sum(st * exp(mt - m), t);
  let ey = exp(zy - m);
  let sum = S + ey;
  var nll: f32;
  if (zy - m < -80.0) { nll = m - zy + log_(S); } else { nll = log1p_(S / ey); }
  let om = S / sum; // 1 - p_y
  let wy = weight_of(yu);
  var loss: f32;
  var ca: f32;
  var cu: f32;
  var cb: f32;
  if (P.gamma == 0.0) {
    let epsC = P.eps / f32(c);
    var tail = 0.0;
    if (smoothing) {
      // sum_j w_j (lse - z_j) = W log(sum) + W (m - z_y) - sum_j w_j (z_j - z_y)
      tail = epsC * (P.wsum * (log_(sum) + (m - zy)) - wg_sum(wz, t));
    }
    loss = (1.0 - P.eps) * wy * nll + tail;
    ca = (1.0 - P.eps) * wy + epsC * P.wsum;
    cu = epsC;
    cb = epsC * P.wsum * (1.0 - om) - (1.0 - P.eps) * wy * om - epsC * wy;
  } else {
    let pw = pow(om, P.gamma);
    loss = wy * pw * nll;
    var tl = 0.0;
    if (om != 0.0) { tl = P.gamma * pow(om, P.gamma - 1.0) * (1.0 - om) * nll; }
    ca = wy * (pw + tl);
    cu = 0.0;
    cb = -ca * om;
  }
  if (t == 0u) { row_out[i * P.rs_out] = loss; }
  if (!grad) { return; }

  // Pass 2: dx_j = s_i scale (ca p_j - cu w_j) (0 where the clamp cut x_j), dx_y = s_i cb dy.
  let si = row_in[i * P.rs_in];
  let ga = si * ca * P.scale / sum;
  let gu = si * cu * P.scale;
  for (var j = t; j < c; j += WG) {
    let x = a[xa + j];
    var v: f32;
    if (j == yu) {
      v = si * cb * dy;
    } else if (clampOn && (x > 1.0 || x < -1.0)) {
      v = 0.0;
    } else {
      v = ga * exp(P.scale * x - m);
      if (cu != 0.0) { v -= gu * weight_of(j); }
    }
    g[xg + j] = v;
  }
}
