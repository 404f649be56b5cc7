// The fused softmax core every softmax-family and margin kernel is built from:
// one row at a time, (1) the maximum, (2) e^(z - max) summed and, when a gradient
// is wanted, stored into the gradient row, (3) a per-row finish that scales the
// stored exponentials in place. The row stays in L1/L2 between the passes; crossEntropy's
// plain rows, softmax's and logSoftmax's fold (1) of the next row into (3) (`rowAffineMax`,
// `rowLogProbMax`), so that row's values arrive from memory while this one is in cache.
import { expNeg1, expK, expNegK } from "./math";

// Sums run in float32x4 over blocks of BLOCK floats and the block sums are added
// in float64: the error stays that of a 1024-term float32 sum for any C.
const BLOCK: i32 = 1024;

/** max of row[0 .. c); -inf for c = 0. NaN does not win (it propagates through the sum). */
export function rowMax(row: usize, c: i32): f32 {
  return maxThen(row, c, MAX, 0, 0, 0, 0, 0);
}

// What a row's finishing pass writes (`finish`), and whether the pass also takes a maximum (`maxThen`).
const MAX = 0, AFFINE = 1, LOG_PROB = 2;

/** AFFINE: v p - q (`rowAffine`); LOG_PROB: ((v - p) - q) r (`rowLogProb`). */
// @ts-ignore: decorator
@inline function finish(kind: i32, v: v128, p: v128, q: v128, r: v128): v128 {
  return kind == AFFINE ? f32x4.sub(f32x4.mul(v, p), q) : f32x4.mul(f32x4.sub(f32x4.sub(v, p), q), r);
}

/** `finish` of one float. */
// @ts-ignore: decorator
@inline function finish1(kind: i32, v: f32, p: f32, q: f32, r: f32): f32 {
  return kind == AFFINE ? v * p - q : ((v - p) - q) * r;
}

/**
 * `rowMax(row, c)`, and unless `kind` is MAX, dst[j] = finish(src[j]) in the same pass: the pass
 * that finishes one row reads the next (`rowAffineMax`, `rowLogProbMax`).
 */
// @ts-ignore: decorator
@inline function maxThen(row: usize, c: i32, kind: i32, dst: usize, src: usize, p: f32, q: f32, r: f32): f32 {
  const vp = f32x4.splat(p), vq = f32x4.splat(q), vr = f32x4.splat(r);
  let m0 = f32x4.splat(-Infinity);
  let m1 = m0;
  let j = 0;
  for (; j + 8 <= c; j += 8) {
    const o = <usize>j << 2;
    if (kind != MAX) {
      v128.store(dst + o, finish(kind, v128.load(src + o), vp, vq, vr));
      v128.store(dst + o, finish(kind, v128.load(src + o, 16), vp, vq, vr), 16);
    }
    m0 = f32x4.pmax(m0, v128.load(row + o));
    m1 = f32x4.pmax(m1, v128.load(row + o, 16));
  }
  if (j + 4 <= c) {
    const o = <usize>j << 2;
    if (kind != MAX) v128.store(dst + o, finish(kind, v128.load(src + o), vp, vq, vr));
    m0 = f32x4.pmax(m0, v128.load(row + o));
    j += 4;
  }
  m0 = f32x4.pmax(m0, m1);
  let m = max(max(f32x4.extract_lane(m0, 0), f32x4.extract_lane(m0, 1)), max(f32x4.extract_lane(m0, 2), f32x4.extract_lane(m0, 3)));
  for (; j < c; j++) {
    const o = <usize>j << 2;
    if (kind != MAX) store<f32>(dst + o, finish1(kind, load<f32>(src + o), p, q, r));
    m = max(m, load<f32>(row + o));
  }
  return m;
}

/** min of row[0 .. c); +inf for c = 0. */
export function rowMin(row: usize, c: i32): f32 {
  let m0 = f32x4.splat(Infinity);
  let j = 0;
  for (; j + 4 <= c; j += 4) m0 = f32x4.pmin(m0, v128.load(row + (<usize>j << 2)));
  let m = min(min(f32x4.extract_lane(m0, 0), f32x4.extract_lane(m0, 1)), min(f32x4.extract_lane(m0, 2), f32x4.extract_lane(m0, 3)));
  for (; j < c; j++) m = min(m, load<f32>(row + (<usize>j << 2)));
  return m;
}

/** The first index j with row[j] == v (0 when there is none: a row of NaN). */
export function rowFind(row: usize, c: i32, v: f32): i32 {
  const vv = f32x4.splat(v);
  let j = 0;
  while (j + 4 <= c && !v128.any_true(f32x4.eq(v128.load(row + (<usize>j << 2)), vv))) j += 4;
  for (; j < c; j++) if (load<f32>(row + (<usize>j << 2)) == v) return j;
  return 0;
}

