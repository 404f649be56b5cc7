// The WebGPU kernels split in session 10 so that no invocation loops past llvmpipe's 65,535 iterations
// (docs/DEVELOPMENT.md's seventh WebGPU rule, src/webgpu/loops.ts; tests/webgpu_loops_test.ts has the
// earlier ones). Each case is at a shape that llvmpipe refused before (a RangeError from `checkLoops`),
// compared with the float64 reference within SPEC's bound; kept as small as the limit allows (llvmpipe is
// slow). Skipped where the runtime has no WebGPU adapter (Bun).
import { describe, it } from "node:test";
import { js } from "../cpu.ts";
import { gpuLosses } from "../src/backend.ts";
import { assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { webgpuMissing } from "./helpers/backends.ts";
import { download, sharedDevice, upload } from "./helpers/gpu.ts";
import { randomMatrix, Rng } from "./helpers/random.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const skip = webgpuMissing;
/** A GPU matrix's or a host result's values. */
const values = async (m: Any): Promise<Float32Array> => (m instanceof Float32Array ? m : await download(m));
const scalar = async (m: Any): Promise<number> => (typeof m === "number" ? m : (await values(m))[0]);

/** Compares `name`'s WebGPU loss and gradients on GPU-resident inputs with the float64 reference. */
async function check(name: string, inputs: Record<string, Any>, o: Record<string, unknown>, label: string) {
  const dev = await sharedDevice();
  const l = await gpuLosses(dev, { auto: false, note: "test" }) as Any;
  const ref = (js as Any)[name].valueAndGrad(inputs, o);
  const onGpu: Record<string, Any> = {};
  for (const [k, v] of Object.entries(inputs)) onGpu[k] = v.shape ? await upload(v) : v;
  const g = await l[name].valueAndGrad(onGpu, o);
  assertLossClose(await scalar(g.loss), ref.loss, `${label}: loss`);
  for (const k of Object.keys(ref.grads)) {
    assertGradClose(await values(g.grads[k]), ref.grads[k].data, `${label}: grads.${k}`);
  }
  l.dispose();
}

describe("WebGPU past llvmpipe's 65,535 loop iterations per invocation (split in session 10)", { skip }, () => {
  it("tripletMargin, mining all (soft), B = 4096: the mining by pairs of rows (refused before: 16 (B + 3) > 65,535)", async () => {
    // (1024 classes of 4 rows, not in the order of their labels; soft: no hinge that float32 distances could cross)
    const rng = new Rng(4096), b = 4096, f = randomMatrix(rng, b, 4, 1);
    const labels = Int32Array.from({ length: b }, (_, i) => (i >> 2) ^ 5);
    await check("tripletMargin", { f, labels }, { mining: "all", soft: true, margin: 0.5 }, "B = 4096");
  });

  it("ntXent and multiSimilarity's exact exponents at B = 257, D = 32,736 (refused before: 2 (D + 6) > 65,471)", async () => {
    // (an invocation per pair of rows now; 2 windows of 256 rows of D each before)
    const rng = new Rng(257), b = 257, f = randomMatrix(rng, b, 32_736, 1);
    const labels = Int32Array.from({ length: b }, (_, i) => i % 16);
    await check("ntXent", { f, labels }, { temperature: 0.01 }, "ntXent, t = 0.01");
    await check("multiSimilarity", { f, labels }, { alpha: 2, beta: 100 }, "multiSimilarity, beta = 100");
  });

  it("proxyAnchor's exact exponents at B = 64, D = 1024 (refused before: B (D + 4) > 65,527)", async () => {
    const rng = new Rng(64), b = 64, d = 1024, f = randomMatrix(rng, b, d, 1), proxies = randomMatrix(rng, 8, d, 1);
    const labels = Int32Array.from({ length: b }, (_, i) => i % 6);
    await check("proxyAnchor", { f, labels, proxies }, { alpha: 100, margin: 0.1 }, "alpha = 100");
  });
});
