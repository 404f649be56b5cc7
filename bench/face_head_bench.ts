/**
 * `marginHead` with the face margin kinds of SPEC §7 (`adaface`, `curricularFace`, `magface`)
 * and sub-center ArcFace (`subcenters: 3`, C/3 classes over the same C rows of W) against the ArcFace
 * head (s = 64, defaults otherwise), from embeddings x [N, D] and weights W [C, D] (U(-1, 1)),
 * WebAssembly backend, valueAndGrad: the ratio of each to `arcface` (target <= 1.1: the per-row
 * targets, the non-target transform and the sub-centre maximum cost little next to the GEMMs);
 * and `tfjs-wasm <kind>`: the same loss as TensorFlow.js ops under `tf.valueAndGrads`
 * (bench/face_impls.ts), its ratio to that kind's head (target >= 10 at 256x512x10000; n/a above
 * 20,000 classes, where TF.js's 4 GiB wasm heap runs short). See bench/README.md.
 *
 * ```sh
 * deno run -A bench/face_head_bench.ts [--quick | --full] [--json out.json]
 * deno run -A bench/face_head_bench.ts --shapes 256x512x10000   # against TF.js
 * ```
 *
 * @module
 */
import type { Matrix } from "../cpu.ts";
import type { Contender, Lib, Out, Shape } from "./engine.ts";
import { labelsOf, lossCall, mulberry32, run, sink, uniform } from "./engine.ts";
import { tfAdafaceLoss, tfCosines, tfCurricularFaceLoss, tfMagfaceLoss } from "./face_impls.ts";
import { initTf, tf, tfMissing, tfRun, tfUse } from "./impls.ts";

type Ctx = { n: number; d: number; c: number; x: Float32Array; W: Float32Array; labels: Int32Array };

const KINDS = {
  arcface: [{}, {}],
  adaface: [{ state: { mean: 20, std: 100 } }, {}],
  curricularFace: [{ state: { t: 0.2 } }, {}],
  // the norms of U(-1, 1) rows of 512 are about 13: inside MagFace's [10, 110]
  magface: [{}, {}],
} as const;

/**
 * W U(-1, 1); each x_i its label's row plus as much noise (label cosines about 0.7, the others
 * about 0, as in training: a random x would make nearly every class a hard negative of CurricularFace).
 */
function context([n, d, c]: Shape): Ctx {
  const rand = mulberry32(c + d);
  const W = uniform(rand, c * d), labels = labelsOf(rand, n, c), noise = uniform(rand, n * d);
  const x = Float32Array.from(noise, (e, q) => W[labels[Math.floor(q / d)] * d + (q % d)] + e);
  return { n, d, c, x, W, labels };
}

/**
 * Sub-center ArcFace (`subcenters: 3`) over the same rows of W: C/3 classes of 3 rows each (W's first
 * 3 floor(C/3) rows, label y -> floor(y / 3), the class of its row): the same GEMM, a third of the
 * classes in the softmax (target <= 1.1 of the arcface head of C classes).
 */
function subcenters(lib: Lib): Contender<Ctx> {
  return {
    name: "subcenters3",
    group: "head",
    ratioTo: "arcface",
    setup(ctx, mode) {
      const { n, d } = ctx, c3 = Math.floor(ctx.c / 3);
      const labels = ctx.labels.map((y) => Math.min(Math.floor(y / 3), c3 - 1));
      const all = {
        x: { data: ctx.x, shape: [n, d] as const },
        W: { data: ctx.W.subarray(0, 3 * c3 * d), shape: [3 * c3, d] as const },
        labels,
      };
      return { run: lossCall(lib.cpu.wasm.marginHead, mode, all, { scale: 64, subcenters: 3 }, ["x", "W"]) };
    },
  };
}

function library(lib: Lib): Contender<Ctx>[] {
  return [
    ...Object.entries(KINDS).map(([kind, [inputs, options]]): Contender<Ctx> => ({
      name: kind,
      group: "head",
      ratioTo: "arcface",
      setup(ctx, mode) {
        const { n, d, c } = ctx, m = (data: Float32Array, rows: number): Matrix => ({ data, shape: [rows, d] });
        const all = { x: m(ctx.x, n), W: m(ctx.W, c), labels: ctx.labels, ...inputs };
        return { run: lossCall(lib.cpu.wasm.marginHead, mode, all, { kind, scale: 64, ...options }, ["x", "W"]) };
      },
    })),
    subcenters(lib),
  ];
}

