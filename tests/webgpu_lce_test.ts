// linearCrossEntropy on the WebGPU backend (src/webgpu/linear_cross_entropy.ts): PyTorch's
// values (tests/fixtures/lce/) on GPU-resident x, W and bias (the gradients left on the GPU),
// the float64 reference's over several chunks of classes (4,096 each) with every option, the
// GPU gather of `classes`, an all-ignored batch with `readback: false`, and the named errors.
// (Host inputs run tests/linear_cross_entropy_test.ts on this backend too; readback: false,
// the caller's encoder and the synchronous form: tests/webgpu_gpupath_test.ts.)
// Skipped where the runtime has no WebGPU adapter (Bun).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { init } from "../mod.ts";
import { gpuLosses } from "../src/backend.ts";
import { assertGradClose, assertLossClose, assertThrowsNamed } from "./helpers/assert.ts";
import { webgpuMissing } from "./helpers/backends.ts";
import { type FixtureCase, loadFixtures } from "./helpers/fixtures.ts";
import { count, download, sharedDevice, upload } from "./helpers/gpu.ts";
import { randomLabels, randomMatrix, randomVector, Rng } from "./helpers/random.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const skip = webgpuMissing;
const vec = (data: Float32Array) => ({ data, shape: [data.length] });
/** A bias [V] as a GPU matrix [V, 1] (or [1, V]). */
const gpuBias = (b: Float32Array, wide = false) => upload({ data: b, shape: wide ? [1, b.length] : [b.length, 1] });
/** A GPU result's values on the host (a number for [1, 1]). */
const host = async (m: Any) => (m?.buffer ? await download(m) : m);
const one = async (m: Any) => (await host(m))[0];

describe("linearCrossEntropy on GPU-resident inputs matches PyTorch (tests/fixtures/lce/)", () => {
  for (const fc of skip ? [] : loadFixtures("lce/linear_cross_entropy.json") as FixtureCase[]) {
    it(fc.name, async () => {
      const dev = await sharedDevice();
      const l = (await init({ backend: "webgpu", device: dev })) as Any;
      const { inputs, options, upstream, expected } = fc as Any;
      const g: Any = { ...inputs, x: await upload(inputs.x), W: await upload(inputs.W) };
      if (inputs.bias) g.bias = await gpuBias(inputs.bias);
      const b = await count<Any>(dev, () => l.linearCrossEntropy.backward(g, options, upstream));
      assert.deepEqual([b.submits, b.maps], [1, 1], "one submission, one readback");
      for (const k of ["x", "W"]) {
        assert.ok(b.r[k].buffer instanceof GPUBuffer, `grads.${k} on the GPU`);
        assertGradClose({ data: await download(b.r[k]), shape: b.r[k].shape }, expected.grads[k], `grads.${k}`);
      }
      if (inputs.bias) {
        assert.deepEqual(b.r.bias.shape, [inputs.classes?.length ?? inputs.bias.length, 1], "grads.bias [V, 1]");
        assertGradClose(vec(await download(b.r.bias)), expected.grads.bias, "grads.bias");
      } else assert.equal(b.r.bias, undefined, "no grads.bias without a bias");
      const f = await l.linearCrossEntropy.forward(g, options);
      assertLossClose(f.loss, expected.loss, "loss");
      for (const [k, v] of Object.entries(expected.parts ?? {})) assertLossClose(f[k], v as Any, `part ${k}`);
      // readback: false: the same values, nothing mapped.
      const r = await count<Any>(dev, () => l.linearCrossEntropy.forward(g, { ...options, readback: false }));
      assert.equal(r.maps, 0, "readback: false maps nothing");
      const lv = await host(r.r.loss);
      assertLossClose(options.reduction === "none" ? lv : lv[0], expected.loss, "loss (readback: false)");
      assertLossClose(await one(r.r.accuracy), expected.parts.accuracy, "accuracy (readback: false)");
      l.dispose();
    });
  }
});

