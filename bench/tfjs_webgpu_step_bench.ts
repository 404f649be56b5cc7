/**
 * One SGD step of the demo's network (examples/mnist: 196-128-64-D, batch 128, 10 classes) on
 * TensorFlow.js's webgpu backend, with the loss from softmargin (`softmargin/tfjs`, issue 20)
 * against the same step with TF.js's own `tf.losses.softmaxCrossEntropy`: the time of a step
 * (TF.js's pending commands submitted, the GPU's work awaited), paired in interleaved rounds,
 * and, before the rounds, the GPU submissions and readbacks (`mapAsync`) a step makes (TF.js
 * batching its commands as it does in training), with the library's own GPU call for scale:
 * a crossEntropy call that reads its loss back (the default) and one with `readback: false`.
 * Needs a WebGPU adapter (Deno; llvmpipe here) and `@tensorflow/tfjs-backend-webgpu`.
 *
 * ```sh
 * deno run -A bench/tfjs_webgpu_step_bench.ts [--quick | --full] [--json out.json]
 * ```
 *
 * @module
 */
import process from "node:process";
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-webgpu";
import { init } from "../mod.ts";
import { tfLosses } from "../tfjs.ts";
import type { Contender, Shape } from "./engine.ts";
import { envNotes, labelsOf, mulberry32, run, uniform } from "./engine.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

if (!(await tf.setBackend("webgpu"))) {
  console.log("TensorFlow.js's webgpu backend did not start (no WebGPU adapter): nothing to measure");
  process.exit(0);
}
tf.enableProdMode();
const device: GPUDevice = (tf.backend() as Any).device;
const losses = tfLosses(tf);

/** The demo's network at [batch, inputs, hidden..., dim, classes]; `step(ours)` is one SGD step. */
type Ctx = { step(ours: boolean): void; dispose(): void };

function context(s: Shape): Ctx {
  const [batch, inputs, ...rest] = s, classes = rest.pop()!, sizes = [inputs, ...rest];
  const rand = mulberry32(1);
  const layers = sizes.slice(1).map((out, l) => ({
    w: tf.variable(tf.tensor2d(uniform(rand, sizes[l] * out, Math.sqrt(3 / sizes[l])), [sizes[l], out])),
    b: tf.variable(tf.zeros([out])),
  }));
  const W = tf.variable(tf.tensor2d(uniform(rand, classes * sizes.at(-1)!), [classes, sizes.at(-1)!]));
  const bias = tf.variable(tf.zeros([classes]));
  const x = tf.tensor2d(uniform(rand, batch * inputs), [batch, inputs]);
  const labels = labelsOf(rand, batch, classes), onehot = tf.oneHot(tf.tensor1d(labels, "int32"), classes);
  const opt = tf.train.sgd(0.01);
  const logits = () => {
    const h = layers.reduce((h: tf.Tensor, { w, b }, l) => {
      const z = tf.add(tf.matMul(h, w), b);
      return l < layers.length - 1 ? tf.relu(z) : z;
    }, x);
    return tf.add(tf.matMul(h, W, false, true), bias);
  };
  return {
    step: (ours) =>
      tf.tidy(() => {
        opt.minimize(() =>
          ours
            ? losses.crossEntropy({ logits: logits(), labels })
            : tf.losses.softmaxCrossEntropy(onehot, logits()) as tf.Scalar
        );
      }),
    dispose: () => tf.dispose([...layers.flatMap((l) => [l.w, l.b]), W, bias, x, onehot]),
  };
}

/** What `body` submits and maps on the device. */
async function counted(body: () => unknown): Promise<{ submits: number; maps: number }> {
  const q = device.queue as Any, submit = q.submit, mapAsync = GPUBuffer.prototype.mapAsync;
  let submits = 0, maps = 0;
  q.submit = (...a: Any[]) => (submits++, submit.apply(q, a));
  GPUBuffer.prototype.mapAsync = function (this: GPUBuffer, ...a: Any[]) {
    maps++;
    return (mapAsync as Any).apply(this, a);
  };
  try {
    await body();
    return { submits, maps };
  } finally {
    q.submit = submit;
    GPUBuffer.prototype.mapAsync = mapAsync;
  }
}

/** Submissions and maps a step, over 50 steps after 5 of warm-up (TF.js batching its commands as in training). */
async function perStep(ctx: Ctx, ours: boolean): Promise<string> {
  for (let k = 0; k < 5; k++) ctx.step(ours);
  const steps = 50,
    c = await counted(() => {
      for (let k = 0; k < steps; k++) ctx.step(ours);
    });
  await device.queue.onSubmittedWorkDone();
  return `${(c.submits / steps).toFixed(2)} submissions, ${(c.maps / steps).toFixed(2)} maps`;
}

const DEMO: Shape = [128, 196, 128, 64, 2, 10];

await run<Ctx>(async () => {
  // The counts, once, at the demo's shape.
  const ctx = context(DEMO);
  envNotes.push(
    `a step at ${DEMO.join("-")} (batch-layers-classes), per step: tf.losses.softmaxCrossEntropy ${await perStep(
      ctx,
      false,
    )}; softmargin/tfjs crossEntropy ${await perStep(ctx, true)}`,
  );
  ctx.dispose();
  const gpu = await init({ backend: "webgpu", device, precompile: true });
  const logits = device.createBuffer({ size: 128 * 10 * 4, usage: 0x80 | 0x04 | 0x08 });
  device.queue.writeBuffer(logits, 0, uniform(mulberry32(2), 1280, 3) as Float32Array<ArrayBuffer>);
  const inputs = { logits: { buffer: logits, shape: [128, 10] as const }, labels: labelsOf(mulberry32(3), 128, 10) };
  const drop = (r: Any) => [r.loss, r.grads.logits].forEach((m) => m?.buffer?.destroy());
  const before = await counted(async () => drop(await gpu.crossEntropy.valueAndGrad(inputs)));
  const after = await counted(async () => drop(await gpu.crossEntropy.valueAndGrad(inputs, { readback: false })));
  envNotes.push(
    `the library's GPU call (crossEntropy [128, 10], GPU-resident logits): reading the loss back ` +
      `${before.submits} submission, ${before.maps} map; readback: false ${after.submits} submission, ${after.maps} maps`,
  );
  gpu.dispose();
  logits.destroy();
  const contender = (name: string, ours: boolean): Contender<Ctx> => ({
    name,
    ours,
    setup: (c) => ({
      run: async () => {
        c.step(ours);
        (tf.backend() as Any).submitQueue(); // TF.js's pending commands, so that the GPU's work is awaited
        await device.queue.onSubmittedWorkDone();
      },
    }),
  });
  return {
    name: "tfjs_webgpu_step",
    title: "One SGD step of the demo's network on TF.js's webgpu backend: the loss from softmargin or from TF.js",
    modes: ["step"],
    shapes: { default: [DEMO], quick: [DEMO] },
    // A step takes hundreds of milliseconds on llvmpipe: every round times both, one step each.
    timing: {
      default: { rounds: 21, slowBudget: 60, minSamples: 21 },
      full: { rounds: 41, slowBudget: 120, minSamples: 41 },
    },
    work: (s) => s[0],
    contenders: [
      contender("tf.losses.softmaxCrossEntropy", false),
      contender("softmargin/tfjs crossEntropy", true),
    ],
    context,
    dispose: (c) => c.dispose(),
    baseline: "tf.losses.softmaxCrossEntropy",
  };
});
