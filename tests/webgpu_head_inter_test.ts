// marginHead's inter-class options and per-row margins on the WebGPU head (SPEC.md section 7,
// src/webgpu/margin_head_inter.ts): interclassFilteringThreshold (arcface, cosface, combinedMargin),
// interTopK / interTopKMargin (arcface; a first GPU pass keeping each row's top k, ties to the smaller
// class) and a margin per row (arcface and cosface `margin`, combinedMargin `m2` / `m3`), with sub-centres
// and PartialFC's classes too (tests/webgpu_head_subcenters_test.ts: the sub-centres alone). The PyTorch
// fixtures of tests/fixtures/generate_head_inter.py on every backend (the CPU ones too: the fixtures'
// own check), the WebGPU head against the float64 reference on larger heads (several class tiles, and
// chunks of classes on a device whose storage bindings hold 2 KiB; tied classes), the identities
// (threshold 0 and interTopK 0 are today's head, an equal per-row margin is the scalar one), and the
// GPU path (SPEC section 10): GPU-resident x and W with `readback: false` map nothing, with the
// readback path's values; `encoder` and `losses.sync`. Skipped where the runtime has no WebGPU adapter.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { js, mergeShardStats, partialFcSample, wasm } from "../cpu.ts";
import { findAdapter, gpuLosses, requestDevice } from "../src/backend.ts";
import { assertGradClose, assertLossClose, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { backends, webgpuMissing } from "./helpers/backends.ts";
import { loadFixtures } from "./helpers/fixtures.ts";
import { count, download, sharedDevice, upload } from "./helpers/gpu.ts";
import { randomLabels, randomMatrix, Rng } from "./helpers/random.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const skip = webgpuMissing;
const gpu = () => backends.find((b) => b.name === "webgpu")!.losses as Any;

/**
 * x [n, d] near its label's class, W [c, d] around the class centres; with `dup`, class j + 1 repeats
 * class j's row for every even j (exact ties of the cosines, on the GPU too).
 */
function problem(rng: Rng, n: number, d: number, c: number, dup = false) {
  const W = randomMatrix(rng, c, d, 1);
  if (dup) { for (let j = 0; j + 1 < c; j += 2) W.data.copyWithin((j + 1) * d, j * d, (j + 1) * d); }
  const labels = randomLabels(rng, n, c, 0.2, -100);
  const x = randomMatrix(rng, n, d, 0.8);
  for (let i = 0; i < n; i++) {
    if (labels[i] < 0) continue;
    for (let k = 0; k < d; k++) x.data[i * d + k] += W.data[labels[i] * d + k];
  }
  return { x, W, labels };
}

const rowMargins = (n: number, lo: number, hi: number, seed: number) => {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => rng.uniform(lo, hi));
};

/** A result's loss and gradients as host values (GPU matrices read back). */
async function host(r: Any): Promise<{ loss: Any; x: Float32Array; W: Float32Array }> {
  const onGpu = (m: Any) => m.shape !== undefined && m.buffer !== undefined;
  const v = async (m: Any) => (onGpu(m) ? await download(m) : m.data);
  const loss = typeof r.loss === "number" ? r.loss : onGpu(r.loss) ? await download(r.loss) : r.loss;
  return { loss, x: await v(r.grads.x), W: await v(r.grads.W) };
}

async function agree(got: Any, want: Any, label: string): Promise<void> {
  const g = await host(got), w = await host(want);
  assertLossClose(g.loss.length === 1 ? g.loss[0] : g.loss, w.loss, `${label} loss`);
  assertGradClose(g.x, w.x, `${label} grads.x`);
  assertGradClose(g.W, w.W, `${label} grads.W`);
}

describe("marginHead inter-class options and per-row margins: PyTorch fixtures (tests/fixtures/generate_head_inter.py)", () => {
  const cases = loadFixtures("heads/inter.json");
  const all = [{ name: "js", losses: js as Any }, { name: "wasm", losses: wasm as Any }];
  for (const b of all) {
    it(`${b.name}: every case`, () => {
      for (const fc of cases) {
        const label = `${b.name} ${fc.name}`;
        const r = b.losses.marginHead.forward(fc.inputs, fc.options);
        assertLossClose(r.loss, fc.expected.loss, `${label} loss`);
        const g = b.losses.marginHead.backward(fc.inputs, fc.options, fc.upstream);
        for (const key of ["x", "W"]) {
          assertGradClose(g[key].data, fc.expected.grads[key] as Any, `${label} grads.${key}`);
        }
      }
    });
  }
  it("webgpu: every case (sub-centres included)", { skip }, async () => {
    for (const fc of cases) {
      const label = `webgpu ${fc.name}`;
      const snap = snapshot({ inputs: fc.inputs, options: fc.options });
      const r = await gpu().marginHead.valueAndGrad(fc.inputs, fc.options);
      assertLossClose(r.loss, fc.expected.loss, `${label} loss`);
      const g = await gpu().marginHead.backward(fc.inputs, fc.options, fc.upstream);
      for (const key of ["x", "W"]) {
        assertGradClose(g[key].data, fc.expected.grads[key] as Any, `${label} grads.${key}`);
      }
      assertUnchanged(snap, { inputs: fc.inputs, options: fc.options });
    }
  });
});

