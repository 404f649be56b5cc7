/**
 * The softmax family on [N, C] rows: `crossEntropy` and `arcface` (s = 64, m = 0.5) on the
 * same cosines (U(-1, 1), each label's + 0.5, at most 0.99), mean reduction: softmargin's
 * paths (`wasm`, `wasm out=`, `wasm zero-copy`, `js`; for crossEntropy also `init()`, the default API: an
 * `init()` instance with its default threads and a fresh gradient, and `init() zero-copy`, its `alloc`
 * matrices) against plain TypeScript, TF.js
 * wasm and cpu, PyTorch (2 threads, `bench/torch.ts`), and three floors (`memcpy` through a 128 KiB staging buffer, `fresh
 * alloc+write`, and `caller's share`: what only the calling thread can do for the default API). See bench/README.md.
 *
 * ```sh
 * deno run -A bench/softmax_bench.ts [--quick | --full] [--baseline DIR] [--json out.json]
 * ```
 *
 * @module
 */
import type { Matrix, WasmMatrix } from "../cpu.ts";
import { type Contender, labelsOf, type Lib, lossCall, mulberry32, type Out, run, type Shape, sink } from "./engine.ts";
import { initTf, plainArcface, plainCrossEntropy, tf, tfArcfaceLoss, tfMissing, tfRun, tfUse } from "./impls.ts";
import { torchContender } from "./torch.ts";

const ARC = { scale: 64, margin: 0.5 };
const LOSSES = { CE: { loss: "crossEntropy", key: "logits" }, arcface: { loss: "arcface", key: "cos" } } as const;
type Loss = keyof typeof LOSSES;

/** `zero`: per library tree, input and gradient in its WebAssembly memory, made on first use. */
type Ctx = { n: number; c: number; x: Float32Array; labels: Int32Array; out: Float32Array; copyOut: Float32Array } & {
  zero: Map<Lib, WasmMatrix[]>;
};

function context([n, c]: Shape): Ctx {
  const rand = mulberry32(n * 31 + c), labels = labelsOf(rand, n, c);
  const x = Float32Array.from({ length: n * c }, () => rand() * 2 - 1);
  for (let i = 0; i < n; i++) x[i * c + labels[i]] = Math.min(x[i * c + labels[i]] + 0.5, 0.99);
  const zeros = () => new Float32Array(n * c).fill(0); // pages touched once, as a reused buffer's
  return { n, c, x, labels, out: zeros(), copyOut: zeros(), zero: new Map() };
}

/** Input and gradient in a tree's WebAssembly memory, made on first use. */
function zeroCopy({ n, c, x, zero }: Ctx, lib: Lib): WasmMatrix[] {
  if (!zero.has(lib)) {
    zero.set(lib, [lib.cpu.alloc([n, c]), lib.cpu.alloc([n, c])]);
    zero.get(lib)![0].data.set(x);
  }
  return zero.get(lib)!;
}

/** Each library tree's `init()` instance (its default threads), made before any matrix is allocated. */
const instances = new Map<Lib, Awaited<ReturnType<Lib["mod"]["init"]>>>();

function library(lib: Lib): Contender<Ctx>[] {
  const paths = ["wasm", "wasm out=", "wasm zero-copy", ...(lib.tag ? [] : ["js"])];
  return (Object.keys(LOSSES) as Loss[]).flatMap((l) =>
    [...paths, ...(l === "CE" ? ["init()", "init() zero-copy"] : [])].map((path): Contender<Ctx> => ({
      name: `${l} ${path}`,
      group: l,
      ratioTo: `${l} wasm out=`,
      setup(ctx, mode) {
        const { loss, key } = LOSSES[l];
        let x: Matrix = { data: ctx.x, shape: [ctx.n, ctx.c] }, out: Matrix | null = null;
        if (path === "wasm out=") {
          if (mode === "forward") return "no gradient in forward";
          out = { data: ctx.out, shape: [ctx.n, ctx.c] };
        } else if (path.endsWith("zero-copy")) {
          const z = zeroCopy(ctx, lib);
          [x, out] = [z[0], mode === "forward" ? null : z[1]];
        }
        const opts = { ...(l === "arcface" ? ARC : {}), ...(out ? { out: { [key]: out } } : {}) };
        const backend = path === "js" ? lib.cpu.js : path.startsWith("init()") ? instances.get(lib)! : lib.cpu.wasm;
        return { run: lossCall(backend[loss], mode, { [key]: x, labels: ctx.labels }, opts, [key]) };
      },
    }))
  );
}

function plain(l: Loss): Contender<Ctx> {
  return {
    name: `${l} plain TS`,
    group: l,
    ratioTo: `${l} wasm out=`,
    setup: ({ n, c, x, labels }, mode) => ({
      run(): Out {
        const g = mode === "forward" ? null : new Float32Array(n * c), { scale, margin } = ARC;
        const loss = l === "CE"
          ? plainCrossEntropy(x, labels, n, c, g)
          : plainArcface(x, labels, [n, c, scale, margin], g);
        sink.value += loss + (g?.[0] ?? 0);
        return { loss: mode === "backward" ? undefined : loss, grads: g ? [g] : undefined };
      },
    }),
  };
}

