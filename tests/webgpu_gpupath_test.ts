// The GPU path inside someone else's training step (SPEC §10) on every loss of the WebGPU
// backend: with GPU-resident inputs, `readback: false` leaves the loss, its parts and the
// gradients on the GPU and maps no buffer (counted: one submission, zero mapAsync), with
// the values of the readback path; `encoder` records into the caller's encoder (nothing is
// submitted until the caller does); `losses.sync` returns the same GPU results without a
// Promise, inside a synchronous callback; and the bad combinations are named errors.
// Skipped where the runtime has no WebGPU adapter (Bun).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type GpuMatrix, init, type Losses } from "../mod.ts";
import { findAdapter, gpuLosses, requestDevice } from "../src/backend.ts";
import { count, download, sharedDevice, upload } from "./helpers/gpu.ts";
import { assertGradClose, assertLossClose, assertThrowsNamed } from "./helpers/assert.ts";
import { webgpuMissing } from "./helpers/backends.ts";
import { type Mat, randomMatrix, Rng, seedOf } from "./helpers/random.ts";
import { Deferred, deferredColumn, first, lin, one, recip, reduceRows, total } from "../src/kernels/deferred.ts";
import {
  allSpecs,
  cosineMarginSpecs,
  headSpecs,
  type LossSpec,
  randomUpstream,
  subcenterSpecs,
} from "./helpers/specs.ts";
import { moeSpecs } from "./helpers/specs_moe.ts";
import { clipSpec, siglipSpec } from "./helpers/specs_clip.ts";
import { metricSpecs } from "./helpers/specs_metric.ts";
import { linearCrossEntropySpec } from "./helpers/specs_lce.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const skip = webgpuMissing;

/** Every loss of the WebGPU backend (not the metric and the transforms). */
const specs: readonly LossSpec[] = [
  ...allSpecs.filter((s) => !s.matrixOutput && s.name !== "accuracy"),
  // (with insightface's filtering threshold too: the fused kernel's non-target transform, no host data)
  ...cosineMarginSpecs.map((s) =>
    s.name === "normface"
      ? s
      : { ...s, optionSets: (c: number) => [...s.optionSets(c), { interclassFilteringThreshold: 0.3 }] }
  ),
  ...headSpecs,
  // (sub-centres: the fused kernel's maximum over each class's columns)
  ...subcenterSpecs,
  ...moeSpecs,
  clipSpec,
  siglipSpec,
  ...metricSpecs,
  linearCrossEntropySpec,
];

/** Options for drawing a problem (physicsContrastive has a rule only with a threshold). */
const drawOptions: Record<string, Record<string, Any>> = { physicsContrastive: { threshold: 0.8 } };

const N = 5, C = 7;

/** `inputs` with its differentiable inputs (matrices and lists of matrices) uploaded to the device. */
async function onGpu(spec: LossSpec, inputs: Record<string, Any>): Promise<Record<string, Any>> {
  const out: Record<string, Any> = { ...inputs };
  for (const k of spec.grads) {
    const v = inputs[k];
    out[k] = Array.isArray(v) ? await Promise.all(v.map((m: Mat) => upload(m))) : await upload(v);
  }
  return out;
}

/** A result's values (loss, parts, gradients) as host arrays, by name (`grads.x`, `grads.list.0`). */
async function values(r: Record<string, Any>): Promise<Record<string, Float32Array | number>> {
  const out: Record<string, Float32Array | number> = {};
  const put = async (key: string, v: Any) => {
    if (typeof v === "number") out[key] = v;
    else if (v instanceof Float32Array) out[key] = v;
    else if (Array.isArray(v)) { for (let k = 0; k < v.length; k++) await put(`${key}.${k}`, v[k]); }
    else if (v && v.buffer && v.shape) out[key] = await download(v);
    else if (v && v.data) out[key] = v.data;
    else if (v && typeof v === "object") { for (const [k, x] of Object.entries(v)) await put(`${key}.${k}`, x); }
  };
  for (const [k, v] of Object.entries(r)) await put(k, v);
  return out;
}

/** Every value of `actual` (on the GPU: `[1, 1]` for a number) close to `expected`'s. */
function assertSame(actual: Record<string, Any>, expected: Record<string, Any>, label: string): void {
  assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort(), `${label}: the same values`);
  for (const [k, e] of Object.entries(expected)) {
    const a = actual[k];
    if (typeof e === "number") {
      assert.ok(a instanceof Float32Array && a.length === 1, `${label} ${k}: a [1, 1] GPU matrix`);
      assertLossClose(a[0], e, `${label} ${k}`);
    } else assertLossClose(a, e, `${label} ${k}`, k.startsWith("grads.") ? 1e-6 : 1e-5);
  }
}

