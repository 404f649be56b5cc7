// Kernel of the `experts` family (`mixOutputs`, `iclMoe`, and through iclMoe `physMoe`):
// E expert logit matrices z_e [B, C] and one softmax per expert and row, q_e = softmax(z_e)
// (p_e = softmax(z_e + s) for the CE term when a log prior s is given, else p_e = q_e),
// built from the fused softmax core (assembly/softmax.ts), serving
//   ce[e][i]  = (1 - p_t)^gamma_e nll,  nll = -log p_e[y_i], p_t = e^-nll     (gamma 0: nll)
//   col[e][i] = KL(t_i || q_e) = sum_j t_j ((u_j - mt) - (z_j - m_e)) - log(St / S_e)
//               (t = softmax(u), u the collaboration target's logits; mt, St and m_e, S_e
//               the maxima and sums of the two softmaxes)
//   pairs[i]  = sum_e sum_{e' != e} KL(q_e' || q_e) = sum_e <q_e, D_e>,
//               D_e = E log q_e - sum_k log q_k,  log q_e = (z_e - m_e) - log S_e
// and the gradient w.r.t. z_e, with a = w_ce[e] f'(nll) (f the focal term), w_col, w_pairs
// (the host's weights of the terms' means, divided by B):
//   g = a (p - onehot_y) + w_col (q - t) + w_pairs ((E q - sum_k q_k) + q (D_e - <q_e, D_e>)).
// Two passes, as the weights may depend on the CE means (mixOutputs' parallel term):
// `experts_ce` takes each softmax's maximum and sum and the CE/focal terms, the host forms
// the weights, `experts_main` the collaboration and pair terms and the gradient.
//
// Accuracy (float32 with float64 sums): every softmax leaves its argmax r out of its
// float32 sum (its term is exactly 1) and keeps S_o = S - 1, so that 1 - q_r = S_o / S is
// accurate as q_r -> 1. The CE term's 1 - p_y is S_o / S when y = r, else 1 - e_y / S (p_y
// <= 1/2 there). The gradient is written by vectors, then in float64 at the label and at
// q_e's argmax, where its terms are small differences of values near 1: p_y - 1 = -(1 - p_y),
// q_r - t_r = (1 - t_r) - (1 - q_r) where the target peaks at r too, and E q_r - sum_k q_kr
// from the complements of the experts that peak at r. D_e - <q_e, D_e> is taken as
// (D_e - D_er) - sum_j q_j (D_ej - D_er), shifted by D_e at r (as the softmax VJP is): the
// big term q_r (D_r - D_r) is exactly 0 instead of a difference of two values of |D| (1e4
// for logits of 1e4). Other differences are taken where they are exact: z_j - m near the
// maximum, u_j - z_j between the target and an expert that agrees with it.
import { expNeg } from "./math";
import { rowMax, rowFind, rowExpSumExcept, rowAffine, rowAxpby, rowZero } from "./softmax";

const BLOCK: i32 = 1024;
/**
 * float64 statistics per row and expert (offsets in bytes): m, S_o, r of q_e; 1 - p_y and
 * f'(nll) of the CE term; mu and Su (the CE softmax's max and sum: q_e's without a shift);
 * <q_e, D_e - D_r> and D_r of the pair terms.
 */
const M = 0, SO = 8, R = 16, OM = 24, SLOPE = 32, MU = 40, SU = 48, QD = 56, DR = 64, STATS = 72;

// @ts-ignore: decorator
@inline function hsum(v: v128): f64 {
  return <f64>f32x4.extract_lane(v, 0) + <f64>f32x4.extract_lane(v, 1) + <f64>f32x4.extract_lane(v, 2) + <f64>f32x4.extract_lane(v, 3);
}

// @ts-ignore: decorator
@inline function at(p: usize, j: i32): usize {
  return p + ((<usize>j) << 2);
}

/** u_j = (z_j - m) + s_j: z_j - m is exact near the maximum, s_j (a log prior) is small. */
function shifted(z: usize, s: usize, c: i32, m: f32, u: usize): void {
  const vm = f32x4.splat(m);
  let j = 0;
  for (; j + 4 <= c; j += 4) {
    const o = (<usize>j) << 2;
    v128.store(u + o, f32x4.add(f32x4.sub(v128.load(z + o), vm), v128.load(s + o)));
  }
  for (; j < c; j++) store<f32>(at(u, j), (load<f32>(at(z, j)) - m) + load<f32>(at(s, j)));
}

