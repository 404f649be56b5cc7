/**
 * Plain-TypeScript float64 softmax primitives: the reference every kernel is
 * tested against, and the last-resort backend.
 *
 * @module
 */
import type { SoftmaxProblem } from "../kernels/softmax.ts";

/**
 * Writes `log_softmax` of row `z[offset .. offset+c)` into `out` (float64) and
 * returns the row's log-sum-exp. The maximum is subtracted before exponentiating.
 */
export function logSoftmaxRow(z: ArrayLike<number>, offset: number, c: number, out: Float64Array, scale = 1): number {
  let m = -Infinity;
  for (let j = 0; j < c; j++) m = Math.max(m, z[offset + j] * scale);
  let s = 0;
  for (let j = 0; j < c; j++) s += Math.exp(z[offset + j] * scale - m);
  const lse = m + Math.log(s);
  for (let j = 0; j < c; j++) out[j] = z[offset + j] * scale - lse;
  return lse;
}

/**
 * Reference softmax transform: the output, or the vector-Jacobian product with `up`:
 * softmax `dx = y (g - sum g y)`, log_softmax `dx = g - softmax(x) sum g`.
 */
export function softmaxTransform(p: SoftmaxProblem): Float32Array {
  const { n, c, x, up, log } = p;
  const out = p.out?.data ?? new Float32Array(n * c);
  const logp = new Float64Array(c);
  for (let i = 0; i < n; i++) {
    logSoftmaxRow(x, i * c, c, logp);
    if (!up) {
      for (let j = 0; j < c; j++) out[i * c + j] = log ? logp[j] : Math.exp(logp[j]);
      continue;
    }
    let dot = 0, sum = 0;
    for (let j = 0; j < c; j++) {
      dot += up[i * c + j] * Math.exp(logp[j]);
      sum += up[i * c + j];
    }
    for (let j = 0; j < c; j++) {
      const y = Math.exp(logp[j]);
      out[i * c + j] = log ? up[i * c + j] - y * sum : y * (up[i * c + j] - dot);
    }
  }
  return out;
}