/** sum of row[0 .. c) (float64 over float32 blocks). */
export function rowSum(row: usize, c: i32): f64 {
  let total: f64 = 0;
  let j = 0;
  while (j + 4 <= c) {
    const end = min(c, j + BLOCK);
    let s = f32x4.splat(0);
    for (; j + 4 <= end; j += 4) s = f32x4.add(s, v128.load(row + (<usize>j << 2)));
    total += <f64>f32x4.extract_lane(s, 0) + <f64>f32x4.extract_lane(s, 1) + <f64>f32x4.extract_lane(s, 2) + <f64>f32x4.extract_lane(s, 3);
  }
  for (; j < c; j++) total += <f64>load<f32>(row + (<usize>j << 2));
  return total;
}

/**
 * sum_j (m - row[j]) (float64 over float32 blocks): with m = max row every term is
 * >= 0 and each difference is exact near m, so nothing cancels however large the row's
 * common level (c m - sum row would lose ulps of |row| at each step of a float32 sum).
 */
export function rowSumBelow(row: usize, m: f32, c: i32): f64 {
  const vm = f32x4.splat(m);
  let total: f64 = 0;
  let j = 0;
  while (j + 4 <= c) {
    const end = min(c, j + BLOCK);
    let s = f32x4.splat(0);
    for (; j + 4 <= end; j += 4) s = f32x4.add(s, f32x4.sub(vm, v128.load(row + (<usize>j << 2))));
    total += <f64>f32x4.extract_lane(s, 0) + <f64>f32x4.extract_lane(s, 1) + <f64>f32x4.extract_lane(s, 2) + <f64>f32x4.extract_lane(s, 3);
  }
  for (; j < c; j++) total += <f64>(m - load<f32>(row + (<usize>j << 2)));
  return total;
}

/**
 * sum_j a[j] * (m - b[j]) (float64 over float32 blocks): with m = max b and a >= 0
 * every term is >= 0, so nothing cancels even at |b| = 1e4 (sum a b would).
 */
export function rowDotBelow(a: usize, b: usize, m: f32, c: i32): f64 {
  const vm = f32x4.splat(m);
  let total: f64 = 0;
  let j = 0;
  while (j + 4 <= c) {
    const end = min(c, j + BLOCK);
    let s = f32x4.splat(0);
    for (; j + 4 <= end; j += 4) {
      const o = <usize>j << 2;
      s = f32x4.add(s, f32x4.mul(v128.load(a + o), f32x4.sub(vm, v128.load(b + o))));
    }
    total += <f64>f32x4.extract_lane(s, 0) + <f64>f32x4.extract_lane(s, 1) + <f64>f32x4.extract_lane(s, 2) + <f64>f32x4.extract_lane(s, 3);
  }
  for (; j < c; j++) total += <f64>load<f32>(a + (<usize>j << 2)) * <f64>(m - load<f32>(b + (<usize>j << 2)));
  return total;
}

/**
 * sum_j e^((row[j] - m) * scale) for m >= every row[j] and scale > 0; when `out` is
 * not 0 the exponentials are also stored there (`out` may equal `row`).
 *
 * Near one-hot rows: where a gradient has a term 1 - p_r for the row's dominant
 * entry r, the kernels leave r out of this sum (`rowExpSumExcept`) and add e_r back
 * in float64, so that S_others / (S_others + e_r) keeps its relative accuracy; a float32
 * sum that includes e_r = 1 rounds the small terms away.
 */
export function rowExpSum(row: usize, c: i32, m: f32, scale: f32, out: usize): f64 {
  return scale == 1 ? expSum(row, c, m, 1, out, false, false) : expSum(row, c, m, scale, out, false, true);
}

/**
 * As `rowExpSum` without entry r (the stored exponential of r is 1: with m = row[r]
 * it is e^0; the caller adds it, or its own value, back).
 */
export function rowExpSumExcept(row: usize, c: i32, r: i32, m: f32, scale: f32, out: usize): f64 {
  const after = (<usize>r + 1) << 2;
  const s = rowExpSum(row, r, m, scale, out) + rowExpSum(row + after, c - r - 1, m, scale, out ? out + after : 0);
  if (out) store<f32>(out + (<usize>r << 2), 1);
  return s;
}

/** sum of row[0 .. c) without entry r. */
export function rowSumExcept(row: usize, c: i32, r: i32): f64 {
  return rowSum(row, r) + rowSum(row + ((<usize>r + 1) << 2), c - r - 1);
}