/** sum_j t_j ((u_j - mt) - (z_j - m)) (float64 over float32 blocks). */
function klDot(t: usize, u: usize, z: usize, c: i32, mt: f32, m: f32): f64 {
  const vt = f32x4.splat(mt), vm = f32x4.splat(m);
  let total: f64 = 0;
  let j = 0;
  while (j + 4 <= c) {
    const end = min(c, j + BLOCK);
    let s = f32x4.splat(0);
    for (; j + 4 <= end; j += 4) {
      const o = (<usize>j) << 2;
      const d = f32x4.sub(f32x4.sub(v128.load(u + o), vt), f32x4.sub(v128.load(z + o), vm));
      s = f32x4.add(s, f32x4.mul(v128.load(t + o), d));
    }
    total += hsum(s);
  }
  for (; j < c; j++) total += <f64>(load<f32>(at(t, j)) * ((load<f32>(at(u, j)) - mt) - (load<f32>(at(z, j)) - m)));
  return total;
}

/** log q_j = (z_j - m) - l, summed over the experts into sl (sl += ...). */
function addLogProb(sl: usize, z: usize, c: i32, m: f32, l: f32): void {
  const vm = f32x4.splat(m), vl = f32x4.splat(l);
  let j = 0;
  for (; j + 4 <= c; j += 4) {
    const o = (<usize>j) << 2;
    v128.store(sl + o, f32x4.add(v128.load(sl + o), f32x4.sub(f32x4.sub(v128.load(z + o), vm), vl)));
  }
  for (; j < c; j++) store<f32>(at(sl, j), load<f32>(at(sl, j)) + ((load<f32>(at(z, j)) - m) - l));
}

/** D_j - K = E ((z_j - m) - l) - sl_j - K, the pair terms' D shifted by K. */
// @ts-ignore: decorator
@inline function pairD(z: v128, sl: v128, E: v128, m: v128, l: v128, K: v128): v128 {
  return f32x4.sub(f32x4.sub(f32x4.mul(E, f32x4.sub(f32x4.sub(z, m), l)), sl), K);
}

/** sum_j q_j (D_j - K) (float64 over float32 blocks). */
function pairDot(q: usize, z: usize, sl: usize, c: i32, E: f32, m: f32, l: f32, K: f32): f64 {
  const ve = f32x4.splat(E), vm = f32x4.splat(m), vl = f32x4.splat(l), vk = f32x4.splat(K);
  let total: f64 = 0;
  let j = 0;
  while (j + 4 <= c) {
    const end = min(c, j + BLOCK);
    let s = f32x4.splat(0);
    for (; j + 4 <= end; j += 4) {
      const o = (<usize>j) << 2;
      s = f32x4.add(s, f32x4.mul(v128.load(q + o), pairD(v128.load(z + o), v128.load(sl + o), ve, vm, vl, vk)));
    }
    total += hsum(s);
  }
  for (; j < c; j++) {
    const d = pairD(f32x4.splat(load<f32>(at(z, j))), f32x4.splat(load<f32>(at(sl, j))), ve, vm, vl, vk);
    total += <f64>(load<f32>(at(q, j)) * f32x4.extract_lane(d, 0));
  }
  return total;
}

/**
 * The softmax statistics of row [c]: its max m, argmax r and S_o (the sum without r) to
 * pm, pr, po (float64), and the CE term's 1 - p_y to pom; returns nll = -log softmax(row)[y].
 */
function stats(row: usize, c: i32, y: i32, pm: usize, pr: usize, po: usize, pom: usize): f64 {
  const m = rowMax(row, c), r = rowFind(row, c, m);
  const So = rowExpSumExcept(row, c, r, m, 1, 0);
  store<f64>(pm, <f64>m);
  store<f64>(pr, <f64>r);
  store<f64>(po, So);
  if (y == r) {
    store<f64>(pom, So / (1 + So));
    return Math.log1p(So);
  }
  // p_y <= 1/2 here: 1 - p_y has nothing to lose
  const zy = <f64>load<f32>(at(row, y)) - <f64>m;
  store<f64>(pom, 1 - Math.exp(zy) / (1 + So));
  return Math.log1p(So) - zy;
}

