// The WebGPU kernels split in session 10 so that no invocation loops past llvmpipe's 65,535 iterations
// (docs/DEVELOPMENT.md's seventh WebGPU rule, src/webgpu/loops.ts; tests/webgpu_loops_test.ts has the
// earlier ones). Each case is at a shape that llvmpipe refused before (a RangeError from `checkLoops`),
// compared with the float64 reference within SPEC's bound; kept as small as the limit allows (llvmpipe is
// slow). Skipped where the runtime has no WebGPU adapter (Bun).
import { describe, it } from "node:test";
import { js } from "../cpu.ts";
import { gpuLosses } from "../src/backend.ts";
import { assertGradClose, assertLossClose, assertThrowsNamed } from "./helpers/assert.ts";
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
  for (const [k, v] of Object.entries(inputs)) onGpu[k] = v.data instanceof Float32Array ? await upload(v) : v;
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

  it("ntXent's exact exponents at B = 257, D = 32,736 (refused before: 2 (D + 6) > 65,471)", async () => {
    // (an invocation per pair of rows now, 2 of D each before; multiSimilarity's exact exponents take the same
    // pass, at every size: tests/webgpu_metric_test.ts's sharp fixtures)
    const rng = new Rng(257), b = 257, f = randomMatrix(rng, b, 32_736, 1);
    const labels = Int32Array.from({ length: b }, (_, i) => i % 16);
    await check("ntXent", { f, labels }, { temperature: 0.01 }, "t = 0.01");
  });

  it("proxyAnchor's exact exponents at B = 64, D = 1024 (refused before: B (D + 4) > 65,527)", async () => {
    const rng = new Rng(64), b = 64, d = 1024, f = randomMatrix(rng, b, d, 1), proxies = randomMatrix(rng, 8, d, 1);
    const labels = Int32Array.from({ length: b }, (_, i) => i % 6);
    await check("proxyAnchor", { f, labels, proxies }, { alpha: 100, margin: 0.1 }, "alpha = 100");
  });

  it("proxyAnchor at B = 22,000 (refused before: 3 B > 65,535; C = 64 and 4, D = 4), and B = 56,000 refused", async () => {
    // (a workgroup per proxy now, one invocation before; every 97th row on its proxy: near pairs. With 4 proxies
    // a proxy's gradient over the batch lies mostly along the proxy, 100 times its projection: projected in
    // float32, grads.proxies came to 0.3 to 1.1 of SPEC's bound here (1.14 at C = 4); in float pairs 0.1-0.6)
    for (const c of [64, 4]) {
      const rng = new Rng(22_000), b = 22_000, d = 4;
      const f = randomMatrix(rng, b, d, 1), proxies = randomMatrix(rng, c, d, 1);
      for (let i = 0; i < b; i += 97) f.data.set(proxies.data.subarray((i % c) * d, (i % c) * d + d), i * d);
      const labels = Int32Array.from({ length: b }, (_, i) => i % c);
      await check("proxyAnchor", { f, labels, proxies }, { alpha: 32, margin: 0.1 }, `B = 22,000, C = ${c}`);
    }
    const rng = new Rng(56_000), c = 64, d = 4, proxies = randomMatrix(rng, c, d, 1);
    // What is not split is refused on llvmpipe: grads.proxies' product over the batch (wrong from about 54,000).
    const dev = await sharedDevice();
    if (/llvmpipe|lavapipe/i.test((dev as Any).adapterInfo?.description ?? "")) {
      const l = await gpuLosses(dev, { auto: false, note: "test" }) as Any;
      const big = randomMatrix(rng, 56_000, d, 1), y = Int32Array.from({ length: 56_000 }, (_, i) => i % c);
      const call = () => l.proxyAnchor.valueAndGrad({ f: big, labels: y, proxies }, {});
      await assertThrowsNamed(call, RangeError, "B (56000)", "llvmpipe");
      l.dispose();
    }
  });

  it("hnmContrastive at k = 3200 (refused before: (k + 1) (ceil(D / 256) + 20) > 65,471; B = 2, D = 4)", async () => {
    // (a workgroup per logit now, an invocation per entry of the gradient; one workgroup per row before)
    const rng = new Rng(3200), b = 2, c = 4000, d = 4, k = 3200;
    const f = randomMatrix(rng, b, d, 1), prototypes = randomMatrix(rng, c, d, 1), labels = Int32Array.of(5, 3999);
    // (the largest logit among the last negatives, where the old kernel's loops stopped)
    const hard = { data: Int32Array.from({ length: b * k }, (_, j) => (7 + 13 * j) % c), shape: [b, k] };
    for (let i = 0; i < b; i++) prototypes.data.set(f.data.subarray(i * d, i * d + d), hard.data[i * k + k - 1] * d);
    await check("hnmContrastive", { f, prototypes, labels, hard }, { temperature: 0.05 }, "k = 3200");
  });

  it("linearCrossEntropy's logits in float pairs at D = 12,000 (refused before: 6.5 D > 65,535; N = 4, V = 64)", async () => {
    // (three windows of D now, one dispatch each; a loss of 6.8 for 108 before the refusal; 10,000 in one went)
    // (and at a scale of 0.05, where each window's tiles are float32 and the pairs carry their sums)
    for (const scale of [0.5, 0.05]) {
      const rng = new Rng(12_000), d = 12_000, x = randomMatrix(rng, 4, d, scale), W = randomMatrix(rng, 64, d, scale);
      const labels = Int32Array.of(3, 17, 40, 63);
      await check("linearCrossEntropy", { x, W, labels }, {}, `D = 12,000, scale ${scale}`);
    }
  });

  it("centerLoss's grads.centers with 65,535 rows of one class (refused before: a class of more than 65,534 rows)", async () => {
    // (two ranges of the class's rows now, one dispatch each; the other class has none: 65,535 rows is the most a
    // WebGPU call takes)
    const rng = new Rng(65_535), n = 65_535, x = randomMatrix(rng, n, 2, 1), centers = randomMatrix(rng, 2, 2, 1);
    await check("centerLoss", { x, centers, labels: new Int32Array(n) }, {}, "N = 65,535");
  });
});