/**
 * As `rowExpSum` on the row clamped to [-1, 1] (cosines), m >= every clamped value;
 * the stored exponentials of entries outside [-1, 1] are 0: the clamp passes no
 * gradient there, so the gradient pass that scales them writes 0.
 */
export function rowExpSumClamped(row: usize, c: i32, m: f32, scale: f32, out: usize): f64 {
  return expSum(row, c, m, scale, out, true, true);
}

// `scaled` false (scale 1, as crossEntropy's logits): the same values without the multiply,
// one of the 14 vector operations of an exponential (7-8 % of crossEntropy's kernel, session 10).
// @ts-ignore: decorator
@inline function expSum(row: usize, c: i32, m: f32, scale: f32, out: usize, clamp: bool, scaled: bool): f64 {
  return out ? expSumTo(row, c, m, scale, out, clamp, scaled, true) : expSumTo(row, c, m, scale, 0, clamp, scaled, false);
}

/** The exponential of the four floats at p (`expNegK`, its constants given), stored at q when `put`. */
// @ts-ignore: decorator
@inline function expAt(
  p: usize, q: usize, vm: v128, vs: v128, k0: v128, k1: v128, k2: v128, k3: v128, k4: v128, k5: v128, k6: v128,
  k7: v128, k8: v128, k9: v128, k10: v128, clamp: bool, scaled: bool, put: bool,
): v128 {
  const k = v128.load(p);
  const x = clamp ? f32x4.pmax(f32x4.pmin(k, f32x4.splat(1)), f32x4.splat(-1)) : k;
  const e = expNegK(scaled ? f32x4.mul(f32x4.sub(x, vm), vs) : f32x4.sub(x, vm), k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10);
  if (put) v128.store(q, clamp ? v128.and(e, f32x4.eq(x, k)) : e);
  return e;
}

// The loop is specialised on `put` (whether the exponentials are stored): each one is stored as
// soon as it is made, so V8 keeps the sums in registers instead of spilling them (session 11).
// @ts-ignore: decorator
@inline function expSumTo(row: usize, c: i32, m: f32, scale: f32, out: usize, clamp: bool, scaled: bool, put: bool): f64 {
  const vm = f32x4.splat(m);
  const vs = f32x4.splat(scale);
  const k0 = expK(0), k1 = expK(1), k2 = expK(2), k3 = expK(3), k4 = expK(4), k5 = expK(5), k6 = expK(6);
  const k7 = expK(7), k8 = expK(8), k9 = expK(9), k10 = expK(10);
  let total: f64 = 0;
  let j = 0;
  while (j + 16 <= c) {
    const end = min(c, j + BLOCK);
    let s0 = f32x4.splat(0);
    let s1 = s0;
    for (; j + 16 <= end; j += 16) {
      const o = <usize>j << 2;
      s0 = f32x4.add(s0, expAt(row + o, out + o, vm, vs, k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, clamp, scaled, put));
      s1 = f32x4.add(s1, expAt(row + o + 16, out + o + 16, vm, vs, k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, clamp, scaled, put));
      s0 = f32x4.add(s0, expAt(row + o + 32, out + o + 32, vm, vs, k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, clamp, scaled, put));
      s1 = f32x4.add(s1, expAt(row + o + 48, out + o + 48, vm, vs, k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, clamp, scaled, put));
    }
    s0 = f32x4.add(s0, s1);
    total += <f64>f32x4.extract_lane(s0, 0) + <f64>f32x4.extract_lane(s0, 1) + <f64>f32x4.extract_lane(s0, 2) + <f64>f32x4.extract_lane(s0, 3);
  }
  // Up to three vectors, then up to three floats (a tail float costs a whole vector exp).
  let st = f32x4.splat(0);
  for (; j + 4 <= c; j += 4) {
    const o = <usize>j << 2;
    st = f32x4.add(st, expAt(row + o, out + o, vm, vs, k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, clamp, scaled, put));
  }
  total += <f64>f32x4.extract_lane(st, 0) + <f64>f32x4.extract_lane(st, 1) + <f64>f32x4.extract_lane(st, 2) + <f64>f32x4.extract_lane(st, 3);
  for (; j < c; j++) {
    const k = load<f32>(row + (<usize>j << 2));
    const x = clamp ? max(min(k, <f32>1), <f32>-1) : k;
    const e = expNeg1((x - m) * scale);
    if (put) store<f32>(out + (<usize>j << 2), clamp && x != k ? 0 : e);
    total += <f64>e;
  }
  return total;
}

