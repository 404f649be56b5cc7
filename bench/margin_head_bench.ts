/**
 * `marginHead` (kind `"arcface"`, s = 64, m = 0.5) from embeddings x [N, D] and weights
 * W [C, D] (U(-1, 1)): softmargin's fused head (`wasm`, `wasm out=`, `wasm zero-copy`)
 * against `unfused` (TF.js cosines, softmargin's arcface, TF.js products) and `tfjs-wasm`
 * (all TF.js ops) and PyTorch (2 threads, `bench/torch.ts`); memory in fresh processes;
 * mode `gemm`: the matrix products alone (softmargin's GEMM as the head calls it,
 * `tf.matMul`, a plain loop). See bench/README.md.
 *
 * ```sh
 * deno run -A bench/margin_head_bench.ts [--quick | --full] [--baseline DIR] [--json out.json]
 * ```
 *
 * @module
 */
import type { Matrix } from "../cpu.ts";
import { runtime } from "../src/wasm/runtime.ts";
import type { Contender, Lib, Out, Shape } from "./engine.ts";
import { labelsOf, lossCall, mulberry32, run, sink, uniform } from "./engine.ts";
import { initTf, plainMatMulT, tf, tfArcfaceLoss, tfMissing, tfNormalizeRows, tfRun, tfUse } from "./impls.ts";
import { torchContender } from "./torch.ts";

const ARC = { scale: 64, margin: 0.5 };
const HEAD = { kind: "arcface", ...ARC } as const;
/** Classes per chunk of the head (src/wasm/margin_head.ts); every entry of the gemm mode's gradient blocks G. */
const CHUNK = 128, G = 1e-3;

type Ctx = { n: number; d: number; c: number; x: Float32Array; W: Float32Array; labels: Int32Array } & {
  out: { x: Float32Array; W: Float32Array; cos: Float32Array };
  /** Freed with the context: WebAssembly blocks, TF.js tensors, alloc'd matrices. */
  free: (() => void)[];
};

function context([n, d, c]: Shape): Ctx {
  const rand = mulberry32(c + d), zeros = (k: number) => new Float32Array(k).fill(0);
  const [x, W, labels] = [uniform(rand, n * d), uniform(rand, c * d), labelsOf(rand, n, c)];
  return { n, d, c, x, W, labels, out: { x: zeros(n * d), W: zeros(c * d), cos: zeros(n * c) }, free: [] };
}

function library(lib: Lib): Contender<Ctx>[] {
  return (["wasm", "wasm out=", "wasm zero-copy"] as const).map((path) => ({
    name: path,
    group: "head",
    setup(ctx, mode) {
      if (mode === "gemm" || (path === "wasm out=" && mode === "forward")) return "n/a";
      const { n, d, c } = ctx, m = (data: Float32Array, rows: number): Matrix => ({ data, shape: [rows, d] });
      let [x, W, out] = [
        m(ctx.x, n),
        m(ctx.W, c),
        path === "wasm" ? undefined : { x: m(ctx.out.x, n), W: m(ctx.out.W, c) },
      ];
      if (path === "wasm zero-copy") {
        const a = [n, c, n, c].map((rows) => lib.cpu.alloc([rows, d]));
        ctx.free.push(() => a.forEach((z) => z.free()));
        a[0].data.set(ctx.x);
        a[1].data.set(ctx.W);
        [x, W, out] = [a[0], a[1], { x: a[2], W: a[3] }];
      }
      const opts = { ...HEAD, ...(out && mode !== "forward" ? { out } : {}) };
      return { run: lossCall(lib.cpu.wasm.marginHead, mode, { x, W, labels: ctx.labels }, opts, ["x", "W"]) };
    },
  }));
}

/** A TF.js contender of the head (n/a in mode gemm). */
function tfHead(name: string, f: (ctx: Ctx, mode: string) => Out): Contender<Ctx> {
  return {
    name,
    group: "head",
    enter: tfUse("wasm"),
    setup: (ctx, mode) => tfMissing("wasm") ?? (mode === "gemm" ? "n/a" : { run: () => tfRun(() => f(ctx, mode)) }),
  };
}

/** The cosines in TF.js, downloaded; softmargin's arcface; the gradient products and the normalisation backward in TF.js. */
const unfused = (lib: Lib) =>
  tfHead("unfused", ({ n, d, c, ...ctx }, mode) => {
    const { unit: xn, inv: rx } = tfNormalizeRows(tf.tensor2d(ctx.x, [n, d]));
    const { unit: Wn, inv: rw } = tfNormalizeRows(tf.tensor2d(ctx.W, [c, d]));
    const cos = { data: tf.matMul(xn, tf.transpose(Wn)).dataSync() as Float32Array, shape: [n, c] as const };
    if (mode === "forward") {
      return { loss: lib.cpu.wasm.arcface.forward({ cos, labels: ctx.labels }, ARC).loss as number };
    }
    const opts = { ...ARC, out: { cos: { data: ctx.out.cos, shape: [n, c] as const } } };
    const loss = lib.cpu.wasm.arcface.valueAndGrad({ cos, labels: ctx.labels }, opts).loss as number;
    const g = tf.tensor2d(ctx.out.cos, [n, c]);
    const back = (dv: tf.Tensor, v: tf.Tensor, inv: tf.Tensor) =>
      tf.mul(tf.sub(dv, tf.mul(v, tf.sum(tf.mul(dv, v), 1, true))), inv).dataSync() as Float32Array;
    const grads = [back(tf.matMul(g, Wn), xn, rx), back(tf.matMul(tf.transpose(g), xn), Wn, rw)];
    sink.value += loss + grads[1][0];
    return { loss, grads };
  });

