/**
 * Reference kernel of the `metric` family (`ntXent`, `tripletMargin`, `multiSimilarity`,
 * `proxyAnchor`), in float64 and written as SPEC §8 reads: the normalised rows, every
 * similarity, every pair, every triplet (loops, never a list), then the chain rule.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import { type MetricProblem, sigmoid, softplus } from "../kernels/metric.ts";
import { normalizeBackward, normalizeRows } from "./normalize.ts";

/** `sum_q a[i, q] b[j, q]` of two `[*, d]` matrices. */
function dot(a: Float64Array, i: number, b: Float64Array, j: number, d: number): number {
  let s = 0;
  for (let q = 0; q < d; q++) s += a[i * d + q] * b[j * d + q];
  return s;
}

/** `log(1 + sum_k e^(x_k))` of `x`, and its derivatives `e^(x_k) / (1 + sum)`. */
function logOnePlus(x: number[]): [number, number[]] {
  const m = Math.max(0, ...x);
  let s = Math.exp(-m);
  for (const v of x) s += Math.exp(v - m);
  return [m + Math.log(s), x.map((v) => Math.exp(v - m) / s)];
}

/**
 * The loss of the problem and its derivatives w.r.t. the similarities (`A`, `[B, B]` or
 * `[B, C]`), or for tripletMargin w.r.t. the distances (`A`, `[B, B]`).
 */
function lossAndA(p: MetricProblem, h: Float64Array, hp: Float64Array | null): [number, Float64Array] {
  const { b, d, labels } = p;
  const cols = hp ? p.c : b;
  const S = new Float64Array(b * cols);
  for (let i = 0; i < b; i++) for (let j = 0; j < cols; j++) S[i * cols + j] = dot(h, i, hp ?? h, j, d);
  const A = new Float64Array(b * cols);
  const pos = (a: number, j: number) => j !== a && labels[j] === labels[a];
  const neg = (a: number, j: number) => labels[j] !== labels[a];
  if (p.loss === "ntXent") {
    // l_ap = log(1 + sum_n e^((s_an - s_ap)/t)), mean over the pairs.
    const t = p.temperature;
    let total = 0;
    for (let a = 0; a < b; a++) {
      for (let q = 0; q < b; q++) {
        if (!pos(a, q)) continue;
        const ns: number[] = [], js: number[] = [];
        for (let n = 0; n < b; n++) if (neg(a, n)) (ns.push((S[a * b + n] - S[a * b + q]) / t), js.push(n));
        const [l, w] = logOnePlus(ns);
        total += l;
        js.forEach((n, k) => {
          A[a * b + n] += w[k] / t;
          A[a * b + q] -= w[k] / t;
        });
      }
    }
    return [p.pairs ? total / p.pairs : 0, A.map((x) => (p.pairs ? x / p.pairs : 0))];
  }
  if (p.loss === "multiSimilarity") {
    const { alpha, beta, base } = p;
    let total = 0;
    for (let a = 0; a < b; a++) {
      const ps: number[] = [], ns: number[] = [];
      for (let j = 0; j < b; j++) if (pos(a, j)) ps.push(j);
      for (let j = 0; j < b; j++) if (neg(a, j)) ns.push(j);
      const [lp, wp] = logOnePlus(ps.map((j) => -alpha * (S[a * b + j] - base)));
      const [ln, wn] = logOnePlus(ns.map((j) => beta * (S[a * b + j] - base)));
      total += lp / alpha + ln / beta;
      ps.forEach((j, k) => A[a * b + j] -= wp[k] / b);
      ns.forEach((j, k) => A[a * b + j] += wn[k] / b);
    }
    return [total / b, A];
  }
  if (p.loss === "proxyAnchor") {
    const { alpha, margin, c } = p;
    let pos = 0, negative = 0;
    for (let k = 0; k < c; k++) {
      const mine: number[] = [], others: number[] = [];
      for (let i = 0; i < b; i++) (labels[i] === k ? mine : others).push(i);
      if (mine.length) {
        const [l, w] = logOnePlus(mine.map((i) => -alpha * (S[i * c + k] - margin)));
        pos += l / p.present;
        mine.forEach((i, q) => A[i * c + k] -= (alpha * w[q]) / p.present);
      }
      const [l, w] = logOnePlus(others.map((i) => alpha * (S[i * c + k] + margin)));
      negative += l / c;
      others.forEach((i, q) => A[i * c + k] += (alpha * w[q]) / c);
    }
    return [pos + negative, A];
  }
  // tripletMargin: A holds dL/dd. Every triplet, mined, then averaged over those with l > 0.
  const dist = new Float64Array(b * b);
  for (let i = 0; i < b; i++) {
    for (let j = 0; j < b; j++) {
      let s = 0;
      for (let q = 0; q < d; q++) s += (h[i * d + q] - h[j * d + q]) ** 2;
      dist[i * b + j] = Math.sqrt(s);
    }
  }
  const { margin, mining, soft } = p;
  let total = 0, count = 0;
  const take = (a: number, q: number, n: number) => {
    const v = dist[a * b + q] - dist[a * b + n] + margin;
    const l = soft ? softplus(v) : Math.max(v, 0);
    if (!(l > 0)) return;
    const g = soft ? sigmoid(v) : 1;
    total += l;
    count++;
    A[a * b + q] += g;
    A[a * b + n] -= g;
  };
  for (let a = 0; a < b; a++) {
    if (mining === "batchHard") {
      // The farthest positive and the nearest negative, ties to the smaller index.
      let q = -1, n = -1;
      for (let j = 0; j < b; j++) {
        if (pos(a, j) && (q < 0 || dist[a * b + j] > dist[a * b + q])) q = j;
        if (neg(a, j) && (n < 0 || dist[a * b + j] < dist[a * b + n])) n = j;
      }
      if (q >= 0 && n >= 0) take(a, q, n);
      continue;
    }
    for (let q = 0; q < b; q++) {
      if (!pos(a, q)) continue;
      for (let n = 0; n < b; n++) {
        if (!neg(a, n)) continue;
        const gap = dist[a * b + n] - dist[a * b + q];
        if (mining === "hard" && !(gap <= 0)) continue;
        if (mining === "semihard" && !(gap > 0 && gap <= margin)) continue;
        take(a, q, n);
      }
    }
  }
  return [count ? total / count : 0, A.map((x) => (count ? x / count : 0))];
}

