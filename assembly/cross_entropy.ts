// The fused softmax cross-entropy kernel with hard labels: `crossEntropy`, `focal`
// and every margin loss on cosines (`arcface`, `cosface`, `normface`,
// `combinedMargin`). One call per row chunk computes the row losses and, when
// `scales` is not 0, the gradient rows.
//
// Row i with label y. The logits are z_j = s * x_j (s = `scale`; with `clamp`, x_j
// is first clamped to [-1, 1]); with `target` the label's logit is replaced by
// t_i = target[2i] whose derivative w.r.t. x_y is target[2i+1] (the margin: the host
// computes phi(cos_y) per row). p = softmax(z), nll = logsumexp(z) - z_y, smoothing
// eps, class weights w (all 1 when `weight` is 0), W = sum_c w_c:
//   cross-entropy  loss_i = (1-eps) w_y nll + (eps/C) sum_c w_c (lse - z_c),
//                  the last sum taken as W log(sum e^(z-m)) + sum_c w_c (m - z_c) (no cancellation)
//                  dz_c   = s_i [ ((1-eps) w_y + (eps/C) W) p_c - (eps/C) w_c - (1-eps) w_y [c = y] ]
//   focal (gamma)  loss_i = w_y (1-p_y)^gamma nll
//                  dz_c   = s_i w_y f'(nll) (p_c - [c = y]),
//                  f'(nll) = (1-p_y)^gamma + gamma (1-p_y)^(gamma-1) p_y nll  (second term 0 at p_y = 1)
// with s_i = scales[i] (upstream and reduction folded in by the host), and
// dx_j = s dz_j for j != y (0 outside [-1, 1] with `clamp`), dx_y = dz_y * dt/dx_y.
// (The smoothing and the target replacement are never asked for together.)
// crossEntropy's large-vocabulary options (scale 1, no clamp, no target, gamma 0), both
// checked once per row:
//   softcap c != 0: the row is first capped into a scratch row, z_j = c tanh(x_j / c) - h with
//                   h the capped maximum (softmax.ts's rowSoftcap: the loss is shift-invariant
//                   and only lse needs h back), d_j = 1 - tanh^2 beside it; the kernel runs on
//                   z and the gradient row is finally multiplied by d;
//   zLoss k != 0:   rowZ_i = k lse^2, lse = h + m + log(sum); its gradient zs_i 2 k lse p_c
//                   (zs_i = zScales[i]) joins dz_c.
// The margin losses' non-target transform (src/kernels/hard_label.ts's NonTarget; with a target
// and the clamp), ntc = [lo, hi, a, b, g, cut] f64 and nt = per row (thr, tie) f64 or 0: a row whose
// other cosines leave [lo, hi] or pass cut or reach thr is first transformed, as the softcap's, into the
// scratch row x'_j (s x'_j its logit) and d_j (its derivative over s) and run unclamped; the
// other rows run as they are (one comparison of the row's maximum and minimum).
// The margin losses' sub-centres (sub > 1): a row of z is [c * sub], class j's columns j*sub ..
// j*sub + sub - 1; one pass (rowSubMax) writes its class cosines (the winning column's value:
// the largest clamped to [-1, 1], ties to the smaller column, the first NaN wins: `subMax`, which
// marginHead's chunks use too) and winning columns into the scratch subs [2, c], the row runs on
// them as above with its gradient in the scratch, and a last pass (rowScatter) writes each
// class's gradient at its winning column, 0 at the others.
import { rowMax, rowMin, rowFind, rowSumBelow, rowDotBelow, rowExpSum, rowExpSumClamped, rowAffine, rowAffineMax, rowAxpby, rowZero, rowSoftcap, rowMul } from "./softmax";
import { expNeg1 } from "./math";

// The label's entry is left out of the max and of the sum S of the other entries
// and added back as e^(z_y - m) in float64, so that 1 - p_y = S / (S + e^(z_y - m))
// and nll = log1p(S / e^(z_y - m)) keep their relative accuracy as p_y -> 1.