const tfjsHead = tfHead("tfjs-wasm", ({ n, d, c, x, W, labels }, mode) => {
  const onehot = tf.oneHot(tf.tensor1d(labels, "int32"), c), mask = tf.cast(onehot, "float32"), unit = tfNormalizeRows;
  const f = (a: tf.Tensor, b: tf.Tensor) =>
    tfArcfaceLoss(tf.matMul(unit(a).unit, unit(b).unit, false, true), onehot, mask, ARC.scale, ARC.margin);
  const xs = [tf.tensor2d(x, [n, d]), tf.tensor2d(W, [c, d])];
  if (mode === "forward") return { loss: f(xs[0], xs[1]).dataSync()[0] };
  const { value, grads } = tf.valueAndGrads(f)(xs), gs = grads.map((t) => t.dataSync() as Float32Array);
  sink.value += gs[1][0];
  return { loss: value.dataSync()[0], grads: gs };
});

// ---------------------------------------------------------------------------------------
// The products alone (mode gemm), G constant so that every entry has a closed form

type Product = "X W^T" | "dX += G W" | "dW = G^T X";

/** Entry (i, j) in float64: x_i . W_j; G sum_r W[r, j]; G sum_r x[r, j]. */
function exact({ n, d, c, x, W }: Ctx, p: Product, i: number, j: number): number {
  let s = 0;
  if (p === "X W^T") { for (let k = 0; k < d; k++) s += x[i * d + k] * W[j * d + k]; }
  else for (let r = 0; r < (p === "dX += G W" ? c : n); r++) s += G * (p === "dX += G W" ? W : x)[r * d + j];
  return s;
}

/**
 * A contender of mode gemm: `make` returns one call and how to read entry (i, j) of its
 * product, `rows` x `cols` from column `j0`; checked on 64 sampled entries.
 */
function gemm(
  name: string,
  p: Product,
  make: (ctx: Ctx) => [() => void, (i: number, j: number) => number, number[]],
  ours = false,
): Contender<Ctx> {
  return {
    name,
    ours,
    ratioTo: `ours ${p}`,
    enter: name.startsWith("tfjs") ? tfUse("wasm") : undefined,
    setup(ctx, mode) {
      if (mode !== "gemm") return "n/a";
      if (name.startsWith("tfjs") && tfMissing("wasm")) return tfMissing("wasm")!;
      const [call, get, [rows, cols, j0 = 0]] = make(ctx);
      const err = () => {
        const rand = mulberry32(9);
        let e = 0, m = 0;
        for (let s = 0; s < 64; s++) {
          const i = Math.floor(rand() * rows), j = Math.floor(rand() * cols), r = exact(ctx, p, i, j0 + j);
          [e, m] = [Math.max(e, Math.abs(get(i, j) - r)), Math.max(m, Math.abs(r))];
        }
        return e / m;
      };
      return { run: (): Out => (call(), { err }) };
    },
  };
}

/** softmargin's GEMM as the head calls it: chunk by chunk of 128 classes, W^T transposed per chunk, in WebAssembly memory. */
const ours = (p: Product) =>
  gemm(`ours ${p}`, p, ({ n, d, c, x, W, free }) => {
    const rt = runtime(), ptrs: number[] = [], WT = new Float32Array(c * d);
    for (let j0 = 0, cols = CHUNK; j0 < c; j0 += CHUNK) { // chunk J of W^T: [D, cols] from j0 D
      cols = Math.min(CHUNK, c - j0);
      for (let jj = 0; jj < cols; jj++) for (let k = 0; k < d; k++) WT[j0 * d + k * cols + jj] = W[(j0 + jj) * d + k];
    }
    const [X, Wp, WTp, Gp, S, dX, dW] = [x, W, WT, new Float32Array(n * CHUNK).fill(G), n * CHUNK, n * d, CHUNK * d]
      .map((a) => {
        const ptr = rt.malloc((typeof a === "number" ? a : a.length) * 4);
        if (typeof a !== "number") rt.f32.set(a, ptr >>> 2);
        return ptrs.push(ptr), ptr;
      });
    free.push(() => ptrs.forEach((q) => rt.free(q)));
    const last = Math.floor((c - 1) / CHUNK) * CHUNK,
      cols = c - last,
      at = (ptr: number, i: number) => rt.f32[(ptr >>> 2) + i];
    const call = () => {
      for (let j0 = 0; j0 < c; j0 += CHUNK) {
        const m = Math.min(CHUNK, c - j0);
        if (p === "X W^T") rt.k.gemm(S, m, n, m, d, X, d, 1, WTp + j0 * d * 4, m, 0);
        else if (p === "dX += G W") rt.k.gemm(dX, d, n, d, m, Gp, m, 1, Wp + j0 * d * 4, d, j0 ? 1 : 0);
        else rt.k.gemm(dW, d, m, d, n, Gp, 1, m, X, d, 0);
      }
      sink.value += at(dX, 0);
    };
    // X W^T and dW: the last chunk's block; dX: all of it.
    if (p === "X W^T") return [call, (i, j) => at(S, i * cols + j), [n, cols, last]];
    return p === "dX += G W"
      ? [call, (i, k) => at(dX, i * d + k), [n, d]]
      : [call, (j, k) => at(dW, j * d + k), [cols, d]];
  }, true);

