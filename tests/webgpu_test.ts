// The WebGPU backend's own behaviour (the shared suites of every loss also run on it,
// see helpers/backends.ts): backend choice, GPU-resident inputs and outputs, one
// submission and one readback per call, split bindings, checkFinite on the GPU, one
// context per device and its disposal, a lost device, and shader compilation. Skipped with
// the reason where the runtime has no WebGPU adapter (Bun), where `auto` must pick wasm.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { js, wasm } from "../cpu.ts";
import { DeviceLostError, init } from "../mod.ts";
import { findAdapter, gpuLosses, requestDevice } from "../src/backend.ts";
import { count, download, sharedDevice, upload } from "./helpers/gpu.ts";
import { SHADERS } from "../src/webgpu/generated.ts";
import { GpuContext } from "../src/webgpu/context.ts";
import { assertGradClose, assertLossClose, assertThrowsNamed } from "./helpers/assert.ts";
import { webgpuMissing } from "./helpers/backends.ts";
import { randomLabels, randomMatrix, Rng } from "./helpers/random.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const skip = webgpuMissing;

/** The device of the adapter here, made once. */
const device = sharedDevice;

/**
 * A second device, made once, whose context binds at most 2 KiB (a device has one
 * context, made with the options of its first use).
 */
let small: GPUDevice | null = null;
async function smallDevice(): Promise<GPUDevice> {
  return small ??= await requestDevice((await findAdapter()).adapter!);
}
async function smallLosses() {
  return await gpuLosses(await smallDevice(), { auto: false, note: "test", maxBindingBytes: 2048 });
}

describe("init chooses a backend", () => {
  it("auto says which backend it chose and why", async () => {
    const l = await init();
    assert.ok(["webgpu", "wasm"].includes(l.backend), l.backend);
    assert.match(l.note, /\w/);
    if (webgpuMissing) {
      // Bun (no navigator.gpu): auto must pick wasm and say so.
      assert.equal(l.backend, "wasm");
      assert.match(l.note, /no WebGPU|no adapter|requestAdapter/);
    }
    const logits = { data: new Float32Array([1, 2, 3]), shape: [1, 3] as const };
    assertLossClose((await l.crossEntropy.forward({ logits, labels: [2] })).loss as number, 0.40760596444, "auto");
  });

  it(
    "webgpu fails clearly without an adapter",
    { skip: webgpuMissing ? false : "an adapter exists here" },
    async () => {
      await assertThrowsNamed(() => init({ backend: "webgpu" }), Error, "WebGPU adapter");
    },
  );

  it("rejects a device that is not a GPUDevice", async () => {
    await assertThrowsNamed(() => init({ backend: "webgpu", device: {} as Any }), TypeError, "options.device");
  });

  it("auto with a device measures a round trip and keeps small host problems on wasm", { skip }, async () => {
    const l = await init({ backend: "auto", device: await device() });
    assert.equal(l.backend, "webgpu");
    assert.match(l.note, /round trip takes [\d.]+ ms; host problems under \d+ logits run on wasm/);
    const all = await init({ backend: "auto", device: await device(), minGpuLogits: 0 });
    assert.match(all.note, /under 0 logits/);
    const logits = { data: new Float32Array([1, 2, 3]), shape: [1, 3] as const };
    for (const x of [l, all]) {
      assertLossClose((await x.crossEntropy.forward({ logits, labels: [2] })).loss as number, 0.40760596444, "loss");
    }
    await assertThrowsNamed(() => init({ minGpuLogits: -1 }), RangeError, "options.minGpuLogits", "-1");
  });

  it("webgpu runs on the adapter and names it", { skip }, async () => {
    const l = await init({ backend: "webgpu" });
    assert.equal(l.backend, "webgpu");
    assert.match(l.note, /^webgpu: WebGPU adapter/);
  });
});

