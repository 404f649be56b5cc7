// softmargin/tfjs: losses as TensorFlow.js functions through tf.customGrad. The adapter's
// gradients must equal the library's (the same backend's valueAndGrad) and TF.js's own
// autodiff of the same loss composed from tf ops; training through it must move the
// variables by exactly what the optimiser does with those gradients.
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { before, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
import { adafaceInit, type AdafaceState, type CurricularFaceState, js, type SyncLosses, wasm } from "../cpu.ts";
import { tfLosses } from "../tfjs.ts";
import { assertAllClose } from "./helpers/assert.ts";
import { randomLabels, randomMatrix, Rng } from "./helpers/random.ts";

const N = 6, C = 5, D = 4;
const data = (t: tf.Tensor) => t.dataSync() as Float32Array;
/** Gradients agree with float32 TF.js autodiff to float32 rounding of the largest entry. */
const close = (actual: tf.Tensor | Float32Array, expected: tf.Tensor | Float32Array, label: string) => {
  const e = expected instanceof Float32Array ? expected : data(expected);
  const a = actual instanceof Float32Array ? actual : data(actual);
  const scale = Math.max(1e-3, ...Array.from(e, Math.abs));
  assertAllClose(a, e, { atol: 2e-6 * scale, rtol: 1e-5 }, label);
};
const rng = new Rng(11);
const labelsArray = randomLabels(rng, N, C);
const labels = () => tf.tensor1d(labelsArray, "int32");
const onehot = () => tf.oneHot(labels(), C).toFloat();
/** Cosines in [-0.8, 0.8]: away from the clamp and from ArcFace's threshold branch. */
const cosines = () => tf.tensor2d(randomMatrix(new Rng(12), N, C).data.map((v) => 0.8 * Math.tanh(v)), [N, C]);
const xW = () => [
  tf.tensor2d(randomMatrix(new Rng(13), N, D).data, [N, D]),
  tf.tensor2d(randomMatrix(new Rng(14), C, D).data, [C, D]),
];
/** TF.js's mean softmax cross-entropy of logits, the reference every margin loss reduces to. */
const tfCe = (logits: tf.Tensor) => tf.losses.softmaxCrossEntropy(onehot(), logits);
/** Rows scaled to unit length, as F.normalize (no row here is near zero). */
const unit = (t: tf.Tensor) => tf.div(t, tf.norm(t, 2, 1, true));

before(async () => {
  // TF.js's cpu backend greets Node-like runtimes (each new instance) with a hint to install tfjs-node.
  const warn = console.warn;
  console.warn = (...a: unknown[]) => void (String(a[0]).includes("looks like you are running") || warn(...a));
  await tf.setBackend("cpu");
});

describe("tfjs adapter: gradients equal the library's", () => {
  for (const [name, backend] of [["wasm", wasm], ["js", js]] as [string, SyncLosses][]) {
    it(`crossEntropy, arcface and marginHead on ${name}`, () => {
      const losses = tfLosses(tf, { backend });
      const logits = tf.tensor2d(randomMatrix(new Rng(15), N, C, 2).data, [N, C]);
      const host = { logits: { data: data(logits), shape: [N, C] as const }, labels: labelsArray };
      const [value, g] = tfGrad(
        (z) => losses.crossEntropy({ logits: z, labels: labels() }, { labelSmoothing: 0.1 }),
        logits,
      );
      const r = backend.crossEntropy.valueAndGrad(host, { labelSmoothing: 0.1 });
      assert.equal(value, Math.fround(r.loss as number));
      assert.deepEqual(data(g), r.grads.logits.data);

      const cos = cosines();
      const [, gc] = tfGrad((c) => losses.arcface({ cos: c, labels: labelsArray }, { scale: 16 }), cos);
      const ra = backend.arcface.valueAndGrad({ cos: { data: data(cos), shape: [N, C] }, labels: labelsArray }, {
        scale: 16,
      });
      assert.deepEqual(data(gc), ra.grads.cos.data);

      const [x, W] = xW();
      const gs = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        losses.marginHead({ x: a, W: b, labels: labels() }, { kind: "cosface", scale: 8 })
      )([x, W]);
      const rh = backend.marginHead.valueAndGrad(
        { x: { data: data(x), shape: [N, D] }, W: { data: data(W), shape: [C, D] }, labels: labelsArray },
        { kind: "cosface", scale: 8 },
      );
      assert.deepEqual(data(gs[0]), rh.grads.x.data);
      assert.deepEqual(data(gs[1]), rh.grads.W.data);
    });
  }

  it("SPEC §8's losses: ntXent, tripletMargin and proxyAnchor (learnable proxies) equal the library's", () => {
    const losses = tfLosses(tf);
    const [f, proxies] = xW();
    const host = { f: { data: data(f), shape: [N, D] as const }, labels: labelsArray };
    const [vn, gn] = tfGrad((x) => losses.ntXent({ f: x, labels: labels() }, { temperature: 0.5 }), f);
    const rn = wasm.ntXent.valueAndGrad(host, { temperature: 0.5 });
    assert.equal(vn, Math.fround(rn.loss as number));
    assert.deepEqual(data(gn), rn.grads.f.data);
    const [, gt] = tfGrad((x) => losses.tripletMargin({ f: x, labels: labels() }, { mining: "batchHard" }), f);
    assert.deepEqual(data(gt), wasm.tripletMargin.valueAndGrad(host, { mining: "batchHard" }).grads.f.data);
    const gs = tf.grads((a: tf.Tensor, b: tf.Tensor) => losses.proxyAnchor({ f: a, proxies: b, labels: labels() }))([
      f,
      proxies,
    ]);
    const rp = wasm.proxyAnchor.valueAndGrad({ ...host, proxies: { data: data(proxies), shape: [C, D] } });
    assert.deepEqual(data(gs[0]), rp.grads.f.data);
    assert.deepEqual(data(gs[1]), rp.grads.proxies.data);
  });

  it("scales by the upstream gradient: 3 * loss, and per-row weights with reduction none", () => {
    const { normface } = tfLosses(tf);
    const cos = cosines();
    const host = { cos: { data: data(cos), shape: [N, C] as const }, labels: labelsArray };
    const [, g3] = tfGrad((c) => tf.mul(normface({ cos: c, labels: labelsArray }), 3), cos);
    close(g3, wasm.normface.backward(host, {}, 3).cos.data, "3 * normface");
    const u = Float32Array.from({ length: N }, (_, i) => i - 2);
    const [, gu] = tfGrad(
      (c) => tf.sum(tf.mul(normface({ cos: c, labels: labelsArray }, { reduction: "none" }), tf.tensor1d(u))),
      cos,
    );
    close(gu, wasm.normface.backward(host, { reduction: "none" }, u).cos.data, "sum(u * rows)");
  });
});

