/**
 * Plain-TypeScript float64 softmax primitives: the reference every kernel is
 * tested against, and the last-resort backend.
 *
 * @module
 */

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
