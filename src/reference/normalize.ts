/**
 * Row-wise L2 normalisation as `F.normalize` (`v / max(||v||, 1e-12)`) and its
 * backward pass, in float64.
 *
 * @module
 */

/** The rows of `[rows, d]` normalised, and each row's norm. */
export function normalizeRows(m: ArrayLike<number>, rows: number, d: number): [Float64Array, Float64Array] {
  const out = new Float64Array(rows * d), norms = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let q = 0; q < d; q++) s += m[r * d + q] ** 2;
    norms[r] = Math.sqrt(s);
    const inv = 1 / Math.max(norms[r], 1e-12);
    for (let q = 0; q < d; q++) out[r * d + q] = m[r * d + q] * inv;
  }
  return [out, norms];
}

/**
 * The gradient w.r.t. the rows given the gradient `g` w.r.t. the normalised rows `h`:
 * `(g - h (h . g)) / ||v||`, or `g / 1e-12` where `||v|| < 1e-12` (the clamp passes no
 * gradient to the norm), as PyTorch.
 */
export function normalizeBackward(
  g: ArrayLike<number>,
  h: Float64Array,
  norms: Float64Array,
  rows: number,
  d: number,
): Float64Array {
  const out = new Float64Array(rows * d);
  for (let r = 0; r < rows; r++) {
    if (norms[r] < 1e-12) {
      for (let q = 0; q < d; q++) out[r * d + q] = g[r * d + q] / 1e-12;
      continue;
    }
    let dot = 0;
    for (let q = 0; q < d; q++) dot += h[r * d + q] * g[r * d + q];
    for (let q = 0; q < d; q++) out[r * d + q] = (g[r * d + q] - h[r * d + q] * dot) / norms[r];
  }
  return out;
}
