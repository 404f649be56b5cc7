// The metric-learning staples (ntXent, tripletMargin, multiSimilarity, proxyAnchor) on their
// WebGPU kernel (src/webgpu/metric.wgsl) with GPU-resident inputs and `readback: false`
// (SPEC §10): every PyTorch fixture of tests/fixtures/generate_metric.py and SPEC's edge cases
// (no positive pair, one class, identical rows, a zero row, temperature 1e-4) within SPEC's
// bound of the PyTorch values and of the float64 reference, each call with zero maps and one
// submission (the loss and its denominator, the triplets with l > 0, are reduced on the GPU).
// Skipped where the runtime has no WebGPU adapter (Bun).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { init } from "../mod.ts";
import { gpuLosses } from "../src/backend.ts";
import { assertFinite, assertGradClose, assertLossClose } from "./helpers/assert.ts";
import type { AnyLoss } from "./helpers/backends.ts";
import { webgpuMissing } from "./helpers/backends.ts";
import { loadFixtures } from "./helpers/fixtures.ts";
import { count, download, sharedDevice, upload } from "./helpers/gpu.ts";
import { randomMatrix, Rng } from "./helpers/random.ts";
import { metricSpecs } from "./helpers/specs_metric.ts";
import { checkFixtureCase } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;
type Mat = { data: Float32Array; shape: [number, number] };

const skip = webgpuMissing;

/**
 * `loss` seen as a host loss whose every call uploads the differentiable inputs, runs with
 * `readback: false` (asserting zero maps and one submission) and downloads the results.
 */
function resident(dev: GPUDevice, loss: Any, grads: readonly string[], label: string): AnyLoss {
  const call = async (method: "forward" | "backward" | "valueAndGrad", inputs: Any, options: Any, up?: Any) => {
    const on: Any = { ...inputs };
    for (const k of grads) if (inputs[k]) on[k] = await upload(inputs[k], dev);
    const o = { ...options, readback: false };
    const c = await count<Any>(dev, () => method === "forward" ? loss.forward(on, o) : loss[method](on, o, up));
    assert.equal(c.maps, 0, `${label} ${method}: maps`);
    assert.equal(c.submits, 1, `${label} ${method}: submissions`);
    const host = async (m: Any) => {
      assert.ok(m.buffer, `${label} ${method}: a GPU matrix`);
      const data = await download(m, dev);
      m.buffer.destroy();
      return { data, shape: [...m.shape] };
    };
    const hostGrads = async (g: Record<string, Any>) => {
      const out: Record<string, Any> = {};
      for (const [k, m] of Object.entries(g)) out[k] = await host(m);
      return out;
    };
    for (const k of grads) on[k]?.buffer?.destroy();
    if (method === "backward") return hostGrads(c.r);
    const l = await host(c.r.loss);
    assert.deepEqual(l.shape, [1, 1], `${label}: the loss is [1, 1]`);
    const r: Any = { loss: l.data[0] };
    if (c.r.grads) r.grads = await hostGrads(c.r.grads);
    return r;
  };
  return {
    forward: (i, o) => call("forward", i, o),
    backward: (i, o, u) => call("backward", i, o, u),
    valueAndGrad: (i, o, u) => call("valueAndGrad", i, o, u),
  };
}

for (const spec of metricSpecs) {
  describe(`webgpu ${spec.name}: GPU-resident inputs, readback: false`, { skip }, () => {
    const cases = loadFixtures(spec.fixtures);
    it(`matches PyTorch (${spec.fixtures}, ${cases.length} cases), zero maps`, async () => {
      const dev = await sharedDevice();
      const l = await gpuLosses(dev, { auto: false, note: "test" });
      for (const fc of cases) {
        const label = `webgpu resident ${fc.name}`;
        await checkFixtureCase(spec, resident(dev, (l as Any)[spec.name], spec.grads, label), fc, label);
      }
      l.dispose();
    });
  });
}

