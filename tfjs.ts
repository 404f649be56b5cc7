/**
 * The TensorFlow.js adapter: every loss of this library as a function of `tf.Tensor`s
 * (through `tf.customGrad`, with this library's values and gradients), for
 * `optimizer.minimize`, `tf.variableGrads` and custom training loops. It imports no
 * TensorFlow.js itself: pass your `tf` namespace to {@linkcode tfLosses}.
 *
 * @example Softmax cross-entropy of TF.js logits, differentiated by TF.js
 * ```ts
 * import * as tf from "@tensorflow/tfjs";
 * import { tfLosses } from "@softmargin/softmargin/tfjs";
 * await tf.setBackend("cpu");
 * const { crossEntropy } = tfLosses(tf);
 * const logits = tf.tensor2d([[2, 1, 0.1], [0.5, 2.5, 0.3]]);
 * const g = tf.grad((z: tf.Tensor) => crossEntropy({ logits: z, labels: [0, 1] }))(logits);
 * console.log(g.shape); // [2, 3]: (softmax - onehot) / 2
 * ```
 *
 * @module
 */
export type { Labels, Reduction } from "./src/types.ts";
export type { SyncLosses } from "./src/losses/mod.ts";
export {
  type LossInputs,
  type LossName,
  type LossOptions,
  type LossParts,
  type ScalarOf,
  type TensorOf,
  type TfInputs,
  type TfLike,
  type TfLoss,
  type TfLosses,
  tfLosses,
  type TfLossesOptions,
  type TfLossOptions,
  type TfOptions,
  type TfReduction,
  type TfResult,
  type TfTensor,
  type VectorOf,
} from "./src/tfjs/adapter.ts";