/**
 * Pass 1. ztab [e] int32: the address of each expert's logits [b, c]; labels [b];
 * gamma [e] float64 (0: cross-entropy); shift [c] float32 (log prior) or 0; ceRows [e, b]
 * float64 out; stats [b, e, 9] float64 out; scratch u [c] float32 (with a shift), spare [1]
 * float64.
 */
export function experts_ce(
  ztab: usize, e: i32, b: i32, c: i32, labels: usize, gamma: usize, shift: usize, ceRows: usize, st0: usize,
  u: usize, spare: usize,
): void {
  for (let i = 0; i < b; i++) {
    const y = load<i32>(labels + ((<usize>i) << 2));
    const off = (<usize>i * <usize>c) << 2;
    for (let k = 0; k < e; k++) {
      const z = <usize>load<i32>(ztab + ((<usize>k) << 2)) + off;
      const st = st0 + <usize>(i * e + k) * <usize>STATS;
      let nll = stats(z, c, y, st + M, st + R, st + SO, st + OM);
      if (shift) {
        // u_j = (z_j - m) + s_j: the CE term's softmax (its argmax is not needed later)
        shifted(z, shift, c, <f32>load<f64>(st + M), u);
        nll = stats(u, c, y, st + MU, spare, st + SU, st + OM);
      } else {
        store<f64>(st + MU, load<f64>(st + M));
        store<f64>(st + SU, load<f64>(st + SO));
      }
      store<f64>(st + SU, 1 + load<f64>(st + SU));
      const om = load<f64>(st + OM), g = load<f64>(gamma + ((<usize>k) << 3));
      let value = nll, slope: f64 = 1;
      if (g != 0) {
        // f(nll) = (1-p)^g nll, f' = (1-p)^g + g (1-p)^(g-1) p nll (second term 0 at p = 1)
        const pow = Math.pow(om, g);
        value = pow * nll;
        slope = pow + (om == 0 ? 0 : g * Math.pow(om, g - 1) * (1 - om) * nll);
      }
      store<f64>(st + SLOPE, slope);
      store<f64>(ceRows + ((<usize>(k * b + i)) << 3), value);
    }
  }
}

/** q_j of expert statistics st (row z) in float64: 1/S at the argmax, else e^(z_j - m) / S. */
function prob(z: usize, st: usize, j: i32): f64 {
  const S = 1 + load<f64>(st + SO);
  if (<f64>j == load<f64>(st + R)) return 1 / S;
  return Math.exp(<f64>load<f32>(at(z, j)) - load<f64>(st + M)) / S;
}

/**
 * Pass 2. ztab as in experts_ce; gtab [e] int32: the address of each gradient [b, c], or
 * 0 for none; target [b, c] float32 (collaboration target logits) or 0; pairs: whether
 * the pair terms are wanted; stats from experts_ce (the pair terms' added); wce [e]
 * float64 and wcol, wpairs: the gradient weights (divided by b); colRows [e, b], pairRows
 * [b] float64 out; scratch: (e + 3) * c float32.
 */