describe(
  "webgpu multiSimilarity and proxyAnchor with alpha, beta to 1e4 (tests/fixtures/metric_sharp.json)",
  { skip },
  () => {
    // Float32 cosines times 1e4 move the exponents by about 1e-3: off SPEC's bound without the
    // float-pair exponents (src/webgpu/metric.wgsl, `exact`). Host and GPU-resident inputs.
    const cases = loadFixtures("metric_sharp.json");
    it(`match PyTorch (${cases.length} cases)`, async () => {
      const dev = await sharedDevice();
      const l = await gpuLosses(dev, { auto: false, note: "test" });
      for (const fc of cases) {
        const spec = metricSpecs.find((s) =>
          s.name === (fc.name.startsWith("ms_") ? "multiSimilarity" : "proxyAnchor")
        )!;
        const loss = (l as Any)[spec.name];
        await checkFixtureCase(spec, loss, fc, `webgpu ${fc.name}`);
        await checkFixtureCase(spec, resident(dev, loss, spec.grads, fc.name), fc, `webgpu resident ${fc.name}`);
      }
      l.dispose();
    });
  },
);

/** SPEC's edge cases of the family, each with the options under test. */
const EDGE_OPTIONS: Record<string, Record<string, Any>[]> = {
  ntXent: [{}, { temperature: 1e-4 }],
  tripletMargin: [
    {},
    { mining: "hard", margin: 0.3 },
    { mining: "semihard", margin: 0.6 },
    { mining: "batchHard" },
    { mining: "batchHard", soft: true },
    { soft: true, margin: 0.2 },
  ],
  multiSimilarity: [{}, { alpha: 1, beta: 10, base: 0.2 }],
  proxyAnchor: [{}, { margin: 0.3, alpha: 4 }],
};

describe("webgpu: SPEC's edge cases on the GPU (readback: false) against the float64 reference", { skip }, () => {
  for (const name of Object.keys(EDGE_OPTIONS)) {
    it(`${name}: no positive pair, one class, identical rows, a zero row`, async () => {
      const dev = await sharedDevice();
      const l = await gpuLosses(dev, { auto: false, note: "test" });
      const js = (await init({ backend: "js" })) as Any;
      const spec = metricSpecs.find((s) => s.name === name)!;
      const f = randomMatrix(new Rng(31), 6, 5) as Mat;
      // Rows 2k and 2k + 1 equal (bit for bit), and a row of zeros.
      const same = { data: f.data.map((_, q) => f.data[Math.floor(q / 10) * 10 + (q % 5)]), shape: f.shape };
      const zero = { data: f.data.map((v, q) => (q < 5 ? 0 : v)), shape: f.shape };
      const problems: [string, Record<string, Any>][] = [
        ["no positive pair", { f, labels: [0, 1, 2, 3, 4, 5] }],
        ["one class", { f, labels: [1, 1, 1, 1, 1, 1] }],
        ["identical rows", { f: same, labels: [0, 0, 1, 1, 2, 2] }],
        ["identical rows, other classes", { f: same, labels: [0, 1, 1, 2, 2, 0] }],
        ["a zero row", { f: zero, labels: [0, 0, 1, 1, 2, 2] }],
      ];
      for (const [what, base] of problems) {
        const inputs = name === "proxyAnchor" ? { ...base, proxies: randomMatrix(new Rng(32), 6, 5) } : base;
        for (const o of EDGE_OPTIONS[name]) {
          const label = `webgpu ${name} ${what} ${JSON.stringify(o)}`;
          const got = await resident(dev, (l as Any)[name], spec.grads, label).valueAndGrad(inputs, o);
          const want = await js[name].valueAndGrad(inputs, o);
          assertFinite(got.loss as number, `${label} loss`);
          for (const k of spec.grads) assertFinite(got.grads[k].data, `${label} grads.${k}`);
          // A zero row is at distance 1 from every row: batchHard's choice among those ties is
          // decided by the rounding of the other rows' norms (float64 there, float32 here).
          if (what === "a zero row" && o.mining === "batchHard") continue;
          assertLossClose(got.loss as number, want.loss, `${label} loss`);
          for (const k of spec.grads) assertGradClose(got.grads[k], want.grads[k].data, `${label} grads.${k}`);
          if (want.loss === 0) assert.equal(got.loss, 0, `${label}: a loss of exactly 0 (no pair or triplet counted)`);
        }
      }
      l.dispose();
    });
  }
});
