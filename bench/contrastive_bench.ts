/**
 * `clip` and `siglip` (SPEC §8) at N x D: `clip wasm`, `siglip wasm` (valueAndGrad: the loss
 * and the gradients w.r.t. a, b, scale and bias), the same losses composed from TF.js ops
 * under `tf.valueAndGrads` on TF.js's wasm backend, and the floor `head GEMM`: the margin
 * head's GEMM doing the same products block by block (per block J of 256 columns
 * `S_J = A B_J^T`, `dA += S_J B_J`, `dB_J = S_J^T A`). GFLOP/s count those three products,
 * 6 N² D per call (clip forms S twice: 8 N² D of work); `head GEMM / siglip wasm` is siglip's
 * throughput over the GEMM's (target: at least 0.7), `clip tfjs-wasm / clip wasm` the speed-up
 * over TF.js (target: at least 10). Memory (peak RSS of one call in a fresh process) with `--memory`.
 *
 * ```sh
 * deno run -A bench/contrastive_bench.ts [--quick | --full] [--memory] [--json out.json]
 * ```
 *
 * @module
 */
import { runtime } from "../src/wasm/runtime.ts";
import { type Contender, type Lib, lossCall, mulberry32, type Out, run, sink } from "./engine.ts";
import { initTf, tf, tfMissing, tfRun, tfUse } from "./impls.ts";

const BLOCK = 256;
const SCALE = 1 / 0.07, BIAS = -10;
const LOSSES = ["clip", "siglip"] as const;

type Ctx = { n: number; d: number; a: Float32Array; b: Float32Array; free: (() => void)[] };

/** n unit rows of width d. */
function unitRows(rand: () => number, n: number, d: number): Float32Array {
  const x = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += (x[i * d + k] = rand() - 0.5) ** 2;
    for (let k = 0; k < d; k++) x[i * d + k] /= Math.sqrt(s);
  }
  return x;
}

const inputsOf = (loss: string, { a, b, n, d }: Ctx) => ({
  a: { data: a, shape: [n, d] },
  b: { data: b, shape: [n, d] },
  scale: SCALE,
  ...(loss === "siglip" ? { bias: BIAS } : {}),
});

function library(lib: Lib): Contender<Ctx>[] {
  return LOSSES.map((loss) => ({
    name: `${loss} wasm`,
    ours: true,
    group: loss,
    ratioTo: `${loss} wasm`,
    setup: (ctx, mode) => ({ run: lossCall(lib.cpu.wasm[loss], mode, inputsOf(loss, ctx), {}, ["a", "b"]) }),
  }));
}

/** open_clip's ClipLoss and SigLipLoss from tf ops (as tests/clip_tfjs_test.ts). */
function tfLoss(loss: string, n: number) {
  const eye = tf.eye(n), y = tf.oneHot(tf.range(0, n, 1, "int32"), n), z = tf.sub(tf.mul(2, eye), 1);
  return (a: tf.Tensor, b: tf.Tensor, s: tf.Tensor, bias: tf.Tensor): tf.Scalar => {
    const dots = tf.matMul(a, b, false, true);
    if (loss === "clip") {
      const logits = tf.mul(s, dots);
      const rows = tf.losses.softmaxCrossEntropy(y, logits),
        cols = tf.losses.softmaxCrossEntropy(y, tf.transpose(logits));
      return tf.div(tf.add(rows, cols), 2) as tf.Scalar;
    }
    const logits = tf.add(tf.mul(s, dots), bias);
    return tf.div(tf.sum(tf.softplus(tf.neg(tf.mul(z, logits)))), n) as tf.Scalar;
  };
}

