// Kernel of `distillation` (Hinton et al. 2015): student s, teacher t, temperature T.
//   P = softmax(t/T), Q = softmax(s/T), p = softmax(s)
//   kl_i = sum_c P_c (log P_c - log Q_c)
//        = (1/T) sum_c P_c d_c - log St + log Sq,   d_c = (t_c - mt) - (s_c - ms)
//     (mt, ms the row maxima, St, Sq the sums of e^((t-mt)/T), e^((s-ms)/T); d_c
//      cancels a common shift of s and t exactly before anything is rounded)
//   ce_i = lse(s) - s_y  (0 for ignored rows)
//   ds_c = ka_i (Q_c - P_c) + ca_i (p_c - [c = y])
// with ka_i = alpha T scaleKL_i and ca_i = (1 - alpha) scaleCE_i folded in by the host.
import { expNeg } from "./math";
import { rowMax, rowFind, rowExpSumExcept, rowAffine, rowAxpby } from "./softmax";

// @ts-ignore: decorator
@inline function hsum(v: v128): f64 {
  return <f64>f32x4.extract_lane(v, 0) + <f64>f32x4.extract_lane(v, 1) + <f64>f32x4.extract_lane(v, 2) + <f64>f32x4.extract_lane(v, 3);
}

/**
 * Adds sum_c e^((t_c - mt)/T) and sum_c e^((t_c - mt)/T) d_c over [0, c) to res[0], res[1],
 * storing e^((t - mt)/T) in `out` when not 0.
 */
function teacherPass(s: usize, t: usize, c: i32, ms: f32, mt: f32, invT: f32, out: usize, res: usize): void {
  const vms = f32x4.splat(ms), vmt = f32x4.splat(mt), vi = f32x4.splat(invT);
  let sumP: f64 = 0, sumPd: f64 = 0;
  let ap = f32x4.splat(0), apd = ap;
  let j = 0;
  for (; j + 4 <= c; j += 4) {
    const o = <usize>j << 2;
    const tv = f32x4.sub(v128.load(t + o), vmt);
    const e = expNeg(f32x4.mul(tv, vi));
    if (out) v128.store(out + o, e);
    ap = f32x4.add(ap, e);
    apd = f32x4.add(apd, f32x4.mul(e, f32x4.sub(tv, f32x4.sub(v128.load(s + o), vms))));
    if ((j & 1023) == 1020) {
      sumP += hsum(ap);
      sumPd += hsum(apd);
      ap = f32x4.splat(0);
      apd = ap;
    }
  }
  sumP += hsum(ap);
  sumPd += hsum(apd);
  for (; j < c; j++) {
    const o = <usize>j << 2;
    const tv = load<f32>(t + o) - mt;
    const e = f32x4.extract_lane(expNeg(f32x4.splat(tv * invT)), 0);
    if (out) store<f32>(out + o, e);
    sumP += <f64>e;
    sumPd += <f64>(e * (tv - (load<f32>(s + o) - ms)));
  }
  store<f64>(res, load<f64>(res) + sumP);
  store<f64>(res + 8, load<f64>(res + 8) + sumPd);
}

/**
 * s, t: [rows, c]; g: student gradient or 0 (must not alias s or t); labels [rows]
 * (-1 = ignored); ka, ca: [rows] float64 gradient factors (0 = forward only);
 * klRows, ceRows: [rows] float64 outputs; scratch: 2 * c floats + 16 bytes.
 *
 * Near one-hot rows (a student that agrees with its teacher): the teacher's argmax
 * rt and the student's argmax rs are left out of the float32 sums (their
 * exponentials are exactly 1), so S = 1 + S_others keeps S_others' relative accuracy,
 * and the gradient at rs, rt and y is written in float64 from those sums, e.g.
 * Q_r - P_r = (S_P,others - S_Q,others) / (S_Q S_P) when r = rs = rt.
 */