describe("tfjs adapter: equals TF.js autodiff of the loss composed from tf ops", () => {
  const { crossEntropy, normface, cosface, arcface, marginHead } = tfLosses(tf);

  it("crossEntropy with label smoothing = tf.losses.softmaxCrossEntropy", () => {
    const logits = tf.tensor2d(randomMatrix(new Rng(16), N, C, 3).data, [N, C]);
    const ours = tfGrad((z) => crossEntropy({ logits: z, labels: labels() }, { labelSmoothing: 0.2 }), logits);
    const theirs = tfGrad((z) => tf.losses.softmaxCrossEntropy(onehot(), z, undefined, 0.2), logits);
    close(tf.scalar(ours[0]), tf.scalar(theirs[0]), "loss");
    close(ours[1], theirs[1], "d/dlogits");
  });

  it("normface, cosface and arcface on cosines", () => {
    const s = 16, m = 0.3;
    const cases: [string, (c: tf.Tensor) => tf.Tensor, (c: tf.Tensor) => tf.Tensor][] = [
      ["normface", (c) => normface({ cos: c, labels: labels() }, { scale: s }), (c) => tfCe(tf.mul(c, s))],
      [
        "cosface",
        (c) => cosface({ cos: c, labels: labels() }, { scale: s, margin: m }),
        (c) => tfCe(tf.mul(tf.sub(c, tf.mul(onehot(), m)), s)),
      ],
      [
        "arcface",
        (c) => arcface({ cos: c, labels: labels() }, { scale: s, margin: m }),
        // s * cos(acos(c) + m) at the label, s * c elsewhere
        (c) => tfCe(tf.mul(tf.where(tf.cast(onehot(), "bool"), tf.cos(tf.add(tf.acos(c), m)), c), s)),
      ],
    ];
    for (const [name, ours, theirs] of cases) {
      const a = tfGrad(ours, cosines()), b = tfGrad(theirs, cosines());
      close(tf.scalar(a[0]), tf.scalar(b[0]), `${name} loss`);
      close(a[1], b[1], `${name} d/dcos`);
    }
  });

  it("marginHead (cosface): gradients w.r.t. x and W through the normalisations", () => {
    const [x, W] = xW();
    const ours = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
      marginHead({ x: a, W: b, labels: labels() }, { kind: "cosface", scale: 10, margin: 0.2 })
    );
    const theirs = tf.grads((a: tf.Tensor, b: tf.Tensor) => {
      const cos = tf.matMul(unit(a), unit(b), false, true);
      return tfCe(tf.mul(tf.sub(cos, tf.mul(onehot(), 0.2)), 10));
    });
    const [gx, gW] = ours([x, W]), [ex, eW] = theirs([x, W]);
    close(gx, ex, "d/dx");
    close(gW, eW, "d/dW");
  });

  it("weights and tf.Reduction: as tf.losses.computeWeightedLoss of the rows", () => {
    const weights = tf.tensor1d([1, 0, 2, 0.5, 0, 3]);
    const rows = (c: tf.Tensor) => tf.neg(tf.sum(tf.mul(onehot(), tf.logSoftmax(tf.mul(c, 16))), 1));
    for (
      const reduction of [tf.Reduction.NONE, tf.Reduction.SUM, tf.Reduction.MEAN, tf.Reduction.SUM_BY_NONZERO_WEIGHTS]
    ) {
      const f = (c: tf.Tensor) => tf.sum(normface({ cos: c, labels: labels() }, { weights, reduction }));
      const g = (c: tf.Tensor) => tf.sum(tf.losses.computeWeightedLoss(rows(c), weights, reduction));
      const a = tfGrad(f, cosines()), b = tfGrad(g, cosines());
      close(tf.scalar(a[0]), tf.scalar(b[0]), `loss, reduction ${tf.Reduction[reduction]}`);
      close(a[1], b[1], `d/dcos, reduction ${tf.Reduction[reduction]}`);
    }
    // The default with weights is tf.losses' SUM_BY_NONZERO_WEIGHTS; a weights tensor gets a gradient.
    const value = normface({ cos: cosines(), labels: labels() }, { weights });
    close(value, tf.losses.computeWeightedLoss(rows(cosines()), weights), "default reduction with weights");
    const w = tf.variable(weights);
    const { grads } = tf.variableGrads(
      () => normface({ cos: cosines(), labels: labels() }, { weights: w, reduction: "sum" }),
      [w],
    );
    close(grads[w.name], rows(cosines()), "d/dweights of sum(w l)");
  });
});

