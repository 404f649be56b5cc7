// The margin losses and heads on GPU-resident inputs against every PyTorch fixture: their
// label targets (phi, psi and the heads' label terms) are evaluated on the GPU in float
// pairs, and SPEC's bound must hold as on the host (the shared suites run the same
// fixtures with host arrays): ArcFace's threshold branch and easy margin, marginGrad
// "constant", cosines of exactly +-1 and outside [-1, 1], combinedMargin's m1 != 1,
// SphereFace's and L-Softmax's k = floor(m theta / pi), and the heads' precise mode.
// Skipped, with the reason, where the runtime has no WebGPU adapter.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { init } from "../mod.ts";
import { download, sharedDevice, upload } from "./helpers/gpu.ts";
import { assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { webgpuMissing } from "./helpers/backends.ts";
import { type ExpectedTensor, loadFixtures } from "./helpers/fixtures.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const skip = webgpuMissing;

let shared: { device: GPUDevice; losses: Any } | null = null;
async function gpu() {
  if (!shared) {
    const device = await sharedDevice();
    shared = { device, losses: await init({ backend: "webgpu", device }) };
  }
  return shared;
}

const LOSSES: [name: string, fixtures: string, resident: string[]][] = [
  ["arcface", "arcface.json", ["cos"]],
  ["cosface", "cosface.json", ["cos"]],
  ["normface", "normface.json", ["cos"]],
  ["combinedMargin", "combined_margin.json", ["cos"]],
  ["marginHead", "margin_head.json", ["x", "W"]],
  ["sphereface", "sphereface.json", ["x", "W"]],
  ["lsoftmax", "lsoftmax.json", ["x", "W"]],
];

for (const [name, file, resident] of LOSSES) {
  describe(`${name} on GPU-resident inputs matches PyTorch (${file})`, () => {
    for (const fc of loadFixtures(file)) {
      it(fc.name, { skip }, async () => {
        const loss = (await gpu()).losses[name];
        const inputs: Any = { ...fc.inputs };
        for (const k of resident) inputs[k] = await upload(inputs[k]);
        assertLossClose((await loss.forward(inputs, fc.options)).loss, fc.expected.loss, `${fc.name} loss`);
        const grads = fc.upstream === undefined
          ? (await loss.valueAndGrad(inputs, fc.options)).grads
          : await loss.backward(inputs, fc.options, fc.upstream);
        for (const k of resident) {
          assert.ok(grads[k].buffer && grads[k].data === undefined, `grads.${k} stays on the GPU`);
          const data = await download(grads[k]);
          const expected = fc.expected.grads[k] as ExpectedTensor; // one matrix per input here
          assertGradClose({ data, shape: grads[k].shape }, expected, `${fc.name} grads.${k}`);
          grads[k].buffer.destroy();
        }
        for (const k of resident) inputs[k].buffer.destroy();
      });
    }
  });
}

describe("heads at label cosines of exactly +-1 (x and W_y (anti)parallel, exact norms)", () => {
  // W rows of norms 5, sqrt(5) and 1; rows 0 and 3 antiparallel to their class, 1 and 2
  // parallel: the cosine is exactly -1 (k = m) or 1 (k = 0) on the host as on the GPU.
  const W = { data: new Float32Array([3, 4, 1, -2, 0.6, 0.8]), shape: [3, 2] };
  const x = { data: new Float32Array([-6, -8, 1.5, 2, 2, -4, -1, 2, 0.3, -0.1]), shape: [5, 2] };
  const labels = Int32Array.from([0, 0, 1, 1, 2]);
  const cases: [string, Any][] = [
    ["sphereface", { m: 3 }],
    ["sphereface", { m: 4, lambda: 1.5 }],
    ["lsoftmax", { m: 3 }],
    ["lsoftmax", { m: 4, beta: 2 }],
    ["marginHead", { kind: "arcface", scale: 8 }],
    ["marginHead", { kind: "combinedMargin", m1: 1.35, m2: 0.25, m3: 0.1, scale: 8 }],
  ];
  for (const [name, options] of cases) {
    it(`${name} ${JSON.stringify(options)}: host and GPU-resident inputs match the reference`, { skip }, async () => {
      const { js } = await import("../cpu.ts");
      const ref = (js as Any)[name].valueAndGrad({ x, W, labels }, options);
      const loss = (await gpu()).losses[name];
      const host = await loss.valueAndGrad({ x, W, labels }, options);
      assertLossClose(host.loss, ref.loss, "host loss");
      for (const k of ["x", "W"]) assertGradClose(host.grads[k], ref.grads[k].data, `host grads.${k}`);
      const onGpu = await loss.valueAndGrad({ x: await upload(x), W: await upload(W), labels }, options);
      assertLossClose(onGpu.loss, ref.loss, "loss");
      for (const k of ["x", "W"]) {
        const data = await download(onGpu.grads[k]);
        assertGradClose({ data, shape: ref.grads[k].shape }, ref.grads[k].data, `grads.${k}`);
      }
    });
  }
});
