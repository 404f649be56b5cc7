/**
 * `linearCrossEntropy` (fused linear cross-entropy) from hidden states x [N, D] (U(-1, 1)) and an
 * output projection W [V, D] (U(-0.05, 0.05)): softmargin's wasm call (one thread, two threads,
 * and `wasm out=`: one thread into the caller's gradient buffers, as a training loop reuses them),
 * against `3 GEMMs` (the three products X W^T, dX += G W and dW = G^T X alone, chunk by chunk of
 * 128 classes, in the same rounds: the floor; the call forms each logit once, in row blocks),
 * `tfjs-wasm` (`tf.matMul` + `tf.losses.softmaxCrossEntropy` under `tf.valueAndGrads`, which
 * holds the [N, V] logits and their gradient) and `PyTorch 2 threads` (`F.linear` +
 * `F.cross_entropy`, forward and backward, bench/torch.ts); memory of one call in a fresh process
 * (peak resident memory, WebAssembly memory growth, TF.js heap). See bench/README.md.
 *
 * `--memory-run [NxDxV]` (default 4096x2048x128256, issue 19's): instead of timing, one
 * `valueAndGrad` call on one thread and one on two, each in a fresh process (the two side by
 * side, so their times are of a machine they share), reporting its time,
 * peak resident memory (over the process's before the call, and in all) and WebAssembly memory.
 *
 * ```sh
 * deno run -A bench/lce_bench.ts [--quick] [--shapes 1024x1024x32000,256x2048x128256] [--json out.json]
 * deno run -A bench/lce_bench.ts --memory-run            # the memory run (~6.5e12 flops per call)
 * ```
 *
 * @module
 */
import type { Matrix } from "../cpu.ts";
import { init } from "../mod.ts";
import { runtime } from "../src/wasm/runtime.ts";
import type { Contender, Lib, Out, Shape } from "./engine.ts";
import { labelsOf, lossCall, mulberry32, run, sink, uniform } from "./engine.ts";
import { initTf, tf, tfMissing, tfRun, tfUse } from "./impls.ts";
import { torchContender } from "./torch.ts";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { currentRuntime } from "../src/wasm/runtime.ts";

/** Classes per chunk of the call (src/wasm/linear_cross_entropy.ts). */
const CHUNK = 128;

type Ctx = { n: number; d: number; v: number; x: Float32Array; W: Float32Array; labels: Int32Array } & {
  free: (() => void)[];
  /** The caller's gradient buffers of `wasm out=`. */
  out: { x: Float32Array; W: Float32Array };
};

function context([n, d, v]: Shape): Ctx {
  const rand = mulberry32(v + d);
  const [x, W, labels] = [uniform(rand, n * d), uniform(rand, v * d, 0.05), labelsOf(rand, n, v)];
  return { n, d, v, x, W, labels, free: [], out: { x: new Float32Array(n * d), W: new Float32Array(v * d) } };
}

const inputs = ({ n, d, v, x, W, labels }: Ctx) => ({
  x: { data: x, shape: [n, d] } as Matrix,
  W: { data: W, shape: [v, d] } as Matrix,
  labels,
});

/** Two-thread losses, made once. */
let twoThreads: Awaited<ReturnType<typeof init>> | null = null;

function library(lib: Lib): Contender<Ctx>[] {
  return [
    {
      name: "wasm",
      group: "lce",
      ours: true,
      ratioTo: "3 GEMMs",
      setup: (ctx, mode) => ({
        run: lossCall(lib.cpu.wasm.linearCrossEntropy, mode, inputs(ctx), {}, ["x", "W"]),
      }),
    },
    {
      name: "wasm out=",
      group: "lce",
      ours: true,
      ratioTo: "3 GEMMs",
      setup: (ctx, mode) =>
        mode !== "valueAndGrad" ? "n/a" : {
          run: lossCall(lib.cpu.wasm.linearCrossEntropy, mode, inputs(ctx), {
            out: { x: { data: ctx.out.x, shape: [ctx.n, ctx.d] }, W: { data: ctx.out.W, shape: [ctx.v, ctx.d] } },
          }, ["x", "W"]),
        },
    },
    {
      name: "wasm 2 threads",
      group: "lce",
      ours: true,
      ratioTo: "wasm",
      async setup(ctx, mode) {
        twoThreads ??= await init({ backend: "wasm", threads: 2 });
        if (twoThreads.threads < 2) return `2 threads unavailable: ${twoThreads.note}`;
        return { run: lossCall(twoThreads.linearCrossEntropy, mode, inputs(ctx), {}, ["x", "W"]) };
      },
    },
  ];
}