/** dst[j] = a * src[j] - u (dst may equal src). */
export function rowAffine(src: usize, dst: usize, c: i32, a: f32, u: f32): void {
  finishRow(AFFINE, src, dst, c, a, u, 0);
}

/** dst[j] = finish(src[j]) for j < c (dst may equal src). */
// @ts-ignore: decorator
@inline function finishRow(kind: i32, src: usize, dst: usize, c: i32, p: f32, q: f32, r: f32): void {
  const vp = f32x4.splat(p), vq = f32x4.splat(q), vr = f32x4.splat(r);
  let j = 0;
  for (; j + 4 <= c; j += 4) {
    const o = <usize>j << 2;
    v128.store(dst + o, finish(kind, v128.load(src + o), vp, vq, vr));
  }
  for (; j < c; j++) {
    const o = <usize>j << 2;
    store<f32>(dst + o, finish1(kind, load<f32>(src + o), p, q, r));
  }
}

/**
 * `rowAffine(g, g, c, a, u)` and `rowMax(next, c)` in one pass: the pass that finishes a row also
 * reads the next row, whose values arrive while this row's are in cache (crossEntropy's plain rows, softmax).
 * The maximum is `rowMax(next, c)`'s: one loop serves both (`maxThen`).
 */
export function rowAffineMax(g: usize, c: i32, a: f32, u: f32, next: usize): f32 {
  return maxThen(next, c, AFFINE, g, g, a, u, 0);
}

/** out[j] = a * out[j] + b * x[j], in place. */
export function rowAxpby(out: usize, x: usize, c: i32, a: f32, b: f32): void {
  const va = f32x4.splat(a);
  const vb = f32x4.splat(b);
  let j = 0;
  for (; j + 4 <= c; j += 4) {
    const o = <usize>j << 2;
    v128.store(out + o, f32x4.add(f32x4.mul(v128.load(out + o), va), f32x4.mul(vb, v128.load(x + o))));
  }
  for (; j < c; j++) {
    const o = <usize>j << 2;
    store<f32>(out + o, load<f32>(out + o) * a + b * load<f32>(x + o));
  }
}

/**
 * Logit soft-capping (Gemma-2): cap[j] = s tanh(x[j] / s) - h and d[j] = 1 - tanh^2 (the
 * derivative), in float64 rounded once, with h = s tanh(max x / s) the capped row's maximum
 * (tanh is increasing), which is returned: the stored values are the capped logits minus
 * their maximum, exact to float32's relative precision where the softmax needs them (near
 * the maximum), however large the cap and the logits. Only rows of a call with a softcap
 * come here, so the uncapped kernels keep their loops.
 */
export function rowSoftcap(x: usize, cap: usize, d: usize, c: i32, s: f64): f64 {
  const inv = 1 / s;
  const h = s * Math.tanh(<f64>rowMax(x, c) * inv);
  for (let j = 0; j < c; j++) {
    const o = <usize>j << 2;
    const t = Math.tanh(<f64>load<f32>(x + o) * inv);
    store<f32>(cap + o, <f32>(s * t - h));
    store<f32>(d + o, <f32>(1 - t * t));
  }
  return h;
}

/** out[j] *= d[j], in place. */
export function rowMul(out: usize, d: usize, c: i32): void {
  let j = 0;
  for (; j + 4 <= c; j += 4) {
    const o = <usize>j << 2;
    v128.store(out + o, f32x4.mul(v128.load(out + o), v128.load(d + o)));
  }
  for (; j < c; j++) {
    const o = <usize>j << 2;
    store<f32>(out + o, load<f32>(out + o) * load<f32>(d + o));
  }
}

/** Zero-fills a row of c floats. */
// @ts-ignore: decorator
@inline export function rowZero(out: usize, c: i32): void {
  memory.fill(out, 0, <usize>c << 2);
}

/** dst[j] = scale * ((src[j] - m) - l): log-probabilities with m the row max, l = log sum
 * e^(src - m); the first difference is exact near the max, so nothing is lost to
 * rounding a large log-sum-exp (dst may equal src). */
export function rowLogProb(src: usize, dst: usize, c: i32, m: f32, l: f32, scale: f32): void {
  finishRow(LOG_PROB, src, dst, c, m, l, scale);
}

/** `rowLogProb(src, dst, c, m, l, scale)` and `rowMax(next, c)` in one pass (as `rowAffineMax`). */
export function rowLogProbMax(src: usize, dst: usize, c: i32, m: f32, l: f32, scale: f32, next: usize): f32 {
  return maxThen(next, c, LOG_PROB, dst, src, m, l, scale);
}

