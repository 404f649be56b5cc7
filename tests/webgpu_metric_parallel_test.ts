// The metric-learning staples (ntXent, tripletMargin, multiSimilarity, proxyAnchor) on their WebGPU
// kernel (src/webgpu/metric.wgsl) with nearly parallel rows: every row (and proxy) within 0.01 or
// 0.001 of one direction or of its class's, at norms from 0.5 to 2
// (tests/fixtures/generate_metric_parallel.py). There the normalisation's backward keeps 1/100 to
// 1/1000 of the gradient w.r.t. the normalised rows: a float32 gradient formed in full and then
// projected was off by up to 2e-4 of the largest element here (SPEC's bound is 1e-5); the kernel
// forms each term from the rows' difference instead (the near tiles of metric.wgsl). Host and
// GPU-resident inputs, against the PyTorch float64 fixtures within SPEC's bound; the float64
// reference backend too; centerRegularization's nearly parallel centres (tests/fixtures/center_parallel.json)
// likewise. Skipped where the runtime has no WebGPU adapter (Bun).
import { describe, it } from "node:test";
import { js } from "../cpu.ts";
import { init } from "../mod.ts";
import { gpuLosses } from "../src/backend.ts";
import { assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { webgpuMissing } from "./helpers/backends.ts";
import { loadFixtures } from "./helpers/fixtures.ts";
import { download, sharedDevice, upload } from "./helpers/gpu.ts";
import { randomMatrix, Rng, seedOf } from "./helpers/random.ts";
import { metricSpecs } from "./helpers/specs_metric.ts";
import { centerRegularizationSpec, randomRule } from "./helpers/specs_moe.ts";
import { checkFixtureCase } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const cases = loadFixtures("metric_parallel.json");
const specOf = (name: string) => metricSpecs.find((s) => name.startsWith(`${s.name}_`))!;
// centerRegularization's centres (and features) 0.01 and 0.001 apart (the same generator): the
// gradient w.r.t. the normalised centres is as nearly parallel to each centre's direction; a
// float32 gradient formed in full and then projected was off by up to 2.8e-5 of the largest
// element (src/webgpu/center_regularization.wgsl forms it relative to the centre's direction).
const centerCases = loadFixtures("center_parallel.json");

describe("metric losses on nearly parallel rows (tests/fixtures/metric_parallel.json)", () => {
  it(`the float64 reference matches PyTorch (${cases.length} cases)`, async () => {
    const js = (await init({ backend: "js" })) as Any;
    for (const fc of cases) await checkFixtureCase(specOf(fc.name), js[specOf(fc.name).name], fc, `js ${fc.name}`);
  });

  it(`webgpu matches PyTorch within SPEC's bound, host inputs (${cases.length} cases)`, {
    skip: webgpuMissing,
  }, async () => {
    const l = await gpuLosses(await sharedDevice(), { auto: false, note: "test" });
    for (const fc of cases) {
      const spec = specOf(fc.name);
      await checkFixtureCase(spec, (l as Any)[spec.name], fc, `webgpu ${fc.name}`);
    }
    l.dispose();
  });

  it(`webgpu matches PyTorch within SPEC's bound, GPU-resident inputs (${cases.length} cases)`, {
    skip: webgpuMissing,
  }, async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" });
    for (const fc of cases) {
      const spec = specOf(fc.name);
      const inputs: Any = { ...fc.inputs };
      for (const k of spec.grads) inputs[k] = await upload(fc.inputs[k] as Any, dev);
      const loss = (l as Any)[spec.name];
      assertLossClose(
        (await loss.forward(inputs, fc.options)).loss,
        fc.expected.loss as number,
        `webgpu resident ${fc.name} loss`,
      );
      const grads = await loss.backward(inputs, fc.options, fc.upstream);
      for (const k of spec.grads) {
        const g = grads[k];
        assertGradClose(await download(g, dev), fc.expected.grads![k] as Any, `webgpu resident ${fc.name} grads.${k}`);
        g.buffer.destroy();
        inputs[k].buffer.destroy();
      }
    }
    l.dispose();
  });

  it(`webgpu centerRegularization matches PyTorch within SPEC's bound (${centerCases.length} cases)`, {
    skip: webgpuMissing,
  }, async () => {
    const l = await gpuLosses(await sharedDevice(), { auto: false, note: "test" });
    for (const fc of centerCases) {
      await checkFixtureCase(centerRegularizationSpec, (l as Any).centerRegularization, fc, `webgpu ${fc.name}`);
    }
    l.dispose();
  });

  // The centres' relative form is skipped below the clamp (their gradient is not projected): a zero
  // centre and one of norm 1e-14 among nearly parallel ones (and features), a class without rows.
  it(
    "webgpu centerRegularization: nearly parallel centres with a zero one, one below the clamp, a class without rows",
    {
      skip: webgpuMissing,
    },
    async () => {
      const rng = new Rng(seedOf("center_parallel dead"));
      const b = 20, c = 6, d = 300;
      const u = Array.from({ length: d }, () => rng.normal());
      const centers = randomMatrix(rng, c, d, 1e-3), f = randomMatrix(rng, b, d, 1e-3);
      for (let j = 0; j < c; j++) for (let q = 0; q < d; q++) centers.data[j * d + q] += u[q] * (0.5 + j / 4);
      for (let i = 0; i < b; i++) for (let q = 0; q < d; q++) f.data[i * d + q] += u[q];
      centers.data.fill(0, 0, d);
      for (let q = 0; q < d; q++) centers.data[d + q] = 1e-14 * u[q];
      const labels = Int32Array.from({ length: b }, (_, i) => i % (c - 1));
      const inputs: Any = { f, centers, labels, rule: randomRule(rng, c) };
      const l = await gpuLosses(await sharedDevice(), { auto: false, note: "test" }) as Any;
      for (const prototypeWeight of [0.5, -2]) {
        const want = js.centerRegularization.valueAndGrad(inputs, { prototypeWeight }) as Any;
        const got = await l.centerRegularization.valueAndGrad(inputs, { prototypeWeight });
        const label = `prototypeWeight ${prototypeWeight}`;
        assertLossClose(got.loss, want.loss, `${label}: loss`);
        assertLossClose(got.proto, want.proto, `${label}: proto`);
        assertGradClose(got.grads.f.data, want.grads.f.data, `${label}: grads.f`);
        // The two centres below the clamp (gradients of 1e12 times the others'), then the others alone.
        assertGradClose(got.grads.centers.data, want.grads.centers.data, `${label}: grads.centers`);
        const live = (m: Float32Array | Float64Array) => m.subarray(2 * d);
        assertGradClose(
          live(got.grads.centers.data),
          live(want.grads.centers.data),
          `${label}: the live centres' grads`,
        );
      }
      l.dispose();
    },
  );
});