/**
 * The three products alone, as the call makes them: per chunk of 128 classes, W_J^T transposed, W in
 * WebAssembly memory. With `fresh`, their results land in new host arrays each call as the default
 * API's do (dW chunk by chunk, dX at the end): the floor of a call that returns fresh gradients.
 */
function gemmFloor(name: string, fresh: boolean): Contender<Ctx> {
  return {
    name,
    floor: true,
    setup({ n, d, v, x, W, free }, mode) {
      if (mode !== "valueAndGrad") return "n/a";
      const rt = runtime(), ptrs: number[] = [];
      const at = (bytes: number, src?: Float32Array) => {
        const p = rt.malloc(bytes);
        if (src) rt.f32.set(src, p >>> 2);
        return ptrs.push(p), p;
      };
      const X = at(n * d * 4, x), Wp = at(v * d * 4, W), WT = at(d * CHUNK * 4), S = at(n * CHUNK * 4);
      const dX = at(n * d * 4), dW = at(CHUNK * d * 4);
      rt.f32.fill(1e-3, S >>> 2, (S >>> 2) + n * CHUNK);
      free.push(() => ptrs.forEach((p) => rt.free(p)));
      return {
        run: (): Out => {
          const gW = fresh ? new Float32Array(v * d) : null;
          for (let j0 = 0; j0 < v; j0 += CHUNK) {
            const m = Math.min(CHUNK, v - j0), wj = Wp + j0 * d * 4;
            rt.k.transpose(wj, m, d, WT);
            rt.k.gemm(S, m, n, m, d, X, d, 1, WT, m, 0);
            rt.k.gemm(dX, d, n, d, m, S, m, 1, wj, d, j0 ? 1 : 0);
            rt.k.gemm(dW, d, m, d, n, S, 1, m, X, d, 0);
            gW?.set(rt.f32.subarray(dW >>> 2, (dW >>> 2) + m * d), j0 * d);
          }
          const gx = fresh ? rt.f32.slice(dX >>> 2, (dX >>> 2) + n * d) : null;
          sink.value += rt.f32[dX >>> 2] + (gW ? gW[0] + gx![0] : 0);
          return {};
        },
      };
    },
  };
}

const gemms = gemmFloor("3 GEMMs", false), gemmsFresh = gemmFloor("3 GEMMs fresh", true);

/** PyTorch CPU, 2 threads: F.linear + F.cross_entropy, forward and backward (bench/torch_runner.py). */
const torch = torchContender<Ctx>("PyTorch 2 threads", {
  case: "linearCrossEntropy",
  threads: 2,
  group: "lce",
  ratioTo: "wasm",
  inputs: ({ n, d, v, x, W, labels }) => ({
    x: { data: x, shape: [n, d] },
    W: { data: W, shape: [v, d] },
    labels: { data: labels, shape: [n] },
  }),
});

/** TF.js (wasm backend): x W^T, softmaxCrossEntropy on one-hot labels, gradients by tf.valueAndGrads. */
const tfjs: Contender<Ctx> = {
  name: "tfjs-wasm",
  group: "lce",
  enter: tfUse("wasm"),
  setup: ({ n, d, v, x, W, labels }, mode) =>
    tfMissing("wasm") ?? {
      run: () =>
        tfRun((): Out => {
          const onehot = tf.oneHot(tf.tensor1d(labels, "int32"), v);
          const f = (a: tf.Tensor, b: tf.Tensor) =>
            tf.losses.softmaxCrossEntropy(onehot, tf.matMul(a, b, false, true)) as tf.Scalar;
          const xs = [tf.tensor2d(x, [n, d]), tf.tensor2d(W, [v, d])];
          if (mode === "forward") return { loss: f(xs[0], xs[1]).dataSync()[0] };
          const { value, grads } = tf.valueAndGrads(f)(xs), gs = grads.map((t) => t.dataSync() as Float32Array);
          sink.value += gs[1][0];
          return { loss: value.dataSync()[0], grads: gs };
        }),
    },
};

