// Kernel of `distillation` (Hinton et al. 2015): student s, teacher t, temperature T.
//   P = softmax(t/T), Q = softmax(s/T), p = softmax(s)
//   w_c = d_c / T,  d_c = (t_c - mt) - (s_c - ms)   (mt, ms the row maxima)
//   L = log(St / Sq)   (St, Sq the sums of e^((t-mt)/T), e^((s-ms)/T)), so that
//   P_c = Q_c e^(x_c),  x_c = w_c - L
//   kl_i = sum_c P_c x_c = sum_c Q_c f(x_c),  f(x) = 1 + (x - 1) e^x >= 0
//     (the two differ by sum_c (P_c - Q_c) = 0)
//   ce_i = lse(s) - s_y  (0 for ignored rows)
//   ds_c = ka_i (Q_c - P_c) + ca_i (p_c - [c = y]),  Q_c - P_c = -Q_c expm1(x_c)
// with ka_i = alpha T scaleKL_i and ca_i = (1 - alpha) scaleCE_i folded in by the host.
//
// Float32 care. When the student agrees with its teacher x is small, the KL is about
// sum Q x^2 / 2 and Q - P about -Q x: both small next to the terms a plain formula
// takes the difference of. So:
// - d_c is the difference of the two rows' offsets from their own maxima, each exact
//   (Sterbenz) near its maximum, where the exponentials are not negligible, whatever
//   the rows' levels. (t_c - s_c) - (mt - ms) rounds t_c - s_c at the level of the rows:
//   rows 8000 apart lose 2^-12 of d, 5 in w at T = 1e-4.
// - The KL is summed as the non-negative terms Q_c f(x_c), with
//   f(x) = x^2 (1 - (1 - x) r(x)), r(x) = (e^x - 1 - x) / x^2 its polynomial, where
//   |x| <= 1/2, and Q_c - P_c + x_c P_c beyond: nothing cancels. (The textbook
//   sum_c P_c w_c - L is a difference of O(x) terms for an O(x^2) result: at T = 100 it
//   lost 6e-4 of the loss.) An error e in L moves this sum by about -e kl + e^2/2 only,
//   since d/dL sum_c Q_c f(w_c - L) = -sum_c P_c x_c: log(St / Sq) as it stands will do.
// - Q_c - P_c = -Q_c expm1(x_c) where |x_c| <= 1/2, the plain difference beyond. An error
//   e in L is an error Q e here, so for the gradient L = log1p(sum_c (e^((t_c-mt)/T) -
//   e^((s_c-ms)/T)) / Sq), each difference taken as e^((s_c-ms)/T) expm1(w_c) where
//   |w_c| <= 1/2 (beyond, nothing is left to cancel).
import { expNeg, expm1Tail, madd } from "./math";
import { rowMax, rowFind, rowExpSumExcept } from "./softmax";

// @ts-ignore: decorator
@inline function hsum(v: v128): f64 {
  return <f64>f32x4.extract_lane(v, 0) + <f64>f32x4.extract_lane(v, 1) + <f64>f32x4.extract_lane(v, 2) + <f64>f32x4.extract_lane(v, 3);
}

/** w = (u - v) / T from the offsets u = t - mt, v = s - ms (the same rounding in every pass). */
// @ts-ignore: decorator
@inline function wOf(sv: v128, tv: v128, ms: v128, mt: v128, invT: v128): v128 {
  return f32x4.mul(f32x4.sub(f32x4.sub(tv, mt), f32x4.sub(sv, ms)), invT);
}

/** eP = e^((t - mt)/T), stored at `ep` (four lanes, or lane 0 when `one`) and returned. */
// @ts-ignore: decorator
@inline function teacherStep(tv: v128, mt: v128, invT: v128, ep: usize, one: bool): v128 {
  const eP = expNeg(f32x4.mul(f32x4.sub(tv, mt), invT));
  if (one) store<f32>(ep, f32x4.extract_lane(eP, 0));
  else v128.store(ep, eP);
  return eP;
}

/** eP - eQ, as eQ expm1(w) where |w| <= 1/2 (beyond, the plain difference has nothing to cancel). */
// @ts-ignore: decorator
@inline function diffStep(sv: v128, tv: v128, qv: v128, eP: v128, ms: v128, mt: v128, invT: v128): v128 {
  const w = wOf(sv, tv, ms, mt, invT);
  const em = madd(f32x4.mul(w, w), expm1Tail(w), w);
  return v128.bitselect(f32x4.mul(qv, em), f32x4.sub(eP, qv), f32x4.le(f32x4.abs(w), f32x4.splat(0.5)));
}

/**
 * The teacher over [0, c): e_c = e^((t_c - mt)/T) stored, res[0] += sum_c e_c and, with
 * `diff`, res[1] += sum_c (e_c - q_c) (q_c = e^((s_c - ms)/T), already stored).
 */