function tfjs(l: Loss, backend: "cpu" | "wasm"): Contender<Ctx> {
  return {
    name: `${l} tfjs-${backend}`,
    group: l,
    ratioTo: `${l} wasm out=`,
    enter: tfUse(backend),
    setup: ({ n, c, x, labels }, mode) =>
      tfMissing(backend) ?? {
        run: () =>
          tfRun((): Out => {
            // The default int32 one-hot: TF.js 4.22's wasm OneHot writes integer bits into a float32 one.
            const onehot = tf.oneHot(tf.tensor1d(labels, "int32"), c), z = tf.tensor2d(x, [n, c]);
            const f = l === "CE"
              ? (t: tf.Tensor) => tf.losses.softmaxCrossEntropy(onehot, t, undefined, 0, tf.Reduction.MEAN)
              : (t: tf.Tensor) => tfArcfaceLoss(t, onehot, tf.cast(onehot, "float32"), ARC.scale, ARC.margin);
            if (mode === "forward") return { loss: f(z).dataSync()[0] };
            const { value, grad } = tf.valueAndGrad(f)(z);
            const g = grad.dataSync() as Float32Array;
            sink.value += g[0];
            return { loss: mode === "backward" ? undefined : value.dataSync()[0], grads: [g] };
          }),
      },
  };
}

/** Copies N·C floats in through a 128 KiB staging buffer (as the library streams them) and, with a gradient, out. */
const STAGE = new Float32Array(32768);
const memcpy: Contender<Ctx> = {
  name: "memcpy",
  floor: true,
  setup: ({ x, copyOut }, mode) => ({
    run() {
      for (let off = 0; off < x.length; off += STAGE.length) {
        const len = Math.min(STAGE.length, x.length - off);
        STAGE.set(x.subarray(off, off + len));
        if (mode !== "forward") copyOut.set(STAGE.subarray(0, len), off);
      }
      sink.value += STAGE[0];
    },
  }),
};

const fresh: Contender<Ctx> = {
  name: "fresh alloc+write",
  floor: true,
  setup: ({ n, c }, mode) =>
    mode === "forward"
      ? "no gradient in forward"
      : { run: () => void (sink.value += new Float32Array(n * c).fill(0.5)[1]) },
};

/**
 * The work only the calling thread can do for the default API on threads (a worker cannot read or write an
 * ordinary array): make the fresh gradient, copy the logits into shared memory and the gradient out, in the
 * pipeline's 2 MiB blocks (a block's gradient overwrites its logits). With the kernel's time on one thread
 * (`CE wasm zero-copy`) K, no two-thread call returning a fresh array is faster than (this + K) / 2, nor than
 * this alone; and fresh alloc+write / this bounds the ratio to the fresh-allocation floor.
 */
const BLOCK = new Float32Array(new SharedArrayBuffer(2 << 20));
const callerShare: Contender<Ctx> = {
  name: "caller's share",
  floor: true,
  setup: ({ n, c, x }, mode) =>
    mode === "forward" ? "no gradient in forward" : {
      run() {
        const g = new Float32Array(n * c);
        for (let off = 0; off < x.length; off += BLOCK.length) {
          const len = Math.min(BLOCK.length, x.length - off);
          BLOCK.set(x.subarray(off, off + len));
          g.set(BLOCK.subarray(0, len), off);
        }
        sink.value += g[1];
      },
    },
};

const ROWS: Shape[] = [[256, 1000], [4096, 1000], [1024, 32000], [64, 100000]];

await run<Ctx>(async (_, libs) => {
  await initTf();
  for (const lib of libs) instances.set(lib, await lib.mod.init({ backend: "wasm" }));
  const js = libs[0].cpu.js;
  return {
    name: "softmax",
    title: `crossEntropy and arcface (s = ${ARC.scale}, m = ${ARC.margin}) on the same [N, C] cosines, mean reduction`,
    modes: ["valueAndGrad", "forward", "backward"],
    defaultModes: ["valueAndGrad"],
    shapes: { default: ROWS, quick: [ROWS[0], ROWS[3]] },
    timing: { default: { rounds: 5, roundTime: 0.04, warmupTime: 0.15, slowBudget: 1.5 } },
    work: ([n, c]) => n * c,
    unit: ["G logits/s", 1e9],
    library,
    contenders: [
      plain("CE"),
      plain("arcface"),
      tfjs("CE", "wasm"),
      tfjs("arcface", "wasm"),
      tfjs("CE", "cpu"),
      torchContender<Ctx>("CE PyTorch 2 threads", {
        case: "crossEntropy",
        threads: 2,
        group: "CE",
        ratioTo: "CE wasm",
        inputs: ({ n, c, x, labels }) => ({ logits: { data: x, shape: [n, c] }, labels: { data: labels, shape: [n] } }),
      }),
      memcpy,
      fresh,
      callerShare,
    ],
    context,
    dispose: (ctx) => ctx.zero.forEach((z) => z.forEach((m) => m.free())),
    reference({ n, c, x, labels }, group) {
      const { loss, key } = LOSSES[group as Loss], opts = group === "CE" ? {} : ARC;
      return lossCall(js[loss], "valueAndGrad", { [key]: { data: x, shape: [n, c] }, labels }, opts, [key])() as Out;
    },
    baseline: "CE wasm out=",
    // arcface / crossEntropy per path; plain TS and TF.js against the default and the zero-copy path.
    pairs: [
      ...["wasm", "wasm out=", "wasm zero-copy", "plain TS", "tfjs-wasm"].map((p) => [`arcface ${p}`, `CE ${p}`]),
      ["CE wasm", "CE PyTorch 2 threads"],
      ["CE wasm zero-copy", "CE PyTorch 2 threads"],
      ["CE init()", "CE PyTorch 2 threads"],
      ["CE init() zero-copy", "CE PyTorch 2 threads"],
      ["CE init()", "fresh alloc+write"],
      ["CE init()", "caller's share"],
      ["caller's share", "fresh alloc+write"],
      ...["CE", "arcface"].flatMap((l) =>
        ["plain TS", "tfjs-wasm"].flatMap((o) => [[`${l} ${o}`, `${l} wasm`], [`${l} ${o}`, `${l} wasm zero-copy`]])
      ),
    ] as [string, string][],
  };
});