describe("tfjs adapter: training", () => {
  it("optimizer.minimize moves x and W of a head by -lr times the library's gradients", () => {
    const { marginHead } = tfLosses(tf);
    const [x0, W0] = xW();
    const x = tf.variable(x0), W = tf.variable(W0);
    const host = {
      x: { data: data(x0), shape: [N, D] as const },
      W: { data: data(W0), shape: [C, D] as const },
      labels: labelsArray,
    };
    const g = wasm.marginHead.valueAndGrad(host, { kind: "arcface", scale: 16 });
    const lr = 0.05;
    const loss = tf.train.sgd(lr).minimize(
      () => marginHead({ x, W, labels: labels() }, { kind: "arcface", scale: 16 }),
      true,
    );
    assert.equal(loss!.dataSync()[0], Math.fround(g.loss as number));
    close(x, data(x0).map((v, i) => v - lr * g.grads.x.data[i]), "x after one step");
    close(W, data(W0).map((v, i) => v - lr * g.grads.W.data[i]), "W after one step");
  });

  it("an MLP with a CosFace head learns a separable problem (Adam, tf.variableGrads path)", () => {
    const { marginHead } = tfLosses(tf);
    const r = new Rng(17), n = 60, k = 3;
    const y = Int32Array.from({ length: n }, (_, i) => i % k);
    // Three Gaussian blobs in 2-D.
    const pts = Float32Array.from(
      { length: 2 * n },
      (_, j) => 2 * Math.cos((2 * Math.PI * y[j >> 1]) / k + (j & 1) * Math.PI / 2) + 0.3 * r.normal(),
    );
    const X = tf.tensor2d(pts, [n, 2]);
    const W1 = tf.variable(tf.randomNormal([2, 8], 0, 1, "float32", 1));
    const W2 = tf.variable(tf.randomNormal([8, 2], 0, 1, "float32", 2));
    const W = tf.variable(tf.randomNormal([k, 2], 0, 1, "float32", 3));
    const opt = tf.train.adam(0.05);
    const embed = () => tf.matMul(tf.tanh(tf.matMul(X, W1)), W2);
    const options = { kind: "cosface", scale: 8, margin: 0.2 } as const;
    const step = () => opt.minimize(() => marginHead({ x: embed(), W, labels: y }, options), true)!.dataSync()[0];
    const first = step();
    let last = first;
    for (let i = 0; i < 60; i++) last = step();
    assert.ok(last < 0.3 * first, `loss went from ${first} to ${last}`);
  });

  it("trains on TF.js's wasm backend too", async () => {
    setWasmPaths(fileURLToPath(new URL("../node_modules/@tensorflow/tfjs-backend-wasm/dist/", import.meta.url)));
    assert.ok(await tf.setBackend("wasm"));
    try {
      const { sphereface } = tfLosses(tf);
      const [x0, W0] = xW();
      const x = tf.variable(x0), W = tf.variable(W0);
      const before = data(W).slice();
      const opt = tf.train.sgd(0.1);
      const l0 = opt.minimize(() =>
        sphereface({ x, W, labels: labelsArray }, { m: 2, lambda: 5 }), true)!.dataSync()[0];
      for (let i = 0; i < 20; i++) opt.minimize(() => sphereface({ x, W, labels: labelsArray }, { m: 2, lambda: 5 }));
      const l1 = sphereface({ x, W, labels: labelsArray }, { m: 2, lambda: 5 }).dataSync()[0];
      assert.ok(l1 < l0, `loss ${l0} -> ${l1}`);
      assert.notDeepEqual(data(W), before);
    } finally {
      await tf.setBackend("cpu");
    }
  });
});

