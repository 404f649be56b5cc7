/**
 * SPEC §8's metric-learning staples at B x D: `ntXent` (temperature 0.07) and `tripletMargin`
 * (mining "all", margin 0.05) on softmargin's WebAssembly backend against a TensorFlow.js
 * wasm autodiff composition of the same loss (tf ops, `tf.valueAndGrad`), with peak memory.
 * Labels: B / 8 classes of 8 rows. TF.js's triplet loss has no way around the B^3 triplets:
 * it takes them a block of 16 anchors at a time ([16, B, B] tensors), each block's loss
 * and gradient by `tf.valueAndGrad`, summed (the count of triplets with l > 0 first), so
 * that its memory stays bounded. GFLOP/s count the GEMM work, 6 B² D per valueAndGrad
 * (S = h h^T and (A + A^T) h), 2 B² D forward; the ratios are what the issue's target
 * (10x) is about.
 *
 * ```sh
 * deno run -A bench/metric_bench.ts [--quick | --full] [--json out.json]
 * ```
 *
 * @module
 */
import { type Contender, type Lib, lossCall, mulberry32, type Out, run, sink } from "./engine.ts";
import { initTf, tf, tfMissing, tfNormalizeRows, tfRun, tfUse } from "./impls.ts";

const NT = { temperature: 0.07 };
const TRIPLET = { margin: 0.05, mining: "all" as const };
/** Anchors per block of the TF.js triplet composition. */
const BLOCK = 16;

type Ctx = { b: number; d: number; f: Float32Array; labels: Int32Array };

function library(lib: Lib): Contender<Ctx>[] {
  const wasm = lib.cpu.wasm;
  return [
    {
      name: "ntXent wasm",
      group: "ntXent",
      setup: ({ f, labels, b, d }, mode) => ({
        run: lossCall(wasm.ntXent, mode, { f: { data: f, shape: [b, d] }, labels }, NT, ["f"]),
      }),
    },
    {
      name: "tripletMargin wasm",
      group: "tripletMargin",
      ratioTo: "tripletMargin wasm",
      setup: ({ f, labels, b, d }, mode) => ({
        run: lossCall(wasm.tripletMargin, mode, { f: { data: f, shape: [b, d] }, labels }, TRIPLET, ["f"]),
      }),
    },
  ];
}

/** ntXent by tf ops: `l_ap = softplus(logsumexp_n(s_an / t) - s_ap / t)`, the mean over the positive pairs. */
function tfNtXent(x: tf.Tensor, labels: tf.Tensor, t: number): tf.Scalar {
  const { unit } = tfNormalizeRows(x);
  const s = tf.div(tf.matMul(unit, unit, false, true), t);
  const same = tf.equal(tf.expandDims(labels, 1), tf.expandDims(labels, 0));
  const b = x.shape[0];
  const pos = tf.mul(tf.cast(same, "float32"), tf.sub(1, tf.eye(b)));
  const negInf = tf.mul(tf.cast(same, "float32"), -1e9);
  const lse = tf.logSumExp(tf.add(s, negInf), 1, true);
  const l = tf.mul(pos, tf.softplus(tf.sub(lse, s)));
  return tf.div(tf.sum(l), tf.sum(pos)) as tf.Scalar;
}

/** Distances of rows [a0, a0 + n) of the normalised rows to every row, `[n, B]` (a safe square root). */
function tfDistances(x: tf.Tensor, a0: number, n: number): tf.Tensor {
  const { unit } = tfNormalizeRows(x);
  const cos = tf.matMul(tf.slice(unit, [a0, 0], [n, -1]), unit, false, true);
  return tf.sqrt(tf.add(tf.relu(tf.sub(2, tf.mul(2, cos))), 1e-12));
}

/** The relu terms of the triplets of anchors [a0, a0 + n): `[n, B, B]` (p, n), masked. */
function tfTripletBlock(x: tf.Tensor, mask: tf.Tensor, a0: number, n: number, margin: number): tf.Tensor {
  const d = tfDistances(x, a0, n);
  const v = tf.add(tf.sub(tf.expandDims(d, 2), tf.expandDims(d, 1)), margin);
  return tf.mul(tf.relu(v), tf.slice(mask, [a0, 0, 0], [n, -1, -1]));
}

