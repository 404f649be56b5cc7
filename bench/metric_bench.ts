/**
 * SPEC §8's metric-learning staples at B x D: `ntXent` (temperature 0.07) and `tripletMargin`
 * (mining "all", margin 0.05) on softmargin's WebAssembly backend against a TensorFlow.js
 * wasm autodiff composition of the same loss (tf ops, `tf.valueAndGrad`), with peak memory.
 * Labels: B / 8 classes of 8 rows. TF.js's triplet loss holds every triplet: per anchor its
 * P = 7 positives against every row, `[B, P, B]` tensors (the masks built per call; a
 * `[B, B, B]` form took 6 s per block of 16 anchors here). GFLOP/s count the GEMM work, 6 B² D per valueAndGrad
 * (S = h h^T and (A + A^T) h), 2 B² D forward; the ratios are what the issue's target
 * (10x) is about.
 *
 * `--near EPS`: a trained batch instead of uniform rows, each class's rows EPS apart about its own
 * direction (row i = s_i (u_y + EPS e_i), s_i in [0.5, 2]): every row has 7 near positives
 * (d^2 < 0.1, formed in float64 relative to its direction, assembly/metric.ts) among far negatives.
 *
 * ```sh
 * deno run -A bench/metric_bench.ts [--quick | --full] [--near 0.01] [--json out.json]
 * ```
 *
 * @module
 */
import process from "node:process";
import { type Contender, type Lib, lossCall, mulberry32, type Out, run, sink } from "./engine.ts";
import { initTf, tf, tfMissing, tfNormalizeRows, tfRun, tfUse } from "./impls.ts";

const NT = { temperature: 0.07 };
const nearAt = process.argv.indexOf("--near"), NEAR = nearAt < 0 ? 0 : Number(process.argv[nearAt + 1]);
if (!(NEAR >= 0)) throw new TypeError(`Expected --near EPS, a distance >= 0, got ${process.argv[nearAt + 1]}`);
const TRIPLET = { margin: 0.05, mining: "all" as const };
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

/**
 * The relu terms of every triplet, `[B, P, B]`: per anchor its P positives (gathered by a
 * one-hot product; anchors with fewer are padded with masked slots) against every row, the
 * negatives kept by the mask.
 */
function tfTriplets(x: tf.Tensor, onehot: tf.Tensor, mask: tf.Tensor, margin: number): tf.Tensor {
  const { unit } = tfNormalizeRows(x);
  const d = tf.sqrt(tf.add(tf.relu(tf.sub(2, tf.mul(2, tf.matMul(unit, unit, false, true)))), 1e-12));
  const dap = tf.sum(tf.mul(tf.expandDims(d, 1), onehot), 2);
  const v = tf.add(tf.sub(tf.expandDims(dap, 2), tf.expandDims(d, 1)), margin);
  return tf.mul(tf.relu(v), mask);
}

/** The one-hot positives `[B, P, B]` and the triplet mask `[B, P, B]` of the labels. */
function tripletMasks(labels: Int32Array): { onehot: tf.Tensor; mask: tf.Tensor } {
  const b = labels.length, pos: number[][] = [];
  for (let a = 0; a < b; a++) pos.push([...labels.keys()].filter((j) => j !== a && labels[j] === labels[a]));
  const p = Math.max(1, ...pos.map((l) => l.length));
  const onehot = new Float32Array(b * p * b), mask = new Float32Array(b * p * b);
  pos.forEach((list, a) =>
    list.forEach((j, k) => {
      onehot[(a * p + k) * b + j] = 1;
      for (let n = 0; n < b; n++) if (labels[n] !== labels[a]) mask[(a * p + k) * b + n] = 1;
    })
  );
  return { onehot: tf.tensor3d(onehot, [b, p, b]), mask: tf.tensor3d(mask, [b, p, b]) };
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
        run: () =>
          tfRun((): Out => {
            const { onehot, mask } = tripletMasks(labels);
            const x = tf.tensor2d(f, [b, d]);
            // The mean over the triplets with l > 0: their count is a constant of the step.
            const count = tf.sum(tf.cast(tf.greater(tfTriplets(x, onehot, mask, TRIPLET.margin), 0), "float32"));
            const loss = (t: tf.Tensor) =>
              tf.div(tf.sum(tfTriplets(t, onehot, mask, TRIPLET.margin)), tf.maximum(count, 1)) as tf.Scalar;
            if (mode === "forward") return { loss: loss(x).dataSync()[0] };
            const { value, grad } = tf.valueAndGrad(loss)(x);
            const g = grad.dataSync() as Float32Array;
            sink.value += g[0];
            return { loss: value.dataSync()[0], grads: [g] };
          }),
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
      const rand = mulberry32(2026), classes = Math.max(1, b / 8);
      const labels = Int32Array.from({ length: b }, (_, i) => i % classes);
      if (!NEAR) return { b, d, f: Float32Array.from({ length: b * d }, () => rand() * 2 - 1), labels };
      const normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
      const u = Array.from({ length: classes * d }, normal), f = new Float32Array(b * d);
      for (let i = 0; i < b; i++) {
        const s = 0.5 + 1.5 * rand(), y = labels[i];
        for (let k = 0; k < d; k++) f[i * d + k] = s * (u[y * d + k] / Math.sqrt(d) + NEAR * normal());
      }
      return { b, d, f, labels };
    },
    reference({ f, labels, b, d }, group) {
      const inputs = { f: { data: f, shape: [b, d] as [number, number] }, labels };
      const r = group === "ntXent"
        ? js.ntXent.valueAndGrad(inputs, NT)
        : js.tripletMargin.valueAndGrad(inputs, TRIPLET);
      return { loss: r.loss as number, grads: [r.grads.f.data] };
    },
    baseline: "ntXent wasm",
    flags: { "--near EPS": "each class's rows EPS apart about its own direction (a trained batch)" },
    memory: { warm: [64, 16], when: (_, mode) => mode === "valueAndGrad" },
  };
});