describe("GPU-resident inputs and outputs", () => {
  const rng = new Rng(5);
  const logits = randomMatrix(rng, 37, 129, 3);
  const labels = randomLabels(rng, 37, 129, 0.2);

  it("crossEntropy: loss read back, gradient left on the GPU", { skip }, async () => {
    const l = await init({ backend: "webgpu", device: await device() });
    const ref = js.crossEntropy.valueAndGrad({ logits, labels }, { labelSmoothing: 0.1 });
    const gpuLogits = await upload(logits);
    const r = await l.crossEntropy.valueAndGrad({ logits: gpuLogits, labels }, { labelSmoothing: 0.1 });
    assertLossClose(r.loss as number, ref.loss as number, "loss");
    const g = r.grads.logits as Any;
    assert.ok(g.buffer && g.data === undefined, "the gradient is a { buffer, shape }");
    assert.deepEqual([...g.shape], [37, 129]);
    assertGradClose({ data: await download(g), shape: g.shape }, ref.grads.logits.data, "grads.logits");
    assert.deepEqual(await download(gpuLogits), logits.data, "the input buffer is unchanged");
  });

  it("crossEntropy with softcap and zLoss (SPEC §9) on GPU-resident logits, in row chunks too", { skip }, async () => {
    for (
      const [l, on] of [[await init({ backend: "webgpu", device: await device() }), await device()], [
        await smallLosses(),
        await smallDevice(),
      ]] as const
    ) {
      for (
        const o of [{ softcap: 4, zLoss: 0.01, labelSmoothing: 0.1 }, { softcap: 30, zLoss: 1e-3, reduction: "none" }]
      ) {
        const ref = js.crossEntropy.valueAndGrad({ logits, labels }, o as Any) as Any;
        const r = await l.crossEntropy.valueAndGrad({ logits: await upload(logits, on), labels }, o as Any) as Any;
        assertLossClose(r.loss, ref.loss, `loss ${JSON.stringify(o)}`);
        assertLossClose(r.z, ref.z, `z ${JSON.stringify(o)}`);
        const g = r.grads.logits as Any;
        assertGradClose({ data: await download(g, on), shape: g.shape }, ref.grads.logits.data, "grads.logits");
      }
    }
  });

  it("options.out with a GPU buffer is written and returned", { skip }, async () => {
    const l = await init({ backend: "webgpu", device: await device() });
    const out = await upload({ data: new Float32Array(37 * 129), shape: [37, 129] });
    const r = await l.crossEntropy.valueAndGrad({ logits: await upload(logits), labels }, { out: { logits: out } });
    assert.equal(r.grads.logits, out);
    const ref = wasm.crossEntropy.valueAndGrad({ logits, labels });
    assertGradClose({ data: await download(out), shape: out.shape }, ref.grads.logits.data, "out");
  });

  it("a host out buffer for a GPU-resident input is refused", { skip }, async () => {
    const l = await init({ backend: "webgpu", device: await device() });
    const out = { data: new Float32Array(37 * 129), shape: [37, 129] as const };
    await assertThrowsNamed(
      async () => l.crossEntropy.valueAndGrad({ logits: await upload(logits), labels }, { out: { logits: out } }),
      TypeError,
      "options.out.logits",
      "GPU matrix",
    );
  });

  it("arcface on GPU-resident cosines (the targets evaluated on the GPU)", { skip }, async () => {
    const l = await init({ backend: "webgpu", device: await device() });
    const cos = { data: logits.data.map((x) => Math.tanh(x)), shape: logits.shape };
    cos.data[5] = 1; // an exact +-1 and an out-of-range cosine
    cos.data[200] = -1.5;
    const ref = js.arcface.valueAndGrad({ cos, labels }, { scale: 30 });
    const r = await l.arcface.valueAndGrad({ cos: await upload(cos), labels }, { scale: 30 });
    assertLossClose(r.loss as number, ref.loss as number, "loss");
    assertGradClose({ data: await download(r.grads.cos as Any), shape: cos.shape }, ref.grads.cos.data, "grads.cos");
  });

  it("a buffer too small for its shape is a RangeError", { skip }, async () => {
    const l = await init({ backend: "webgpu", device: await device() });
    const small = await upload({ data: new Float32Array(10), shape: [2, 5] });
    await assertThrowsNamed(
      () => l.crossEntropy.forward({ logits: { buffer: small.buffer, shape: [3, 5] }, labels: [0, 1, 2] }),
      RangeError,
      "logits.buffer",
      "60 bytes",
    );
  });

  it("the CPU backends refuse GPU-resident inputs", { skip }, async () => {
    const gpuLogits = await upload(logits);
    assert.throws(() => wasm.crossEntropy.forward({ logits: gpuLogits as Any, labels }), TypeError);
    assert.throws(() => js.crossEntropy.forward({ logits: gpuLogits as Any, labels }), /GPU-resident inputs need/);
  });

  it("checkFinite reads GPU-resident values back and names the first bad one", { skip }, async () => {
    const l = await init({ backend: "webgpu", device: await device() });
    const bad = { data: logits.data.slice(), shape: logits.shape };
    bad.data[2 * 129 + 7] = NaN;
    await assertThrowsNamed(
      async () => l.crossEntropy.forward({ logits: await upload(bad), labels }, { checkFinite: true }),
      RangeError,
      "logits",
      "[2, 7]",
    );
  });
});

