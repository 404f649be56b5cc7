// Soft-target kernel of `softCrossEntropy`: target rows t (probabilities, any mass T).
//   loss_i = -sum_c t_c log p_c = T log(sum_c e^(z_c - m)) + sum_c t_c (m - z_c)
//            (m the row maximum: the last sum has no cancellation for t >= 0)
//   dz_c   = s_i (T p_c - t_c)
//   dt_c   = s_i (lse - z_c)          (= -s_i log p_c)
import { rowMax, rowFind, rowSumExcept, rowDotBelow, rowExpSumExcept, rowAxpby, rowLogProb } from "./softmax";

/**
 * z, t: [rows, c]; g, tg: gradient outputs for z and t (0 = not wanted; g must not
 * alias z or t); scales: [rows] float64 or 0 (forward only); rowLoss: [rows] float64.
 * The row's argmax r is left out of the float32 sums (see rowExpSum): with
 * S_o = sum_{j != r} e^(z_j - m), S = 1 + S_o, p_r = 1 / S and
 *   T p_r - t_r = ((T - t_r) - t_r S_o) / S,
 * which stays accurate when the target puts nearly all its mass where p does.
 */
export function soft_target(z: usize, t: usize, g: usize, tg: usize, rows: i32, c: i32, scales: usize, rowLoss: usize): void {
  for (let i = 0; i < rows; i++) {
    const off = (<usize>i * <usize>c) << 2;
    const m = rowMax(z + off, c);
    const r = rowFind(z + off, c, m);
    const tr = <f64>load<f32>(t + off + (<usize>r << 2));
    const To = rowSumExcept(t + off, c, r);
    const T = To + tr;
    const below = rowDotBelow(t + off, z + off, m, c);
    const So = rowExpSumExcept(z + off, c, r, m, 1, scales ? g + off : 0);
    const S = 1 + So;
    const logS = Math.log1p(So);
    store<f64>(rowLoss + (<usize>i << 3), T * logS + below);
    if (!scales) continue;
    const s = load<f64>(scales + (<usize>i << 3));
    rowAxpby(g + off, t + off, c, <f32>(s * T / S), <f32>-s);
    store<f32>(g + off + (<usize>r << 2), <f32>(s * (To - tr * So) / S));
    if (tg) rowLogProb(z + off, tg + off, c, m, <f32>logS, <f32>-s);
  }
}