// @ts-ignore: decorator
@inline function teacherPass(
  s: usize, t: usize, q: usize, e: usize, c: i32, ms: f32, mt: f32, invT: f32, res: usize, diff: bool,
): void {
  const vms = f32x4.splat(ms), vmt = f32x4.splat(mt), vi = f32x4.splat(invT);
  let sumP: f64 = 0, sumD: f64 = 0;
  let ap = f32x4.splat(0);
  let j = 0;
  for (; j + 4 <= c; j += 4) {
    const o = <usize>j << 2;
    const sv = v128.load(s + o), tv = v128.load(t + o), qv = v128.load(q + o);
    const eP = teacherStep(tv, vmt, vi, e + o, false);
    ap = f32x4.add(ap, eP);
    // The differences have either sign: each vector's goes to the float64 sum.
    if (diff) sumD += hsum(diffStep(sv, tv, qv, eP, vms, vmt, vi));
    if ((j & 1023) == 1020) {
      sumP += hsum(ap);
      ap = f32x4.splat(0);
    }
  }
  sumP += hsum(ap);
  for (; j < c; j++) {
    const o = <usize>j << 2;
    const sv = f32x4.splat(load<f32>(s + o)), tv = f32x4.splat(load<f32>(t + o)), qv = f32x4.splat(load<f32>(q + o));
    const eP = teacherStep(tv, vmt, vi, e + o, true);
    sumP += <f64>f32x4.extract_lane(eP, 0);
    if (diff) sumD += <f64>f32x4.extract_lane(diffStep(sv, tv, qv, eP, vms, vmt, vi), 0);
  }
  store<f64>(res, load<f64>(res) + sumP);
  store<f64>(res + 8, load<f64>(res + 8) + sumD);
}

/** The teacher pass with the differences (for the gradient's L). */
function teacherDiffPass(s: usize, t: usize, q: usize, e: usize, c: i32, ms: f32, mt: f32, invT: f32, res: usize): void {
  teacherPass(s, t, q, e, c, ms, mt, invT, res, true);
}

/** The teacher pass without them (the KL alone). */
function teacherSumPass(s: usize, t: usize, q: usize, e: usize, c: i32, ms: f32, mt: f32, invT: f32, res: usize): void {
  teacherPass(s, t, q, e, c, ms, mt, invT, res, false);
}

/**
 * One vector of the KL terms Q f(x) (returned) and, with `grad`, of the gradient
 * k (Q - P) + b p stored at `gp` (four lanes, or lane 0 when `one`).
 */
// @ts-ignore: decorator
@inline function klStep(
  sv: v128, tv: v128, qv: v128, ev: v128, pv: v128, ms: v128, mt: v128, invT: v128, L: v128, invSq: v128, invSt: v128,
  k: v128, b: v128, gp: usize, grad: bool, one: bool,
): v128 {
  const x = f32x4.sub(wOf(sv, tv, ms, mt, invT), L);
  const Q = f32x4.mul(qv, invSq), P = f32x4.mul(ev, invSt);
  const near = f32x4.le(f32x4.abs(x), f32x4.splat(0.5));
  const r = expm1Tail(x), x2 = f32x4.mul(x, x), unit = f32x4.splat(1);
  // Beyond 1/2, Q - P + x P is >= 0 but for rounding where both exponentials sit at
  // expNeg's floor e^-64 (a term of 1e-20 at most): clamped at 0.
  const term = v128.bitselect(
    f32x4.mul(Q, f32x4.mul(x2, f32x4.sub(unit, f32x4.mul(f32x4.sub(unit, x), r)))),
    f32x4.pmax(f32x4.add(f32x4.sub(Q, P), f32x4.mul(x, P)), f32x4.splat(0)),
    near,
  );
  if (grad) {
    const qmp = v128.bitselect(f32x4.neg(f32x4.mul(Q, madd(x2, r, x))), f32x4.sub(Q, P), near);
    const gv = f32x4.add(f32x4.mul(k, qmp), f32x4.mul(b, pv));
    if (one) store<f32>(gp, f32x4.extract_lane(gv, 0));
    else v128.store(gp, gv);
  }
  return term;
}