/** Every GPU value of a GPU-path result: `{ buffer, shape }` (a list: each). */
function assertOnGpu(r: Record<string, Any>, label: string): void {
  for (const [k, v] of Object.entries(r)) {
    if (k === "grads") assertOnGpu(v, `${label} grads`);
    else if (Array.isArray(v)) v.forEach((m, i) => assert.ok(m.buffer && m.shape, `${label} ${k}[${i}] on the GPU`));
    else assert.ok(v?.buffer !== undefined && v.shape?.length === 2, `${label} ${k}: a GPU matrix, got ${v}`);
  }
}

describe("src/kernels/deferred.ts on host values, and its misuse", () => {
  it("lin, total, reduceRows, recip, first, one compute in float64 as the finish steps did", () => {
    const rows = Float64Array.of(1, 2, 3.5), zs = Float64Array.of(0.25, 0, -1);
    assert.equal(lin(1, [2, 3], [4, 0.5]), 9);
    assert.deepEqual(lin(0, [rows, 1], [zs, 2]), Float32Array.of(1.5, 2, 1.5));
    assert.deepEqual(lin(1, [rows, 1], [2, 1]), Float32Array.of(4, 5, 6.5), "a number term on every row");
    assert.equal(total(rows), 6.5);
    assert.equal(reduceRows(rows, "mean", 2), 3.25);
    assert.equal(reduceRows(rows, "mean", 0), 0, "a mean over nothing is 0");
    assert.equal(reduceRows(rows, "sum", 2), 6.5);
    assert.deepEqual(reduceRows(rows, "none", 2), Float32Array.of(1, 2, 3.5));
    assert.equal(recip(4), 0.25);
    assert.equal(first(rows), 1);
    assert.deepEqual(one(2), Float64Array.of(2));
  });

  it("arithmetic on a GPU value is a TypeError naming the helpers; mixed terms are refused", () => {
    const d = deferredColumn({} as GPUBuffer, 3, 2, 0);
    assert.throws(() => (d as Any) + 1, TypeError, "lin");
    assert.throws(() => [...(d as Any)], TypeError, "finish step");
    assert.throws(() => Float64Array.from(d), TypeError, "finish step");
    assert.throws(() => lin(0, [d, 1], [Float64Array.of(1, 2, 3), 1]), TypeError, "mix");
    assert.throws(() => lin(0, [d, 1], [total(d) as Any, 1]), TypeError, "all scalars or all vectors");
    const m = reduceRows(d, "mean", 4) as Any;
    assert.ok(m instanceof Deferred && !m.vector && m.node.op === "lin" && m.node.terms[0][1] === 0.25);
    assert.ok((reduceRows(d, "none", 4) as Any) === d, '"none" keeps the rows');
  });
});

describe("readback: false on every loss", { skip }, () => {
  for (const spec of specs) {
    it(`${spec.name}: zero maps, one submission, the readback path's values`, async () => {
      const dev = await sharedDevice();
      const l = await gpuLosses(dev, { auto: false, note: "test" });
      const rng = new Rng(seedOf(`gpupath ${spec.name}`));
      const loss = (l as Any)[spec.name];
      for (const o of spec.optionSets(C)) {
        const inputs = await onGpu(spec, spec.random(rng, N, C, 1, { ...drawOptions[spec.name], ...o }));
        const label = `${spec.name} ${JSON.stringify(o)}`;
        const expected = await values(await loss.valueAndGrad(inputs, o));
        const c = await count<Any>(dev, () => loss.valueAndGrad(inputs, { ...o, readback: false }));
        assert.equal(c.maps, 0, `${label}: maps`);
        assert.equal(c.submits, 1, `${label}: submissions`);
        assertOnGpu(c.r, label);
        const none = o.reduction === "none";
        assert.deepEqual(c.r.loss.shape, none ? [N, 1] : [1, 1], `${label}: the loss's shape`);
        assertSame(await values(c.r), expected, label);
        // backward with an upstream gradient, and forward.
        const up = randomUpstream(spec, rng, N, C, o);
        const eb = await values(await loss.backward(inputs, o, up));
        const b = await count<Any>(dev, () => loss.backward(inputs, { ...o, readback: false }, up));
        assert.equal(b.maps, 0, `${label}: backward maps`);
        assertSame(await values(b.r), eb, `${label} backward`);
        const ef = await values(await loss.forward(inputs, o));
        const f = await count<Any>(dev, () => loss.forward(inputs, { ...o, readback: false }));
        assert.equal(f.maps, 0, `${label}: forward maps`);
        assertSame(await values(f.r), ef, `${label} forward`);
      }
      l.dispose();
    });
  }
});