describe("bindings larger than the device allows are split", () => {
  // A 2 KiB binding limit: 129 columns (516 bytes a row) give chunks of 3 rows, at offsets
  // that are not multiples of the 256-byte alignment.
  const rng = new Rng(9);
  const logits = randomMatrix(rng, 23, 129, 4);
  const labels = randomLabels(rng, 23, 129, 0.1);

  it("host arrays in row chunks", { skip }, async () => {
    const l = await smallLosses();
    const ref = js.crossEntropy.valueAndGrad({ logits, labels }, { reduction: "none" });
    const r = await l.crossEntropy.valueAndGrad({ logits, labels }, { reduction: "none" });
    assertLossClose(r.loss as Float32Array, ref.loss as Float32Array, "loss");
    assertGradClose(r.grads.logits, ref.grads.logits.data, "grads.logits");
  });

  it("GPU-resident buffers bound at unaligned row offsets", { skip }, async () => {
    const l = await smallLosses();
    const cos = { data: logits.data.map((x) => Math.tanh(x)), shape: logits.shape };
    const ref = js.cosface.valueAndGrad({ cos, labels });
    const r = await l.cosface.valueAndGrad({ cos: await upload(cos, await smallDevice()), labels });
    assertLossClose(r.loss as number, ref.loss as number, "loss");
    assertGradClose(
      { data: await download(r.grads.cos as Any, await smallDevice()), shape: cos.shape },
      ref.grads.cos.data,
      "grads.cos",
    );
  });
});

describe("rows longer than one binding are merged from segments", () => {
  // A 2 KiB binding limit: segments of 448 columns, so 1000 columns make 3 segments.
  const rng = new Rng(13);
  const logits = randomMatrix(rng, 5, 1000, 6);
  const labels = Int32Array.from([3, 999, -100, 448, 447]);
  const weight = Float32Array.from({ length: 1000 }, (_, j) => 0.5 + (j % 7) / 4);
  const long = smallLosses;

  for (
    const [name, options] of [
      ["crossEntropy", { weight, labelSmoothing: 0.2 }],
      ["crossEntropy", { reduction: "sum" }],
      ["crossEntropy", { softcap: 5, zLoss: 0.01, weight, labelSmoothing: 0.2 }],
      ["focal", { gamma: 1.5 }],
    ] as const
  ) {
    it(`${name} ${JSON.stringify(Object.keys(options))}, host arrays`, { skip }, async () => {
      const l = (await long()) as Any;
      const ref = (js as Any)[name].valueAndGrad({ logits, labels }, options);
      const r = await l[name].valueAndGrad({ logits, labels }, options);
      assertLossClose(r.loss as number, ref.loss as number, "loss");
      assertGradClose(r.grads.logits, ref.grads.logits.data, "grads.logits");
      assertLossClose((await l[name].forward({ logits, labels }, options)).loss, ref.loss as number, "forward");
    });
  }

  it("arcface on GPU-resident cosines", { skip }, async () => {
    const l = await long();
    const cos = { data: logits.data.map((x) => Math.tanh(x / 6)), shape: logits.shape };
    const ref = js.arcface.valueAndGrad({ cos, labels });
    const r = await l.arcface.valueAndGrad({ cos: await upload(cos, await smallDevice()), labels });
    assertLossClose(r.loss as number, ref.loss as number, "loss");
    assertGradClose(
      { data: await download(r.grads.cos as Any, await smallDevice()), shape: cos.shape },
      ref.grads.cos.data,
      "grads.cos",
    );
  });

  it("the other row kernels refuse such rows with a RangeError", { skip }, async () => {
    const l = await long();
    await assertThrowsNamed(
      () => l.softmax.forward({ x: logits }),
      RangeError,
      "storage binding",
      "4000 bytes",
    );
  });
});

