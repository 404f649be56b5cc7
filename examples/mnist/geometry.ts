/**
 * How tight and how far apart the classes are on the unit sphere: the angles the demo's
 * table reports, from the normalised test features.
 *
 * @module
 */

/** The angular statistics of normalised features. */
export interface Angles {
  /** Mean over the test digits of the angle (degrees) between a digit's feature and its class's mean direction. */
  intra: number;
  /** The smallest angle (degrees) between two classes' mean directions. */
  interMin: number;
  /** Each class's mean direction (unit vectors, `[classes, dim]`). */
  centres: Float64Array;
}

/** Rows of `[n, dim]` scaled to unit length (a zero row stays zero). */
export function normalise(features: Float32Array, dim: number): Float64Array {
  const out = new Float64Array(features.length);
  for (let i = 0; i < features.length; i += dim) {
    let s = 0;
    for (let k = 0; k < dim; k++) s += features[i + k] ** 2;
    const r = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let k = 0; k < dim; k++) out[i + k] = features[i + k] * r;
  }
  return out;
}

/** The angle in degrees between two unit vectors at offsets `i` of `a` and `j` of `b`. */
function angle(a: Float64Array, i: number, b: Float64Array, j: number, dim: number): number {
  let d = 0;
  for (let k = 0; k < dim; k++) d += a[i + k] * b[j + k];
  return (Math.acos(Math.min(1, Math.max(-1, d))) * 180) / Math.PI;
}

/** Mean intra-class angle and minimum inter-class angle of features `[n, dim]` with labels in `[0, classes)`. */
export function angles(features: Float32Array, dim: number, labels: Int32Array, classes: number): Angles {
  const unit = normalise(features, dim);
  const sums = new Float64Array(classes * dim);
  labels.forEach((y, i) => {
    for (let k = 0; k < dim; k++) sums[y * dim + k] += unit[i * dim + k];
  });
  const centres = normalise(Float32Array.from(sums), dim);
  let intra = 0;
  labels.forEach((y, i) => (intra += angle(unit, i * dim, centres, y * dim, dim)));
  let interMin = 180;
  for (let a = 0; a < classes; a++) {
    for (let b = a + 1; b < classes; b++) interMin = Math.min(interMin, angle(centres, a * dim, centres, b * dim, dim));
  }
  return { intra: intra / labels.length, interMin, centres };
}