/** kl = sum_c Q_c f(x_c) over the row and, with `grad`, g_c = k (Q_c - P_c) + b p_c. */
// @ts-ignore: decorator
@inline function klPass(
  g: usize, q: usize, e: usize, p: usize, s: usize, t: usize, c: i32, ms: f32, mt: f32, invT: f32, L: f32,
  invSq: f32, invSt: f32, k: f32, b: f32, grad: bool,
): f64 {
  const vms = f32x4.splat(ms), vmt = f32x4.splat(mt), vi = f32x4.splat(invT), vL = f32x4.splat(L);
  const vq = f32x4.splat(invSq), vt = f32x4.splat(invSt), vk = f32x4.splat(k), vb = f32x4.splat(b);
  // Non-negative terms: float32 sums over blocks of 1024, added in float64.
  let total: f64 = 0;
  let acc = f32x4.splat(0);
  let j = 0;
  for (; j + 4 <= c; j += 4) {
    const o = <usize>j << 2;
    const pv = grad ? v128.load(p + o) : f32x4.splat(0);
    acc = f32x4.add(acc, klStep(
      v128.load(s + o), v128.load(t + o), v128.load(q + o), v128.load(e + o), pv, vms, vmt, vi, vL, vq, vt, vk, vb, g + o, grad, false,
    ));
    if ((j & 1023) == 1020) {
      total += hsum(acc);
      acc = f32x4.splat(0);
    }
  }
  total += hsum(acc);
  for (; j < c; j++) {
    const o = <usize>j << 2;
    const pv = grad ? f32x4.splat(load<f32>(p + o)) : f32x4.splat(0);
    const v = klStep(
      f32x4.splat(load<f32>(s + o)), f32x4.splat(load<f32>(t + o)), f32x4.splat(load<f32>(q + o)), f32x4.splat(load<f32>(e + o)),
      pv, vms, vmt, vi, vL, vq, vt, vk, vb, g + o, grad, true,
    );
    total += <f64>f32x4.extract_lane(v, 0);
  }
  return total;
}

/**
 * s, t: [rows, c]; g: student gradient or 0 (must not alias s or t); labels [rows]
 * (-1 = ignored); ka, ca: [rows] float64 gradient factors (0 = forward only);
 * klRows, ceRows: [rows] float64 outputs; scratch: 3 * c floats + 16 bytes.
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
  const e = scratch + ((<usize>c) << 2);
  const p = scratch + ((<usize>c) << 3);
  const res = scratch + ((<usize>c) * 12);
  for (let i = 0; i < rows; i++) {
    const off = (<usize>i * <usize>c) << 2;
    const sr = s + off, tr = t + off;
    const y = load<i32>(labels + (<usize>i << 2));
    const ms = rowMax(sr, c), rs = rowFind(sr, c, ms);
    const mt = rowMax(tr, c), rt = rowFind(tr, c, mt);
    const SQo = rowExpSumExcept(sr, c, rs, ms, invT, q);
    const Spo = rowExpSumExcept(sr, c, rs, ms, 1, g ? p : 0);
    // Teacher: every class but rt, then rt itself (e = e^0 = 1, w = (ms - s_rt) / T >= 0).
    store<f64>(res, 0);
    store<f64>(res + 8, 0);
    const at = <usize>rt << 2, after = at + 4;
    if (g) {
      teacherDiffPass(sr, tr, q, e, rt, ms, mt, invT, res);
      teacherDiffPass(sr + after, tr + after, q + after, e + after, c - rt - 1, ms, mt, invT, res);
    } else {
      teacherSumPass(sr, tr, q, e, rt, ms, mt, invT, res);
      teacherSumPass(sr + after, tr + after, q + after, e + after, c - rt - 1, ms, mt, invT, res);
    }
    store<f32>(e + at, 1);
    const SPo = load<f64>(res);
    const St = 1 + SPo, Sq = 1 + SQo, Sp = 1 + Spo;
    const ce: f64 = y >= 0 ? Math.log1p(Spo) + (<f64>ms - <f64>load<f32>(sr + (<usize>y << 2))) : 0;
    store<f64>(ceRows + (<usize>i << 3), ce);
    if (!g) {
      // The KL alone: log(St / Sq) as it stands (its error moves the KL at second order).
      const L = Math.log1p(SPo) - Math.log1p(SQo);
      store<f64>(klRows + (<usize>i << 3), klPass(0, q, e, 0, sr, tr, c, ms, mt, invT, <f32>L, <f32>(1 / Sq), <f32>(1 / St), 0, 0, false));
      continue;
    }
    // The gradient's Q - P = -Q expm1(x) takes an error in L whole: L = log1p((St - Sq) / Sq),
    // the difference summed term by term (and rt's, where e = 1, w = (ms - s_rt) / T >= 0).
    const wt = (<f64>ms - <f64>load<f32>(sr + at)) * <f64>invT, qt = <f64>load<f32>(q + at);
    const L = Math.log1p((load<f64>(res + 8) + (wt <= 0.5 ? qt * Math.expm1(wt) : 1 - qt)) / Sq);
    const kf = load<f64>(ka + (<usize>i << 3));
    const cf = y >= 0 ? load<f64>(ca + (<usize>i << 3)) : 0;
    store<f64>(klRows + (<usize>i << 3), klPass(
      g + off, q, e, p, sr, tr, c, ms, mt, invT, <f32>L, <f32>(1 / Sq), <f32>(1 / St), <f32>kf, <f32>(cf / Sp), true,
    ));
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