describe("linearCrossEntropy on WebGPU agrees with the float64 reference", { skip }, () => {
  // Vocabularies around the chunk (4,096 classes) and the tiles (64); every option.
  const shapes: [number, number, number][] = [[1, 1, 1], [3, 5, 63], [5, 70, 65], [3, 5, 4096], [2, 3, 9001]];
  const sets: Any[] = [
    {},
    { labelSmoothing: 0.1, softcap: 4, zLoss: 0.01, reduction: "sum" },
    { weight: "random", labelSmoothing: 0.2, zLoss: 1e-3, reduction: "none", ignoreIndex: -1 },
  ];
  for (const [n, d, v] of shapes) {
    it(`N=${n} D=${d} V=${v}: host and GPU-resident inputs, every option set`, async () => {
      const dev = await sharedDevice();
      const l = (await init({ backend: "webgpu", device: dev })) as Any;
      const js = (await init({ backend: "js" })) as Any;
      for (const [k, o0] of sets.entries()) {
        const rng = new Rng(n * 131 + d * 7 + v + k);
        const p: Any = {
          x: randomMatrix(rng, n, d, 1),
          W: randomMatrix(rng, v, d, 1),
          bias: randomVector(rng, v, -1, 1),
          labels: randomLabels(rng, n, v, 0.25, o0.ignoreIndex ?? -100),
        };
        const o = { ...o0, ...(o0.weight ? { weight: randomVector(rng, v, 0.2, 2) } : {}) };
        const up = o.reduction === "none" ? randomVector(rng, n, -2, 2) : 1.5;
        const w = await js.linearCrossEntropy.valueAndGrad(p, o), wb = await js.linearCrossEntropy.backward(p, o, up);
        const label = `set ${k}`;
        const got = await l.linearCrossEntropy.valueAndGrad(p, o);
        assertLossClose(got.loss, w.loss, `${label} loss`);
        for (const part of ["z", "accuracy"]) assertLossClose(got[part], w[part], `${label} ${part}`);
        assertGradClose(got.grads.x, w.grads.x.data, `${label} grads.x`);
        assertGradClose(got.grads.W, w.grads.W.data, `${label} grads.W`);
        assertGradClose(vec(got.grads.bias), w.grads.bias, `${label} grads.bias`);
        // GPU-resident, with the per-row upstream of "none" (folded in before dW's product).
        const g = { ...p, x: await upload(p.x), W: await upload(p.W), bias: await gpuBias(p.bias, k === 1) };
        const gb = await l.linearCrossEntropy.backward(g, o, up);
        assertGradClose({ data: await download(gb.x), shape: gb.x.shape }, wb.x.data, `${label} GPU grads.x`);
        assertGradClose({ data: await download(gb.W), shape: gb.W.shape }, wb.W.data, `${label} GPU grads.W`);
        assert.deepEqual(gb.bias.shape, k === 1 && v > 1 ? [1, v] : [v, 1], `${label}: grads.bias as the bias`);
        assertGradClose(vec(await download(gb.bias)), wb.bias, `${label} GPU grads.bias`);
        for (const m of [g.x, g.W, g.bias, gb.x, gb.W, gb.bias]) m.buffer.destroy();
      }
      l.dispose();
    });
  }
});

describe("linearCrossEntropy on WebGPU: W's gradient over many rows", { skip }, () => {
  it("summed over 16,384 rows (64 row blocks) stays within 1e-6 max|ref| of float64", async () => {
    // As the wasm test (tests/linear_cross_entropy_test.ts, 65,536 rows): rows that pull class 0
    // the same way (90% share label 0, x > 0), so dW_0 is a coherent sum of 16,384 terms. One
    // float32 chain over the rows (grad_w before the row blocks) was off by 2.2e-6 max|ref| here;
    // the blocks' products added in two-float are at about 2e-8. (Sizes for llvmpipe, which is slow;
    // N past its 65,535 loop iterations per invocation: tests/webgpu_loops_test.ts.)
    const n = 16384, d = 4, v = 8, rng = new Rng(16384);
    const x = Float32Array.from({ length: n * d }, () => Math.fround(0.5 + rng.next()));
    const W = Float32Array.from({ length: v * d }, () => Math.fround(rng.next() - 0.5));
    const labels = Int32Array.from({ length: n }, () => (rng.next() < 0.9 ? 0 : Math.floor(rng.next() * v)));
    const p = { x: { data: x, shape: [n, d] }, W: { data: W, shape: [v, d] }, labels };
    const l = (await init({ backend: "webgpu", device: await sharedDevice() })) as Any;
    const js = (await init({ backend: "js" })) as Any;
    const want = (await js.linearCrossEntropy.backward(p, { reduction: "sum" })).W.data;
    const got = (await l.linearCrossEntropy.backward(p, { reduction: "sum" })).W.data;
    let top = 0, err = 0;
    want.forEach((g: number, k: number) =>
      [top, err] = [Math.max(top, Math.abs(g)), Math.max(err, Math.abs(got[k] - g))]
    );
    assert.ok(err <= 1e-6 * top, `max|dW - ref| = ${err} > 1e-6 max|ref| = ${1e-6 * top}`);
    l.dispose();
  });
});

