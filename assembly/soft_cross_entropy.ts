// Soft-target kernel of `softCrossEntropy`: target rows t (probabilities, any mass T).
//   loss_i = -sum_c t_c log p_c = T log(sum_c e^(z_c - m)) + sum_c t_c (m - z_c)
//            (m the row maximum: the last sum has no cancellation for t >= 0)
//   dz_c   = s_i (T p_c - t_c)
//   dt_c   = s_i (lse - z_c)          (= -s_i log p_c)
import { rowMax, rowSum, rowDotBelow, rowExpSum, rowAffine, rowAffineWeighted } from "./softmax";

/**
 * z, t: [rows, c]; g, tg: gradient outputs for z and t (0 = not wanted; g must not
 * alias z or t); scales: [rows] float64 or 0 (forward only); rowLoss: [rows] float64.
 */
export function soft_target(z: usize, t: usize, g: usize, tg: usize, rows: i32, c: i32, scales: usize, rowLoss: usize): void {
  for (let i = 0; i < rows; i++) {
    const off = (<usize>i * <usize>c) << 2;
    const T = rowSum(t + off, c);
    const m = rowMax(z + off, c);
    const below = rowDotBelow(t + off, z + off, m, c);
    const sum = rowExpSum(z + off, c, m, 1, scales ? g + off : 0);
    const lse = <f64>m + Math.log(sum);
    store<f64>(rowLoss + (<usize>i << 3), T * Math.log(sum) + below);
    if (!scales) continue;
    const s = load<f64>(scales + (<usize>i << 3));
    rowAffineWeighted(g + off, c, <f32>(s * T / sum), <f32>s, t + off);
    if (tg) rowAffine(z + off, tg + off, c, <f32>-s, <f32>(-s * lse));
  }
}