export function distill(
  s: usize, t: usize, g: usize, rows: i32, c: i32, labels: usize, temperature: f64,
  ka: usize, ca: usize, klRows: usize, ceRows: usize, scratch: usize,
): void {
  const invT = <f32>(1 / temperature);
  const q = scratch;
  const p = scratch + ((<usize>c) << 2);
  const res = scratch + ((<usize>c) << 3);
  for (let i = 0; i < rows; i++) {
    const off = (<usize>i * <usize>c) << 2;
    const sr = s + off, tr = t + off;
    const y = load<i32>(labels + (<usize>i << 2));
    const ms = rowMax(sr, c), rs = rowFind(sr, c, ms);
    const mt = rowMax(tr, c), rt = rowFind(tr, c, mt);
    // Teacher: every class but rt, then rt itself (e^0 = 1, d_rt = ms - s_rt).
    store<f64>(res, 0);
    store<f64>(res + 8, 0);
    const after = (<usize>rt + 1) << 2;
    teacherPass(sr, tr, rt, ms, mt, invT, g ? g + off : 0, res);
    teacherPass(sr + after, tr + after, c - rt - 1, ms, mt, invT, g ? g + off + after : 0, res);
    if (g) store<f32>(g + off + (<usize>rt << 2), 1);
    const SPo = load<f64>(res);
    const sumPd = load<f64>(res + 8) + (<f64>ms - <f64>load<f32>(sr + (<usize>rt << 2)));
    const SQo = rowExpSumExcept(sr, c, rs, ms, invT, g ? q : 0);
    const Spo = rowExpSumExcept(sr, c, rs, ms, 1, g ? p : 0);
    const St = 1 + SPo, Sq = 1 + SQo, Sp = 1 + Spo;
    const kl = (<f64>invT) * sumPd / St - Math.log1p(SPo) + Math.log1p(SQo);
    // KL >= 0; rounding can leave -1e-9 where the distributions are equal.
    store<f64>(klRows + (<usize>i << 3), max(kl, 0));
    const ce: f64 = y >= 0 ? Math.log1p(Spo) + (<f64>ms - <f64>load<f32>(sr + (<usize>y << 2))) : 0;
    store<f64>(ceRows + (<usize>i << 3), ce);
    if (!g) continue;
    const kf = load<f64>(ka + (<usize>i << 3));
    const cf = y >= 0 ? load<f64>(ca + (<usize>i << 3)) : 0;
    // g holds e^((t-mt)/T): g = -(kf/St) g + (kf/Sq) q + (cf/Sp) p - cf [c = y]
    rowAffine(g + off, g + off, c, <f32>(-kf / St), 0);
    rowAxpby(g + off, q, c, 1, <f32>(kf / Sq));
    rowAxpby(g + off, p, c, 1, <f32>(cf / Sp));
    if (y >= 0) {
      const gy = g + off + (<usize>y << 2);
      store<f32>(gy, load<f32>(gy) - <f32>cf);
    }
    // The dominant entries again, in float64.
    fixEntry(g + off, rs, rs, rt, y, sr, tr, ms, mt, invT, SQo, SPo, Spo, kf, cf);
    fixEntry(g + off, rt, rs, rt, y, sr, tr, ms, mt, invT, SQo, SPo, Spo, kf, cf);
    if (y >= 0) fixEntry(g + off, y, rs, rt, y, sr, tr, ms, mt, invT, SQo, SPo, Spo, kf, cf);
  }
}

/** ds_k = kf (Q_k - P_k) + cf (p_k - [k = y]) in float64, with complements at rs and rt. */
function fixEntry(
  g: usize, k: i32, rs: i32, rt: i32, y: i32, sr: usize, tr: usize, ms: f32, mt: f32, invT: f32,
  SQo: f64, SPo: f64, Spo: f64, kf: f64, cf: f64,
): void {
  const Sq = 1 + SQo, St = 1 + SPo, Sp = 1 + Spo;
  const ds = <f64>(load<f32>(sr + (<usize>k << 2)) - ms), dt = <f64>(load<f32>(tr + (<usize>k << 2)) - mt);
  const Q = k == rs ? 1 / Sq : Math.exp(ds * <f64>invT) / Sq;
  const P = k == rt ? 1 / St : Math.exp(dt * <f64>invT) / St;
  const QmP = k == rs && k == rt ? (SPo - SQo) / (Sq * St) : Q - P;
  const pk = k == rs ? 1 / Sp : Math.exp(ds) / Sp;
  const pm = k == y ? (k == rs ? -Spo / Sp : pk - 1) : pk;
  store<f32>(g + (<usize>k << 2), <f32>(kf * QmP + cf * pm));
}