const tfjs: Contender<Ctx>[] = LOSSES.map((loss) => ({
  name: `${loss} tfjs-wasm`,
  group: loss,
  ratioTo: `${loss} wasm`,
  enter: tfUse("wasm"),
  setup: ({ a, b, n, d }, mode) =>
    tfMissing("wasm") ??
      (mode !== "valueAndGrad" ? "valueAndGrad only" : {
        run: () =>
          tfRun((): Out => {
            const f = tfLoss(loss, n);
            const args = [tf.tensor2d(a, [n, d]), tf.tensor2d(b, [n, d]), tf.scalar(SCALE)];
            if (loss === "siglip") args.push(tf.scalar(BIAS));
            const { value, grads } = tf.valueAndGrads(f as (...t: tf.Tensor[]) => tf.Scalar)(args);
            const ga = grads[0].dataSync() as Float32Array, gb = grads[1].dataSync() as Float32Array;
            sink.value += ga[0];
            return { loss: value.dataSync()[0], grads: [ga, gb] };
          }),
      }),
}));

/** The head's GEMM on the same products, in WebAssembly memory, block by block of 256 columns. */
const gemm: Contender<Ctx> = {
  name: "head GEMM",
  floor: true,
  ratioTo: "siglip wasm",
  setup(ctx, mode) {
    if (mode !== "valueAndGrad") return "n/a";
    const { n, d, a, b } = ctx, rt = runtime();
    const [A, B, BT, S, dA, dB] = [n * d, n * d, n * d, n * BLOCK, n * d, n * d].map((x) => rt.malloc(x * 4));
    ctx.free.push(() => [A, B, BT, S, dA, dB].forEach((p) => rt.free(p)));
    rt.f32.set(a, A >>> 2);
    rt.f32.set(b, B >>> 2);
    return {
      run() {
        for (let j0 = 0; j0 < n; j0 += BLOCK) {
          const cols = Math.min(BLOCK, n - j0);
          rt.k.transpose(B + j0 * d * 4, cols, d, BT + j0 * d * 4);
          rt.k.gemm(S, cols, n, cols, d, A, d, 1, BT + j0 * d * 4, cols, 0);
          rt.k.gemm(dA, d, n, d, cols, S, cols, 1, B + j0 * d * 4, d, j0 > 0 ? 1 : 0);
          rt.k.gemm(dB + j0 * d * 4, d, cols, d, n, S, 1, cols, A, d, 0);
        }
        sink.value += rt.f32[dA >>> 2] + rt.f32[dB >>> 2];
      },
    };
  },
};

await run<Ctx>(async (_, libs) => {
  await initTf();
  const js = libs[0].cpu.js;
  return {
    name: "contrastive",
    title: "clip and siglip valueAndGrad (scale 1/0.07, siglip bias -10) at N x D",
    modes: ["valueAndGrad", "forward"],
    defaultModes: ["valueAndGrad"],
    shapes: {
      default: [[1024, 512], [4096, 512]],
      quick: [[1024, 512]],
      full: [[1024, 512], [4096, 512], [8192, 512]],
    },
    timing: {
      // TF.js takes ~1.5 minutes per call at N = 4096: one sample of it, none skipped.
      default: { rounds: 2, roundTime: 0.1, slowBudget: 1, minSamples: 1, skipAbove: Infinity },
      quick: { rounds: 2, roundTime: 0.05, slowBudget: 10 },
      full: { rounds: 5, roundTime: 0.2, slowBudget: 30 },
    },
    work: ([n, d], mode) => (mode === "forward" ? 2 : 6) * n * n * d,
    unit: ["GFLOP/s", 1e9],
    library,
    contenders: [...tfjs, gemm],
    context: ([n, d]) => {
      const rand = mulberry32(2024 + n);
      return { n, d, a: unitRows(rand, n, d), b: unitRows(rand, n, d), free: [] };
    },
    dispose: (ctx) => ctx.free.forEach((f) => f()),
    // The float64 reference (O(N^2 D) in plain TypeScript): only up to N = 1024.
    reference(ctx, group) {
      if (ctx.n > 1024) return {};
      const r = js[group as "clip"].valueAndGrad(inputsOf(group, ctx) as never);
      return { loss: r.loss as number, grads: [r.grads.a.data, r.grads.b.data] };
    },
    baseline: "siglip wasm",
    pairs: [["clip tfjs-wasm", "clip wasm"], ["siglip tfjs-wasm", "siglip wasm"], ["head GEMM", "siglip wasm"]],
    memory: { warm: [64, 16], when: (_, mode) => mode === "valueAndGrad" },
  };
});