/**
 * `--memory-run`: one valueAndGrad call per thread count, each in a fresh process (`--memory-child T
 * SHAPE`), after a small warm call; peak resident memory from /proc/self/status (VmHWM, its mark
 * reset just before the call) and WebAssembly memory's size before and after.
 */
async function memoryRun(argv: string[]): Promise<boolean> {
  const at = argv.indexOf("--memory-child");
  const MB = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  if (at >= 0) {
    const threads = Number(argv[at + 1]), [n, d, v] = argv[at + 2].split("x").map(Number);
    const losses = await init({ backend: "wasm", threads });
    const ctx = context([n, d, v]), small = context([8, 16, 300]);
    await losses.linearCrossEntropy.valueAndGrad(inputs(small), {});
    const status = () => {
      const s = readFileSync("/proc/self/status", "utf8");
      return (key: string) => parseInt(new RegExp(`${key}:\\s+(\\d+)`).exec(s)![1], 10) * 1024;
    };
    (globalThis as { gc?: () => void }).gc?.();
    writeFileSync("/proc/self/clear_refs", "5");
    const before = status()("VmRSS"), w0 = currentRuntime()!.buffer.byteLength, t = performance.now();
    const r = await losses.linearCrossEntropy.valueAndGrad(inputs(ctx), {});
    const seconds = (performance.now() - t) / 1000, hwm = status()("VmHWM"), w1 = currentRuntime()!.buffer.byteLength;
    const loss = Number(r.loss);
    sink.value += loss;
    console.log(
      `${n}x${d}x${v}, ${losses.threads} thread(s): ${seconds.toFixed(1)} s, loss ${loss.toFixed(6)}; ` +
        `peak RSS ${MB(hwm)} (${MB(hwm - before)} over the ${MB(before)} before the call: inputs, runtime); ` +
        `WebAssembly memory ${MB(w1)} (${MB(w1 - w0)} grown in the call)`,
    );
    losses.dispose();
    return true;
  }
  const i = argv.indexOf("--memory-run");
  if (i < 0) return false;
  const shape = argv[i + 1] && !argv[i + 1].startsWith("--") ? argv[i + 1] : "4096x2048x128256";
  const deno = "Deno" in globalThis ? ["run", "-A", "--v8-flags=--expose-gc"] : [];
  // (side by side: the peaks are each process's own; the times are of a machine shared by both)
  const child = (threads: number) =>
    new Promise<string>((resolve) => {
      const p = spawn(process.execPath, [...deno, process.argv[1], "--memory-child", String(threads), shape], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      let out = "";
      p.stdout.on("data", (b) => (out += b));
      p.on("close", (code) => resolve(out.trim() || `${threads} thread(s): exit status ${code}`));
    });
  for (const line of await Promise.all([child(1), child(2)])) console.log(line);
  return true;
}

if (!(await memoryRun(process.argv.slice(2)))) {
  await run<Ctx>(async () => {
    await initTf();
    return {
      name: "lce",
      title: "linearCrossEntropy from x [N, D] and W [V, D] (no bias, defaults); its three GEMMs alone; TF.js",
      modes: ["valueAndGrad", "forward"],
      defaultModes: ["valueAndGrad"],
      shapes: {
        default: [[1024, 1024, 32000], [256, 2048, 128256]],
        quick: [[256, 512, 8000]],
      },
      timing: {
        default: { rounds: 2, roundTime: 0.5, warmupTime: 0.1, slowBudget: 60, minSamples: 2, skipAbove: 600 },
        quick: { rounds: 2, roundTime: 0.2, slowBudget: 2, skipAbove: 5 },
      },
      // Flops of the three products.
      work: ([n, d, v], mode) => (mode === "valueAndGrad" ? 6 : 2) * n * d * v,
      unit: ["GFLOP/s", 1e9],
      library,
      contenders: [gemms, gemmsFresh, tfjs, torch],
      context,
      dispose: (ctx) => ctx.free.forEach((f) => f()),
      // The float64 reference would take minutes at these sizes: the outputs are compared with TF.js's by the summary's loss.
      reference: () => ({}),
      baseline: "wasm",
      pairs: [["wasm 2 threads", "3 GEMMs"], ["wasm", "wasm out="], ["wasm", "3 GEMMs fresh"]],
      memory: { warm: [8, 16, 300], when: (_, mode) => mode === "valueAndGrad" },
    };
  });
}
