// softmargin/tfjs on TensorFlow.js's webgpu backend (SPEC §10): the loss runs on TF.js's own
// GPUDevice and buffers through the library's synchronous GPU form. Its value and
// gradients must equal the float64 reference within the GPU bound; a training step
// (`optimizer.minimize`) maps no buffer (counted) and trains as TF.js's own
// softmaxCrossEntropy does; tensors TF.js holds on the CPU are uploaded; memory (TF.js's
// tensors, the GPU buffers alive) stays flat over many steps. Needs the dev dependency
// @tensorflow/tfjs-backend-webgpu and a WebGPU adapter (Deno's llvmpipe here): skipped, with
// the reason, without them (Bun has no WebGPU).
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { js } from "../cpu.ts";
import { tfLosses } from "../tfjs.ts";
import { assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { randomMatrix, Rng } from "./helpers/random.ts";
import { webgpuMissing } from "./helpers/backends.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/** TF.js with its webgpu backend registered, or why not. */
const loaded: { tf: Any } | string = await (async () => {
  if (webgpuMissing) return webgpuMissing;
  try {
    const tf = await import("@tensorflow/tfjs");
    // (A specifier in a variable: the type check does not need the package.)
    const backend = "@tensorflow/tfjs-backend-webgpu";
    await import(backend);
    return { tf };
  } catch (e) {
    return `@tensorflow/tfjs-backend-webgpu is not installed (${(e as Error).message.split("\n")[0]})`;
  }
})();
const skip = typeof loaded === "string" ? loaded : false;
const tf: Any = typeof loaded === "string" ? null : loaded.tf;

const N = 8, C = 5, D = 6;
const labels = Array.from({ length: N }, (_, i) => (i * 3) % C);

/** What `body` submits and maps on `device` (its queue and every GPUBuffer's mapAsync wrapped). */
async function counted<T>(device: GPUDevice, body: () => T | Promise<T>) {
  const q = device.queue as Any, submit = q.submit, mapAsync = GPUBuffer.prototype.mapAsync;
  let submits = 0, maps = 0;
  q.submit = (...a: Any[]) => (submits++, submit.apply(q, a));
  GPUBuffer.prototype.mapAsync = function (this: GPUBuffer, ...a: Any[]) {
    maps++;
    return (mapAsync as Any).apply(this, a);
  };
  try {
    const r = await body();
    return { r, submits, maps };
  } finally {
    q.submit = submit;
    GPUBuffer.prototype.mapAsync = mapAsync;
  }
}

before(async () => {
  if (skip) return;
  assert.ok(await tf.setBackend("webgpu"), "TF.js's webgpu backend starts");
  // Run small ops on the GPU too, so that the inputs are TF.js GPU buffers.
  tf.env().set("WEBGPU_CPU_FORWARD", false);
});

describe("softmargin/tfjs on TF.js's webgpu backend", { skip }, () => {
  it("crossEntropy's value and gradient equal the reference (GPU bound), on GPU and CPU-held inputs", async () => {
    const losses = tfLosses(tf);
    const host = randomMatrix(new Rng(31), N, C, 3);
    const o = { labelSmoothing: 0.1, weight: Float32Array.from({ length: C }, (_, j) => 0.5 + j / C) };
    const ref = js.crossEntropy.valueAndGrad({ logits: host, labels }, o);
    // On the GPU (the output of a TF.js op), and held on the CPU (a fresh tensor): uploaded.
    for (
      const [where, make] of [["gpu", () => tf.add(tf.tensor2d(host.data, [N, C]), 0)], [
        "cpu",
        () => tf.tensor2d(host.data, [N, C]),
      ]] as const
    ) {
      const logits = make();
      const { value, grads } = tf.valueAndGrads((z: Any) => losses.crossEntropy({ logits: z, labels }, o))([logits]);
      assertLossClose((await value.data())[0], ref.loss, `${where}: loss`);
      assertGradClose(await grads[0].data(), ref.grads.logits.data, `${where}: gradient`);
      tf.dispose([logits, value, grads]);
    }
  });

  it("arcface, focal and marginHead (gradients w.r.t. x and W): the reference's values", async () => {
    const losses = tfLosses(tf) as Any;
    const cos = randomMatrix(new Rng(35), N, C, 0.5),
      x = randomMatrix(new Rng(36), N, D),
      W = randomMatrix(new Rng(37), C, D);
    const cases: [string, Record<string, Any>, Record<string, Any>, string[]][] = [
      ["arcface", { cos, labels }, { scale: 16, margin: 0.3 }, ["cos"]],
      ["focal", { logits: cos, labels }, { gamma: 2 }, ["logits"]],
      ["marginHead", { x, W, labels }, { kind: "cosface", scale: 16 }, ["x", "W"]],
    ];
    for (const [name, host, o, keys] of cases) {
      const ref = (js as Any)[name].valueAndGrad(host, o);
      const tensors = keys.map((k) => tf.add(tf.tensor2d(host[k].data, [...host[k].shape]), 0));
      const f = (...ts: Any[]) => losses[name]({ ...host, ...Object.fromEntries(keys.map((k, i) => [k, ts[i]])) }, o);
      const { value, grads } = tf.valueAndGrads(f)(tensors);
      assertLossClose((await value.data())[0], ref.loss, `${name}: loss`);
      for (const [i, k] of keys.entries()) assertGradClose(await grads[i].data(), ref.grads[k].data, `${name}: ${k}`);
      tf.dispose([...tensors, value, grads]);
    }
  });

  it("clip and siglip: a, b and the number inputs as scalar tensors (their [1, 1] GPU gradients as scalars)", async () => {
    const losses = tfLosses(tf) as Any;
    const a = randomMatrix(new Rng(38), N, D), b = randomMatrix(new Rng(39), N, D);
    for (const [name, numbers] of [["clip", { scale: 3 }], ["siglip", { scale: 2, bias: -1 }]] as const) {
      const ref = (js as Any)[name].valueAndGrad({ a, b, ...numbers });
      const keys = ["a", "b", ...Object.keys(numbers)];
      const tensors = [tf.add(tf.tensor2d(a.data, [N, D]), 0), tf.add(tf.tensor2d(b.data, [N, D]), 0)]
        .concat(Object.values(numbers).map((x) => tf.scalar(x)));
      const f = (...ts: Any[]) => losses[name](Object.fromEntries(keys.map((k, i) => [k, ts[i]])));
      const { value, grads } = tf.valueAndGrads(f)(tensors);
      assertLossClose((await value.data())[0], ref.loss, `${name}: loss`);
      for (const [i, k] of keys.entries()) {
        const want = typeof ref.grads[k] === "number" ? Float32Array.of(ref.grads[k]) : ref.grads[k].data;
        assert.deepEqual(grads[i].shape, tensors[i].shape, `${name}: ${k}'s gradient's shape`);
        assertGradClose(await grads[i].data(), want, `${name}: ${k}`);
      }
      tf.dispose([...tensors, value, grads]);
    }
    // scale as a number: its [1, 1] GPU gradient is not returned, and no buffer of it is left alive.
    const device: GPUDevice = tf.backend().device;
    const create = device.createBuffer, destroy = GPUBuffer.prototype.destroy;
    const alive = new Set<GPUBuffer>();
    (device as Any).createBuffer = (...x: Any[]) => {
      const buffer = create.apply(device, x as [GPUBufferDescriptor]);
      alive.add(buffer);
      return buffer;
    };
    GPUBuffer.prototype.destroy = function (this: GPUBuffer) {
      alive.delete(this);
      return destroy.apply(this);
    };
    try {
      const ta = tf.add(tf.tensor2d(a.data, [N, D]), 0), tb = tf.add(tf.tensor2d(b.data, [N, D]), 0);
      const step = () => tf.valueAndGrads((x: Any, y: Any) => losses.clip({ a: x, b: y, scale: 3 }))([ta, tb]);
      for (let k = 0; k < 5; k++) tf.dispose(Object.values(step()).flat());
      await device.queue.onSubmittedWorkDone();
      const before = alive.size;
      for (let k = 0; k < 5; k++) tf.dispose(Object.values(step()).flat());
      await device.queue.onSubmittedWorkDone();
      assert.equal(alive.size, before, "GPU buffers alive after 5 more calls");
      tf.dispose([ta, tb]);
    } finally {
      (device as Any).createBuffer = create;
      GPUBuffer.prototype.destroy = destroy;
    }
  });

  it("the metric staples (src/webgpu/metric.wgsl): f and proxies as tensors, the reference's values, no map", async () => {
    const losses = tfLosses(tf) as Any;
    const f = randomMatrix(new Rng(41), N, D), proxies = randomMatrix(new Rng(42), C, D);
    const device: GPUDevice = tf.backend().device;
    for (
      const [name, o] of [
        ["ntXent", { temperature: 0.5 }],
        ["tripletMargin", { mining: "semihard", margin: 0.5 }],
        ["multiSimilarity", {}],
        ["proxyAnchor", {}],
      ] as const
    ) {
      const keys = name === "proxyAnchor" ? ["f", "proxies"] : ["f"];
      const host: Any = name === "proxyAnchor" ? { f, proxies, labels } : { f, labels };
      const ref = (js as Any)[name].valueAndGrad(host, o);
      const tensors = keys.map((k) => tf.add(tf.tensor2d(host[k].data, host[k].shape), 0));
      const fn = (...ts: Any[]) => losses[name]({ ...host, ...Object.fromEntries(keys.map((k, i) => [k, ts[i]])) }, o);
      const c = await counted(device, () => {
        const r = tf.valueAndGrads(fn)(tensors);
        return device.queue.onSubmittedWorkDone().then(() => r);
      });
      assert.equal(c.maps, 0, `${name}: buffers mapped by the step`);
      const { value, grads } = c.r as Any;
      assertLossClose((await value.data())[0], ref.loss, `${name}: loss`);
      for (const [i, k] of keys.entries()) assertGradClose(await grads[i].data(), ref.grads[k].data, `${name}: ${k}`);
      tf.dispose([...tensors, value, grads]);
    }
  });

  it('reduction "none": one loss per row, the gradient of sum(u l) through dy per row', async () => {
    const losses = tfLosses(tf);
    const host = randomMatrix(new Rng(32), N, C, 2);
    const u = Float32Array.from({ length: N }, (_, i) => (i % 3) - 0.5);
    const ref = js.crossEntropy.valueAndGrad({ logits: host, labels }, { reduction: "none" });
    const refGrad = js.crossEntropy.backward({ logits: host, labels }, { reduction: "none" }, u);
    const logits = tf.add(tf.tensor2d(host.data, [N, C]), 0);
    const rows: Any = losses.crossEntropy({ logits, labels }, { reduction: "none" });
    assertLossClose(await rows.data(), ref.loss as Float32Array, "rows");
    const g = tf.grad((z: Any) => tf.sum(tf.mul(losses.crossEntropy({ logits: z, labels }, { reduction: "none" }), u)))(
      logits,
    );
    assertGradClose(await g.data(), refGrad.logits.data, "gradient");
    assert.throws(
      () =>
        tf.grad((x: Any) =>
          tf.sum(losses.centerLoss({ x, centers: tf.zeros([C, D]), labels }, { reduction: "none" }) as Any)
        )(tf.add(tf.ones([N, D]), 0)),
      RangeError,
      "reduced centerLoss",
    );
    tf.dispose([logits, rows, g]);
  });

  it("20 SGD steps map no buffer and train as tf.losses.softmaxCrossEntropy; memory stays flat", async () => {
    const losses = tfLosses(tf);
    const device: GPUDevice = tf.backend().device;
    const xs = tf.add(tf.tensor2d(randomMatrix(new Rng(33), N, D).data, [N, D]), 0);
    const onehot = tf.oneHot(tf.tensor1d(labels, "int32"), C);
    const W0 = randomMatrix(new Rng(34), D, C, 0.3).data;
    const train = async (ours: boolean, steps: number) => {
      const W = tf.variable(tf.tensor2d(W0, [D, C]));
      const opt = tf.train.sgd(0.5);
      const step = () =>
        opt.minimize(() => {
          const logits = tf.matMul(xs, W);
          return ours ? losses.crossEntropy({ logits, labels }) : tf.losses.softmaxCrossEntropy(onehot, logits);
        });
      // GPU buffers alive (created, not destroyed) and TF.js's tensors, after a warm-up and at the end.
      let alive = 0;
      const create = device.createBuffer, destroy = GPUBuffer.prototype.destroy;
      const track = new WeakSet<GPUBuffer>();
      (device as Any).createBuffer = (...a: Any[]) => {
        const b = create.apply(device, a as [GPUBufferDescriptor]);
        track.add(b);
        alive++;
        return b;
      };
      GPUBuffer.prototype.destroy = function (this: GPUBuffer) {
        if (track.has(this)) (track.delete(this), alive--);
        return destroy.apply(this);
      };
      try {
        for (let s = 0; s < 5; s++) step();
        const [tensors, buffers] = [tf.memory().numTensors, alive];
        const c = await counted(device, () => {
          for (let s = 5; s < steps; s++) step();
        });
        await device.queue.onSubmittedWorkDone();
        return { W, c, grew: { tensors: tf.memory().numTensors - tensors, buffers: alive - buffers } };
      } finally {
        (device as Any).createBuffer = create;
        GPUBuffer.prototype.destroy = destroy;
      }
    };
    const ours = await train(true, 25), theirs = await train(false, 25);
    assert.equal(ours.c.maps, 0, "maps in 20 steps through softmargin");
    assert.equal(theirs.c.maps, 0, "maps in 20 steps through tf.losses");
    assert.deepEqual(ours.grew, { tensors: 0, buffers: 0 }, "TF.js tensors and GPU buffers alive grew");
    assertGradClose(await ours.W.data(), await theirs.W.data(), "W after 25 steps");
    console.log(
      `20 SGD steps on llvmpipe: softmargin ${ours.c.submits} submissions, ${ours.c.maps} maps; ` +
        `tf.losses ${theirs.c.submits} submissions, ${theirs.c.maps} maps`,
    );
    tf.dispose([xs, onehot, ours.W, theirs.W]);
  });
});