describe("linearCrossEntropy on WebGPU: classes, all-ignored batches, errors", { skip }, () => {
  it("classes with W and bias on the GPU (gathered there) = the host call with classes", async () => {
    const dev = await sharedDevice();
    const l = (await init({ backend: "webgpu", device: dev })) as Any;
    const rng = new Rng(41);
    const v = 300, d = 6;
    const p: Any = { x: randomMatrix(rng, 5, d), W: randomMatrix(rng, v, d), bias: randomVector(rng, v, -1, 1) };
    const classes = [0, 1, 2, 7, 64, 65, 66, 200, 299];
    p.labels = [1, 66, -100, 299, 7];
    const o = { weight: randomVector(rng, v, 0.5, 1.5), labelSmoothing: 0.1, zLoss: 0.01, softcap: 6 };
    const want = await l.linearCrossEntropy.valueAndGrad({ ...p, classes }, o);
    const g = { ...p, classes, x: await upload(p.x), W: await upload(p.W), bias: await gpuBias(p.bias) };
    const got = await l.linearCrossEntropy.valueAndGrad(g, o);
    assertLossClose(got.loss, want.loss, "loss");
    assert.deepEqual([got.grads.W.shape, got.grads.bias.shape], [[9, d], [9, 1]]);
    assertGradClose({ data: await download(got.grads.W), shape: [9, d] }, want.grads.W.data, "grads.W");
    assertGradClose(vec(await download(got.grads.bias)), want.grads.bias, "grads.bias");
    assertGradClose({ data: await download(got.grads.x), shape: [5, d] }, want.grads.x.data, "grads.x");
    l.dispose();
  });

  it("writes the caller's GPU out buffers in place (x and W)", async () => {
    const dev = await sharedDevice();
    const l = (await init({ backend: "webgpu", device: dev })) as Any;
    const rng = new Rng(45);
    const p: Any = { x: randomMatrix(rng, 4, 5), W: randomMatrix(rng, 130, 5), labels: [3, 129, 0, -100] };
    const o = { labelSmoothing: 0.1, zLoss: 0.01 };
    const want = await l.linearCrossEntropy.valueAndGrad(p, o);
    const out = {
      x: await upload({ data: new Float32Array(20).fill(7), shape: [4, 5] }),
      W: await upload({ data: new Float32Array(650).fill(7), shape: [130, 5] }),
    };
    const g = { ...p, x: await upload(p.x), W: await upload(p.W) };
    const r = await l.linearCrossEntropy.valueAndGrad(g, { ...o, out });
    assert.equal(r.grads.x, out.x);
    assert.equal(r.grads.W, out.W);
    assertGradClose({ data: await download(out.x), shape: [4, 5] }, want.grads.x.data, "out.x");
    assertGradClose({ data: await download(out.W), shape: [130, 5] }, want.grads.W.data, "out.W");
    l.dispose();
  });

  it("every row ignored, readback: false: loss, z and accuracy 0 on the GPU, zero gradients, no map", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" }) as Any;
    const rng = new Rng(42);
    const x = await upload(randomMatrix(rng, 3, 4)), W = await upload(randomMatrix(rng, 70, 4));
    const bias = await gpuBias(randomVector(rng, 70, -1, 1));
    for (const reduction of ["mean", "sum", "none"]) {
      const o = { zLoss: 0.1, labelSmoothing: 0.1, softcap: 2, reduction, readback: false };
      const c = await count<Any>(
        dev,
        () => l.linearCrossEntropy.valueAndGrad({ x, W, bias, labels: [-100, -100, -100] }, o),
      );
      assert.deepEqual([c.submits, c.maps], [1, 0], `${reduction}: one submission, no map`);
      const loss = await host(c.r.loss);
      assert.deepEqual([...loss], reduction === "none" ? [0, 0, 0] : [0], `${reduction} loss`);
      assert.deepEqual([await one(c.r.accuracy)], [0], "accuracy");
      assert.ok((await host(c.r.z)).every((v: number) => v === 0), "z");
      for (const k of ["x", "W", "bias"]) {
        assert.ok((await download(c.r.grads[k])).every((v: number) => v === 0), `grads.${k} zero`);
      }
    }
    l.dispose();
  });

  it("named errors: a bias of the wrong shape, host out buffers for GPU inputs, checkFinite without readback", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" }) as Any;
    const rng = new Rng(43);
    const xh = randomMatrix(rng, 2, 3), x = await upload(xh), W = await upload(randomMatrix(rng, 5, 3));
    const labels = [0, 4];
    const bad = await upload({ data: new Float32Array(10), shape: [2, 5] });
    await assertThrowsNamed(
      () => l.linearCrossEntropy.forward({ x, W, labels, bias: bad }),
      RangeError,
      "bias",
      "[5, 1]",
      "[2, 5]",
    );
    const short = await upload({ data: new Float32Array(4), shape: [4, 1] });
    await assertThrowsNamed(
      () => l.linearCrossEntropy.forward({ x, W, labels, bias: short }),
      RangeError,
      "bias",
      "[4, 1]",
    );
    await assertThrowsNamed(
      () =>
        l.linearCrossEntropy.valueAndGrad({ x, W, labels }, {
          out: { x: { data: new Float32Array(6), shape: [2, 3] } },
        }),
      TypeError,
      "options.out.x",
      "GPU matrix",
    );
    await assertThrowsNamed(
      () => l.linearCrossEntropy.forward({ x, W, labels }, { checkFinite: true, readback: false }),
      TypeError,
      "checkFinite",
    );
    await assertThrowsNamed(() => l.linearCrossEntropy.forward({ x, W, labels: [0, 5] }), RangeError, "labels[1]", "5");
    // checkFinite reads GPU-resident inputs back and names the first bad value.
    const nan = xh.data.slice();
    nan[4] = NaN;
    const xn = await upload({ data: nan, shape: [2, 3] });
    await assertThrowsNamed(
      () => l.linearCrossEntropy.forward({ x: xn, W, labels }, { checkFinite: true }),
      RangeError,
      "x",
      "[1, 1]",
    );
    l.dispose();
  });
});

describe("crossEntropy's softcap and zLoss on GPU-resident logits with readback: false", { skip }, () => {
  it("every row ignored: loss and part z 0 on the GPU for every reduction (the mean over no rows), no map", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" }) as Any;
    const logits = await upload(randomMatrix(new Rng(44), 3, 7, 30));
    for (const reduction of ["mean", "sum", "none"]) {
      const o = { softcap: 5, zLoss: 0.01, labelSmoothing: 0.1, reduction, readback: false };
      const c = await count<Any>(dev, () => l.crossEntropy.valueAndGrad({ logits, labels: [-100, -100, -100] }, o));
      assert.deepEqual([c.submits, c.maps], [1, 0], `${reduction}: one submission, no map`);
      assert.ok((await host(c.r.loss)).every((v: number) => v === 0), `${reduction} loss`);
      assert.ok((await host(c.r.z)).every((v: number) => v === 0), `${reduction} z`);
      assert.ok((await download(c.r.grads.logits)).every((v: number) => v === 0), `${reduction} grads.logits`);
    }
    l.dispose();
  });
});