describe("marginHead inter-class options and per-row margins: the WebGPU head = the reference", { skip }, () => {
  const n = 13;
  const options: Any[] = [
    { kind: "arcface", scale: 30, interTopK: 5 },
    { kind: "arcface", scale: 30, interTopK: 3, interTopKMargin: 0.2, interclassFilteringThreshold: 0.5 },
    { kind: "arcface", scale: 30, interTopK: 4, margin: rowMargins(n, 0, 0.7, 1), reduction: "sum" },
    { kind: "arcface", scale: 30, easyMargin: true, margin: rowMargins(n, 0.1, 0.6, 5), marginGrad: "constant" },
    { kind: "cosface", scale: 30, interclassFilteringThreshold: 0.3, margin: rowMargins(n, 0.1, 0.4, 2) },
    { kind: "combinedMargin", scale: 30, m1: 1.1, m3: rowMargins(n, 0, 0.2, 4), interclassFilteringThreshold: 0.45 },
    { kind: "combinedMargin", scale: 30, m2: rowMargins(n, 0.1, 0.5, 6), reduction: "none" },
  ];
  // C = 300: five class tiles of 64; tied classes (W's rows in equal pairs) for the top k's tie rule.
  for (const [c, dup] of [[300, false], [300, true], [7, false]] as const) {
    it(`C = ${c}${dup ? ", tied classes" : ""}`, async () => {
      const p = problem(new Rng(c + (dup ? 1 : 0)), n, 8, c, dup);
      for (const o of options) {
        await agree(await gpu().marginHead.valueAndGrad(p, o), js.marginHead.valueAndGrad(p, o), JSON.stringify(o));
      }
    });
  }
  it("with sub-centres (K = 3, tied classes) and PartialFC's classes (K = 2)", async () => {
    const n = 9, d = 8;
    for (const [K, c, dup, rate] of [[3, 40, true, 0], [2, 70, false, 0.5]] as const) {
      const q = problem(new Rng(90 + K), n, d, c * K, dup);
      // (problem's W rows in equal pairs with dup: K = 3 classes then tie across classes too)
      const p: Any = { ...q, labels: q.labels.map((y) => (y < 0 ? y : Math.floor(y / K))) };
      if (rate) p.classes = partialFcSample(p.labels, c, { rate, seed: 3 });
      for (
        const o of [
          { kind: "arcface", scale: 30, subcenters: K, interTopK: 4, interclassFilteringThreshold: 0.6 },
          { kind: "arcface", scale: 30, subcenters: K, interTopK: 2, margin: rowMargins(n, 0.1, 0.6, 14) },
          {
            kind: "cosface",
            scale: 30,
            subcenters: K,
            margin: rowMargins(n, 0.1, 0.4, 15),
            interclassFilteringThreshold: 0.4,
          },
          { kind: "arcface", scale: 30, subcenters: K, interTopK: 1000 },
        ] as Any[]
      ) {
        const label = `K = ${K}${rate ? " classes" : ""} ${JSON.stringify(o)}`;
        await agree(await gpu().marginHead.valueAndGrad(p, o), js.marginHead.valueAndGrad(p, o), label);
      }
    }
  });

  it("with sub-centres over several chunks of classes (storage bindings of 8 KiB)", async () => {
    const dev = await requestDevice((await findAdapter()).adapter!);
    const l = await gpuLosses(dev, { auto: false, note: "test", maxBindingBytes: 8192 });
    // d = 8, K = 2, N = 8: windows and chunks of 256 rows of W (128 classes); C = 300: three of them.
    const q = problem(new Rng(78), 8, 8, 600, true);
    const p = { ...q, labels: q.labels.map((y) => (y < 0 ? y : y >> 1)) };
    const o: Any = { kind: "arcface", scale: 20, subcenters: 2, interTopK: 5, interclassFilteringThreshold: 0.7 };
    await agree(await l.marginHead.valueAndGrad(p, o), js.marginHead.valueAndGrad(p, o), "K = 2 chunks");
    l.dispose();
    dev.destroy();
  });

  it("interTopK over several chunks of classes (a device whose storage bindings hold 2 KiB)", async () => {
    const dev = await requestDevice((await findAdapter()).adapter!);
    const l = await gpuLosses(dev, { auto: false, note: "test", maxBindingBytes: 2048 });
    // d = 8: windows and chunks of 64 classes (N = 8: a [N, 64] block fills a binding); C = 200: four of them.
    const p = problem(new Rng(77), 8, 8, 200, true);
    for (
      const o of [
        { kind: "arcface", scale: 20, interTopK: 6, interclassFilteringThreshold: 0.6 },
        { kind: "arcface", scale: 20, interTopK: 2, margin: rowMargins(8, 0.2, 0.5, 8) },
      ] as Any[]
    ) {
      await agree(
        await l.marginHead.valueAndGrad(p, o),
        js.marginHead.valueAndGrad(p, o),
        `chunks ${JSON.stringify(o)}`,
      );
      const f = await l.marginHead.forward(p, o);
      assertLossClose(f.loss as number, js.marginHead.forward(p, o).loss as number, "chunks forward");
    }
    l.dispose();
    dev.destroy();
  });
});