export function experts_main(
  ztab: usize, gtab: usize, e: i32, b: i32, c: i32, labels: usize, shift: usize, target: usize, pairs: i32,
  st0: usize, wce: usize, wcol: f64, wpairs: f64, colRows: usize, pairRows: usize, scratch: usize,
): void {
  const rowBytes = (<usize>c) << 2;
  const Q = scratch, T = Q + <usize>e * rowBytes, SQ = T + rowBytes, SL = SQ + rowBytes;
  const E = <f64>e;
  const wantQ = pairs != 0 || gtab != 0;
  for (let i = 0; i < b; i++) {
    const y = load<i32>(labels + ((<usize>i) << 2));
    const off = <usize>i * rowBytes;
    const tz = target + off;
    const sti = st0 + <usize>(i * e) * <usize>STATS;
    let mt: f32 = 0, rt = -1, Sto: f64 = 0;
    if (target) {
      mt = rowMax(tz, c);
      rt = rowFind(tz, c, mt);
      Sto = rowExpSumExcept(tz, c, rt, mt, 1, T);
      rowAffine(T, T, c, <f32>(1 / (1 + Sto)), 0);
    }
    for (let k = 0; k < e; k++) {
      const z = <usize>load<i32>(ztab + ((<usize>k) << 2)) + off;
      const st = sti + <usize>k * <usize>STATS;
      const m = <f32>load<f64>(st + M), So = load<f64>(st + SO);
      if (target) {
        // KL(t || q_e) >= 0: rounding can leave -1e-9 where the two agree
        const kl = klDot(T, tz, z, c, mt, m) - (Math.log1p(Sto) - Math.log1p(So));
        store<f64>(colRows + ((<usize>(k * b + i)) << 3), max(kl, 0));
      }
      if (wantQ) {
        const q = Q + <usize>k * rowBytes;
        rowExpSumExcept(z, c, <i32>load<f64>(st + R), m, 1, q);
        rowAffine(q, q, c, <f32>(1 / (1 + So)), 0);
      }
    }
    if (pairs) {
      rowZero(SL, c);
      rowZero(SQ, c);
      for (let k = 0; k < e; k++) {
        const st = sti + <usize>k * <usize>STATS;
        addLogProb(SL, <usize>load<i32>(ztab + ((<usize>k) << 2)) + off, c, <f32>load<f64>(st + M), <f32>Math.log1p(load<f64>(st + SO)));
        rowAxpby(SQ, Q + <usize>k * rowBytes, c, 1, 1);
      }
      let pair: f64 = 0;
      for (let k = 0; k < e; k++) {
        const z = <usize>load<i32>(ztab + ((<usize>k) << 2)) + off;
        const st = sti + <usize>k * <usize>STATS;
        const m = <f32>load<f64>(st + M), l = <f32>Math.log1p(load<f64>(st + SO));
        // D at the argmax r (z_r = m), in float32 as every D_j (so that D_r - Dr is exactly 0)
        const Dr = f32x4.extract_lane(pairD(f32x4.splat(m), f32x4.splat(load<f32>(at(SL, <i32>load<f64>(st + R)))), f32x4.splat(<f32>E), f32x4.splat(m), f32x4.splat(l), f32x4.splat(0)), 0);
        const qd = pairDot(Q + <usize>k * rowBytes, z, SL, c, <f32>E, m, l, Dr);
        store<f64>(st + QD, qd);
        store<f64>(st + DR, <f64>Dr);
        pair += <f64>Dr + qd;
      }
      store<f64>(pairRows + ((<usize>i) << 3), pair);
    }
    if (!gtab) continue;
    const bc: f64 = target ? wcol : 0, dp: f64 = pairs ? wpairs : 0;
    for (let k = 0; k < e; k++) {
      const z = <usize>load<i32>(ztab + ((<usize>k) << 2)) + off;
      const g = <usize>load<i32>(gtab + ((<usize>k) << 2)) + off;
      const st = sti + <usize>k * <usize>STATS;
      const m = <f32>load<f64>(st + M), l = <f32>Math.log1p(load<f64>(st + SO));
      const a = load<f64>(wce + ((<usize>k) << 3)) * load<f64>(st + SLOPE);
      const Dr = <f32>load<f64>(st + DR), qd = <f32>load<f64>(st + QD);
      const mu = <f32>load<f64>(st + MU), Su = load<f64>(st + SU);
      gradRow(g, z, Q + <usize>k * rowBytes, T, SQ, SL, shift, c, m, l, mu, <f32>(1 / Su), <f32>a, <f32>bc, <f32>dp, <f32>E, Dr, qd);
      // The entries where the terms are small differences of values near 1, in float64.
      const r = <i32>load<f64>(st + R);
      for (let pass = 0; pass < 2; pass++) {
        const j = pass == 0 ? y : r;
        if (pass == 1 && r == y) break;
        const qj = prob(z, st, j);
        let gj: f64;
        if (j == y) gj = -a * load<f64>(st + OM);
        else if (shift) {
          const uj = (load<f32>(at(z, j)) - m) + load<f32>(at(shift, j));
          gj = a * Math.exp(<f64>uj - <f64>mu) / Su;
        } else gj = a * qj;
        if (bc != 0) {
          const tj = j == rt ? 1 / (1 + Sto) : Math.exp(<f64>load<f32>(at(tz, j)) - <f64>mt) / (1 + Sto);
          gj += bc * (j == r && j == rt ? Sto / (1 + Sto) - load<f64>(st + SO) / (1 + load<f64>(st + SO)) : qj - tj);
        }
        if (dp != 0) {
          // E q_j - sum_k q_kj = sum_k (q_j - q_kj), by complements where both peak at j
          let spread: f64 = 0;
          for (let h = 0; h < e; h++) {
            const sh = sti + <usize>h * <usize>STATS;
            const zh = <usize>load<i32>(ztab + ((<usize>h) << 2)) + off;
            const both = j == r && <f64>j == load<f64>(sh + R);
            spread += both ? load<f64>(sh + SO) / (1 + load<f64>(sh + SO)) - load<f64>(st + SO) / (1 + load<f64>(st + SO)) : qj - prob(zh, sh, j);
          }
          const D = <f64>f32x4.extract_lane(pairD(f32x4.splat(load<f32>(at(z, j))), f32x4.splat(load<f32>(at(SL, j))), f32x4.splat(<f32>E), f32x4.splat(m), f32x4.splat(l), f32x4.splat(Dr)), 0);
          gj += dp * (spread + qj * (D - <f64>qd));
        }
        store<f32>(at(g, j), <f32>gj);
      }
    }
  }
}