/** The TF.js compositions of each kind (bench/face_impls.ts) with KINDS' state, from x and W. */
const TF_LOSSES = {
  adaface: (x: tf.Tensor, onehot: tf.Tensor, mask: tf.Tensor) => {
    const norms = tf.norm(x, 2, 1); // outside tf.valueAndGrads: detached, as SPEC's head
    return (x: tf.Tensor, W: tf.Tensor) => tfAdafaceLoss(tfCosines(x, W), norms, onehot, mask, KINDS.adaface[0].state);
  },
  curricularFace: (_x: tf.Tensor, onehot: tf.Tensor, mask: tf.Tensor) => (x: tf.Tensor, W: tf.Tensor) =>
    tfCurricularFaceLoss(tfCosines(x, W), onehot, mask, KINDS.curricularFace[0].state),
  magface: (_x: tf.Tensor, onehot: tf.Tensor, mask: tf.Tensor) => (x: tf.Tensor, W: tf.Tensor) =>
    tfMagfaceLoss(x, W, onehot, mask),
};

/** `tfjs-wasm <kind>`: the loss in TF.js ops, value and gradients by `tf.valueAndGrads`; its ratio to the kind's head. */
const tfContenders: Contender<Ctx>[] = Object.entries(TF_LOSSES).map(([kind, make]) => ({
  name: `tfjs-wasm ${kind}`,
  group: kind,
  ratioTo: kind,
  enter: tfUse("wasm"),
  setup: ({ n, d, c, x, W, labels }, mode) =>
    tfMissing("wasm") ?? (c > 20000 ? "n/a (TF.js's wasm heap)" : {
      run: () =>
        tfRun(() => {
          const onehot = tf.oneHot(tf.tensor1d(labels, "int32"), c), mask = tf.cast(onehot, "float32");
          const xs = [tf.tensor2d(x, [n, d]), tf.tensor2d(W, [c, d])];
          const f = make(xs[0], onehot, mask);
          if (mode === "forward") return { loss: f(xs[0], xs[1]).dataSync()[0] };
          const { value, grads } = tf.valueAndGrads(f)(xs), gs = grads.map((t) => t.dataSync() as Float32Array);
          sink.value += gs[1][0];
          return { loss: value.dataSync()[0], grads: gs };
        }),
    }),
}));

await run<Ctx>(async (_, libs) => (await initTf(), {
  name: "face_head",
  title:
    "marginHead kinds adaface, curricularFace, magface and subcenters 3 against arcface (s = 64), x [N, D], W [C, D], wasm",
  modes: ["valueAndGrad", "forward"],
  defaultModes: ["valueAndGrad"],
  shapes: { default: [[256, 512, 100000]], quick: [[256, 512, 10000]], full: [[256, 512, 10000], [256, 512, 100000]] },
  timing: {
    default: { rounds: 3, roundTime: 0.5, warmupTime: 0.3, slowBudget: 30, minSamples: 3, skipAbove: 60 },
    quick: { rounds: 2, roundTime: 0.2, slowBudget: 5, skipAbove: 10 },
  },
  work: ([n, d, c], mode) => (mode === "valueAndGrad" ? 6 : 2) * n * d * c,
  unit: ["GFLOP/s", 1e9],
  library,
  contenders: tfContenders,
  context,
  // The TF.js compositions are checked against the float64 head up to C = 10000, above against this tree's wasm one.
  reference: ({ n, d, c, x, W, labels }, group) =>
    group in TF_LOSSES
      ? lossCall(
        (c <= 10000 ? libs[0].cpu.js : libs[0].cpu.wasm).marginHead,
        "valueAndGrad",
        {
          x: { data: x, shape: [n, d] },
          W: { data: W, shape: [c, d] },
          labels,
          ...KINDS[group as keyof typeof KINDS][0],
        },
        { kind: group, scale: 64 },
        ["x", "W"],
      )() as Out
      : {},
  baseline: "arcface",
}));