/**
 * Longest rows (floats) whose finishing pass takes the next row's maximum (`softmax_rows`): longer
 * rows come from memory in every pass, where logSoftmax's fold measured 2-3% slower (C = 32000,
 * 100000) and softmax's no faster; at C = 1000 softmax takes 0.81-0.89 of the time, logSoftmax
 * 0.93-0.98 (bench/README.md, issue 21, session 12).
 */
const FOLD: i32 = 16384;

/**
 * softmax (log = 0) or log_softmax (log = 1) of each row of x [rows, c] into out
 * (out may equal x). The pass that finishes a row takes the next row's maximum
 * (`rowAffineMax`, `rowLogProbMax`) where rows are at most FOLD floats.
 */
export function softmax_rows(x: usize, out: usize, rows: i32, c: i32, log: i32): void {
  if (rows <= 0) return;
  const stride = <usize>c << 2;
  let m = rowMax(x, c);
  for (let i = 0; i < rows; i++) {
    const row = x + <usize>i * stride, dst = out + <usize>i * stride, next = row + stride;
    const fold = i + 1 < rows && c <= FOLD;
    if (log) {
      const l = <f32>Math.log(rowExpSum(row, c, m, 1, 0));
      if (fold) m = rowLogProbMax(row, dst, c, m, l, 1, next);
      else rowLogProb(row, dst, c, m, l, 1);
    } else {
      const a = <f32>(1 / rowExpSum(row, c, m, 1, dst));
      if (fold) m = rowAffineMax(dst, c, a, 0, next);
      else rowAffine(dst, dst, c, a, 0);
    }
    if (!fold && i + 1 < rows) m = rowMax(next, c);
  }
}

/**
 * Vector-Jacobian product of softmax (log = 0) or log_softmax (log = 1) with the
 * upstream rows `up`, into out (out may equal x, not up):
 *   softmax      dx = y * (g - sum_k g_k y_k),  y = softmax(x)
 *   log_softmax  dx = g - softmax(x) * sum_k g_k
 * For softmax, g - sum_k g_k y_k is taken as (g - g_r) - sum_k y_k (g_k - g_r), g_r the
 * upstream at the row's maximum r: when y is nearly one-hot the big term y_r (g_r - g_r)
 * is exactly 0 instead of cancelling (sum_k y_k = 1).
 * For log_softmax, dx_r = g_r - y_r (g_r + G_o) (G_o = sum_{k != r} g_k) cancels as
 * y_r -> 1; it is written in float64 as (g_r S_o - G_o) / S, with S_o the sum of the
 * other exponentials (kept out of the float32 sum, so it keeps its relative accuracy:
 * 1 - y_r = S_o / S) and S = 1 + S_o.
 */
export function softmax_vjp(x: usize, up: usize, out: usize, rows: i32, c: i32, log: i32): void {
  for (let i = 0; i < rows; i++) {
    const off = (<usize>i * <usize>c) << 2;
    const m = rowMax(x + off, c);
    const r = rowFind(x + off, c, m);
    if (log) {
      const So = rowExpSumExcept(x + off, c, r, m, 1, out + off);
      const gr = <f64>load<f32>(up + off + (<usize>r << 2)), Go = rowSumExcept(up + off, c, r);
      rowAxpby(out + off, up + off, c, <f32>(-(Go + gr) / (1 + So)), 1);
      store<f32>(out + off + (<usize>r << 2), <f32>((gr * So - Go) / (1 + So)));
    } else {
      const sum = rowExpSum(x + off, c, m, 1, out + off);
      rowAffine(out + off, out + off, c, <f32>(1 / sum), 0);
      const gr = load<f32>(up + off + (<usize>r << 2));
      const dot = rowDotBelow(out + off, up + off, gr, c); // sum_k y_k (g_r - g_k)
      rowMulShifted(out + off, up + off, c, gr, <f32>dot);
    }
  }
}

/** out[j] = out[j] * ((g[j] - gr) + d), in place. */
function rowMulShifted(out: usize, g: usize, c: i32, gr: f32, d: f32): void {
  const vr = f32x4.splat(gr), vd = f32x4.splat(d);
  let j = 0;
  for (; j + 4 <= c; j += 4) {
    const o = <usize>j << 2;
    v128.store(out + o, f32x4.mul(v128.load(out + o), f32x4.add(f32x4.sub(v128.load(g + o), vr), vd)));
  }
  for (; j < c; j++) {
    const o = <usize>j << 2;
    store<f32>(out + o, load<f32>(out + o) * ((load<f32>(g + o) - gr) + d));
  }
}