/**
 * g_j = a p_j + bc (q_j - t_j) + dp ((E q_j - sq_j) + q_j ((D_j - Dr) - qd)), D_j = E ((z_j - m) - l) - sl_j,
 * p_j = e^(((z_j - m) + s_j) - mu) / Su with a shift, else q_j (bc = 0 and dp = 0 skip their terms).
 */
function gradRow(
  g: usize, z: usize, q: usize, t: usize, sq: usize, sl: usize, shift: usize, c: i32, m: f32, l: f32, mu: f32,
  invSu: f32, a: f32, bc: f32, dp: f32, E: f32, Dr: f32, qd: f32,
): void {
  const va = f32x4.splat(a), vb = f32x4.splat(bc), vd = f32x4.splat(dp), ve = f32x4.splat(E), vr = f32x4.splat(Dr);
  const vq = f32x4.splat(qd), vm = f32x4.splat(m), vl = f32x4.splat(l), vmu = f32x4.splat(mu), vs = f32x4.splat(invSu);
  let j = 0;
  for (; j + 4 <= c; j += 4) {
    const o = (<usize>j) << 2;
    const qv = v128.load(q + o), zv = v128.load(z + o);
    let p = qv;
    if (shift) p = f32x4.mul(expNeg(f32x4.sub(f32x4.add(f32x4.sub(zv, vm), v128.load(shift + o)), vmu)), vs);
    let r = f32x4.mul(va, p);
    if (bc != 0) r = f32x4.add(r, f32x4.mul(vb, f32x4.sub(qv, v128.load(t + o))));
    if (dp != 0) {
      const D = pairD(zv, v128.load(sl + o), ve, vm, vl, vr);
      const pd = f32x4.add(f32x4.sub(f32x4.mul(ve, qv), v128.load(sq + o)), f32x4.mul(qv, f32x4.sub(D, vq)));
      r = f32x4.add(r, f32x4.mul(vd, pd));
    }
    v128.store(g + o, r);
  }
  for (; j < c; j++) {
    const qj = load<f32>(at(q, j)), zj = load<f32>(at(z, j));
    let p = qj;
    if (shift) p = f32x4.extract_lane(expNeg(f32x4.splat(((zj - m) + load<f32>(at(shift, j))) - mu)), 0) * invSu;
    let r = a * p;
    if (bc != 0) r += bc * (qj - load<f32>(at(t, j)));
    if (dp != 0) {
      const D = f32x4.extract_lane(pairD(f32x4.splat(zj), f32x4.splat(load<f32>(at(sl, j))), ve, vm, vl, vr), 0);
      r += dp * ((E * qj - load<f32>(at(sq, j))) + qj * (D - qd));
    }
    store<f32>(at(g, j), r);
  }
}
