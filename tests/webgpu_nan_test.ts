// NaN placement on the WebGPU backend = the reference's (docs/LOSSES.md "Edge cases"): a NaN anywhere in a
// row's logits (a NaN logit or cosine, a NaN row of W, a NaN entry of x) makes that row's loss NaN and its
// gradient row NaN where the CPU backends (IEEE arithmetic, as PyTorch) give NaN, and every other value
// finite where they give finite values. WGSL leaves min, max and clamp of a NaN to the implementation:
// llvmpipe's clamp made a NaN cosine -1, its max dropped a NaN label logit, its frexp made log_ of a NaN
// finite, and a pair's clamp (df_clamp) became a min and max (src/webgpu/common.wgsl's maxn, clampn, kept,
// is_nan). Every kernel with a row softmax: crossEntropy (short and segmented rows), the margin losses
// on cosines, marginHead (K = 1 and 3, classes, the inter-class options, the face kinds), sphereface,
// lsoftmax, linearCrossEntropy, distillation, softCrossEntropy, hierarchical and the class-sharded head's
// statistics. The values themselves are the other suites' business: here only where NaN is. Skipped where
// the runtime has no WebGPU adapter (Bun).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { js, mergeShardStats, mergeShardTopK } from "../cpu.ts";
import { findAdapter, gpuLosses, requestDevice } from "../src/backend.ts";
import { webgpuMissing } from "./helpers/backends.ts";
import { download, sharedDevice } from "./helpers/gpu.ts";
import { randomMatrix, randomProbabilities, Rng } from "./helpers/random.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const skip = webgpuMissing;

/** The WebGPU backend on the test device. */
const gpu = async (): Promise<Any> => await gpuLosses(await sharedDevice(), { auto: false, note: "test" });

/** A number, a host array or matrix, or a GPU matrix, as host values. */
async function host(v: Any): Promise<Float64Array> {
  if (typeof v === "number") return Float64Array.of(v);
  if (v instanceof Float32Array || v instanceof Float64Array) return Float64Array.from(v);
  if (v.buffer instanceof GPUBuffer) return Float64Array.from(await download(v));
  return Float64Array.from(v.data);
}

/** Where the values are NaN (N), finite (.) or infinite (I). */
const where = (a: Float64Array) =>
  Array.from(a, (x) => (Number.isNaN(x) ? "N" : Number.isFinite(x) ? "." : "I")).join("");

/** The reference's and the WebGPU backend's loss and gradients have their NaN in the same places. */
async function sameNaN(l: Any, loss: string, inputs: Any, o: Any, label: string, only?: string[]): Promise<void> {
  const want: Any = (js as Any)[loss].valueAndGrad(inputs, o);
  const got: Any = await l[loss].valueAndGrad(inputs, o);
  assert.ok(where(await host(want.loss)).includes("N"), `${label}: the reference has a NaN loss (a case that tests)`);
  assert.equal(where(await host(got.loss)), where(await host(want.loss)), `${label}: loss`);
  for (const key of only ?? Object.keys(want.grads)) {
    assert.equal(where(await host(got.grads[key])), where(await host(want.grads[key])), `${label}: grads.${key}`);
  }
}