// @ts-ignore: decorator
@inline function expSumOf(row: usize, c: i32, m: f32, scale: f32, out: usize, clamp: i32): f64 {
  return clamp ? rowExpSumClamped(row, c, m, scale, out) : rowExpSum(row, c, m, scale, out);
}

/** `expSumOf` over the entries [lo, hi) of the row (stored at the same offsets of out). */
// @ts-ignore: decorator
@inline function expSumIn(row: usize, lo: i32, hi: i32, m: f32, scale: f32, out: usize, clamp: i32): f64 {
  const o = <usize>lo << 2;
  return expSumOf(row + o, hi - lo, m, scale, out ? out + o : 0, clamp);
}

/**
 * z, g: [rows, c] float32 (g may equal z: the gradient overwrites the logits);
 * labels: [rows] int32, -1 = ignored; weight: [c] float32 or 0; scales: [rows]
 * float64 or 0 for no gradient; rowLoss: [rows] float64 output; scale, clamp: the
 * logit scale and the cosine clamp; target: [rows, 2] float64 (logit, derivative) or 0;
 * softcap: c or 0, cap: a scratch [2, c] float32 (the capped row and its derivative);
 * zLoss: k or 0, zScales: [rows] float64 or 0 (no gradient), rowZ: [rows] float64 output or 0;
 * sub: the sub-centres per class (1: none; z and g are then [rows, c * sub]), subs: a scratch [2, c] or 0.
 */
