/**
 * One training run of the demo: a small embedding network (a multilayer perceptron
 * from the pixels to a D-dimensional feature) and a classification head trained with
 * one loss, in TensorFlow.js on its wasm backend (or its webgpu backend: `tfBackend`), the
 * loss and its gradients from softmargin through the `softmargin/tfjs` adapter. On webgpu a
 * step reads nothing back: the losses of an epoch are summed on the GPU and read once at its
 * end, and the GPU submissions and readbacks (`mapAsync`) of the steps are counted.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";
import { wasm } from "../../cpu.ts";
import { adafaceInit, type AdafaceState, sphereFaceLambda } from "../../mod.ts";
import { tfLosses } from "../../tfjs.ts";
import type { Digits } from "./data.ts";
import { flipLabels, permutation, pooled, SIDE } from "./data.ts";
import { Rng } from "../../tests/helpers/random.ts";

/** The losses the demo trains with. */
export const LOSS_NAMES = ["softmax", "normface", "cosface", "arcface", "sphereface", "adaface", "subcenter"] as const;
/** A loss of the demo. */
export type LossName = typeof LOSS_NAMES[number];

/**
 * How the demo uses each loss: its title and its options for a D-dimensional feature at a
 * training step. The normalised losses use s = 16 (NormFace's bound for 10 classes asks
 * for s > 6). ArcFace's margin is its default, 0.5. CosFace's must fit the circle: ten
 * classes 36° apart leave a cosine gap of only 1 - cos 36° = 0.19 between neighbours, so
 * in 2-D its margin is 0.15 and its scale 24 (at 0.18 the classes tighten but one pair is
 * crowded together; at 0.12 they are no tighter than softmax's); on the sphere it has its
 * default margin, 0.35. SphereFace anneals lambda as its paper does,
 * `max(5, 1000 / (1 + 0.12 step))`, reaching the floor at step 1658 of the 1860 of the
 * default 30 epochs. AdaFace (a CosFace margin that the feature norm shifts towards ArcFace's
 * angle, h = 0.333, its state passed from step to step) has CosFace's scale and margin in 2-D
 * (at s = 16 a margin of 0.25 put two classes on one direction, 0.15 left them looser than
 * CosFace's), on the sphere s = 16 and its default margin, 0.4. Sub-center ArcFace is ArcFace's
 * head with K = 3 rows per class (`subcenters: 3`), classifying by the best of them.
 */
export const LOSSES: Record<
  LossName,
  { title: string; options: (dim: number, step: number) => Record<string, unknown> }
> = {
  softmax: { title: "Softmax cross-entropy", options: () => ({}) },
  normface: { title: "NormFace", options: () => ({ kind: "normface", scale: 16 }) },
  cosface: {
    title: "CosFace",
    options: (dim) => ({ kind: "cosface", scale: dim === 2 ? 24 : 16, margin: dim === 2 ? 0.15 : 0.35 }),
  },
  arcface: { title: "ArcFace", options: () => ({ kind: "arcface", scale: 16, margin: 0.5 }) },
  sphereface: { title: "SphereFace", options: (_, step) => ({ m: 4, lambda: sphereFaceLambda(step) }) },
  adaface: {
    title: "AdaFace",
    options: (dim) => ({ kind: "adaface", scale: dim === 2 ? 24 : 16, margin: dim === 2 ? 0.15 : 0.4, h: 0.333 }),
  },
  subcenter: {
    title: "Sub-center ArcFace (K = 3)",
    options: () => ({ kind: "arcface", scale: 16, margin: 0.5, subcenters: 3 }),
  },
};

/** The settings of one run. */
export interface RunConfig {
  loss: LossName;
  dim: number;
  epochs: number;
  batch: number;
  lr: number;
  seed: number;
  /** The share of training labels flipped to another class (`flipLabels`), 0 for none. */
  labelNoise: number;
  hidden: readonly number[];
  /** TensorFlow.js's backend: `wasm` (default) or `webgpu`. */
  tfBackend?: "wasm" | "webgpu";
}

/** Progress of a run, reported after every step. */
export interface Progress {
  epoch: number;
  step: number;
  stepsPerEpoch: number;
  loss: number;
  examplesPerSecond: number;
}

/** What a run leaves: the test features and the class scores it classifies by. */
export interface RunResult {
  /** Test features `[n, dim]`, as the network outputs them (not normalised). */
  features: Float32Array;
  /** Class scores `[n, 10]` of the test set (logits, or cosines for the margin heads). */
  scores: Float32Array;
  /** Mean training loss of the last epoch. */
  finalLoss: number;
  /** Training time, seconds. */
  seconds: number;
  /** On webgpu: the GPU submissions and readbacks (mapAsync) per training step, on average. */
  gpu?: { submitsPerStep: number; mapsPerStep: number; steps: number };
}

