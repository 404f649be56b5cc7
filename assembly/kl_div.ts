// Kernel of `klDiv` (torch.nn.functional.kl_div): x = logInput, t = target.
//   logTarget = 0: loss_i = sum_c t_c (log t_c - x_c)  (0 where t_c = 0)
//                  dx_c = -s_i t_c,  dt_c = s_i (log t_c + 1 - x_c)  (0 where t_c = 0)
//   logTarget = 1: loss_i = sum_c e^t_c (t_c - x_c)
//                  dx_c = -s_i e^t_c,  dt_c = s_i e^t_c (t_c - x_c + 1)
import { expv, logv } from "./math";

// @ts-ignore: decorator
@inline function hsum(v: v128): f64 {
  return <f64>f32x4.extract_lane(v, 0) + <f64>f32x4.extract_lane(v, 1) + <f64>f32x4.extract_lane(v, 2) + <f64>f32x4.extract_lane(v, 3);
}

/**
 * x, t: [rows, c]; g, tg: gradients for x and t (0 = not wanted; may alias x and t
 * respectively: each element is read before it is written); scales: [rows] float64
 * or 0; rowLoss: [rows] float64.
 */
export function kl_div(x: usize, t: usize, g: usize, tg: usize, rows: i32, c: i32, logTarget: i32, scales: usize, rowLoss: usize): void {
  const zero = f32x4.splat(0);
  const one = f32x4.splat(1);
  for (let i = 0; i < rows; i++) {
    const off = (<usize>i * <usize>c) << 2;
    const s: f32 = scales ? <f32>load<f64>(scales + (<usize>i << 3)) : 0;
    const vs = f32x4.splat(s);
    let total: f64 = 0;
    let acc = zero;
    let j = 0;
    for (; j + 4 <= c; j += 4) {
      const o = off + (<usize>j << 2);
      const xv = v128.load(x + o);
      const tv = v128.load(t + o);
      // p = the target probability, lp its log, f the factor of the target gradient
      let p: v128, lp: v128, f: v128, live: v128;
      if (logTarget) {
        p = expv(tv);
        lp = tv;
        f = p;
        live = v128.not(zero); // every lane: e^t is never exactly 0 after the clamp
      } else {
        p = tv;
        lp = logv(tv);
        f = one;
        live = f32x4.ne(tv, zero);
      }
      const d = f32x4.sub(lp, xv);
      // t log t = 0 at t = 0: mask those lanes (log 0 = -inf would give NaN).
      acc = f32x4.add(acc, v128.and(f32x4.mul(p, d), live));
      if (scales) {
        if (tg) v128.store(tg + o, v128.and(f32x4.mul(vs, f32x4.mul(f, f32x4.add(d, one))), live));
        if (g) v128.store(g + o, f32x4.neg(f32x4.mul(vs, p)));
      }
      if ((j & 1023) == 1020) {
        total += hsum(acc);
        acc = zero;
      }
    }
    total += hsum(acc);
    for (; j < c; j++) {
      const o = off + (<usize>j << 2);
      const xs = load<f32>(x + o);
      const ts = load<f32>(t + o);
      const p: f32 = logTarget ? f32x4.extract_lane(expv(f32x4.splat(ts)), 0) : ts;
      const lp: f32 = logTarget ? ts : f32x4.extract_lane(logv(f32x4.splat(ts)), 0);
      const live = logTarget || ts != 0;
      const d = lp - xs;
      if (live) total += <f64>(p * d);
      if (scales) {
        if (tg) store<f32>(tg + o, live ? s * ((logTarget ? p : 1) * (d + 1)) : 0);
        if (g) store<f32>(g + o, -(s * p));
      }
    }
    store<f64>(rowLoss + (<usize>i << 3), total);
  }
}
