// Hard-label kernel of `crossEntropy` and `focal`: one fused pass per row computes
// the row loss and, when `scales` is not 0, the gradient row.
//
// Row i with label y, p = softmax(z), nll = logsumexp(z) - z_y, smoothing eps, class
// weights w (all 1 when `weight` is 0) and W = sum_c w_c:
//   cross-entropy  loss_i = (1-eps) w_y nll + (eps/C) sum_c w_c (lse - z_c),
//                  the last sum taken as W log(sum e^(z-m)) + sum_c w_c (m - z_c) (no cancellation)
//                  dz_c   = s_i [ ((1-eps) w_y + (eps/C) W) p_c - (eps/C) w_c - (1-eps) w_y [c = y] ]
//   focal (gamma)  loss_i = w_y (1-p_y)^gamma nll
//                  dz_c   = s_i w_y f'(nll) (p_c - [c = y]),
//                  f'(nll) = (1-p_y)^gamma + gamma (1-p_y)^(gamma-1) p_y nll  (second term 0 at p_y = 1)
// with s_i = scales[i] (upstream and reduction folded in by the host).
import { rowMax, rowSum, rowDotBelow, rowExpSum, rowAffine, rowAffineWeighted, rowZero } from "./softmax";

/**
 * z, g: [rows, c] float32 (g may equal z: the gradient overwrites the logits);
 * labels: [rows] int32, -1 = ignored; weight: [c] float32 or 0; scales: [rows]
 * float64 or 0 for no gradient; rowLoss: [rows] float64 output.
 */
export function hard_label(
  z: usize, g: usize, rows: i32, c: i32, labels: usize, weight: usize,
  eps: f64, gamma: f64, scales: usize, rowLoss: usize,
): void {
  const W: f64 = weight ? rowSum(weight, c) : <f64>c;
  const epsC = eps / <f64>c;
  for (let i = 0; i < rows; i++) {
    const zr = z + ((<usize>i * <usize>c) << 2);
    const gr = g + ((<usize>i * <usize>c) << 2);
    const y = load<i32>(labels + (<usize>i << 2));
    if (y < 0) {
      store<f64>(rowLoss + (<usize>i << 3), 0);
      if (scales) rowZero(gr, c);
      continue;
    }
    const wy: f64 = weight ? <f64>load<f32>(weight + (<usize>y << 2)) : 1;
    const zy: f64 = <f64>load<f32>(zr + (<usize>y << 2));
    const m = rowMax(zr, c);
    // The smoothing term needs sum_c w_c (m - z_c), read before g may overwrite z.
    const wBelow: f64 = eps == 0 ? 0 : weight ? rowDotBelow(weight, zr, m, c) : <f64>c * <f64>m - rowSum(zr, c);
    const sum = rowExpSum(zr, c, m, 1, scales ? gr : 0);
    const lse = <f64>m + Math.log(sum);
    const nll = lse - zy;
    // 1 - p_y = -expm1(-nll), accurate when p_y is close to 1.
    const om = -Math.expm1(-nll);
    let loss: f64, a: f64, u: f64, b: f64;
    if (gamma == 0) {
      loss = (1 - eps) * wy * nll + epsC * (W * Math.log(sum) + wBelow);
      a = (1 - eps) * wy + epsC * W;
      u = epsC;
      // dz_y = s (a p_y - u w_y - (1-eps) w_y), with a p_y - (1-eps) w_y = epsC W p_y - (1-eps) w_y (1 - p_y)
      b = epsC * W * (1 - om) - (1 - eps) * wy * om - epsC * wy;
    } else {
      const pow = Math.pow(om, gamma);
      loss = wy * pow * nll;
      const tail = om == 0 ? 0 : gamma * Math.pow(om, gamma - 1) * (1 - om) * nll;
      a = wy * (pow + tail);
      u = 0;
      b = -a * om;
    }
    store<f64>(rowLoss + (<usize>i << 3), loss);
    if (!scales) continue;
    const s = load<f64>(scales + (<usize>i << 3));
    const scale = <f32>(s * a / sum);
    if (weight && u != 0) rowAffineWeighted(gr, c, scale, <f32>(s * u), weight);
    else rowAffine(gr, gr, c, scale, <f32>(s * u));
    store<f32>(gr + (<usize>y << 2), <f32>(s * b));
  }
}