/** The `metric` family on the reference backend. */
export function metric(p: MetricProblem): Raw {
  const { b, d, c } = p;
  const [h, norms] = normalizeRows(p.f, b, d);
  const [hp, pnorms] = p.proxies ? normalizeRows(p.proxies, c, d) : [null, null];
  const [loss, A] = lossAndA(p, h, hp);
  const rows = [Float64Array.of(loss)];
  if (!p.grad) return { rows, grads: {} };
  const u = p.upstream;
  const gh = new Float64Array(b * d);
  if (p.loss === "tripletMargin") {
    // d_ij = ||h_i - h_j||: d d_ij / d h_i = (h_i - h_j) / d_ij, 0 at d_ij = 0.
    for (let i = 0; i < b; i++) {
      for (let j = 0; j < b; j++) {
        const g = A[i * b + j];
        if (g === 0) continue;
        let s = 0;
        for (let q = 0; q < d; q++) s += (h[i * d + q] - h[j * d + q]) ** 2;
        if (s === 0) continue;
        const w = (u * g) / Math.sqrt(s);
        for (let q = 0; q < d; q++) {
          const diff = w * (h[i * d + q] - h[j * d + q]);
          gh[i * d + q] += diff;
          gh[j * d + q] -= diff;
        }
      }
    }
  } else if (hp) {
    // S = h hp^T: dL/dh = A hp, dL/dhp = A^T h.
    const gp = new Float64Array(c * d);
    for (let i = 0; i < b; i++) {
      for (let k = 0; k < c; k++) {
        const a = u * A[i * c + k];
        for (let q = 0; q < d; q++) {
          gh[i * d + q] += a * hp[k * d + q];
          gp[k * d + q] += a * h[i * d + q];
        }
      }
    }
    const outP = p.outProxies?.data ?? new Float32Array(c * d);
    outP.set(normalizeBackward(gp, hp, pnorms as Float64Array, c, d));
    const outF = p.outF?.data ?? new Float32Array(b * d);
    outF.set(normalizeBackward(gh, h, norms, b, d));
    return { rows, grads: { f: outF, proxies: outP } };
  } else {
    // S = h h^T: dL/dh = (A + A^T) h.
    for (let i = 0; i < b; i++) {
      for (let j = 0; j < b; j++) {
        const a = u * A[i * b + j];
        if (a === 0) continue;
        for (let q = 0; q < d; q++) {
          gh[i * d + q] += a * h[j * d + q];
          gh[j * d + q] += a * h[i * d + q];
        }
      }
    }
  }
  const outF = p.outF?.data ?? new Float32Array(b * d);
  outF.set(normalizeBackward(gh, h, norms, b, d));
  return { rows, grads: { f: outF } };
}
