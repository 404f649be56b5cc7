// WebGPU centerRegularization past llvmpipe's 65,535 loop iterations per invocation
// (docs/DEVELOPMENT.md's seventh WebGPU rule, src/webgpu/loops.ts): its kernel went through the C
// rule terms and the rows of one class per block of 256 columns in one invocation, so
// ceil(D / 256) (C + r + 3) above 65,535 (r the most rows of one class) was refused on llvmpipe
// (and would have left the rows past that count out of the centre's gradient). It now goes through
// them in windows of 60,000 terms, one workgroup each, summed by a last dispatch per class
// (src/webgpu/center_regularization.wgsl's `parts` and `classes`). A class of 65,530 rows (two
// windows, the second of rows only), host and GPU-resident inputs, the value alone too; against the
// float64 reference backend within SPEC's bound. Skipped where the runtime has no WebGPU adapter (Bun).
import { describe, it } from "node:test";
import { js } from "../cpu.ts";
import { gpuLosses } from "../src/backend.ts";
import { assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { webgpuMissing } from "./helpers/backends.ts";
import { download, sharedDevice, upload } from "./helpers/gpu.ts";
import { randomMatrix, Rng } from "./helpers/random.ts";
import { randomRule } from "./helpers/specs_moe.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

describe("WebGPU centerRegularization past llvmpipe's loop budget", { skip: webgpuMissing }, () => {
  it("C = 3, D = 5, B = 65,533 with 65,530 rows in class 1 (ceil(D / 256) (C + r + 3) = 65,536)", async () => {
    const rng = new Rng(4100);
    const b = 65_533, c = 3, d = 5;
    // Class 1 holds all rows but rows 0, 1 (class 0) and the last (class 2); the rows are about
    // their centre's direction plus noise, each row's share of the centre's gradient alike.
    const labels = Int32Array.from({ length: b }, (_, i) => (i < 2 ? 0 : i === b - 1 ? 2 : 1));
    const centers = randomMatrix(rng, c, d, 1);
    const f = randomMatrix(rng, b, d, 0.5);
    for (let i = 0; i < b; i++) for (let q = 0; q < d; q++) f.data[i * d + q] += centers.data[labels[i] * d + q];
    const inputs: Any = { f, centers, labels, rule: randomRule(rng, c) };
    const options = { prototypeWeight: 2 };
    const want = (js as Any).centerRegularization.valueAndGrad(inputs, options) as Any;
    const wantUp = (js as Any).centerRegularization.backward(inputs, options, 1.5) as Any;
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" }) as Any;
    const loss = l.centerRegularization;

    const host = await loss.valueAndGrad(inputs, options);
    assertLossClose(host.loss, want.loss, "host loss");
    assertLossClose(host.proto, want.proto, "host proto");
    for (const k of ["f", "centers"]) assertGradClose(host.grads[k].data, want.grads[k].data, `host grads.${k}`);

    const value = await loss.forward(inputs, options);
    assertLossClose(value.loss, want.loss, "forward loss");

    const resident = { ...inputs, f: await upload(f, dev), centers: await upload(centers, dev) };
    const grads = await loss.backward(resident, options, 1.5);
    for (const k of ["f", "centers"]) {
      assertGradClose(await download(grads[k], dev), wantUp[k].data, `resident grads.${k} (upstream 1.5)`);
      grads[k].buffer.destroy();
      resident[k].buffer.destroy();
    }
    l.dispose();
  });
});