describe("tfjs adapter: when it computes what", () => {
  /** The wasm backend with each method's calls counted. */
  function counted() {
    const calls: string[] = [];
    const backend = new Proxy(wasm, {
      get: (t, name: string) =>
        new Proxy((t as unknown as Record<string, object>)[name], {
          get: (l, method: string) =>
          (
            ...a: unknown[]
          ) => (calls.push(method), (l as Record<string, (...b: unknown[]) => unknown>)[method](...a)),
        }),
    });
    return { calls, losses: tfLosses(tf, { backend }) };
  }

  it("one fused valueAndGrad under a gradient tape, forward only outside one, backward for reduction none", () => {
    const { calls, losses } = counted();
    tfGrad((c) => losses.normface({ cos: c, labels: labelsArray }), cosines());
    assert.deepEqual(calls.splice(0), ["valueAndGrad"]);
    losses.normface({ cos: cosines(), labels: labelsArray });
    assert.deepEqual(calls.splice(0), ["forward"]);
    tfGrad((c) => tf.sum(losses.normface({ cos: c, labels: labelsArray }, { reduction: "none" })), cosines());
    assert.deepEqual(calls.splice(0), ["forward", "backward"]);
  });
});

describe("tfjs adapter: errors", () => {
  const { normface, crossEntropy } = tfLosses(tf);
  it("names the argument and the expected value", () => {
    assert.throws(
      () => normface({ cos: tf.zeros([2, 3, 1]), labels: [0, 1] }),
      /inputs\.cos to be a tf\.Tensor of rank 1 or 2, got shape \[2,3,1\]/,
    );
    assert.throws(() => normface({ cos: cosines(), labels: labels() }, { weights: [1], reduction: "mean" }), TypeError);
    assert.throws(() => normface({ cos: cosines(), labels: labels() }, { out: {} } as never), /options\.out/);
    // The library's own checks: unknown keys, labels out of range, float labels that are not integers.
    assert.throws(
      () => crossEntropy({ logits: cosines(), labels: labels() }, { label_smoothing: 0.1 } as never),
      /unknown key "label_smoothing"/,
    );
    assert.throws(() => crossEntropy({ logits: cosines(), labels: tf.tensor1d([0, 1, 2, 3, 4, 5]) }), /labels\[5\]/);
    assert.throws(() => crossEntropy({ logits: cosines(), labels: tf.tensor1d([0, 1, 2, 3, 4, 1.5]) }), /labels\[5\]/);
    assert.throws(() => tfLosses(tf, { backend: wasm, device: 1 } as never), /unknown key "device"/);
  });

  it("a backend named webgpu without a GPUDevice is a clear error (tests/tfjs_webgpu_test.ts runs the real one)", async () => {
    // A stand-in registered under the name "webgpu": the adapter looks for TF.js's device.
    // deno-lint-ignore no-explicit-any
    const cpu = tf.findBackend("cpu") as any;
    tf.registerBackend("webgpu", () => new cpu.constructor());
    try {
      assert.ok(await tf.setBackend("webgpu"));
      assert.throws(
        () => normface({ cos: tf.zeros([2, 3]), labels: [0, 1] }),
        /webgpu backend has no GPUDevice/,
      );
    } finally {
      await tf.setBackend("cpu");
      tf.removeBackend("webgpu");
    }
  });
});

