/**
 * What a user would write without softmargin for the face margin losses of SPEC §7: AdaFace,
 * CurricularFace and MagFace in TensorFlow.js ops, for `tf.valueAndGrads` w.r.t. the embeddings
 * and the class weights (bench/face_head_bench.ts). Each replaces only the label's logit, as
 * `tfArcfaceLoss` does (bench/impls.ts): the label's cosine picked by a one-hot mask, its new
 * logit scattered back through the mask, then `tf.losses.softmaxCrossEntropy`. Defaults as SPEC's.
 *
 * @module
 */
import { tf, tfNormalizeRows } from "./impls.ts";

/** The cosines `normalize(x) normalize(W)^T` `[N, C]`. */
export function tfCosines(x: tf.Tensor, W: tf.Tensor): tf.Tensor {
  return tf.matMul(tfNormalizeRows(x).unit, tfNormalizeRows(W).unit, false, true);
}

/**
 * The identity with no gradient (`torch.no_grad`, `.detach()`): TF.js 4.22 has no
 * `stopGradient`, so a custom gradient of zeros.
 */
export const tfStopGradient: (t: tf.Tensor) => tf.Tensor = tf.customGrad((t) => ({
  value: tf.clone(t as tf.Tensor),
  gradFunc: (dy) => tf.zerosLike(dy as tf.Tensor),
})) as (t: tf.Tensor) => tf.Tensor;

/** Mean cross-entropy of `s * (cosines with the label's replaced by target)`; `cy` the label's cosine `[N]`. */
function replaceTarget(c: tf.Tensor, cy: tf.Tensor, target: tf.Tensor, onehot: tf.Tensor, mask: tf.Tensor, s: number) {
  const logits = tf.mul(tf.add(c, tf.mul(mask, tf.expandDims(tf.sub(target, cy), 1))), s);
  return tf.losses.softmaxCrossEntropy(onehot, logits, undefined, 0, tf.Reduction.MEAN) as tf.Scalar;
}

/**
 * AdaFace (head.py of mk-minchul/AdaFace, the label's logit only): `norms` `[N]` a constant
 * (computed outside the differentiated function: detached); the state `{mean, std}` updated
 * first; `g = clip(h (n - mean') / (std' + eps), -1, 1)`; cosines clipped to `[-1 + eps, 1 - eps]`;
 * label logit `s (cos(clip(acos c_y - m g, eps, pi - eps)) - m - m g)`.
 */
export function tfAdafaceLoss(
  cos: tf.Tensor,
  norms: tf.Tensor,
  onehot: tf.Tensor,
  mask: tf.Tensor,
  state: { mean: number; std: number },
  { s = 64, m = 0.4, h = 0.333, alpha = 0.01, eps = 1e-3 } = {},
): tf.Scalar {
  const n = tf.clipByValue(norms, 0.001, 100);
  const { mean, variance } = tf.moments(n);
  const count = n.shape[0]!;
  const mean2 = tf.add(tf.mul(mean, alpha), (1 - alpha) * state.mean);
  const std2 = tf.add(tf.mul(tf.sqrt(tf.mul(variance, count / (count - 1))), alpha), (1 - alpha) * state.std);
  const g = tf.clipByValue(tf.div(tf.mul(tf.sub(n, mean2), h), tf.add(std2, eps)), -1, 1);
  const c = tf.clipByValue(cos, -1 + eps, 1 - eps);
  const cy = tf.sum(tf.mul(c, mask), 1);
  const theta = tf.clipByValue(tf.sub(tf.acos(cy), tf.mul(g, m)), eps, Math.PI - eps);
  const target = tf.sub(tf.cos(theta), tf.add(m, tf.mul(g, m)));
  return replaceTarget(c, cy, target, onehot, mask, s);
}

/**
 * CurricularFace (head/metrics.py of HuangYG123/CurricularFace): `phi = cos(theta_y + m)` where
 * `c_y > cos(pi - m)`, else `c_y - m sin(pi - m)`; `t' = momentum mean(c_y) + (1 - momentum) t`
 * (detached); a non-target with `c_j >= phi_i` (`greaterEqual`: TF.js 4.22 has no gradient for
 * `Greater`, which `tf.where`'s condition needs; they differ at equality only) has logit
 * `s c_j (t' + c_j)`.
 */
export function tfCurricularFaceLoss(
  cos: tf.Tensor,
  onehot: tf.Tensor,
  mask: tf.Tensor,
  state: { t: number },
  { s = 64, m = 0.5, momentum = 0.01 } = {},
): tf.Scalar {
  const c = tf.clipByValue(cos, -1, 1);
  const cy = tf.sum(tf.mul(c, mask), 1);
  const sin = tf.sqrt(tf.relu(tf.sub(1, tf.square(cy))));
  const phi = tf.sub(tf.mul(cy, Math.cos(m)), tf.mul(sin, Math.sin(m)));
  const th = Math.cos(Math.PI - m), mm = Math.sin(Math.PI - m) * m;
  const target = tf.where(tf.greaterEqual(cy, th), phi, tf.sub(cy, mm));
  const t = tf.add(tf.mul(tfStopGradient(tf.mean(cy)), momentum), (1 - momentum) * state.t);
  const hard = tf.greaterEqual(c, tf.expandDims(phi, 1));
  const others = tf.where(hard, tf.mul(c, tf.add(c, t)), c);
  // The label's column of `others` is replaced: its gradient goes through `target` alone.
  const logits = tf.mul(tf.add(tf.mul(others, tf.sub(1, mask)), tf.mul(mask, tf.expandDims(target, 1))), s);
  return tf.losses.softmaxCrossEntropy(onehot, logits, undefined, 0, tf.Reduction.MEAN) as tf.Scalar;
}

/**
 * MagFace (MagLinear + MagLoss of IrvingMeng/MagFace): `a = clamp(||x||, l, u)` (differentiable),
 * `m(a)` linear from `lm` at `l` to `um` at `u`; label logit `s cos(theta_y + m(a))` where
 * `c_y > 0` (easy margin), else `s c_y`; value `CE + lambda mean(a / u^2 + 1 / a)`.
 */
export function tfMagfaceLoss(
  x: tf.Tensor,
  W: tf.Tensor,
  onehot: tf.Tensor,
  mask: tf.Tensor,
  { s = 64, l = 10, u = 110, lm = 0.45, um = 0.8, lambda = 35 } = {},
): tf.Scalar {
  const a = tf.clipByValue(tf.norm(x, 2, 1), l, u);
  const margin = tf.add(tf.mul(tf.sub(a, l), (um - lm) / (u - l)), lm);
  const c = tf.clipByValue(tfCosines(x, W), -1, 1);
  const cy = tf.sum(tf.mul(c, mask), 1);
  const sin = tf.sqrt(tf.relu(tf.sub(1, tf.square(cy))));
  const phi = tf.sub(tf.mul(cy, tf.cos(margin)), tf.mul(sin, tf.sin(margin)));
  const target = tf.where(tf.greaterEqual(cy, 0), phi, cy);
  const g = tf.mean(tf.add(tf.div(a, u * u), tf.reciprocal(a)));
  return tf.add(replaceTarget(c, cy, target, onehot, mask, s), tf.mul(g, lambda)) as tf.Scalar;
}