describe("the caller's encoder and the synchronous form", { skip }, () => {
  for (const spec of specs) {
    it(`${spec.name}: recorded into the caller's encoder, and losses.sync in a synchronous callback`, async () => {
      const dev = await sharedDevice();
      const l = await gpuLosses(dev, { auto: false, note: "test" });
      const rng = new Rng(seedOf(`gpupath encoder ${spec.name}`));
      const o = spec.optionSets(C).at(-1)!;
      const inputs = await onGpu(spec, spec.random(rng, N, C, 1, { ...drawOptions[spec.name], ...o }));
      const expected = await values(await (l as Any)[spec.name].valueAndGrad(inputs, o));
      // The caller's encoder: nothing is submitted or mapped until the caller submits.
      const enc = dev.createCommandEncoder();
      const e = await count<Any>(
        dev,
        () => (l as Any)[spec.name].valueAndGrad(inputs, { ...o, readback: false, encoder: enc }),
      );
      assert.deepEqual([e.submits, e.maps], [0, 0], "the call submits and maps nothing");
      dev.queue.submit([enc.finish()]);
      assertSame(await values(e.r), expected, `${spec.name} encoder`);
      // losses.sync: the result itself (no Promise), inside a synchronous callback.
      const s = await count(dev, () => {
        const r = [o].map((opts) => (l.sync as Any)[spec.name].valueAndGrad(inputs, opts))[0];
        assert.ok(!(r instanceof Promise) && typeof r.then !== "function", "a value, not a Promise");
        return Promise.resolve(r);
      });
      assert.deepEqual([s.submits, s.maps], [1, 0], "sync: one submission, no map");
      assertSame(await values(s.r), expected, `${spec.name} sync`);
      // losses.sync into the caller's encoder, twice before one submission.
      const enc2 = dev.createCommandEncoder();
      const r1 = (l.sync as Any)[spec.name].forward(inputs, { ...o, encoder: enc2 });
      const r2 = (l.sync as Any)[spec.name].forward(inputs, { ...o, encoder: enc2 });
      dev.queue.submit([enc2.finish()]);
      assertLossClose(await download(r1.loss), await download(r2.loss), `${spec.name} two calls in one encoder`);
      const want = typeof expected.loss === "number" ? [expected.loss] : expected.loss;
      assertLossClose(await download(r1.loss), want, `${spec.name} sync forward in an encoder`);
      l.dispose();
    });
  }
});

describe("the call's own buffers", { skip }, () => {
  it("are destroyed after the submission: with the caller's encoder, when the caller submits it", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" });
    const rng = new Rng(seedOf("gpupath buffers"));
    const inputs = { logits: await upload(randomMatrix(rng, N, C, 2)), labels: [0, 1, 2, 3, 4] };
    // (A first call makes the context's lasting buffers: the placeholders of unused bindings.)
    l.sync.crossEntropy.valueAndGrad(inputs);
    const d = dev as Any, create = d.createBuffer, destroy = GPUBuffer.prototype.destroy;
    const alive = new Set<GPUBuffer>();
    d.createBuffer = (...a: Any[]) => {
      const b = create.apply(dev, a);
      alive.add(b);
      return b;
    };
    GPUBuffer.prototype.destroy = function (this: GPUBuffer) {
      alive.delete(this);
      return destroy.apply(this);
    };
    const results = (r: Any) => [r.loss.buffer, r.z.buffer, r.grads.logits.buffer] as GPUBuffer[];
    try {
      // Own encoder (submitted by the call), then two calls in the caller's encoder, not yet submitted.
      results(l.sync.crossEntropy.valueAndGrad(inputs)).forEach((b) => b.destroy());
      assert.equal(alive.size, 0, "the call's own buffers after its submission");
      const enc = dev.createCommandEncoder();
      const r = [1, 2].map(() => l.sync.crossEntropy.valueAndGrad(inputs, { encoder: enc }));
      const own = alive.size - 6;
      assert.ok(own > 0, "the calls' own buffers live until the caller submits");
      const commands = enc.finish();
      assert.equal(alive.size - 6, own, "finishing the encoder keeps them");
      dev.queue.submit([commands]);
      assert.equal(alive.size, 6, "submitted: only the results are left");
      assertLossClose(await download(r[1].loss), await download(r[0].loss), "the two calls' losses");
      r.flatMap(results).forEach((b) => b.destroy());
      // An encoder never submitted: its calls' buffers go with dispose.
      const lost = dev.createCommandEncoder();
      results(l.sync.crossEntropy.valueAndGrad(inputs, { encoder: lost })).forEach((b) => b.destroy());
      assert.ok(alive.size > 0);
      l.dispose();
      assert.equal(alive.size, 0, "dispose destroys them");
    } finally {
      d.createBuffer = create;
      GPUBuffer.prototype.destroy = destroy;
    }
  });
});

