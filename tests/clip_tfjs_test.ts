// softmargin/tfjs with number inputs: clip's scale and siglip's scale and bias as scalar
// tensors get their gradients from the library, equal to TF.js's own autodiff of the loss
// composed from tf ops, and a learnable log-temperature trains through the adapter.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { tfLosses } from "../tfjs.ts";
import { assertAllClose } from "./helpers/assert.ts";
import { Rng } from "./helpers/random.ts";
import { unitRows } from "./helpers/specs_clip.ts";

const N = 7, D = 5;
const data = (t: tf.Tensor) => t.dataSync() as Float32Array;
const close = (a: tf.Tensor, e: tf.Tensor, label: string) => {
  const scale = Math.max(1e-3, ...Array.from(data(e), Math.abs));
  assertAllClose(data(a), data(e), { atol: 2e-6 * scale, rtol: 1e-5 }, label);
};
const pair = () => [unitRows(new Rng(31), N, D), unitRows(new Rng(32), N, D)].map((m) => tf.tensor2d(m.data, [N, D]));

/** open_clip's ClipLoss from tf ops. */
const tfClip = (a: tf.Tensor, b: tf.Tensor, s: tf.Tensor) => {
  const logits = tf.mul(s, tf.matMul(a, b, false, true));
  const y = tf.oneHot(tf.range(0, N, 1, "int32"), N);
  return tf.div(
    tf.add(tf.losses.softmaxCrossEntropy(y, logits), tf.losses.softmaxCrossEntropy(y, tf.transpose(logits))),
    2,
  );
};
/** open_clip's SigLipLoss from tf ops. */
const tfSiglip = (a: tf.Tensor, b: tf.Tensor, s: tf.Tensor, bias: tf.Tensor) => {
  const logits = tf.add(tf.mul(s, tf.matMul(a, b, false, true)), bias);
  const z = tf.sub(tf.mul(2, tf.eye(N)), 1);
  // (-log sigmoid(y) = softplus(-y); tf.logSigmoid's gradient fails under tf.grads in TF.js 4.22.)
  return tf.div(tf.sum(tf.softplus(tf.neg(tf.mul(z, logits)))), N);
};

before(async () => {
  const warn = console.warn;
  console.warn = (...a: unknown[]) => void (String(a[0]).includes("looks like you are running") || warn(...a));
  await tf.setBackend("cpu");
});

describe("tfjs adapter: number inputs as scalar tensors", () => {
  const { clip, siglip } = tfLosses(tf);

  it("clip: gradients w.r.t. a, b and scale equal TF.js autodiff", () => {
    const [a, b] = pair(), s = tf.scalar(14.3);
    const ours = tf.grads((x: tf.Tensor, y: tf.Tensor, t: tf.Tensor) => clip({ a: x, b: y, scale: t }))([a, b, s]);
    const theirs = tf.grads((x: tf.Tensor, y: tf.Tensor, t: tf.Tensor) => tfClip(x, y, t))([a, b, s]);
    ["a", "b", "scale"].forEach((k, i) => close(ours[i], theirs[i], `grads.${k}`));
    assert.deepEqual(ours[2].shape, []);
    // A plain number is still accepted (no gradient for it).
    close(clip({ a, b, scale: 14.3 }), tfClip(a, b, s), "loss");
  });

  it("siglip: gradients w.r.t. a, b, scale and bias equal TF.js autodiff", () => {
    const [a, b] = pair(), s = tf.scalar(10), bias = tf.scalar(-3);
    const f = (x: tf.Tensor, y: tf.Tensor, t: tf.Tensor, c: tf.Tensor) => siglip({ a: x, b: y, scale: t, bias: c });
    const ours = tf.grads(f)([a, b, s, bias]);
    const theirs = tf.grads((x: tf.Tensor, y: tf.Tensor, t: tf.Tensor, c: tf.Tensor) => tfSiglip(x, y, t, c))([
      a,
      b,
      s,
      bias,
    ]);
    ["a", "b", "scale", "bias"].forEach((k, i) => close(ours[i], theirs[i], `grads.${k}`));
  });

  it("a learnable log-temperature trains: one SGD step moves it by lr * dL/dscale * scale", () => {
    const [a, b] = pair();
    const logScale = tf.variable(tf.scalar(Math.log(1 / 0.07)));
    const before = data(logScale)[0];
    const g = tf.grads((t: tf.Tensor) => tfClip(a, b, tf.exp(t)))([logScale])[0];
    tf.train.sgd(0.5).minimize(() => clip({ a, b, scale: tf.exp(logScale) }) as tf.Scalar, false, [logScale]);
    const moved = data(logScale)[0] - before;
    assert.ok(Math.abs(moved + 0.5 * data(g)[0]) <= 1e-5 * Math.max(1, Math.abs(moved)), `moved ${moved}`);
    assert.notEqual(moved, 0);
  });

  it("refuses a number input of more than one value", () => {
    const [a, b] = pair();
    assert.throws(
      () => clip({ a, b, scale: tf.tensor1d([1, 2]) }),
      (e: Error) => e instanceof RangeError && /scale/.test(e.message),
    );
  });
});