/** The value of `f(x)` and its gradient w.r.t. `x`, from TF.js's autodiff. */
function tfGrad(f: (x: tf.Tensor) => tf.Tensor, x: tf.Tensor): [number, tf.Tensor] {
  const { value, grad } = tf.valueAndGrad(f)(x);
  return [value.dataSync()[0], grad];
}

// Issue 20 item 3: the adapter's own defects, each found as a new user would.
describe("tfjs adapter: weights and tf.Reduction, as a demanding user expects", () => {
  const { normface, klDiv, featureDiversity, crossEntropy } = tfLosses(tf);
  const weights = [1, 0, 2, 0.5, 0, 3];
  /** Per-row normface losses at scale 16 composed from tf ops (TF.js's autodiff of them is the reference). */
  const rows = (c: tf.Tensor) => tf.neg(tf.sum(tf.mul(onehot(), tf.logSoftmax(tf.mul(c, 16))), 1));

  it("leaves no tensor behind: 100 calls with weights or a tf.Reduction, and under tf.grad", () => {
    const cos = cosines(), lab = labels(), w = tf.tensor1d(weights);
    const cases: Record<string, object> = {
      "weights tensor": { weights: w },
      "weights array, sum": { weights, reduction: "sum" },
      "weights, NONE": { weights: w, reduction: tf.Reduction.NONE },
      "tf.Reduction.MEAN": { reduction: tf.Reduction.MEAN },
      "no weights": {},
    };
    for (const [what, options] of Object.entries(cases)) {
      const before = tf.memory().numTensors;
      for (let k = 0; k < 100; k++) normface({ cos, labels: lab }, options).dispose();
      assert.equal(tf.memory().numTensors, before, `${what}: tensors left by 100 calls`);
      for (let k = 0; k < 10; k++) {
        tf.grad((c: tf.Tensor) => tf.sum(normface({ cos: c, labels: lab }, options)))(cos).dispose();
      }
      assert.equal(tf.memory().numTensors, before, `${what}: tensors left by 10 gradients`);
    }
  });

  it("gradients flow to a weights tensor under the default reduction (SUM_BY_NONZERO_WEIGHTS) and every other", () => {
    const cos = cosines();
    const count = weights.filter((x) => x !== 0).length;
    for (const reduction of [undefined, tf.Reduction.SUM_BY_NONZERO_WEIGHTS, tf.Reduction.MEAN, tf.Reduction.SUM]) {
      const w = tf.variable(tf.tensor1d(weights));
      const { value, grads } = tf.variableGrads(() => normface({ cos, labels: labels() }, { weights: w, reduction }), [
        w,
      ]);
      const r = reduction ?? tf.Reduction.SUM_BY_NONZERO_WEIGHTS;
      close(value, tf.losses.computeWeightedLoss(rows(cos), w, r), `value, reduction ${tf.Reduction[r]}`);
      // The reference: TF.js's autodiff of sum(w l) / (the count of non-zero weights, a constant), sum(w l) / sum(w), sum(w l).
      const ref = tf.grad((v: tf.Tensor) =>
        r === tf.Reduction.SUM_BY_NONZERO_WEIGHTS
          ? tf.div(tf.sum(tf.mul(rows(cos), v)), count)
          : tf.losses.computeWeightedLoss(rows(cos), v, r)
      )(w);
      close(grads[w.name], ref, `d/dweights, reduction ${tf.Reduction[r]}`);
      w.dispose();
    }
    // A scalar weight, as tf.losses takes it: every row counts (N), its gradient sum(l) / N.
    const s = tf.variable(tf.scalar(2));
    const { value, grads } = tf.variableGrads(() => normface({ cos, labels: labels() }, { weights: s }), [s]);
    close(value, tf.losses.computeWeightedLoss(rows(cos), s), "value, a scalar weight");
    close(grads[s.name], tf.div(tf.sum(rows(cos)), N), "d/dweight, a scalar weight");
    s.dispose();
  });

  it("weights on a loss that has no per-row losses (no reduction option) is refused as weights, not as reduction", () => {
    const features = [tf.tensor2d([[1, 0], [0, 1]]), tf.tensor2d([[0.5, 0.5], [1, 0]])];
    for (const options of [{ weights: [1, 1] }, { weights: [1, 1], lambda: 0.1 }]) {
      assert.throws(() => featureDiversity({ features }, options as never), (e: Error) => {
        assert.ok(e instanceof TypeError, e.message);
        assert.match(e.message, /options\.weights/);
        assert.match(e.message, /featureDiversity/);
        assert.doesNotMatch(e.message, /unknown key "reduction"/);
        return true;
      });
    }
    assert.throws(
      () => featureDiversity({ features }, { reduction: tf.Reduction.SUM } as never),
      (e: Error) =>
        e instanceof TypeError && /options\.reduction/.test(e.message) && /featureDiversity/.test(e.message),
    );
  });

  it('klDiv with weights and "batchmean": sum(w l) / N, and its gradient', () => {
    const logInput = tf.logSoftmax(tf.tensor2d(randomMatrix(new Rng(21), N, C).data, [N, C]));
    const target = tf.softmax(tf.tensor2d(randomMatrix(new Rng(22), N, C).data, [N, C]));
    const klRows = (z: tf.Tensor) => tf.sum(tf.mul(target, tf.sub(tf.log(target), z)), 1);
    const f = (z: tf.Tensor) => klDiv({ logInput: z, target }, { weights, reduction: "batchmean" });
    const g = (z: tf.Tensor) =>
      tf.div(tf.losses.computeWeightedLoss(klRows(z), tf.tensor1d(weights), tf.Reduction.SUM), N);
    const a = tfGrad(f, logInput), b = tfGrad(g, logInput);
    close(tf.scalar(a[0]), tf.scalar(b[0]), "loss");
    close(a[1], b[1], "d/dlogInput");
    // (a reduction no loss has, with weights: named, not TF.js's "Unknown reduction")
    assert.throws(
      () => crossEntropy({ logits: cosines(), labels: labels() }, { weights, reduction: "batchmean" } as never),
      (e: Error) => e instanceof TypeError && /options\.reduction/.test(e.message) && /batchmean/.test(e.message),
    );
    assert.throws(
      () => normface({ cos: cosines(), labels: labels() }, { weights, reduction: 7 as never }),
      (e: Error) => e instanceof RangeError && /options\.reduction/.test(e.message) && /7/.test(e.message),
    );
  });

  it("an unknown key lists the keys the adapter takes: weights, not out", () => {
    assert.throws(() => normface({ cos: cosines(), labels: labels() }, { weigths: weights } as never), (e: Error) => {
      assert.ok(e instanceof TypeError);
      assert.match(e.message, /unknown key "weigths"/);
      assert.match(e.message, /\bweights\b/);
      assert.doesNotMatch(e.message, /\bout\b/);
      return true;
    });
  });
});