const tfjs: Contender<Ctx>[] = [
  {
    name: "ntXent tfjs-wasm",
    group: "ntXent",
    ratioTo: "ntXent wasm",
    enter: tfUse("wasm"),
    setup: ({ f, labels, b, d }, mode) =>
      tfMissing("wasm") ?? {
        run: () =>
          tfRun((): Out => {
            const y = tf.tensor1d(labels, "int32"), x = tf.tensor2d(f, [b, d]);
            const loss = (t: tf.Tensor) => tfNtXent(t, y, NT.temperature);
            if (mode === "forward") return { loss: loss(x).dataSync()[0] };
            const { value, grad } = tf.valueAndGrad(loss)(x);
            const g = grad.dataSync() as Float32Array;
            sink.value += g[0];
            return { loss: value.dataSync()[0], grads: [g] };
          }),
      },
  },
  {
    name: "tripletMargin tfjs-wasm",
    group: "tripletMargin",
    ratioTo: "tripletMargin wasm",
    enter: tfUse("wasm"),
    setup: ({ f, labels, b, d }, mode) =>
      tfMissing("wasm") ?? {
        run: () => {
          // mask[a, p, n] = (y_p = y_a, p != a, y_n != y_a), built once per call.
          const mask = tf.tidy(() => {
            const y = tf.tensor1d(labels, "int32");
            const same = tf.cast(tf.equal(tf.expandDims(y, 1), tf.expandDims(y, 0)), "float32");
            const pos = tf.mul(same, tf.sub(1, tf.eye(b)));
            return tf.mul(tf.expandDims(pos, 2), tf.expandDims(tf.sub(1, same), 1));
          });
          const x = tf.tensor2d(f, [b, d]);
          try {
            let count = 0;
            for (let a0 = 0; a0 < b; a0 += BLOCK) {
              const n = Math.min(BLOCK, b - a0);
              count += tfRun(() =>
                tf.sum(tf.cast(tf.greater(tfTripletBlock(x, mask, a0, n, TRIPLET.margin), 0), "float32")).dataSync()[0]
              );
            }
            let total = 0;
            const g = new Float32Array(b * d);
            for (let a0 = 0; a0 < b; a0 += BLOCK) {
              const n = Math.min(BLOCK, b - a0);
              const sum = (t: tf.Tensor) => tf.sum(tfTripletBlock(t, mask, a0, n, TRIPLET.margin)) as tf.Scalar;
              if (mode === "forward") {
                total += tfRun(() => sum(x).dataSync()[0]);
                continue;
              }
              tfRun(() => {
                const { value, grad } = tf.valueAndGrad(sum)(x);
                total += value.dataSync()[0];
                const gb = grad.dataSync();
                for (let i = 0; i < gb.length; i++) g[i] += gb[i];
              });
            }
            const scale = count ? 1 / count : 0;
            for (let i = 0; i < g.length; i++) g[i] *= scale;
            sink.value += g[0];
            return { loss: total * scale, grads: mode === "forward" ? undefined : [g] };
          } finally {
            x.dispose();
            mask.dispose();
          }
        },
      },
  },
];

await run<Ctx>(async (_, libs) => {
  await initTf();
  const js = libs[0].cpu.js;
  return {
    name: "metric",
    title: "ntXent (t 0.07) and tripletMargin (mining all, margin 0.05), B / 8 classes of 8 rows, at B x D",
    modes: ["valueAndGrad", "forward"],
    defaultModes: ["valueAndGrad"],
    shapes: { default: [[512, 128]], quick: [[512, 128]], full: [[256, 128], [512, 128], [1024, 128]] },
    timing: { default: { rounds: 5, roundTime: 0.1, slowBudget: 6 }, quick: { slowBudget: 4 } },
    work: ([b, d], mode) => (mode === "forward" ? 2 : 6) * b * b * d,
    unit: ["GFLOP/s", 1e9],
    library,
    contenders: tfjs,
    context: ([b, d]) => {
      const rand = mulberry32(2026);
      const f = Float32Array.from({ length: b * d }, () => rand() * 2 - 1);
      return { b, d, f, labels: Int32Array.from({ length: b }, (_, i) => i % Math.max(1, b / 8)) };
    },
    reference({ f, labels, b, d }, group) {
      const inputs = { f: { data: f, shape: [b, d] as [number, number] }, labels };
      const r = group === "ntXent"
        ? js.ntXent.valueAndGrad(inputs, NT)
        : js.tripletMargin.valueAndGrad(inputs, TRIPLET);
      return { loss: r.loss as number, grads: [r.grads.f.data] };
    },
    baseline: "ntXent wasm",
    memory: { warm: [64, 16], when: (_, mode) => mode === "valueAndGrad" },
  };
});