export function hard_label(
  z: usize, g: usize, rows: i32, c: i32, labels: usize, weight: usize,
  eps: f64, gamma: f64, scales: usize, rowLoss: usize, scale: f64, clamp: i32, target: usize,
  softcap: f64, cap: usize, zLoss: f64, zScales: usize, rowZ: usize, ntc: usize, nt: usize,
  sub: i32, subs: usize,
): void {
  // W exactly (a float64 sum): the smoothed gradients at the label and at the argmax take
  // differences of it and a single weight.
  let W: f64 = <f64>c;
  if (weight) {
    W = 0;
    for (let j = 0; j < c; j++) W += <f64>load<f32>(weight + (<usize>j << 2));
  }
  const epsC = eps / <f64>c;
  const s32 = <f32>scale;
  const width = <usize>c * <usize>sub;
  // Plain rows with a gradient (crossEntropy and focal without smoothing, softcap or the margins'
  // options): a row's maximum is taken in the pass that finishes the row before it (rowAffineMax), so
  // the next row's values arrive while this row's are in cache. The whole row's maximum gives the same
  // m = max(max_{j != y} x_j, x_y) (a row with a NaN is NaN either way).
  const fused = scales != 0 && scale == 1 && !clamp && !target && softcap == 0 && !ntc && sub == 1 && eps == 0;
  let ahead = false, next: f32 = 0;
  for (let i = 0; i < rows; i++) {
    let zr = z + ((<usize>i * width) << 2);
    const gFull = g + ((<usize>i * width) << 2);
    let gr = gFull;
    const y = load<i32>(labels + (<usize>i << 2));
    const known = ahead;
    ahead = false;
    if (y < 0) {
      store<f64>(rowLoss + (<usize>i << 3), 0);
      if (rowZ) store<f64>(rowZ + (<usize>i << 3), 0);
      if (scales) rowZero(gr, <i32>width);
      continue;
    }
    if (sub > 1) {
      // the class cosines, and the gradient beside them in the scratch
      rowSubMax(zr, subs, subs + (<usize>c << 2), c, sub);
      zr = subs;
      gr = subs;
    }
    let h: f64 = 0; // the shift of a capped row
    let rowClamp = clamp, mulD = softcap != 0;
    if (softcap != 0) {
      h = rowSoftcap(zr, cap, cap + (<usize>c << 2), c, softcap);
      zr = cap;
    } else if (ntc) {
      const thr = nt ? load<f64>(nt + (<usize>i << 4)) : Infinity;
      const tie = nt ? <i32>load<f64>(nt + (<usize>i << 4) + 8) : -1;
      const hi = max(rowMax(zr, y), rowMax(zr + ((<usize>y + 1) << 2), c - y - 1));
      const lo = min(rowMin(zr, y), rowMin(zr + ((<usize>y + 1) << 2), c - y - 1));
      const top = <f64>hi;
      if (top > load<f64>(ntc + 8) || <f64>lo < load<f64>(ntc) || top > load<f64>(ntc + 40) || top > thr || (top == thr && tie >= 0)) {
        rowNonTarget(zr, cap, cap + (<usize>c << 2), c, y, ntc, thr, tie);
        zr = cap;
        rowClamp = 0;
        mulD = true;
      }
    }
    const wy: f64 = weight ? <f64>load<f32>(weight + (<usize>y << 2)) : 1;
    const xy = load<f32>(zr + (<usize>y << 2));
    const out = scales ? gr : 0;
    // zy: the label's logit; dy: d z_y / d x_y.
    let zy: f64, dy: f64, xc = xy;
    if (target) {
      zy = load<f64>(target + (<usize>i << 4));
      dy = load<f64>(target + (<usize>i << 4) + 8);
    } else {
      if (rowClamp) xc = min(max(xy, <f32>-1), <f32>1);
      zy = <f64>xc * scale;
      dy = xc != xy ? 0 : scale;
    }
    let mx = known ? next : max(rowMax(zr, y), rowMax(zr + ((<usize>y + 1) << 2), c - y - 1));
    // Cosines are nearly always inside [-1, 1] already: then the row skips the clamp (the
    // same values, 4 fewer operations per vector in the exponential pass).
    const clampRow = rowClamp && (mx > 1 || min(rowMin(zr, y), rowMin(zr + ((<usize>y + 1) << 2), c - y - 1)) < -1) ? 1 : 0;
    if (rowClamp) mx = min(max(mx, <f32>-1), <f32>1);
    const m = max(<f64>mx * scale, zy);
    // Exponentials are taken against m32 = m / s rounded to float32; the factor
    // e^(m32 s - m) puts S back against m (it is 1 for cross-entropy, where m32 s = m).
    const m32 = <f32>(m / scale);
    // The smoothing term needs sum_c w_c (m32 - x_c), read before g may overwrite x
    // (smoothing comes with scale 1 and no target, so m32 = m is the row maximum).
    let wBelow: f64 = 0;
    if (eps != 0) wBelow = weight ? rowDotBelow(weight, zr, m32, c) : rowSumBelow(zr, m32, c);
    // With smoothing, the target's mass sits on every class, so the gradient at the largest
    // other entry r, a p_r - u w_r, is a difference of two numbers of size a when r holds the
    // row's maximum and the label little weight: r is left out of the float32 sum as well,
    // its exponential er added back in float64, and its gradient written from the sums.
    let r = -1;
    if (eps != 0 && c > 1) {
      r = rowFind(zr, c, mx);
      if (r == y) r = y + 1 + rowFind(zr + ((<usize>y + 1) << 2), c - y - 1, mx);
      if (r >= c || load<f32>(zr + (<usize>r << 2)) != mx) r = -1; // (NaN rows)
    }
    let Sx: f64, er: f64 = 0;
    if (r < 0) {
      Sx = expSumIn(zr, 0, y, m32, s32, out, clampRow) + expSumIn(zr, y + 1, c, m32, s32, out, clampRow);
    } else {
      const lo = min(r, y), hi = max(r, y);
      Sx = expSumIn(zr, 0, lo, m32, s32, out, clampRow) + expSumIn(zr, lo + 1, hi, m32, s32, out, clampRow) +
        expSumIn(zr, hi + 1, c, m32, s32, out, clampRow);
      const e32 = expNeg1((mx - m32) * s32); // 1 when r holds the row's maximum
      if (out) store<f32>(out + (<usize>r << 2), e32);
      er = <f64>e32;
    }
    const F = Math.exp(<f64>m32 * scale - m);
    const S = F * (Sx + er);
    const ey = Math.exp(zy - m);
    const sum = S + ey;
    const nll = zy - m < -700 ? m - zy + Math.log(S) : Math.log1p(S / ey);
    const om = S / sum;
    let loss: f64, a: f64, u: f64, b: f64;
    if (gamma == 0) {
      loss = (1 - eps) * wy * nll + epsC * (W * Math.log(sum) + scale * wBelow);
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
    // z-loss: k lse^2 and the coefficient of its gradient 2 k lse p_c (at its own row scale).
    let zk: f64 = 0;
    if (zLoss != 0) {
      const lse = h + m + Math.log(sum);
      store<f64>(rowZ + (<usize>i << 3), zLoss * lse * lse);
      if (scales) zk = load<f64>(zScales + (<usize>i << 3)) * 2 * zLoss * lse;
    }
    if (!scales) continue;
    const si = load<f64>(scales + (<usize>i << 3));
    // dx_j = s dz_j: the logit scale joins the row's gradient scale; the stored
    // exponentials are against m32 s, hence F.
    let ga = si * a * scale * F / sum, gy = si * b;
    if (zk != 0) {
      ga += zk * scale * F / sum;
      gy += zk * ey / sum;
    }
    if (weight && u != 0) rowAxpby(gr, weight, c, <f32>ga, <f32>(-si * u * scale));
    else if (fused && i + 1 < rows) {
      next = rowAffineMax(gr, c, <f32>ga, <f32>(si * u * scale), zr + ((<usize>c) << 2));
      ahead = true;
    } else rowAffine(gr, gr, c, <f32>ga, <f32>(si * u * scale));
    store<f32>(gr + (<usize>y << 2), <f32>(gy * dy));
    if (r >= 0) {
      // dz_r = s_i (a p_r - u w_r) = s_i ((a - u w_r) e_r - u w_r (sum - e_r)) / sum
      const ur = u * (weight ? <f64>load<f32>(weight + (<usize>r << 2)) : 1);
      let gr_ = si * scale * ((a - ur) * er * F - ur * (F * Sx + ey)) / sum;
      if (zk != 0) gr_ += zk * scale * er * F / sum;
      store<f32>(gr + (<usize>r << 2), <f32>gr_);
    }
    if (mulD) rowMul(gr, cap + (<usize>c << 2), c);
    if (sub > 1) rowScatter(gFull, subs, subs + (<usize>c << 2), c, sub);
  }
}

/**
 * Sub-centres, the one rule of every kernel (SPEC section 7; the reference's `subcenter` in
 * src/kernels/hard_label.ts): per class j of row x ([c * k] values; with b != 0 each taken as
 * u = (x a) b[col], the head's dot products as its `logits` rounds them) the winning column of its k:
 * the largest u clamped to [-1, 1], ties to the smaller column, the first NaN wins (a NaN class).
 * Its u (unclamped: the kernel's clamp then passes or cuts its gradient) goes into xs[j] and its
 * column j*k + q into win[j]. xs may be x itself (a class's values are read before its cosine is
 * written, and a cosine lands before every later class's values). Four classes at a time, their
 * columns gathered lane by lane, with compares and selects only (no branch on the data).
 */
// @ts-ignore: decorator
@inline export function subMax(x: usize, xs: usize, win: usize, c: i32, k: i32, a: f32, b: usize): void {
  let j = 0;
  for (; j + 4 <= c; j += 4) subGroup(x, xs, win, j, k, a, b, true);
  for (; j < c; j++) subGroup(x, xs, win, j, k, a, b, false);
}

/** Lanes 0..3 of the f32 at p, p + step, p + 2 step, p + 3 step (four), or the one at p in every lane. */
// @ts-ignore: decorator
@inline export function gather(p: usize, step: usize, four: bool): v128 {
  let v = v128.load32_splat(p);
  if (four) {
    v = v128.load32_lane(p + step, v, 1);
    v = v128.load32_lane(p + 2 * step, v, 2);
    v = v128.load32_lane(p + 3 * step, v, 3);
  }
  return v;
}

/** `subMax` of the classes j .. j + 3 (four) or of class j alone. */
// @ts-ignore: decorator
@inline function subGroup(x: usize, xs: usize, win: usize, j: i32, k: i32, a: f32, b: usize, four: bool): void {
  const step = (<usize>k) << 2, at = (<usize>j * <usize>k) << 2, va = f32x4.splat(a);
  const one = f32x4.splat(1), minus = f32x4.splat(-1);
  let best = gather(x + at, step, four);
  if (b) best = f32x4.mul(f32x4.mul(best, va), gather(b + at, step, four));
  // (pmin, pmax: a NaN stays NaN)
  let top = f32x4.pmax(f32x4.pmin(best, one), minus), q = i32x4.splat(0);
  for (let r = 1; r < k; r++) {
    const o = at + ((<usize>r) << 2);
    let u = gather(x + o, step, four);
    if (b) u = f32x4.mul(f32x4.mul(u, va), gather(b + o, step, four));
    const w = f32x4.pmax(f32x4.pmin(u, one), minus);
    // w wins where top is a number and w is not at most top (above it, or NaN)
    const more = v128.andnot(f32x4.eq(top, top), f32x4.le(w, top));
    best = v128.bitselect(u, best, more);
    top = v128.bitselect(w, top, more);
    q = v128.bitselect(i32x4.splat(r), q, more);
  }
  const col = i32x4.add(i32x4.mul(i32x4.add(i32x4.splat(j), i32x4(0, 1, 2, 3)), i32x4.splat(k)), q);
  const o = (<usize>j) << 2;
  if (four) {
    v128.store(xs + o, best);
    v128.store(win + o, col);
  } else {
    store<f32>(xs + o, f32x4.extract_lane(best, 0));
    store<i32>(win + o, i32x4.extract_lane(col, 0));
  }
}

/** Sub-centres of the margin losses on cosines: `subMax` of row x ([c * k] cosines). */
export function rowSubMax(x: usize, xs: usize, win: usize, c: i32, k: i32): void {
  subMax(x, xs, win, c, k, 1, 0);
}

/** Sub-centres: the gradient row g ([c * k]) from the class gradients gs ([c]): gs[j] at column win[j], 0 elsewhere. */
export function rowScatter(g: usize, gs: usize, win: usize, c: i32, k: i32): void {
  rowZero(g, c * k);
  for (let j = 0; j < c; j++) {
    store<f32>(g + (<usize>load<i32>(win + (<usize>j << 2)) << 2), load<f32>(gs + (<usize>j << 2)));
  }
}

/**
 * The non-target transform of row x (label y) into the scratch rows xs (x'_j, the logit over
 * s) and d (the derivative over s): x clamped to [lo, hi] (d 0 where cut); a non-target above
 * cut becomes 0 (d 0); then a hard non-target
 * (x > thr, or x == thr and j <= tie) becomes a x + b x^2 + g sqrt(1 - x^2), d = a + 2 b x -
 * g xd / sqrt(1 - xd^2) (xd clamped to [-1 + 1e-6, 1 - 1e-6]); in float64 rounded once.
 */
export function rowNonTarget(x: usize, xs: usize, d: usize, c: i32, y: i32, ntc: usize, thr: f64, tie: i32): void {
  const lo = load<f64>(ntc), hi = load<f64>(ntc + 8);
  const a = load<f64>(ntc + 16), b = load<f64>(ntc + 24), g = load<f64>(ntc + 32), cut = load<f64>(ntc + 40);
  for (let j = 0; j < c; j++) {
    const o = <usize>j << 2;
    const raw = <f64>load<f32>(x + o);
    let v = min(max(raw, lo), hi);
    let pass = j == y || v == raw || isNaN(raw);
    if (j != y && v > cut) {
      v = 0;
      pass = false;
    }
    let value = v, slope: f64 = 1;
    if (j != y && (v > thr || (v == thr && j <= tie))) {
      value = a * v + b * v * v;
      slope = a + 2 * b * v;
      if (g != 0) {
        const vd = min(max(v, -1 + 1e-6), 1 - 1e-6);
        value += g * Math.sqrt(max(0, 1 - v * v));
        slope -= g * vd / Math.sqrt(1 - vd * vd);
      }
    }
    store<f32>(xs + o, <f32>value);
    // (the label's entry: the target carries its own derivative)
    store<f32>(d + o, pass ? <f32>slope : 0);
  }
}
