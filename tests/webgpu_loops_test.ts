// The WebGPU kernels whose one invocation would loop over C, N or k (docs/DEVELOPMENT.md's seventh WebGPU
// rule, src/webgpu/loops.ts): Mesa's llvmpipe, this machine's adapter, silently leaves every loop of an
// invocation after 65,535 iterations in all, so these shapes gave wrong values there before the work was
// split (interTopK's per-row scans by windows of classes, the margin losses' sub-centres in one loop per
// class, the head's chunks of at most 32,768 rows of W, its dW by ranges of rows and dW's label terms by
// blocks of columns,
// tripletMargin's gradient one invocation per entry,
// linearCrossEntropy's dW and db by ranges of rows). Each case is past that count and compared with the
// float64 reference within SPEC's bound; the data puts what the old kernels missed past the 65,535th
// iteration (the largest non-label cosines in the last classes, ties among the rest). Kept as small as
// the limit allows (llvmpipe is slow). Skipped where the runtime has no WebGPU adapter (Bun).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { js } from "../cpu.ts";
import { gpuLosses } from "../src/backend.ts";
import { assertGradClose, assertLossClose, assertThrowsNamed } from "./helpers/assert.ts";
import { webgpuMissing } from "./helpers/backends.ts";
import { download, sharedDevice, upload } from "./helpers/gpu.ts";
import { randomLabels, randomMatrix, Rng } from "./helpers/random.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const skip = webgpuMissing;
/** A GPU matrix's or a host result's values. */
const values = async (m: Any): Promise<Float32Array> => (m instanceof Float32Array ? m : await download(m));
const scalar = async (m: Any): Promise<number> => (typeof m === "number" ? m : (await values(m))[0]);

/**
 * Cosines [n, C K], every one 0.3 (ties everywhere) but four larger ones per row in the last classes
 * (sub-centre 0 of classes C - 1, C - 98, ...; the other sub-centres 0.3 too).
 */
function flat(n: number, C: number, K: number) {
  const data = new Float32Array(n * C * K).fill(0.3);
  for (let i = 0; i < n; i++) {
    [0.35, 0.4, 0.45, 0.5].forEach((v, q) => (data[(i * C + C - 1 - 97 * q) * K] = v));
  }
  return { cos: { data, shape: [n, C * K] }, labels: Int32Array.from({ length: n }, (_, i) => 1 + i) };
}