describe("marginHead inter-class options and per-row margins on WebGPU: identities", { skip }, () => {
  it("threshold 0, interTopK 0 and interTopKMargin 0 are today's head; an equal per-row margin is the scalar one", async () => {
    const n = 9, p = problem(new Rng(1), n, 8, 150);
    const same: [Any, Any[]][] = [
      [{ kind: "arcface", scale: 20, margin: 0.3 }, [
        { interclassFilteringThreshold: 0 },
        { interTopK: 0, interTopKMargin: 0.2 },
        { interTopK: 4, interTopKMargin: 0 },
        { margin: new Float32Array(n).fill(0.3) },
      ]],
      [{ kind: "cosface", scale: 20, margin: 0.25 }, [{ margin: new Float32Array(n).fill(0.25) }]],
      [{ kind: "combinedMargin", scale: 20, m1: 1.2, m2: 0.3, m3: 0.1 }, [
        { m2: new Float32Array(n).fill(0.3), m3: new Float32Array(n).fill(0.1) },
      ]],
    ];
    for (const [base, variants] of same) {
      const want = await gpu().marginHead.valueAndGrad(p, base);
      for (const o of variants) {
        const label = `${base.kind} ${Object.keys(o).join(",")}`;
        const got = await gpu().marginHead.valueAndGrad(p, { ...base, ...o });
        if (("interTopKMargin" in o && o.interTopK > 0) || o.margin || o.m2) {
          // (m' = 0: the hard non-targets' logit s (x cos 0 + sqrt(1 - x^2) sin 0) = s x, by another path;
          // a Float32Array margin: float32's 0.3, not 0.3)
          await agree(got, want, label);
        } else {
          // the same kernels with the same values: bit for bit
          assert.equal(got.loss, want.loss, `${label}: the same loss`);
          assert.deepEqual(got.grads.x.data, want.grads.x.data, `${label}: the same dx`);
          assert.deepEqual(got.grads.W.data, want.grads.W.data, `${label}: the same dW`);
        }
      }
    }
  });

  it("the options change the head (the tests above can fail)", async () => {
    const p = problem(new Rng(2), 9, 8, 40);
    const plain = await gpu().marginHead.forward(p, { scale: 20 });
    for (const o of [{ interTopK: 3 }, { interclassFilteringThreshold: 0.3 }, { margin: rowMargins(9, 0, 0.3, 3) }]) {
      const r = await gpu().marginHead.forward(p, { scale: 20, ...o });
      assert.ok(Math.abs(r.loss - plain.loss) > 1e-3, `${JSON.stringify(o)} changes the loss`);
    }
  });
});