// Issue 17 item 2: the stateful losses take `state` and return the next one, through the adapter too.
describe("tfjs adapter: state and parts through options.onResult", () => {
  const matrixOf = (t: tf.Tensor) => ({
    data: Float32Array.from(data(t)),
    shape: [t.shape[0], t.shape[1]] as [number, number],
  });

  for (const [name, backend] of [["wasm", wasm], ["js", js]] as [string, SyncLosses][]) {
    it(`adaface (marginHead): 4 optimizer steps chain the state as the library's own chain and AdaFace's update (${name})`, () => {
      const losses = tfLosses(tf, { backend });
      // Norms around 20 with a spread: the moving statistics move visibly.
      const x = tf.variable(tf.tensor2d(randomMatrix(new Rng(31), N, D, 10).data, [N, D]));
      const W = tf.variable(tf.tensor2d(randomMatrix(new Rng(32), C, D).data, [C, D]));
      const optimizer = tf.train.sgd(0.05);
      const options = { kind: "adaface", scale: 16, margin: 0.4 } as const;
      let state: AdafaceState = adafaceInit(), expected = adafaceInit();
      const alpha = 0.01; // AdaFace's default t_alpha
      for (let step = 0; step < 4; step++) {
        const host = { x: matrixOf(x), W: matrixOf(W), labels: labelsArray, state: expected };
        const lib = backend.marginHead.forward(host, options);
        // AdaFace's update in float64 from this step's x: mean' = a mean(n) + (1-a) mean (unbiased std).
        const norms = Array.from({ length: N }, (_, i) => Math.hypot(...host.x.data.subarray(i * D, (i + 1) * D)));
        const mu = norms.reduce((a, b) => a + b, 0) / N;
        const sd = Math.sqrt(norms.reduce((a, b) => a + (b - mu) ** 2, 0) / (N - 1));
        const formula = {
          mean: alpha * mu + (1 - alpha) * expected.mean,
          std: alpha * sd + (1 - alpha) * expected.std,
        };
        let calls = 0;
        const loss = optimizer.minimize(
          () =>
            losses.marginHead({ x, W, labels: labels(), state }, {
              ...options,
              onResult: (r) => (calls++, state = r.state as AdafaceState),
            }),
          true,
        )!;
        assert.equal(calls, 1, "onResult once per call");
        assert.equal(loss.dataSync()[0], Math.fround(lib.loss as number), `loss at step ${step}`);
        expected = (lib as { state: AdafaceState }).state;
        assert.deepEqual(state, expected, `state at step ${step}`);
        assertAllClose(
          [state.mean, state.std],
          [formula.mean, formula.std],
          { atol: 0, rtol: 1e-5 },
          `AdaFace ${step}`,
        );
      }
      assert.ok(Math.abs(state.mean - 20) > 0.1, `the state moved: ${state.mean}`);
    });
  }

  it("adaface on cosines: the state through tf.grad, forward only and reduction none, as the library's", () => {
    const losses = tfLosses(tf);
    const cos = cosines(), norms = [12, 18, 25, 31, 9, 40];
    const host = { cos: matrixOf(cos), norms, labels: labelsArray, state: adafaceInit() };
    const lib = wasm.adaface.forward(host, { scale: 16 });
    const seen: unknown[] = [];
    const onResult = (r: unknown) => void seen.push(r);
    tf.grad((c: tf.Tensor) =>
      losses.adaface({ cos: c, norms, labels: labelsArray, state: adafaceInit() }, { scale: 16, onResult })
    )(cos);
    losses.adaface({ cos, norms: tf.tensor1d(norms), labels: labels(), state: adafaceInit() }, { scale: 16, onResult });
    losses.adaface({ cos, norms, labels: labelsArray, state: adafaceInit() }, {
      scale: 16,
      reduction: "none",
      onResult,
    });
    assert.deepEqual(seen, [{ state: lib.state }, { state: lib.state }, { state: lib.state }]);
  });

  it("curricularFace: 3 steps on a cosine variable chain t as t' = momentum mean(c_y) + (1 - momentum) t", () => {
    const losses = tfLosses(tf);
    const cos = tf.variable(cosines());
    const optimizer = tf.train.sgd(0.02);
    let state: CurricularFaceState = { t: 0 }, t = 0;
    for (let step = 0; step < 3; step++) {
      const c = data(cos);
      const lib = wasm.curricularFace.forward({ cos: matrixOf(cos), labels: labelsArray, state }, { scale: 16 });
      const mean = labelsArray.reduce((a, y, i) => a + c[i * C + y], 0) / N;
      t = 0.01 * mean + 0.99 * t;
      optimizer.minimize(() =>
        losses.curricularFace({ cos, labels: labelsArray, state }, {
          scale: 16,
          onResult: (r) => (state = r.state as CurricularFaceState),
        })
      );
      assert.deepEqual(state, lib.state, `step ${step}`);
      assertAllClose([state.t], [t], { atol: 1e-9, rtol: 1e-6 }, `t at step ${step}`);
    }
    assert.ok(state.t > 0, "t moved");
  });

  it("magface's parts ce and g (value = ce + lambda g), distillation's kl and ce; with weights the per-row parts", () => {
    const losses = tfLosses(tf);
    const cos = cosines(), norms = tf.tensor1d([12, 18, 25, 31, 9, 40]);
    const host = { cos: matrixOf(cos), norms: Array.from(data(norms)), labels: labelsArray };
    const lib = wasm.magface.forward(host, {});
    let parts: Record<string, unknown> = {};
    const value = tf.grads((c: tf.Tensor, n: tf.Tensor) =>
      losses.magface({ cos: c, norms: n, labels: labels() }, { onResult: (r) => (parts = r) })
    );
    const [gc, gn] = value([cos, norms]);
    assert.deepEqual(parts, { ce: lib.ce, g: lib.g });
    // (the norms' gradient, a vector [N] of the library, comes back as a tensor [N])
    const lg = wasm.magface.valueAndGrad(host, {}).grads;
    assert.deepEqual(data(gc), lg.cos.data);
    assert.deepEqual(data(gn), lg.norms);
    assertAllClose(
      [(parts.ce as number) + 35 * (parts.g as number)],
      [lib.loss as number],
      { rtol: 1e-12 },
      "ce + 35 g",
    );
    const student = tf.tensor2d(randomMatrix(new Rng(33), N, C).data, [N, C]);
    const teacher = tf.tensor2d(randomMatrix(new Rng(34), N, C).data, [N, C]);
    const dl = wasm.distillation.forward({
      student: matrixOf(student),
      teacher: matrixOf(teacher),
      labels: labelsArray,
    }, {});
    losses.distillation({ student, teacher, labels: labels() }, { onResult: (r) => (parts = r) });
    assert.deepEqual(parts, { kl: dl.kl, ce: dl.ce });
    // With weights the library runs per row ("none"): its parts per row.
    const rows = wasm.magface.forward(host, { reduction: "none" }) as unknown as Record<string, Float32Array>;
    losses.magface({ cos, norms, labels: labels() }, { weights: [1, 0, 1, 1, 2, 1], onResult: (r) => (parts = r) });
    assert.deepEqual(parts, { ce: rows.ce, g: rows.g });
  });

  it("no tensor is left behind, and a bad onResult is a TypeError naming it; an unknown key lists onResult", () => {
    const losses = tfLosses(tf);
    const cos = cosines();
    const before = tf.memory().numTensors;
    for (let i = 0; i < 5; i++) {
      tf.dispose(losses.adaface({ cos, norms: [20, 20, 20, 20, 20, 20], labels: labelsArray, state: adafaceInit() }, {
        onResult: () => {},
      }));
    }
    assert.equal(tf.memory().numTensors, before);
    assert.throws(
      () => losses.normface({ cos, labels: labelsArray }, { onResult: 3 as never }),
      (e: Error) => e instanceof TypeError && /options\.onResult/.test(e.message) && /function/.test(e.message),
    );
    assert.throws(
      () => losses.normface({ cos, labels: labelsArray }, { onresult: () => {} } as never),
      (e: Error) =>
        e instanceof TypeError && /unknown key "onresult"/.test(e.message) && /\bonResult\b/.test(e.message),
    );
  });
});