describe("WebGPU past llvmpipe's 65,535 loop iterations per invocation", { skip }, () => {
  it("arcface's interTopK on GPU-resident cosines, C = 100,000 (K = 1 and 64) and 40,000 classes of 2", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" }) as Any;
    // (K = 64: `main`'s two passes over the row's C K columns, one invocation C K / 256 of them each)
    for (const [C, K, k] of [[100_000, 1, 6], [40_000, 2, 5], [100_000, 64, 3]]) {
      const p = flat(2, C, K);
      // (k = 6 > 4: the threshold is a tied 0.3, its tie the smaller classes', across windows)
      const o = { scale: 64, interTopK: k, interTopKMargin: 0.3, ...(K > 1 ? { subcenters: K } : {}) };
      const label = `C = ${C}, K = ${K}, k = ${k}`;
      const ref = js.arcface.valueAndGrad(p as Any, o as Any) as Any;
      const g = await l.arcface.valueAndGrad({ ...p, cos: await upload(p.cos) }, o);
      assertLossClose(await scalar(g.loss), ref.loss, `${label}: loss`);
      assertGradClose(await values(g.grads.cos), ref.grads.cos.data, `${label}: grads.cos`);
    }
    l.dispose();
  });

  it("marginHead: interTopK at C = 70,000 and the backward at C = 100,000 (N = 3, D = 4)", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" }) as Any;
    for (const [C, k] of [[70_000, 5], [100_000, 0]]) {
      const rng = new Rng(C + k), n = 3, d = 4;
      const W = randomMatrix(rng, C, d, 1), x = randomMatrix(rng, n, d, 1);
      // Each row's nearest classes are the last ones, two of them tied (equal rows of W).
      for (let i = 0; i < n; i++) {
        for (const j of [C - 1 - 7 * i, C - 2 - 7 * i]) W.data.set(x.data.subarray(i * d, i * d + d), j * d);
      }
      const labels = randomLabels(rng, n, C, 0, -100);
      const o = { kind: "arcface", scale: 16, ...(k ? { interTopK: k } : {}) };
      const label = `C = ${C}, interTopK ${k}`;
      const ref = js.marginHead.valueAndGrad({ x, W, labels } as Any, o as Any) as Any;
      const g = await l.marginHead.valueAndGrad({ x: await upload(x), W: await upload(W), labels }, o);
      assertLossClose(await scalar(g.loss), ref.loss, `${label}: loss`);
      assertGradClose(await values(g.grads.x), ref.grads.x.data, `${label}: grads.x`);
      assertGradClose(await values(g.grads.W), ref.grads.W.data, `${label}: grads.W`);
    }
    l.dispose();
  });

  it("marginHead's grads.W at N = 60,000 (two ranges of rows; C = 64, D = 4)", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" }) as Any;
    const rng = new Rng(60), n = 60_000, d = 4, c = 64;
    const x = randomMatrix(rng, n, d, 1), W = randomMatrix(rng, c, d, 1), labels = randomLabels(rng, n, c, 0.1, -100);
    const o = { kind: "cosface", scale: 16 };
    const ref = js.marginHead.valueAndGrad({ x, W, labels } as Any, o as Any) as Any;
    const g = await l.marginHead.valueAndGrad({ x: await upload(x), W: await upload(W), labels }, o);
    assertLossClose(await scalar(g.loss), ref.loss, "loss");
    assertGradClose(await values(g.grads.W), ref.grads.W.data, "grads.W");
    l.dispose();
  });

  it("lsoftmax's grads.W (W not normalised) with 130 rows of one label at D = 512 (fin_w by blocks of columns)", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" }) as Any;
    const rng = new Rng(130), n = 130, d = 512, c = 4;
    const x = randomMatrix(rng, n, d, 0.2), W = randomMatrix(rng, c, d, 0.2), labels = new Int32Array(n);
    const o = { m: 2, beta: 10 };
    const ref = js.lsoftmax.valueAndGrad({ x, W, labels } as Any, o as Any) as Any;
    const g = await l.lsoftmax.valueAndGrad({ x: await upload(x), W: await upload(W), labels }, o);
    assertLossClose(await scalar(g.loss), ref.loss, "loss");
    assertGradClose(await values(g.grads.x), ref.grads.x.data, "grads.x");
    assertGradClose(await values(g.grads.W), ref.grads.W.data, "grads.W");
    l.dispose();
  });

  it("tripletMargin's gradient at B = 140, D = 256 (each row's D sums over the batch, once in one invocation)", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" }) as Any;
    const rng = new Rng(140), f = randomMatrix(rng, 140, 256, 1), labels = randomLabels(rng, 140, 8, 0, -100);
    const ref = js.tripletMargin.valueAndGrad({ f, labels } as Any, {}) as Any;
    const g = await l.tripletMargin.valueAndGrad({ f: await upload(f), labels }, {});
    assertLossClose(await scalar(g.loss), ref.loss, "loss");
    assertGradClose(await values(g.grads.f), ref.grads.f.data, "grads.f");
    l.dispose();
  });

  it("marginHead's sub-centre pick at K = 64, D = 960 and 1024 (a workgroup per row; 1024 refused before), D = 21,000 refused", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" }) as Any;
    for (const d of [960, 1024]) {
      const rng = new Rng(d), K = 64, C = 2;
      const x = randomMatrix(rng, 1, d, 1), W = randomMatrix(rng, C * K, d, 1), labels = Int32Array.from([1]);
      // (the label's last sub-centre the nearest: the one a cut loop misses; at D = 1024 the code of session 8
      // gave a loss of 9.34 for the reference's 4.7e-6)
      W.data.set(x.data, (2 * K - 1) * d);
      const o = { kind: "arcface", scale: 16, subcenters: K };
      const ref = js.marginHead.valueAndGrad({ x, W, labels } as Any, o as Any) as Any;
      const g = await l.marginHead.valueAndGrad({ x: await upload(x), W: await upload(W), labels }, o);
      assertLossClose(await scalar(g.loss), ref.loss, `D = ${d}: loss`);
      assertGradClose(await values(g.grads.W), ref.grads.W.data, `D = ${d}: grads.W`);
    }
    // What is not split is refused on llvmpipe by a named RangeError: marginHead's logit tiles, which go through
    // D in one invocation (3.2 iterations per unit in float32: D = 21,000).
    if (/llvmpipe|lavapipe/i.test((dev as Any).adapterInfo?.description ?? "")) {
      const rng = new Rng(21_000), x = randomMatrix(rng, 2, 21_000, 1), W = randomMatrix(rng, 4, 21_000, 1);
      const call = () =>
        l.marginHead.valueAndGrad({ x, W, labels: Int32Array.of(0, 3) }, { kind: "arcface", scale: 16 });
      await assertThrowsNamed(call, RangeError, "D (21000)", "llvmpipe");
    }
    l.dispose();
  });

  it("linearCrossEntropy's grads.W and grads.bias at N = 66,000 (three ranges of rows; V = 8, D = 4)", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" }) as Any;
    const rng = new Rng(66), n = 66_000, v = 8, d = 4;
    const x = randomMatrix(rng, n, d, 1), W = randomMatrix(rng, v, d, 1), labels = randomLabels(rng, n, v, 0.1, -100);
    const bias = Float32Array.from({ length: v }, (_, j) => 0.1 * j);
    const ref = js.linearCrossEntropy.valueAndGrad({ x, W, labels, bias } as Any, {}) as Any;
    const g = await l.linearCrossEntropy.valueAndGrad({ x, W, labels, bias }, {});
    assertLossClose(await scalar(g.loss), ref.loss, "loss");
    for (const key of ["x", "W", "bias"]) {
      const want = ref.grads[key].data ?? ref.grads[key];
      assert.equal((await values(g.grads[key].data ?? g.grads[key])).length, want.length, `grads.${key}: length`);
      assertGradClose(await values(g.grads[key].data ?? g.grads[key]), want, `grads.${key}`);
    }
    l.dispose();
  });
});