const tfGemm = (name: string, p: Product, op: (t: Record<"x" | "W" | "WT" | "G", tf.Tensor>) => tf.Tensor) =>
  gemm(`tfjs ${name}`, p, ({ n, d, c, x, W, free }) => {
    const Wt = tf.tensor2d(W, [c, d]),
      t = { x: tf.tensor2d(x, [n, d]), W: Wt, WT: tf.transpose(Wt), G: tf.fill([n, c], G) };
    let y: tf.Tensor | null = null, data: Float32Array | null = null;
    free.push(() => tf.dispose([...Object.values(t), ...(y ? [y] : [])]));
    const [rows, cols] = p === "dW = G^T X" ? [c, d] : [n, p === "X W^T" ? c : d];
    const call = () => (y?.dispose(), y = op(t), data = null);
    return [call, (i, j) => (data ??= y!.dataSync() as Float32Array)[i * cols + j], [rows, cols]];
  });

const plainGemm = gemm("plain TS x W^T", "X W^T", ({ n, d, c, x, W }) => {
  const out = new Float32Array(n * c);
  return [() => plainMatMulT(x, W, out, n, d, c), (i, j) => out[i * c + j], [n, c]];
});

await run<Ctx>(async (_, libs) => {
  await initTf();
  const here = libs[0].cpu;
  return {
    name: "margin_head",
    title: "marginHead (arcface, s = 64, m = 0.5) from embeddings x [N, D] and weights W [C, D]; GEMMs alone",
    modes: ["valueAndGrad", "forward", "gemm"],
    defaultModes: ["valueAndGrad", "gemm"],
    shapes: {
      default: [[256, 512, 10000]],
      quick: [[256, 512, 2000]],
      full: [[256, 512, 1024], [256, 512, 10000], [256, 512, 100000]],
    },
    timing: {
      default: { rounds: 3, roundTime: 0.5, warmupTime: 0.3, slowBudget: 8, skipAbove: 10 },
      quick: { rounds: 2, roundTime: 0.2, slowBudget: 1, skipAbove: 3 },
      full: { rounds: 5, roundTime: 0.5, warmupTime: 1, slowBudget: 20, minSamples: 1 },
    },
    // Flops of the products: X W^T (forward, a GEMM), three with the gradients (unfused; the fused head recomputes X W^T).
    work: ([n, d, c], mode) => (mode === "valueAndGrad" ? 6 : 2) * n * d * c,
    unit: ["GFLOP/s", 1e9],
    library,
    contenders: [
      unfused(libs[0]),
      tfjsHead,
      torchContender<Ctx>("PyTorch 2 threads", {
        case: "marginHead",
        threads: 2,
        group: "head",
        inputs: ({ n, d, c, x, W, labels }) => ({
          x: { data: x, shape: [n, d] },
          W: { data: W, shape: [c, d] },
          labels: { data: labels, shape: [n] },
        }),
        options: () => ARC,
      }),
      ours("X W^T"),
      tfGemm("x W^T (transposeB)", "X W^T", (t) => tf.matMul(t.x, t.W, false, true)),
      tfGemm("x W^T (W^T stored)", "X W^T", (t) => tf.matMul(t.x, t.WT)),
      plainGemm,
      ours("dX += G W"),
      tfGemm("G W", "dX += G W", (t) => tf.matMul(t.G, t.W)),
      ours("dW = G^T X"),
      tfGemm("G^T x (transposeA)", "dW = G^T X", (t) => tf.matMul(t.G, t.x, true, false)),
    ],
    context,
    dispose: (ctx) => ctx.free.forEach((f) => f()),
    // float64 up to C = 10000 (5-8 s); above, this tree's wasm result (the float64 head takes about a minute).
    reference: ({ n, d, c, x, W, labels }, group) =>
      group !== "head" ? {} : lossCall(
        (c <= 10000 ? here.js : here.wasm).marginHead,
        "valueAndGrad",
        {
          x: { data: x, shape: [n, d] },
          W: { data: W, shape: [c, d] },
          labels,
        },
        HEAD,
        ["x", "W"],
      )() as Out,
    baseline: "wasm",
    memory: { warm: [8, 16, 300], when: (_, mode) => mode === "valueAndGrad" },
  };
});
