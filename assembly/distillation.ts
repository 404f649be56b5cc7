// Kernel of `distillation` (Hinton et al. 2015): student s, teacher t, temperature T.
//   P = softmax(t/T), Q = softmax(s/T), p = softmax(s)
//   kl_i = sum_c P_c (log P_c - log Q_c)
//        = (1/T) sum_c P_c d_c - log St + log Sq,   d_c = (t_c - s_c) - (mt - ms)
//     (mt, ms the row maxima, St, Sq the sums of e^((t-mt)/T), e^((s-ms)/T); d_c is
//      taken as the difference of two near differences, exact where s and t agree)
//   ce_i = lse(s) - s_y  (0 for ignored rows)
//   ds_c = ka_i (Q_c - P_c) + ca_i (p_c - [c = y])
// with ka_i = alpha T scaleKL_i and ca_i = (1 - alpha) scaleCE_i folded in by the host.
// When the student agrees with the teacher, Q_c - P_c is small next to Q_c and P_c
// and a difference of two rounded probabilities would lose it. Since
// e^((t_c-mt)/T) = e^((s_c-ms)/T) e^(d_c/T), St / Sq = 1 + sum_c Q_c expm1(d_c/T), so
//   L = log(St / Sq) = log1p(sum_c Q_c expm1(d_c / T))   (accurate when L is small)
//   Q_c - P_c = -Q_c expm1(d_c / T - L)
// each expm1 taken by its polynomial where |argument| <= 1/2; beyond that the plain
// differences (e^(..) - e^(..), Q_c - P_c) have nothing left to cancel.
import { expNeg, expm1Near } from "./math";
import { rowMax, rowFind, rowExpSumExcept } from "./softmax";

// @ts-ignore: decorator
@inline function hsum(v: v128): f64 {
  return <f64>f32x4.extract_lane(v, 0) + <f64>f32x4.extract_lane(v, 1) + <f64>f32x4.extract_lane(v, 2) + <f64>f32x4.extract_lane(v, 3);
}

/** Adds sum_c e^((t_c - mt)/T) and sum_c e^((t_c - mt)/T) d_c over [0, c) to res[0], res[1]. */
function teacherPass(s: usize, t: usize, c: i32, ms: f32, mt: f32, invT: f32, res: usize): void {
  const vmt = f32x4.splat(mt), vi = f32x4.splat(invT), vdm = f32x4.splat(mt - ms);
  let sumP: f64 = 0, sumPd: f64 = 0;
  let ap = f32x4.splat(0), apd = ap;
  let j = 0;
  for (; j + 4 <= c; j += 4) {
    const o = <usize>j << 2;
    const t4 = v128.load(t + o);
    const e = expNeg(f32x4.mul(f32x4.sub(t4, vmt), vi));
    ap = f32x4.add(ap, e);
    apd = f32x4.add(apd, f32x4.mul(e, f32x4.sub(f32x4.sub(t4, v128.load(s + o)), vdm)));
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
    const tj = load<f32>(t + o);
    const e = f32x4.extract_lane(expNeg(f32x4.splat((tj - mt) * invT)), 0);
    sumP += <f64>e;
    sumPd += <f64>(e * ((tj - load<f32>(s + o)) - (mt - ms)));
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
    teacherPass(sr, tr, rt, ms, mt, invT, res);
    teacherPass(sr + after, tr + after, c - rt - 1, ms, mt, invT, res);
    const SPo = load<f64>(res);
    const sumPd = load<f64>(res + 8) + (<f64>ms - <f64>load<f32>(sr + (<usize>rt << 2)));  // d_rt = ms - s_rt
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
    // L = log(St / Sq) = log1p((St - Sq) / Sq), the difference summed term by term.
    const L = Math.log1p(diffSum(q, sr, tr, c, ms, mt, invT) / Sq);
    gradPass(g + off, q, p, sr, tr, c, ms, mt, invT, <f32>L, <f32>(1 / Sq), <f32>(1 / St), <f32>kf, <f32>(cf / Sp));
    if (y >= 0) {
      const gy = g + off + (<usize>y << 2);
      store<f32>(gy, load<f32>(gy) - <f32>cf);
    }
    // The dominant entries again, in float64.
    fixEntry(g + off, rs, rs, rt, y, sr, tr, ms, mt, invT, SQo, SPo, Spo, L, kf, cf);
    fixEntry(g + off, rt, rs, rt, y, sr, tr, ms, mt, invT, SQo, SPo, Spo, L, kf, cf);
    if (y >= 0) fixEntry(g + off, y, rs, rt, y, sr, tr, ms, mt, invT, SQo, SPo, Spo, L, kf, cf);
  }
}

/**
 * One vector of the differences e^((t-mt)/T) - e^((s-ms)/T) = eQ expm1(x), x = d/T:
 * by the polynomial where |x| <= 1/2, else directly (nothing left to cancel).
 */