describe("WebGPU: a NaN in a row's logits makes the row's loss and gradient NaN, as on the CPU", { skip }, () => {
  it("crossEntropy: a NaN at a non-label and at the label column (softcap, zLoss, smoothing, weights, focal)", async () => {
    const l = await gpu();
    const z = randomMatrix(new Rng(1), 4, 7, 2), labels = Int32Array.from([1, 2, 3, 4]);
    z.data[0 * 7 + 5] = NaN;
    z.data[1 * 7 + 2] = NaN;
    const weight = [1, 2, 1, 1, 2, 1, 1];
    for (
      const o of [{}, { softcap: 3 }, { zLoss: 0.1 }, { labelSmoothing: 0.1 }, { weight }, {
        labelSmoothing: 0.1,
        weight,
      }] as Any[]
    ) {
      for (const reduction of ["none", "mean"]) {
        await sameNaN(
          l,
          "crossEntropy",
          { logits: z, labels },
          { ...o, reduction },
          `${JSON.stringify(o)} ${reduction}`,
        );
      }
    }
    await sameNaN(l, "focal", { logits: z, labels }, { reduction: "none" }, "focal");
    l.dispose();
  });

  it("the margin losses on cosines: a NaN cosine at a non-label and at the label (threshold, interTopK)", async () => {
    // (cosines inside [-1, 1]: where the clamp cuts a cosine of a NaN row the reference's gradient is
    // NaN (0 * NaN), the GPU's 0 and PyTorch's 0; tests/fixtures/generate_gpunan.py's docstring)
    const l = await gpu();
    const cos = randomMatrix(new Rng(2), 4, 7, 0.3), labels = Int32Array.from([1, 2, 3, 4]);
    cos.data.forEach((v, i) => (cos.data[i] = Math.max(-0.99, Math.min(0.99, v))));
    cos.data[0 * 7 + 5] = NaN;
    cos.data[1 * 7 + 2] = NaN;
    const cases: [string, Any][] = [
      ["arcface", {}],
      ["arcface", { interclassFilteringThreshold: 0.2 }],
      ["arcface", { interTopK: 2 }],
      ["cosface", { interclassFilteringThreshold: 0.2 }],
      ["normface", {}],
      ["combinedMargin", { m3: 0.1 }],
    ];
    for (const [loss, o] of cases) {
      await sameNaN(l, loss, { cos, labels }, { ...o, reduction: "none" }, `${loss} ${JSON.stringify(o)}`);
    }
    l.dispose();
  });

  for (const K of [1, 3]) {
    it(`marginHead K = ${K}: a NaN row of W (a row's label, the others' non-label) and a NaN entry of x`, async () => {
      const l = await gpu();
      const n = 5, d = 8, c = 9, rng = new Rng(3 + K);
      const x = randomMatrix(rng, n, d, 1), W = randomMatrix(rng, c * K, d, 1);
      const labels = Int32Array.from([0, 4, 2, 7, 1]);
      const Wn = { data: W.data.slice().fill(NaN, 4 * K * d, 4 * K * d + d), shape: W.shape }; // class 4's first row
      const xn = { data: x.data.slice().fill(NaN, 3 * d, 3 * d + 1), shape: x.shape }; // row 3
      const options: Any[] = [
        {},
        { kind: "cosface" },
        { kind: "combinedMargin", m3: 0.1 },
        { interclassFilteringThreshold: 0.2 },
        { interTopK: 2 },
        { kind: "adaface" },
        { kind: "curricularFace" },
        { kind: "magface" },
      ];
      for (const o of options) {
        for (const classes of [undefined, [0, 1, 2, 4, 5, 7]]) {
          const state = o.kind === "adaface"
            ? { mean: 20, std: 5 }
            : o.kind === "curricularFace"
            ? { t: 0 }
            : undefined;
          const opts = { scale: 16, ...o, subcenters: K, reduction: "none" };
          const label = `${JSON.stringify(o)}${classes ? " classes" : ""}`;
          const base: Any = { x, labels, ...(classes ? { classes } : {}), ...(state ? { state } : {}) };
          await sameNaN(l, "marginHead", { ...base, W: Wn }, opts, `${label}, NaN W`);
          // (K > 1: the reference gives the rows of W no row picks 0, PyTorch and the GPU NaN (0 times x's NaN))
          await sameNaN(l, "marginHead", { ...base, x: xn, W }, opts, `${label}, NaN x`, K > 1 ? ["x"] : undefined);
        }
      }
      l.dispose();
    });
  }

  it("sphereface, lsoftmax and linearCrossEntropy: a NaN in W and in x", async () => {
    const l = await gpu();
    const n = 5, d = 8, c = 9, rng = new Rng(7);
    const x = randomMatrix(rng, n, d, 1), W = randomMatrix(rng, c, d, 1);
    const labels = Int32Array.from([0, 4, 2, 7, 1]);
    W.data[4 * d] = NaN;
    x.data[3 * d] = NaN;
    for (const loss of ["sphereface", "lsoftmax"]) {
      await sameNaN(l, loss, { x, W, labels }, { reduction: "none" }, loss);
    }
    const bias = Float32Array.from({ length: c }, (_, j) => 0.1 * j);
    for (const o of [{}, { softcap: 5 }, { zLoss: 0.1 }, { labelSmoothing: 0.1 }] as Any[]) {
      for (const b of [undefined, bias]) {
        const inputs = { x, W, labels, ...(b ? { bias: b } : {}) };
        await sameNaN(l, "linearCrossEntropy", inputs, { ...o, reduction: "none" }, `lce ${JSON.stringify(o)}`);
      }
    }
    l.dispose();
  });

  it("distillation (a NaN teacher and student logit), softCrossEntropy and hierarchical", async () => {
    const l = await gpu();
    const rng = new Rng(10), n = 3, c = 6, labels = Int32Array.from([1, 2, 3]);
    const z = randomMatrix(rng, n, c, 2), t = randomMatrix(rng, n, c, 2);
    z.data[0 * c + 4] = NaN;
    t.data[1 * c + 2] = NaN; // (the teacher's: its KL term was max(NaN, 0), 0 on llvmpipe)
    await sameNaN(l, "distillation", { student: z, teacher: t, labels }, { reduction: "none" }, "distillation");
    const p = randomProbabilities(rng, n, c);
    await sameNaN(l, "softCrossEntropy", { logits: z, target: p }, { reduction: "none" }, "softCrossEntropy");
    // (a NaN fine logit of the label's coarse class: the other coarse classes' are not read)
    const coarse = randomMatrix(rng, n, 2, 1), fineToCoarse = [0, 0, 0, 1, 1, 1];
    const fine = { data: t.data.slice(), shape: t.shape };
    fine.data[0] = NaN;
    await sameNaN(l, "hierarchical", { coarse, fine, labels, fineToCoarse }, { reduction: "none" }, "hierarchical");
    l.dispose();
  });

  for (const K of [1, 3]) {
    it(`the class-sharded marginHead K = ${K}: each shard's statistics, losses and gradients`, async () => {
      const l = await gpu();
      const n = 5, d = 8, c = 9, rng = new Rng(8 + K), bounds = [0, 4, 9];
      const x = randomMatrix(rng, n, d, 1), W = randomMatrix(rng, c * K, d, 1);
      const labels = Int32Array.from([0, 4, 2, 7, 1]);
      W.data.fill(NaN, 4 * K * d, 4 * K * d + d);
      for (const o of [{}, { kind: "cosface" }, { interclassFilteringThreshold: 0.2 }, { interTopK: 2 }] as Any[]) {
        const shards = bounds.slice(0, -1).map((c0, k) => ({
          inputs: {
            x,
            labels,
            W: { data: W.data.slice(c0 * K * d, bounds[k + 1] * K * d), shape: [(bounds[k + 1] - c0) * K, d] },
          },
          options: { scale: 16, ...o, subcenters: K, offset: c0, classes: c, reduction: "none" },
        }));
        const run = async (b: Any) => {
          if (o.interTopK) {
            // (the protocol's step topK: each shard's top k, merged into every shard's inputs)
            const tops: Any[] = [];
            for (const s of shards) tops.push(await b.sharded.marginHead.topK(s.inputs, s.options));
            const topK = mergeShardTopK(tops);
            for (const s of shards) (s.inputs as Any).topK = topK;
          }
          const stats: Any[] = [];
          for (const s of shards) stats.push(await b.sharded.marginHead.stats(s.inputs, s.options));
          const merged = mergeShardStats(stats);
          const done: Any[] = [];
          for (const s of shards) done.push(await b.sharded.marginHead.finish(s.inputs, merged, s.options));
          return { stats, done };
        };
        const want = await run(js), got = await run(l);
        for (let k = 0; k < shards.length; k++) {
          const label = `${JSON.stringify(o)} shard ${k}`;
          for (const f of ["max", "sum", "target"]) {
            assert.equal(where(await host(got.stats[k][f])), where(await host(want.stats[k][f])), `${label}: ${f}`);
          }
          assert.equal(where(await host(got.done[k].loss)), where(await host(want.done[k].loss)), `${label}: loss`);
          for (const key of ["x", "W"]) {
            const g = await host(got.done[k].grads[key]), w = await host(want.done[k].grads[key]);
            assert.equal(where(g), where(w), `${label}: grads.${key}`);
          }
        }
        assert.ok(where(await host(want.stats[1].max)).includes("N"), "the NaN row's shard has NaN maxima");
      }
      l.dispose();
    });
  }

  it("rows longer than one binding (segments): crossEntropy and cosface", async () => {
    const dev = await requestDevice((await findAdapter()).adapter!);
    const l: Any = await gpuLosses(dev, { auto: false, note: "test", maxBindingBytes: 2048 });
    const n = 3, c = 1100;
    const z = randomMatrix(new Rng(9), n, c, 0.3), labels = Int32Array.from([3, 700, 1000]);
    z.data.forEach((v, i) => (z.data[i] = Math.max(-0.99, Math.min(0.99, v))));
    z.data[0 * c + 900] = NaN;
    z.data[1 * c + 700] = NaN;
    await sameNaN(l, "crossEntropy", { logits: z, labels }, { reduction: "none" }, "crossEntropy");
    await sameNaN(l, "cosface", { cos: z, labels }, { reduction: "none" }, "cosface");
    l.dispose();
    dev.destroy();
  });
});