describe("one submission and one readback per call", () => {
  const rng = new Rng(21);
  const [n, c, d] = [19, 70, 24];
  const labels = randomLabels(rng, n, c, 0.2);
  const logits = randomMatrix(rng, n, c, 3);
  const cos = { data: logits.data.map((x) => Math.tanh(x / 2)), shape: logits.shape };
  cos.data[3 * c + 5] = 1; // exact and out-of-range cosines: the threshold branch and the clamp
  cos.data[7 * c + 2] = -1.25;
  const x = randomMatrix(rng, n, d, 1), W = randomMatrix(rng, c, d, 1);

  const cases: [string, Any, () => Promise<Any>, Any, string[]][] = [
    ["crossEntropy", { labelSmoothing: 0.1 }, async () => ({ logits: await upload(logits), labels }), {
      logits,
      labels,
    }, [
      "logits",
    ]],
    ["arcface", { scale: 30 }, async () => ({ cos: await upload(cos), labels }), { cos, labels }, ["cos"]],
    [
      "marginHead",
      { kind: "combinedMargin", m1: 1.2 },
      async () => ({ x: await upload(x), W: await upload(W), labels }),
      {
        x,
        W,
        labels,
      },
      ["x", "W"],
    ],
    ["sphereface", { m: 4, lambda: 2 }, async () => ({ x: await upload(x), W: await upload(W), labels }), {
      x,
      W,
      labels,
    }, ["x", "W"]],
  ];
  for (const [name, options, resident, host, grads] of cases) {
    it(`${name} on GPU-resident inputs: valueAndGrad submits once and maps once`, { skip }, async () => {
      const dev = await device();
      const l = (await init({ backend: "webgpu", device: dev })) as Any;
      const inputs = await resident();
      const got = await count<Any>(dev, () => l[name].valueAndGrad(inputs, options));
      assert.deepEqual([got.submits, got.maps], [1, 1], "submissions, readbacks");
      const ref = (js as Any)[name].valueAndGrad(host, options);
      assertLossClose(got.r.loss, ref.loss, "loss");
      for (const g of grads) {
        assertGradClose({ data: await download(got.r.grads[g]), shape: ref.grads[g].shape }, ref.grads[g].data, g);
      }
    });
  }

  it("marginHead on host arrays: one submission (the gradients come back with the loss)", { skip }, async () => {
    const dev = await device();
    const l = await init({ backend: "webgpu", device: dev });
    const got = await count(dev, () => l.marginHead.valueAndGrad({ x, W, labels }));
    assert.equal(got.submits, 1, "submissions");
    const ref = js.marginHead.valueAndGrad({ x, W, labels });
    assertLossClose(got.r.loss as number, ref.loss as number, "loss");
    assertGradClose(got.r.grads.W, ref.grads.W.data, "grads.W");
  });
});