describe("marginHead inter-class options and per-row margins on WebGPU: the GPU path", { skip }, () => {
  const n = 11, c = 90;
  const o: Any = {
    kind: "arcface",
    scale: 20,
    interTopK: 3,
    interclassFilteringThreshold: 0.5,
    margin: rowMargins(n, 0.2, 0.5, 11),
  };
  it("GPU-resident x and W, readback: false: zero maps, one submission, the readback path's values", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" });
    const p = problem(new Rng(31), n, 8, c, true);
    const inputs = { x: await upload(p.x), W: await upload(p.W), labels: p.labels };
    for (
      const oo of [o, { ...o, reduction: "none" }, {
        kind: "combinedMargin",
        m3: rowMargins(n, 0, 0.2, 13),
        interclassFilteringThreshold: 0.2,
      }]
    ) {
      const label = JSON.stringify(oo);
      const want = js.marginHead.valueAndGrad(p, oo);
      const read = await l.marginHead.valueAndGrad(inputs, oo);
      await agree(read, want, `${label} readback`);
      const r = await count<Any>(dev, () => l.marginHead.valueAndGrad(inputs, { ...oo, readback: false }));
      assert.equal(r.maps, 0, `${label}: maps`);
      assert.equal(r.submits, 1, `${label}: submissions`);
      assert.ok(r.r.loss.buffer && r.r.grads.x.buffer && r.r.grads.W.buffer, `${label}: on the GPU`);
      await agree(r.r, want, `${label} readback: false`);
      const up = oo.reduction === "none" ? rowMargins(n, -1, 2, 12) : 0.75;
      const b = await count<Any>(dev, () => l.marginHead.backward(inputs, { ...oo, readback: false }, up));
      assert.equal(b.maps, 0, `${label}: backward maps`);
      const wb: Any = js.marginHead.backward(p, oo, up);
      assertGradClose(await download(b.r.x), wb.x.data, `${label} backward grads.x`);
      assertGradClose(await download(b.r.W), wb.W.data, `${label} backward grads.W`);
    }
    l.dispose();
  });

  it("recorded into the caller's encoder, and losses.sync", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" });
    const p = problem(new Rng(32), n, 8, c);
    const inputs = { x: await upload(p.x), W: await upload(p.W), labels: p.labels };
    const want = js.marginHead.valueAndGrad(p, o);
    const enc = dev.createCommandEncoder();
    const c0 = await count<Any>(
      dev,
      () => Promise.resolve(l.marginHead.valueAndGrad(inputs, { ...o, readback: false, encoder: enc })),
    );
    assert.equal(c0.submits, 0, "nothing submitted before the caller does");
    dev.queue.submit([enc.finish()]);
    await agree(await c0.r, want, "encoder");
    const s = (l.sync as Any).marginHead.valueAndGrad(inputs, o);
    assert.ok(!(s instanceof Promise), "a value, not a Promise");
    await agree(s, want, "sync");
    l.dispose();
  });
});

describe("marginHead interclassFilteringThreshold: the WebGPU class-sharded head = the head", { skip }, () => {
  for (
    const o of [
      { kind: "cosface", scale: 20, interclassFilteringThreshold: 0.4 },
      { kind: "combinedMargin", scale: 20, m3: 0.1, interclassFilteringThreshold: 0.3, reduction: "sum" },
    ] as Any[]
  ) {
    it(`${o.kind}: three shards`, async () => {
      const c = 50, d = 8, p = problem(new Rng(60), 9, d, c), bounds = [0, 17, 40, c];
      const shards = bounds.slice(0, -1).map((c0, k) => ({
        inputs: { ...p, W: { data: p.W.data.slice(c0 * d, bounds[k + 1] * d), shape: [bounds[k + 1] - c0, d] } },
        options: { ...o, offset: c0, classes: c },
      }));
      const l = gpu().sharded.marginHead;
      const merged = mergeShardStats(await Promise.all(shards.map((s) => l.stats(s.inputs, s.options))));
      const results: Any[] = await Promise.all(shards.map((s) => l.finish(s.inputs, merged, s.options)));
      const want: Any = js.marginHead.valueAndGrad(p, o);
      const plain: Any = js.marginHead.forward(p, { ...o, interclassFilteringThreshold: 0 });
      assert.ok(Math.abs(plain.loss - want.loss) > 1e-3, "the threshold changes this head");
      assertLossClose(results.reduce((t, r) => t + r.loss, 0), want.loss, "loss");
      const x = new Float64Array(p.x.data.length);
      for (const r of results) r.grads.x.data.forEach((g: number, i: number) => (x[i] += g));
      assertGradClose(x, want.grads.x.data, "grads.x");
      assertGradClose(results.flatMap((r) => Array.from(r.grads.W.data as Float32Array)), want.grads.W.data, "grads.W");
    });
  }
});

describe("marginHead inter-class options on WebGPU: named errors", { skip }, () => {
  it("a per-row margin is a host array (a GPU matrix there is refused by name)", async () => {
    const p = problem(new Rng(6), 4, 8, 10);
    const margin = await upload({ data: new Float32Array(4).fill(0.3), shape: [4, 1] });
    await assert.rejects(
      async () => await gpu().marginHead.forward(p, { margin }),
      (e: Error) => (e instanceof TypeError || e instanceof RangeError) && e.message.includes("options.margin"),
    );
  });

  it("interTopK's lists must fit one storage binding", async () => {
    const dev = await requestDevice((await findAdapter()).adapter!);
    const l = await gpuLosses(dev, { auto: false, note: "test", maxBindingBytes: 2048 });
    const p = problem(new Rng(5), 9, 8, 200);
    await assert.rejects(
      async () => await l.marginHead.forward(p, { interTopK: 40 }),
      (e: Error) => e instanceof RangeError && e.message.includes("options.interTopK") && e.message.includes("40"),
    );
    l.dispose();
    dev.destroy();
  });
});
