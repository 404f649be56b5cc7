/**
 * What a user would write without softmargin, shared by the benchmarks: plain-TypeScript
 * loops (cross-entropy, ArcFace, a matrix product) and ArcFace in TensorFlow.js ops.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";

/**
 * The cross-entropy a user would write by hand: three passes per row (max; exp stored in
 * the gradient while summing; scale), float64 arithmetic, fresh gradient. Returns the mean loss.
 *   loss_i = log(sum_j exp(z_ij - m_i)) + m_i - z_{i,y_i}
 *   dz_ij  = softmax(z_i)_j / N - [j == y_i] / N
 */
export function plainCrossEntropy(
  z: Float32Array,
  labels: Int32Array,
  n: number,
  c: number,
  grad: Float32Array | null,
): number {
  const invN = 1 / n;
  let total = 0;
  for (let i = 0; i < n; i++) {
    const off = i * c;
    const end = off + c;
    let m = -Infinity;
    for (let j = off; j < end; j++) {
      const v = z[j];
      if (v > m) m = v;
    }
    let s = 0;
    if (grad) {
      for (let j = off; j < end; j++) {
        const e = Math.exp(z[j] - m);
        grad[j] = e;
        s += e;
      }
      const k = invN / s;
      for (let j = off; j < end; j++) grad[j] *= k;
      grad[off + labels[i]] -= invN;
    } else {
      for (let j = off; j < end; j++) s += Math.exp(z[j] - m);
    }
    total += Math.log(s) + m - z[off + labels[i]];
  }
  return total * invN;
}

/**
 * ArcFace as a user would write it by hand, insightface-style: the margin is applied to
 * the label's cosine only, `phi = cos(theta + m)` where `cos > cos(pi - m)`, else
 * `cos - m sin(pi - m)`; the logits are `s cos` with the label's replaced by `s phi`, then
 * the three-pass softmax cross-entropy of `plainCrossEntropy` (float64 arithmetic, fresh
 * gradient, mean over rows). The gradient w.r.t. the cosines is `s p_j / N` off the label
 * and `s (p_y - 1) phi'(cos_y) / N` on it. Cosines are not clamped (the user's cosines are
 * in [-1, 1]). Returns the mean loss.
 */
export function plainArcface(
  cos: Float32Array,
  labels: Int32Array,
  n: number,
  c: number,
  s: number,
  margin: number,
  grad: Float32Array | null,
): number {
  const cm = Math.cos(margin), sm = Math.sin(margin);
  const th = Math.cos(Math.PI - margin), mm = Math.sin(Math.PI - margin) * margin;
  const invN = 1 / n;
  let total = 0;
  for (let i = 0; i < n; i++) {
    const off = i * c;
    const end = off + c;
    const y = off + labels[i];
    const cy = cos[y];
    const sin = Math.sqrt(Math.max(0, 1 - cy * cy));
    const far = cy > th;
    const ty = s * (far ? cy * cm - sin * sm : cy - mm);
    let m = -Infinity;
    for (let j = off; j < end; j++) {
      const z = j === y ? ty : s * cos[j];
      if (z > m) m = z;
    }
    let sum = 0;
    if (grad) {
      for (let j = off; j < end; j++) {
        const e = Math.exp((j === y ? ty : s * cos[j]) - m);
        grad[j] = e;
        sum += e;
      }
      const k = (s * invN) / sum;
      for (let j = off; j < end; j++) grad[j] *= k;
      grad[y] = (grad[y] - s * invN) * (far ? cm + (sm * cy) / sin : 1);
    } else {
      for (let j = off; j < end; j++) sum += Math.exp((j === y ? ty : s * cos[j]) - m);
    }
    total += Math.log(sum) + m - ty;
  }
  return total * invN;
}

/**
 * `out[i, j] = sum_k x[i, k] w[j, k]` (x [n, d], w [c, d], out [n, c]): the matrix
 * product of a linear head as a user would write it, a dot product per output, float64
 * accumulation.
 */
export function plainMatMulT(
  x: Float32Array,
  w: Float32Array,
  out: Float32Array,
  n: number,
  d: number,
  c: number,
): void {
  for (let i = 0; i < n; i++) {
    const xo = i * d;
    for (let j = 0; j < c; j++) {
      const wo = j * d;
      let acc = 0;
      for (let k = 0; k < d; k++) acc += x[xo + k] * w[wo + k];
      out[i * c + j] = acc;
    }
  }
}

/**
 * ArcFace on a tensor of cosines `[N, C]` in TensorFlow.js ops, as a TF.js user would
 * write it: clamp to [-1, 1]; gather the label's cosine with a one-hot mask (multiply and
 * sum over the row); `phi` (with insightface's threshold branch, by `tf.where`); scatter
 * `phi - cos_y` back onto the label's column through the mask; scale; then
 * `tf.losses.softmaxCrossEntropy` (mean over rows). Differentiable with `tf.grad`.
 *
 * `onehot` is `tf.oneHot(labels, C)` in its default int32 dtype (TF.js 4.22's wasm kernel
 * gets a float32 one-hot wrong; see README), `mask` is the same cast to float32.
 */
export function tfArcfaceLoss(
  cos: tf.Tensor,
  onehot: tf.Tensor,
  mask: tf.Tensor,
  s: number,
  margin: number,
): tf.Scalar {
  const cm = Math.cos(margin), sm = Math.sin(margin);
  const th = Math.cos(Math.PI - margin), mm = Math.sin(Math.PI - margin) * margin;
  const c = tf.clipByValue(cos, -1, 1);
  const cy = tf.sum(tf.mul(c, mask), 1); // [N]
  const sin = tf.sqrt(tf.relu(tf.sub(1, tf.square(cy))));
  const phi = tf.sub(tf.mul(cy, cm), tf.mul(sin, sm));
  // greaterEqual, not greater: TF.js 4.22 registers no gradient for Greater, and tf.grad walks
  // through the condition of tf.where ("gradient function not found for Greater"). The two
  // differ only at cos_y = cos(pi - m) exactly.
  const target = tf.where(tf.greaterEqual(cy, th), phi, tf.sub(cy, mm));
  const logits = tf.mul(tf.add(c, tf.mul(mask, tf.expandDims(tf.sub(target, cy), 1))), s);
  return tf.losses.softmaxCrossEntropy(onehot, logits, undefined, 0, tf.Reduction.MEAN) as tf.Scalar;
}

/** Rows of `v [R, D]` divided by `max(||row||, 1e-12)` (as `F.normalize`), and the factors `[R, 1]`. */
export function tfNormalizeRows(v: tf.Tensor): { unit: tf.Tensor; inv: tf.Tensor } {
  const inv = tf.rsqrt(tf.maximum(tf.sum(tf.square(v), 1, true), 1e-24));
  return { unit: tf.mul(v, inv), inv };
}