describe("one context per device", () => {
  const logits = { data: new Float32Array([1, 2, 3, 0, 0, 1]), shape: [2, 3] as const };
  const fresh = async () => await requestDevice((await findAdapter()).adapter!);

  it("GpuContext.of returns the device's one context; different options are a TypeError", { skip }, async () => {
    const dev = await fresh();
    const ctx = GpuContext.of(dev);
    assert.equal(GpuContext.of(dev), ctx);
    assert.equal(GpuContext.of(dev, {}), ctx);
    assert.throws(
      () => GpuContext.of(dev, { maxBindingBytes: 4096 }),
      (e: Error) => e instanceof TypeError && /options\.maxBindingBytes/.test(e.message) && /4096/.test(e.message),
    );
    ctx.dispose();
    dev.destroy();
  });

  it("losses on one device share its pipelines: a second instance compiles none", { skip }, async () => {
    const dev = await fresh();
    const create = dev.createComputePipelineAsync;
    let made = 0;
    (dev as Any).createComputePipelineAsync = (...a: Any[]) => (made++, (create as Any).apply(dev, a));
    const first = await gpuLosses(dev, { auto: false, note: "test" });
    await first.crossEntropy.valueAndGrad({ logits, labels: [2, 0] });
    assert.ok(made > 0, "the first call compiles its pipeline");
    const before = made;
    const second = await gpuLosses(dev, { auto: false, note: "test" });
    const r = await second.crossEntropy.valueAndGrad({ logits, labels: [2, 0] });
    assert.equal(made, before, "pipelines compiled for the second instance");
    assertLossClose(r.loss as number, js.crossEntropy.forward({ logits, labels: [2, 0] }).loss as number, "loss");
    GpuContext.of(dev).dispose();
    dev.destroy();
  });

  it("dispose releases the context: its calls throw, the device gets a new one", { skip }, async () => {
    const dev = await fresh();
    const ctx = GpuContext.of(dev);
    assert.equal(ctx.disposed, false);
    ctx.dispose();
    ctx.dispose(); // again: nothing
    assert.equal(ctx.disposed, true);
    assert.throws(() => ctx.check(), (e: Error) => !(e instanceof DeviceLostError) && /disposed/.test(e.message));
    await assertThrowsNamed(() => ctx.pipeline("cross_entropy", "rrwwrrrw"), Error, "disposed");
    const again = GpuContext.of(dev);
    assert.notEqual(again, ctx);
    const l = await gpuLosses(dev, { auto: false, note: "test" });
    const r = await l.crossEntropy.forward({ logits, labels: [2, 0] });
    assertLossClose(r.loss as number, js.crossEntropy.forward({ logits, labels: [2, 0] }).loss as number, "loss");
    again.dispose();
    dev.destroy();
  });
});

describe("a lost device", () => {
  const logits = { data: new Float32Array([1, 2, 3, 0, 0, 1]), shape: [2, 3] as const };

  it("webgpu: a clear DeviceLostError", { skip }, async () => {
    const dev = await requestDevice((await findAdapter()).adapter!);
    const l = await init({ backend: "webgpu", device: dev });
    await l.crossEntropy.forward({ logits, labels: [2, 0] });
    dev.destroy();
    await dev.lost;
    await assertThrowsNamed(() => l.crossEntropy.forward({ logits, labels: [2, 0] }), DeviceLostError, "lost");
  });

  it("auto: later calls move to wasm", { skip }, async () => {
    const dev = await requestDevice((await findAdapter()).adapter!);
    const l = await init({ backend: "auto", device: dev });
    assert.equal(l.backend, "webgpu");
    dev.destroy();
    await dev.lost;
    assert.equal(l.backend, "wasm");
    assert.match(l.note, /lost/);
    const r = await l.crossEntropy.valueAndGrad({ logits, labels: [2, 0] });
    assertLossClose(r.loss as number, wasm.crossEntropy.forward({ logits, labels: [2, 0] }).loss as number, "loss");
  });
});

describe("shaders", () => {
  it("every kernel compiles without errors or warnings", { skip }, async () => {
    const dev = await device();
    for (const [name, code] of Object.entries(SHADERS)) {
      const info = await dev.createShaderModule({ code }).getCompilationInfo();
      const messages = info.messages.map((m) => `${m.type} ${m.lineNum}:${m.linePos} ${m.message}`);
      assert.deepEqual(messages, [], `${name}.wgsl`);
    }
  });
});