// @ts-ignore: decorator
@inline function diffs(sv: v128, tv: v128, ms: v128, mt: v128, invT: v128, eQ: v128): v128 {
  const u = f32x4.sub(tv, mt);
  const x = f32x4.mul(f32x4.sub(f32x4.sub(tv, sv), f32x4.sub(mt, ms)), invT);
  return v128.bitselect(
    f32x4.mul(eQ, expm1Near(x)),
    f32x4.sub(expNeg(f32x4.mul(u, invT)), eQ),
    f32x4.le(f32x4.abs(x), f32x4.splat(0.5)),
  );
}

/** sum_c (e^((t_c-mt)/T) - e^((s_c-ms)/T)) = St - Sq, term by term as `diffs` (q holds e^((s-ms)/T)). */
function diffSum(q: usize, s: usize, t: usize, c: i32, ms: f32, mt: f32, invT: f32): f64 {
  const vms = f32x4.splat(ms), vmt = f32x4.splat(mt), vi = f32x4.splat(invT);
  let total: f64 = 0;
  let j = 0;
  for (; j + 4 <= c; j += 4) {
    const o = <usize>j << 2;
    total += hsum(diffs(v128.load(s + o), v128.load(t + o), vms, vmt, vi, v128.load(q + o)));
  }
  for (; j < c; j++) {
    const o = <usize>j << 2;
    const v = diffs(f32x4.splat(load<f32>(s + o)), f32x4.splat(load<f32>(t + o)), vms, vmt, vi, f32x4.splat(load<f32>(q + o)));
    total += <f64>f32x4.extract_lane(v, 0);
  }
  return total;
}

/** One vector of g = k (Q - P) + b p, Q - P = -Q expm1(d/T - L) where |d/T - L| <= 1/2. */
// @ts-ignore: decorator
@inline function gradVec(
  sv: v128, tv: v128, qv: v128, pv: v128, ms: v128, mt: v128, invT: v128, L: v128, invSq: v128, invSt: v128, k: v128, b: v128,
): v128 {
  const u = f32x4.sub(tv, mt);
  const x = f32x4.sub(f32x4.mul(f32x4.sub(f32x4.sub(tv, sv), f32x4.sub(mt, ms)), invT), L);
  const Q = f32x4.mul(qv, invSq);
  const P = f32x4.mul(expNeg(f32x4.mul(u, invT)), invSt);
  const qmp = v128.bitselect(f32x4.neg(f32x4.mul(Q, expm1Near(x))), f32x4.sub(Q, P), f32x4.le(f32x4.abs(x), f32x4.splat(0.5)));
  return f32x4.add(f32x4.mul(k, qmp), f32x4.mul(b, pv));
}

/** g_c = k (Q_c - P_c) + b p_c over the row (q, p hold the stored exponentials). */
function gradPass(
  g: usize, q: usize, p: usize, s: usize, t: usize, c: i32, ms: f32, mt: f32, invT: f32, L: f32,
  invSq: f32, invSt: f32, k: f32, b: f32,
): void {
  const vms = f32x4.splat(ms), vmt = f32x4.splat(mt), vi = f32x4.splat(invT), vL = f32x4.splat(L);
  const vq = f32x4.splat(invSq), vt = f32x4.splat(invSt), vk = f32x4.splat(k), vb = f32x4.splat(b);
  let j = 0;
  for (; j + 4 <= c; j += 4) {
    const o = <usize>j << 2;
    v128.store(g + o, gradVec(v128.load(s + o), v128.load(t + o), v128.load(q + o), v128.load(p + o), vms, vmt, vi, vL, vq, vt, vk, vb));
  }
  for (; j < c; j++) {
    const o = <usize>j << 2;
    const v = gradVec(
      f32x4.splat(load<f32>(s + o)), f32x4.splat(load<f32>(t + o)), f32x4.splat(load<f32>(q + o)),
      f32x4.splat(load<f32>(p + o)), vms, vmt, vi, vL, vq, vt, vk, vb,
    );
    store<f32>(g + o, f32x4.extract_lane(v, 0));
  }
}

/** ds_k = kf (Q_k - P_k) + cf (p_k - [k = y]) in float64, with complements at rs and rt. */
function fixEntry(
  g: usize, k: i32, rs: i32, rt: i32, y: i32, sr: usize, tr: usize, ms: f32, mt: f32, invT: f32,
  SQo: f64, SPo: f64, Spo: f64, L: f64, kf: f64, cf: f64,
): void {
  const Sq = 1 + SQo, St = 1 + SPo, Sp = 1 + Spo;
  // float64 differences of float32 values are exact
  const ds = <f64>load<f32>(sr + (<usize>k << 2)) - <f64>ms, dt = <f64>load<f32>(tr + (<usize>k << 2)) - <f64>mt;
  const Q = k == rs ? 1 / Sq : Math.exp(ds * <f64>invT) / Sq;
  const P = k == rt ? 1 / St : Math.exp(dt * <f64>invT) / St;
  const x = (dt - ds) * <f64>invT - L;
  const QmP = Math.abs(x) <= 0.5 ? -Q * Math.expm1(x) : Q - P;
  const pk = k == rs ? 1 / Sp : Math.exp(ds) / Sp;
  const pm = k == y ? (k == rs ? -Spo / Sp : pk - 1) : pk;
  store<f32>(g + (<usize>k << 2), <f32>(kf * QmP + cf * pm));
}