const CLASSES = 10;

/** Trains one network with one loss and returns its test features. */
export async function run(
  cfg: RunConfig,
  train: Digits,
  test: Digits,
  report: (p: Progress) => void,
): Promise<RunResult> {
  // Sub-center ArcFace's K rows of a class start at its direction, apart by a small seeded jitter.
  const K = Number(LOSSES[cfg.loss].options(cfg.dim, 0).subcenters ?? 1);
  const losses = tfLosses(tf);
  // On webgpu: what the steps submit and map on TF.js's device; values read with data() (Deno has no dataSync there).
  const gpu = cfg.tfBackend === "webgpu" ? countGpu((tf.backend() as unknown as { device: GPUDevice }).device) : null;
  const read = async (t: tf.Tensor) => (gpu ? await t.data() : t.dataSync()) as Float32Array;
  const inputs = SIDE * SIDE;
  const sizes = [inputs, ...cfg.hidden, cfg.dim];
  let seed = cfg.seed;
  // He-normal initialisation of the layers, seeded.
  const layers = sizes.slice(1).map((out, l) => ({
    w: tf.variable(tf.randomNormal([sizes[l], out], 0, Math.sqrt(2 / sizes[l]), "float32", seed++)),
    b: tf.variable(tf.zeros([out])),
  }));
  // The class weights start spread out evenly (on the circle, or a Fibonacci lattice of the
  // sphere): from a random start two classes of a 2-D feature can end up sharing one
  // direction, a local minimum that training does not leave. Every loss starts the same way.
  const W = tf.variable(
    tf.tensor2d(subcentres(spread(CLASSES, cfg.dim), cfg.dim, K, cfg.seed), [CLASSES * K, cfg.dim]),
  );
  const bias = tf.variable(tf.zeros([CLASSES]));
  const embed = (x: tf.Tensor) =>
    layers.reduce((h, { w, b }, l) => {
      const z = tf.add(tf.matMul(h, w), b);
      return l < layers.length - 1 ? tf.relu(z) : z; // the feature layer is linear
    }, x);
  // AdaFace's state, passed from step to step: the next one comes from the same pass (onResult);
  // on webgpu a tensor [1, 2] that stays on the GPU (the previous one disposed).
  let state: AdafaceState | tf.Tensor = adafaceInit();
  const next = (r: { state?: unknown }) => {
    if (state instanceof tf.Tensor) state.dispose();
    state = r.state as AdafaceState | tf.Tensor;
  };
  const lossOf = (x: tf.Tensor, labels: Int32Array, step: number): tf.Scalar => {
    const options = LOSSES[cfg.loss].options(cfg.dim, step);
    if (cfg.loss === "softmax") {
      return losses.crossEntropy({ logits: tf.add(tf.matMul(x, W, false, true), bias), labels });
    }
    if (cfg.loss === "sphereface") return losses.sphereface({ x, W, labels }, options);
    if (cfg.loss === "adaface") return losses.marginHead({ x, W, labels, state }, { ...options, onResult: next });
    return losses.marginHead({ x, W, labels }, options);
  };

  const trainLabels = flipLabels(train.labels, cfg.labelNoise, cfg.seed);
  const optimizer = tf.train.adam(cfg.lr);
  const rng = new Rng(cfg.seed);
  const steps = Math.floor(train.n / cfg.batch);
  const start = performance.now();
  let finalLoss = NaN, step = 0, submits = 0, maps = 0;
  for (let epoch = 0; epoch < cfg.epochs; epoch++) {
    const order = permutation(rng, train.n);
    const xb = new Float32Array(cfg.batch * inputs), yb = new Int32Array(cfg.batch);
    let sum = 0, onGpu: tf.Tensor = tf.scalar(0);
    const epochStart = performance.now();
    for (let s = 0; s < steps; s++, step++) {
      for (let j = 0; j < cfg.batch; j++) {
        const i = order[s * cfg.batch + j];
        pooled(train, i, xb, j * inputs);
        yb[j] = trainLabels[i];
      }
      // Cosine decay of the learning rate to 0 over the run (Adam reads it at every step).
      (optimizer as unknown as { learningRate: number }).learningRate = cfg.lr * 0.5 *
        (1 + Math.cos((Math.PI * step) / (steps * cfg.epochs)));
      const before = gpu && { ...gpu.counts };
      const loss = tf.tidy(() => {
        const x = tf.tensor2d(xb, [cfg.batch, inputs]);
        return optimizer.minimize(() => lossOf(embed(x), yb, step), true)!;
      });
      if (gpu) {
        const next = tf.add(onGpu, loss);
        onGpu.dispose(), onGpu = next;
        submits += gpu.counts.submits - before!.submits, maps += gpu.counts.maps - before!.maps;
      } else sum += loss.dataSync()[0];
      loss.dispose();
      const seconds = (performance.now() - epochStart) / 1000;
      report({
        epoch,
        step: s + 1,
        stepsPerEpoch: steps,
        loss: gpu ? finalLoss : sum / (s + 1),
        examplesPerSecond: ((s + 1) * cfg.batch) / seconds,
      });
    }
    if (gpu) sum = (await read(onGpu))[0];
    onGpu.dispose();
    finalLoss = sum / steps;
  }
  const seconds = (performance.now() - start) / 1000;

  const testImages = new Float32Array(test.n * inputs);
  for (let i = 0; i < test.n; i++) pooled(test, i, testImages, i * inputs);
  const featureTensor = tf.tidy(() => embed(tf.tensor2d(testImages, [test.n, inputs])));
  const features = await read(featureTensor);
  const scoreTensor = tf.tidy(() => {
    const x = featureTensor;
    if (cfg.loss === "softmax") return tf.add(tf.matMul(x, W, false, true), bias);
    // The margin heads classify by the cosine to each class's weight row (sub-center ArcFace: the
    // largest of its K); SphereFace by ||x|| cos, which has the same argmax.
    const unit = (t: tf.Tensor) => tf.div(t, tf.maximum(tf.norm(t, 2, 1, true), 1e-12));
    return tf.max(tf.reshape(tf.matMul(unit(x), unit(W), false, true), [test.n, CLASSES, K]), 2);
  });
  const scores = await read(scoreTensor);
  tf.dispose([featureTensor, scoreTensor, ...layers.flatMap((l) => [l.w, l.b]), W, bias]);
  if (state instanceof tf.Tensor) state.dispose();
  optimizer.dispose();
  gpu?.stop();
  const counted = steps * cfg.epochs;
  return {
    features: features.slice(),
    scores: scores.slice(),
    finalLoss,
    seconds,
    ...(gpu ? { gpu: { submitsPerStep: submits / counted, mapsPerStep: maps / counted, steps: counted } } : {}),
  };
}