describe("precompile", { skip }, () => {
  it("after init's precompile no call of losses.sync compiles a pipeline", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test", precompile: true });
    const d = dev as Any, sync = d.createComputePipeline, async_ = d.createComputePipelineAsync;
    let compiled = 0;
    d.createComputePipeline = (...a: Any[]) => (compiled++, sync.apply(dev, a));
    d.createComputePipelineAsync = (...a: Any[]) => (compiled++, async_.apply(dev, a));
    try {
      for (const spec of specs) {
        for (const o of spec.optionSets(C)) {
          const rng = new Rng(seedOf(`gpupath precompile ${spec.name}`));
          const inputs = await onGpu(spec, spec.random(rng, N, C, 1, { ...drawOptions[spec.name], ...o }));
          (l.sync as Any)[spec.name].valueAndGrad(inputs, o);
        }
      }
    } finally {
      d.createComputePipeline = sync;
      d.createComputePipelineAsync = async_;
    }
    await dev.queue.onSubmittedWorkDone();
    assert.equal(compiled, 0, "pipelines compiled after precompile");
    l.dispose();
  });
});

describe("types", () => {
  it("readback: false and losses.sync are typed as GPU matrices (checked by the type checker)", () => {
    const typed = async (l: Losses, g: GpuMatrix) => {
      const r = await l.crossEntropy.valueAndGrad({ logits: g, labels: [0] }, { readback: false, zLoss: 1e-4 });
      const parts: GpuMatrix[] = [r.loss, r.z, r.grads.logits];
      const s = l.sync.marginHead.valueAndGrad({ x: g, W: g, labels: [0] }, { kind: "arcface" });
      const grads: GpuMatrix[] = [s.loss, s.grads.x, s.grads.W];
      const list: GpuMatrix[] = l.sync.featureDiversity.backward({ features: [g, g] }).features;
      // @ts-expect-error: the loss of readback: false is not a number
      const n: number = (await l.crossEntropy.forward({ logits: g, labels: [0] }, { readback: false })).loss;
      const h: number = (await l.crossEntropy.forward({ logits: g, labels: [0] })).loss;
      return [parts, grads, list, n, h];
    };
    assert.equal(typeof typed, "function");
  });
});

