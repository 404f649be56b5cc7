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
import { definitions } from "../src/losses/mod.ts";
import { PER_ROW as perRow } from "../src/tfjs/webgpu.ts";
import { assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { randomMatrix, Rng, seedOf } from "./helpers/random.ts";
import { webgpuMissing } from "./helpers/backends.ts";
import { allSpecs, cosineMarginSpecs, headSpecs, type LossSpec } from "./helpers/specs.ts";
import { moeSpecs } from "./helpers/specs_moe.ts";
import { clipSpec, siglipSpec } from "./helpers/specs_clip.ts";
import { metricSpecs } from "./helpers/specs_metric.ts";
import { linearCrossEntropySpec } from "./helpers/specs_lce.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/** TF.js with its webgpu backend registered, or why not. */
const loaded: { tf: Any } | string = await (async () => {
  if (webgpuMissing) return webgpuMissing;
  try {
    const tf = await import("@tensorflow/tfjs");
    await import("@tensorflow/tfjs-backend-webgpu");
    return { tf };
  } catch (e) {
    return `@tensorflow/tfjs-backend-webgpu is not installed (${(e as Error).message.split("\n")[0]})`;
  }
})();
const skip = typeof loaded === "string" ? loaded : false;
const tf: Any = typeof loaded === "string" ? null : loaded.tf;

const N = 8, C = 5, D = 6;

/**
 * The steps of the leak test: 1,000 by `SOFTMARGIN_TFJS_STEPS=1000` (in a page: the global
 * of that name); fewer by default, to keep CI short.
 */
const STEPS = Number(
  (globalThis as Any).process?.env?.SOFTMARGIN_TFJS_STEPS ?? (globalThis as Any).SOFTMARGIN_TFJS_STEPS ?? 100,
);

/** The losses with a WebGPU kernel on the GPU path: each is run on both TF.js backends. */
const gpuSpecs: readonly LossSpec[] = [
  ...allSpecs.filter((s) => !s.matrixOutput && s.name !== "accuracy"),
  ...cosineMarginSpecs,
  ...headSpecs,
  ...moeSpecs,
  clipSpec,
  siglipSpec,
  ...metricSpecs,
  linearCrossEntropySpec,
];

/** The face margin losses (no spec of their own: their inputs here), run as `gpuSpecs` with their defaults. */
const faces: Record<string, Record<string, Any>> = {
  adaface: {
    cos: randomMatrix(new Rng(42), N, C, 0.5),
    labels: [0, 1, 2, 3, 4, 0, 1, 2],
    norms: [15, 16, 17, 18, 19, 20, 21, 22],
    state: { mean: 20, std: 100 },
  },
  curricularFace: { cos: randomMatrix(new Rng(43), N, C, 0.5), labels: [0, 1, 2, 3, 4, 0, 1, 2], state: { t: 0 } },
  magface: {
    cos: randomMatrix(new Rng(44), N, C, 0.5),
    labels: [0, 1, 2, 3, 4, 0, 1, 2],
    norms: Float32Array.from({ length: N }, (_, i) => 15 + i),
  },
};

/** `host` with the loss's differentiable inputs (its gradient keys, its number inputs) as tensors made by `make`. */
function tensorsOf(name: string, host: Record<string, Any>, make: (m: Any) => Any) {
  const def = (definitions as Any)[name];
  const matrix = (v: Any) => v?.data !== undefined && v.shape !== undefined;
  const keys: string[] = [...def.grads, ...(def.numbers ?? [])].filter((k) =>
    typeof host[k] === "number" || matrix(host[k]) || (Array.isArray(host[k]) && host[k].every(matrix))
  );
  const tensors: Any[] = [], slots: [string, number][] = [];
  for (const k of keys) {
    const v = host[k];
    if (Array.isArray(v)) v.forEach((m, i) => (tensors.push(make(m)), slots.push([k, i])));
    else (tensors.push(typeof v === "number" ? tf.scalar(v) : make(v)), slots.push([k, -1]));
  }
  /** The inputs with the tensors `ts` (in the order of `tensors`) in place of the host values. */
  const inputs = (ts: Any[]) => {
    const out: Record<string, Any> = { ...host };
    for (const k of keys) if (Array.isArray(host[k])) out[k] = [];
    slots.forEach(([k, i], j) => (i < 0 ? (out[k] = ts[j]) : (out[k][i] = ts[j])));
    return out;
  };
  return { tensors, inputs, slots };
}
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

/** The GPU buffers of `device` alive (created and not destroyed) from now until `stop`. */
function buffersAlive(device: GPUDevice): { readonly count: number; stop(): void } {
  const create = device.createBuffer, destroy = GPUBuffer.prototype.destroy;
  const track = new WeakSet<GPUBuffer>();
  let count = 0;
  (device as Any).createBuffer = (...a: Any[]) => {
    const b = create.apply(device, a as [GPUBufferDescriptor]);
    track.add(b);
    count++;
    return b;
  };
  GPUBuffer.prototype.destroy = function (this: GPUBuffer) {
    if (track.has(this)) (track.delete(this), count--);
    return destroy.apply(this);
  };
  return {
    get count() {
      return count;
    },
    stop() {
      (device as Any).createBuffer = create;
      GPUBuffer.prototype.destroy = destroy;
    },
  };
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

  it("every loss the adapter offers: the values and gradients of the adapter on TF.js's cpu backend, zero maps a call", async () => {
    const device: GPUDevice = tf.backend().device;
    const offered = Object.keys(tfLosses(tf));
    const covered = [...gpuSpecs.map((s) => s.name), ...Object.keys(faces)];
    assert.deepEqual([...new Set(covered)].sort(), [...offered].sort(), "every loss of tfLosses is run or refused");
    // Two option sets of each (the first and the last), "none" where its gradient is per row.
    const cases = gpuSpecs.flatMap((spec) => {
      const sets = spec.optionSets(C);
      return [...new Set([sets[0], sets.at(-1)!])].map((o, k) => ({
        spec,
        o,
        host: spec.random(new Rng(seedOf(`tfjs webgpu ${spec.name} ${k}`)), N, C, 1, o),
      }));
    }).filter(({ spec, o }) => o.reduction !== "none" || perRow.has(spec.name)).map(({ spec, o, host }) => ({
      name: spec.name,
      o,
      host,
    }));
    cases.push(...Object.entries(faces).map(([name, host]) => ({ name, o: {}, host })));
    /** Value and gradients of `name` on the active backend (a vector loss through its sum), as host arrays. */
    const run = async (name: string, host: Record<string, Any>, o: Record<string, Any>, make: (m: Any) => Any) => {
      const losses = tfLosses(tf, { backend: js }) as Any;
      const { tensors, inputs } = tensorsOf(name, host, make);
      const f = (...ts: Any[]) => {
        const l = losses[name](inputs(ts), o);
        return l.rank === 0 ? l : tf.sum(l);
      };
      const c = await counted(device, () => tf.valueAndGrads(f)(tensors));
      const { value, grads } = c.r as Any;
      const out = { loss: await value.data(), grads: await Promise.all(grads.map((g: Any) => g.data())), maps: c.maps };
      tf.dispose([tensors, value, grads]);
      return out;
    };
    // TF.js's cpu backend (the adapter computes with the float64 reference there), then its webgpu backend.
    await tf.setBackend("cpu");
    const want: Any[] = [];
    for (const { name, o, host } of cases) {
      want.push(await run(name, host, o, (m) => tf.tensor2d(m.data, [...m.shape])));
    }
    await tf.setBackend("webgpu");
    const gpu = (m: Any) => tf.add(tf.tensor2d(m.data, [...m.shape]), 0);
    for (const [k, { name, o, host }] of cases.entries()) {
      const label = `${name} ${JSON.stringify(o, (_, x) => (ArrayBuffer.isView(x) ? "[...]" : x))}`;
      const got = await run(name, host, o, gpu);
      assert.equal(got.maps, 0, `${label}: maps`);
      assertLossClose(got.loss, want[k].loss, `${label}: loss`);
      got.grads.forEach((g: Float32Array, i: number) =>
        assertGradClose(g, want[k].grads[i], `${label}: gradient ${i}`)
      );
    }
  });

  it("weights as a GPU tensor under SUM_BY_NONZERO_WEIGHTS: the non-zero count taken on the GPU, no map", async () => {
    const losses = tfLosses(tf);
    const device: GPUDevice = tf.backend().device;
    const host = randomMatrix(new Rng(45), N, C, 2);
    const w = [1, 0, 2, 0.5, 0, 3, 1, 0];
    const logits = tf.add(tf.tensor2d(host.data, [N, C]), 0), weights = tf.add(tf.tensor1d(w), 0);
    const c = await counted(
      device,
      () =>
        tf.valueAndGrads((z: Any, v: Any) => losses.crossEntropy({ logits: z, labels }, { weights: v }))([
          logits,
          weights,
        ]),
    );
    assert.equal(c.maps, 0, "maps");
    const { value, grads } = c.r as Any;
    const rows = js.crossEntropy.forward({ logits: host, labels }, { reduction: "none" }).loss as Float32Array;
    const count = w.filter((x) => x !== 0).length;
    assertLossClose((await value.data())[0], rows.reduce((s, l, i) => s + w[i] * l, 0) / count, "sum(w l) / 5");
    assertLossClose(await grads[1].data(), rows.map((l) => l / count), "d/dweights: l / 5 (the count a constant)");
    tf.dispose([logits, weights, value, grads]);
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
      const alive = buffersAlive(device);
      try {
        for (let s = 0; s < 5; s++) step();
        const [tensors, buffers] = [tf.memory().numTensors, alive.count];
        const c = await counted(device, () => {
          for (let s = 5; s < steps; s++) step();
        });
        await device.queue.onSubmittedWorkDone();
        return { W, c, grew: { tensors: tf.memory().numTensors - tensors, buffers: alive.count - buffers } };
      } finally {
        alive.stop();
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
  it(`${STEPS} steps of an embedding with an ArcFace head (W a tf.Variable) and a cross-entropy: flat memory, no map`, async () => {
    const losses = tfLosses(tf);
    const device: GPUDevice = tf.backend().device;
    const E = 4;
    const xs = tf.add(tf.tensor2d(randomMatrix(new Rng(46), N, D).data, [N, D]), 0);
    const embed = tf.variable(tf.tensor2d(randomMatrix(new Rng(47), D, E, 0.5).data, [D, E]));
    const W = tf.variable(tf.tensor2d(randomMatrix(new Rng(48), C, E).data, [C, E]));
    const classify = tf.variable(tf.tensor2d(randomMatrix(new Rng(49), E, C, 0.3).data, [E, C]));
    const opt = tf.train.sgd(0.1);
    const step = () =>
      opt.minimize(() => {
        const x = tf.matMul(xs, embed);
        const head = losses.marginHead({ x, W, labels }, { kind: "arcface", scale: 8, margin: 0.2 });
        return tf.add(head, losses.crossEntropy({ logits: tf.matMul(x, classify), labels }, { labelSmoothing: 0.1 }));
      }, true);
    const first = step();
    const alive = buffersAlive(device);
    try {
      for (let s = 0; s < 5; s++) tf.dispose(step());
      await device.queue.onSubmittedWorkDone();
      const before = { tensors: tf.memory().numTensors, buffers: alive.count, bytes: tf.memory().numBytes };
      const t0 = performance.now();
      const c = await counted(device, () => {
        for (let s = 0; s < STEPS; s++) tf.dispose(step());
      });
      await device.queue.onSubmittedWorkDone();
      const ms = (performance.now() - t0) / STEPS;
      const after = { tensors: tf.memory().numTensors, buffers: alive.count, bytes: tf.memory().numBytes };
      console.log(
        `${STEPS} steps: ${c.submits / STEPS} submissions and ${c.maps} maps a step, ${ms.toFixed(1)} ms a step; ` +
          `tensors ${before.tensors} -> ${after.tensors}, GPU buffers alive ${before.buffers} -> ${after.buffers}`,
      );
      assert.equal(c.maps, 0, "maps");
      assert.deepEqual(after, before, "TF.js's tensors and bytes, and the GPU buffers alive");
      const last = step();
      assert.ok((await last.data())[0] < (await first.data())[0], "the loss went down");
      tf.dispose([first, last]);
    } finally {
      alive.stop();
      tf.dispose([xs, embed, W, classify]);
    }
  });

  // Issue 17 item 2: the next state and the parts through options.onResult, as tensors made with no readback.
  it("adaface's state [1, 2] chained over 3 SGD steps of marginHead as tensors: no map, the reference's chain", async () => {
    const losses = tfLosses(tf);
    const device: GPUDevice = tf.backend().device;
    const x = tf.variable(tf.tensor2d(randomMatrix(new Rng(51), N, D, 10).data, [N, D]));
    const W = tf.variable(tf.tensor2d(randomMatrix(new Rng(52), C, D).data, [C, D]));
    const opt = tf.train.sgd(0.05);
    const o = { kind: "adaface", scale: 16 } as const;
    let state: Any = { mean: 20, std: 100 }, expected = { mean: 20, std: 100 };
    const tensors = tf.memory().numTensors;
    for (let step = 0; step < 3; step++) {
      // The reference's next state from this step's x and W (read before the step, outside the count).
      const xh = { data: new Float32Array(await x.data()), shape: [N, D] as const };
      const Wh = { data: new Float32Array(await W.data()), shape: [C, D] as const };
      expected = (js.marginHead.forward({ x: xh, W: Wh, labels, state: expected }, o) as Any).state;
      let parts: Any = null;
      const c = await counted(
        device,
        () =>
          tf.dispose(
            opt.minimize(
              () => losses.marginHead({ x, W, labels, state }, { ...o, onResult: (r) => (parts = r) }),
              true,
            ),
          ),
      );
      assert.equal(c.maps, 0, `maps at step ${step}`);
      assert.ok(parts.state instanceof tf.Tensor, "a tensor on webgpu");
      assert.deepEqual(parts.state.shape, [1, 2]);
      if (state instanceof tf.Tensor) state.dispose(); // the caller disposes the previous state
      state = parts.state;
      const [mean, std] = await state.data();
      assertLossClose(mean, expected.mean, `mean at step ${step}`);
      assertLossClose(std, expected.std, `std at step ${step}`);
    }
    state.dispose();
    assert.equal(tf.memory().numTensors, tensors, "no tensor left but the caller's, once disposed");
    tf.dispose([x, W]);
  });

  it("curricularFace's state [1, 1] and magface's parts ce and g as tensors, the reference's values, no map", async () => {
    const losses = tfLosses(tf) as Any;
    const device: GPUDevice = tf.backend().device;
    const host = faces.curricularFace, mag = faces.magface;
    const cos = tf.add(tf.tensor2d(host.cos.data, [N, C]), 0), mcos = tf.add(tf.tensor2d(mag.cos.data, [N, C]), 0);
    let cf: Any = null, mf: Any = null;
    const c = await counted(device, () => {
      tf.dispose(
        tf.grad((z: Any) => losses.curricularFace({ ...host, cos: z }, { onResult: (r: Any) => (cf = r) }))(cos),
      );
      tf.dispose(tf.grad((z: Any) => losses.magface({ ...mag, cos: z }, { onResult: (r: Any) => (mf = r) }))(mcos));
    });
    assert.equal(c.maps, 0, "maps");
    const refC = js.curricularFace.forward(host as Any, {}), refM = js.magface.forward(mag as Any, {});
    assert.deepEqual(cf.state.shape, [1, 1]);
    assertLossClose((await cf.state.data())[0], refC.state.t, "t'");
    assert.deepEqual([mf.ce.shape, mf.g.shape], [[], []]);
    assertLossClose((await mf.ce.data())[0], refM.ce as number, "ce");
    assertLossClose((await mf.g.data())[0], refM.g as number, "g");
    // The state tensor is the next call's state as it is (a GPU matrix [1, 1] of TF.js's buffer).
    let next: Any = null;
    tf.dispose(losses.curricularFace({ ...host, cos, state: cf.state }, { onResult: (r: Any) => (next = r) }));
    const ref2 = js.curricularFace.forward({ ...host, state: refC.state } as Any, {});
    assertLossClose((await next.state.data())[0], ref2.state.t, "t''");
    tf.dispose([cos, mcos, cf.state, mf.ce, mf.g, next.state]);
  });
});