/** Counts `device`'s queue submissions and every GPUBuffer's mapAsync (readbacks) until `stop`. */
function countGpu(device: GPUDevice): { counts: { submits: number; maps: number }; stop(): void } {
  const queue = device.queue, submit = queue.submit, mapAsync = GPUBuffer.prototype.mapAsync;
  const counts = { submits: 0, maps: 0 };
  queue.submit = (buffers) => (counts.submits++, submit.call(queue, buffers));
  GPUBuffer.prototype.mapAsync = function (this: GPUBuffer, ...a: Parameters<GPUBuffer["mapAsync"]>) {
    counts.maps++;
    return mapAsync.apply(this, a);
  };
  return {
    counts,
    stop() {
      queue.submit = submit;
      GPUBuffer.prototype.mapAsync = mapAsync;
    },
  };
}

/** Test accuracy: the share of test digits whose label has the highest score. */
export function accuracy(scores: Float32Array, labels: Int32Array): number {
  return wasm.accuracy.compute({ logits: { data: scores, shape: [labels.length, CLASSES] }, labels });
}

/** `K` rows per class from the class directions `[classes, dim]`: each plus a seeded N(0, 0.05^2) jitter when K > 1. */
function subcentres(directions: Float32Array, dim: number, K: number, seed: number): Float32Array {
  if (K === 1) return directions;
  const rng = new Rng(seed + 7919), out = new Float32Array(directions.length * K);
  for (let r = 0; r < out.length / dim; r++) {
    const c = Math.floor(r / K);
    for (let k = 0; k < dim; k++) out[r * dim + k] = directions[c * dim + k] + 0.05 * rng.normal();
  }
  return out;
}

/** `k` unit vectors spread evenly: on the circle for `dim` 2, a Fibonacci lattice of the sphere for 3. */
export function spread(k: number, dim: number): Float32Array {
  const out = new Float32Array(k * dim);
  const golden = Math.PI * (3 - Math.sqrt(5));
  for (let c = 0; c < k; c++) {
    if (dim === 2) {
      out[2 * c] = Math.cos((2 * Math.PI * c) / k), out[2 * c + 1] = Math.sin((2 * Math.PI * c) / k);
    } else {
      const z = 1 - (2 * c + 1) / k, r = Math.sqrt(1 - z * z);
      out[dim * c] = r * Math.cos(golden * c), out[dim * c + 1] = r * Math.sin(golden * c), out[dim * c + 2] = z;
    }
  }
  return out;
}