describe("bad combinations are named errors", { skip }, () => {
  const logits = { data: new Float32Array([2, 0, 0, 0, 3, 0]), shape: [2, 3] as const };
  const labels = [0, 1];

  it("readback: false with host inputs only", async () => {
    const l = await gpuLosses(await sharedDevice(), { auto: false, note: "test" });
    await assertThrowsNamed(
      () => l.crossEntropy.forward({ logits, labels }, { readback: false }),
      TypeError,
      "GPU-resident input",
    );
    assert.throws(() => l.sync.crossEntropy.forward({ logits, labels }), TypeError, "GPU-resident input");
    l.dispose();
  });

  it("an encoder without readback: false, readback: true on the sync form, and bad values", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" });
    const g = { logits: await upload(logits), labels };
    const encoder = dev.createCommandEncoder();
    await assertThrowsNamed(() => l.crossEntropy.forward(g, { encoder }), TypeError, "options.readback", "encoder");
    await assertThrowsNamed(
      () => l.crossEntropy.forward(g, { encoder, readback: true }),
      TypeError,
      "options.readback to be false",
    );
    assert.throws(() => l.sync.crossEntropy.forward(g, { readback: true }), /options\.readback to be false or absent/);
    await assertThrowsNamed(
      () => l.crossEntropy.forward(g, { readback: "no" } as Any),
      TypeError,
      "options.readback",
      '"no"',
    );
    assert.throws(
      () => l.sync.crossEntropy.forward(g, { encoder: {} } as Any),
      /options.encoder to be a GPUCommandEncoder/,
    );
    assert.throws(() => l.sync.crossEntropy.forward(g, { checkFinite: true }), /checkFinite to be false/);
    assert.throws(() => l.sync.crossEntropy.forward(g, { reductio: "sum" } as Any), /reductio/);
    // readback: true is the usual call.
    assert.equal(typeof (await l.crossEntropy.forward(g, { readback: true })).loss, "number");
    l.dispose();
  });

  // (interTopK and a per-row margin on a GPU-resident cos run on the GPU path: tests/webgpu_cos_inter_test.ts)

  it("the GPU path on a CPU backend", async () => {
    const l = await init({ backend: "js" });
    const g = { logits: { buffer: {} as GPUBuffer, shape: [2, 3] as const }, labels };
    assert.throws(() => l.sync.crossEntropy.forward(g), TypeError, "webgpu backend");
    await assertThrowsNamed(() => l.crossEntropy.forward({ logits, labels }, { readback: false }), TypeError, "webgpu");
  });

  it("a device error of a recorded call is reported by the next call, and by dispose", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" });
    // A buffer that cannot be bound as storage: the bind group is invalid (a device error, not a throw).
    const bad = dev.createBuffer({ size: 64, usage: 0x08 | 0x04 }); // COPY_DST | COPY_SRC
    const g = { logits: await upload(logits), labels };
    const r = l.sync.crossEntropy.forward({ logits: { buffer: bad, shape: [2, 3] }, labels });
    assert.ok(r.loss.buffer, "the call returns");
    await new Promise((ok) => setTimeout(ok, 50));
    await dev.queue.onSubmittedWorkDone();
    assert.throws(() => l.sync.crossEntropy.forward(g), /WebGPU error of an earlier call/);
    assert.ok(l.sync.crossEntropy.forward(g).loss.buffer, "reported once");
    l.sync.crossEntropy.forward({ logits: { buffer: bad, shape: [2, 3] }, labels });
    await new Promise((ok) => setTimeout(ok, 50));
    assert.throws(() => l.dispose(), /WebGPU error of an earlier call/);
    // The asynchronous form awaits the report and rejects with it.
    const l2 = await gpuLosses(dev, { auto: false, note: "test" });
    await assertThrowsNamed(
      () => l2.crossEntropy.forward({ logits: { buffer: bad, shape: [2, 3] }, labels }, { readback: false }),
      Error,
      "WebGPU error",
    );
    l2.dispose();
    bad.destroy();
  });
});

describe("readback: false matches the CPU", { skip }, () => {
  it("in chunks of rows (a device whose storage bindings hold 2 KiB): the readback path's values", async () => {
    const dev = await requestDevice((await findAdapter()).adapter!);
    const l = await gpuLosses(dev, { auto: false, note: "test", maxBindingBytes: 2048 });
    const rng = new Rng(seedOf("gpupath chunks"));
    const logits = randomMatrix(rng, 40, 30, 5), labels = Int32Array.from({ length: 40 }, (_, i) => (i * 7) % 30);
    const inputs = { logits: await upload(logits, dev), labels };
    const js = await init({ backend: "js" });
    for (const o of [{}, { reduction: "none" as const, zLoss: 0.01 }]) {
      const expected = await js.crossEntropy.valueAndGrad({ logits, labels }, o);
      const r = l.sync.crossEntropy.valueAndGrad(inputs, o);
      const loss = await download(r.loss, dev);
      assertLossClose(typeof expected.loss === "number" ? loss[0] : loss, expected.loss, `loss ${JSON.stringify(o)}`);
      assertGradClose(await download(r.grads.logits, dev), expected.grads.logits.data, "gradient");
    }
    l.dispose();
    dev.destroy();
  });

  it("crossEntropy's loss, z and gradient against the reference (weights, ignored rows, softcap, z-loss)", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" });
    const js = await init({ backend: "js" });
    const rng = new Rng(seedOf("gpupath reference"));
    const logits = randomMatrix(rng, 33, 17, 30);
    const labels = Int32Array.from({ length: 33 }, (_, i) => (i % 5 === 0 ? -100 : i % 17));
    const o = { weight: Float32Array.from({ length: 17 }, (_, j) => 0.5 + j / 17), softcap: 20, zLoss: 1e-3 };
    const ref = await js.crossEntropy.valueAndGrad({ logits, labels }, o);
    const r = l.sync.crossEntropy.valueAndGrad({ logits: await upload(logits), labels }, o);
    assertLossClose((await download(r.loss))[0], ref.loss, "loss");
    assertLossClose((await download(r.z))[0], ref.z, "z");
    assertLossClose(await download(r.grads.logits), ref.grads.logits.data, "gradient", 1e-4);
    l.dispose();
  });
});
