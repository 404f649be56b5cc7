/**
 * The WebAssembly backend on 1 and `--threads T` threads (two `init` instances, awaited):
 * `crossEntropy` on host arrays (`fresh`: a new gradient, the default API; `host`: into
 * `out`) and on `alloc` matrices at N x C, beside the stream bound
 * (`copy`: the same bytes copied by 1 and T threads of this file's own workers), and a
 * `marginHead` step at N x D x C beside its GEMMs alone (one thread); --full adds
 * C = 1,000,000 at D = 128. Speed-ups are the pairs `1 / T`. See bench/README.md.
 *
 * ```sh
 * deno run -A bench/scale_bench.ts [--quick | --full] [--threads 4] [--baseline DIR] [--json out.json]
 * ```
 *
 * @module
 */
import { Worker } from "node:worker_threads";
import type { WasmMatrix } from "../cpu.ts";
import { runtime } from "../src/wasm/runtime.ts";
import type { Contender, Lib, Shape } from "./engine.ts";
import { envNotes, labelsOf, lossCall, mulberry32, run, uniform } from "./engine.ts";

/** The inputs and `out` buffers of a call, shared by the contenders of a shape; `alloc`: the row loss's, made on first use. */
type Ctx = { shape: Shape; inputs: Record<string, unknown>; out: Record<string, unknown>; free: (() => void)[] } & {
  alloc: Map<Lib, [WasmMatrix, WasmMatrix]>;
};

function context(s: Shape): Ctx {
  const rand = mulberry32(s[0] + s[s.length - 1]),
    m = (data: Float32Array, rows: number) => ({ data, shape: [rows, data.length / rows] });
  const [n, d, c] = s.length === 2 ? [s[0], 0, s[1]] : s;
  if (!d) {
    return {
      shape: s,
      inputs: { logits: m(uniform(rand, n * c, 4), n), labels: labelsOf(rand, n, c) },
      out: { logits: m(new Float32Array(n * c), n) },
      free: [],
      alloc: new Map(),
    };
  }
  const inputs = { x: m(uniform(rand, n * d), n), W: m(uniform(rand, c * d), c), labels: labelsOf(rand, n, c) };
  const out = { x: m(new Float32Array(n * d), n), W: m(new Float32Array(c * d), c) };
  return { shape: s, inputs, out, free: [], alloc: new Map() };
}

type Losses = Awaited<ReturnType<Lib["mod"]["init"]>>;

/** `bytes` copied from one half of a shared buffer to the other, split over this thread and `t - 1` workers. */
function copier(t: number, bytes: number): { copy(): void; stop(): void } {
  const sab = new SharedArrayBuffer(2 * bytes), ctl = new Int32Array(new SharedArrayBuffer(8 * t));
  const part = (i: number) => [Math.floor((bytes / t) * i), Math.floor((bytes / t) * (i + 1))];
  const src = `const { workerData: [sab, ctl, a, b, n, i] } = require("node:worker_threads");
    const c = new Int32Array(ctl), from = new Uint8Array(sab, a, b - a), to = new Uint8Array(sab, n + a, b - a);
    for (let seq = 0;;) { Atomics.wait(c, 2 * i, seq); seq = Atomics.load(c, 2 * i); if (seq < 0) break;
      to.set(from); Atomics.store(c, 2 * i + 1, seq); Atomics.notify(c, 2 * i + 1); }`;
  const workers = Array.from({ length: t - 1 }, (_, i) => {
    const w = new Worker(src, { eval: true, workerData: [sab, ctl.buffer, ...part(i + 1), bytes, i + 1] });
    w.unref();
    return w;
  });
  const [a, b] = part(0), from = new Uint8Array(sab, a, b - a), to = new Uint8Array(sab, bytes + a, b - a);
  let seq = 0;
  return {
    copy() {
      seq++;
      for (let i = 1; i < t; i++) Atomics.store(ctl, 2 * i, seq), Atomics.notify(ctl, 2 * i);
      to.set(from);
      for (let i = 1; i < t; i++) while (Atomics.load(ctl, 2 * i + 1) !== seq) Atomics.wait(ctl, 2 * i + 1, seq - 1, 1);
    },
    stop() {
      for (let i = 1; i < t; i++) Atomics.store(ctl, 2 * i, -1), Atomics.notify(ctl, 2 * i);
      workers.forEach((w) => w.terminate());
    },
  };
}

/** The head's GEMM calls over all classes on scratch buffers, one thread (chunks of 128 classes). */
function gemms(ctx: Ctx): () => void {
  const [n, d, c] = ctx.shape, rt = runtime(), B = 128;
  const [X, WT, S, dX, WJ, dWJ] = [n * d, d * B, n * B, n * d, B * d, B * d].map((f) => rt.malloc(f * 4));
  ctx.free.push(() => [X, WT, S, dX, WJ, dWJ].forEach((p) => rt.free(p)));
  return () => {
    for (let j = 0; j < c; j += B) {
      rt.k.gemm(S, B, n, B, d, X, d, 1, WT, B, 0);
      rt.k.gemm(S, B, n, B, d, X, d, 1, WT, B, 0);
      rt.k.gemm(dX, d, n, d, B, S, B, 1, WJ, d, 1);
      rt.k.gemm(dWJ, d, B, d, n, S, 1, B, X, d, 0);
    }
  };
}

await run<Ctx>(async (flags, libs) => {
  const T = Number(flags.get("--threads") ?? 2);
  /** Each library tree's two instances (`--baseline`: also the baseline's, contenders `base ...`). */
  const instances = new Map<Lib, Record<number, Losses>>();
  for (const lib of libs) {
    const many = await lib.mod.init({ backend: "wasm", threads: T }),
      one = await lib.mod.init({ backend: "wasm", threads: 1 });
    envNotes.push(`threads${lib.tag ? ` (${lib.tag.trim()})` : ""}: ${many.note}`);
    if (many.threads < T) throw new Error(`only ${many.threads} thread(s): ${many.note}`);
    instances.set(lib, { 1: one, [T]: many });
  }
  /** The row loss on alloc'd matrices (in the shared memory once threads run), made once per shape and tree. */
  const allocated = (ctx: Ctx, lib: Lib) => {
    if (!ctx.alloc.has(lib)) {
      const [n, c] = ctx.shape, [x, g] = [lib.cpu.alloc([n, c]), lib.cpu.alloc([n, c])];
      x.data.set((ctx.inputs.logits as { data: Float32Array }).data);
      ctx.alloc.set(lib, [x, g]);
      ctx.free.push(() => (x.free(), g.free()));
    }
    const [x, g] = ctx.alloc.get(lib)!;
    return [{ logits: x, labels: ctx.inputs.labels }, { logits: g }];
  };
  const threads = (lib: Lib, name: string, t: number, head: boolean, alloc = false): Contender<Ctx> => ({
    name: `${name} ${t}`,
    setup(ctx, mode) {
      if ((ctx.shape.length === 3) !== head) return "n/a";
      const losses = instances.get(lib)![t], [inputs, out] = alloc ? allocated(ctx, lib) : [ctx.inputs, ctx.out];
      const given = name === "fresh" ? {} : { out }; // fresh: the default API, a new gradient per call
      const opts = head ? { margin: 0.5, ...given } : given;
      return { run: lossCall(head ? losses.marginHead : losses.crossEntropy, mode, inputs, opts, []) };
    },
  });
  const copy = (t: number): Contender<Ctx> => ({
    name: `copy ${t}`,
    floor: true,
    setup: (ctx) => {
      if (ctx.shape.length !== 2) return "n/a";
      const c = copier(t, ctx.shape[0] * ctx.shape[1] * 4);
      ctx.free.push(c.stop);
      return { run: c.copy };
    },
  });
  return {
    name: "scale",
    title: `WebAssembly at scale: 1 against ${T} threads (init instances), crossEntropy N x C and marginHead N x D x C`,
    modes: ["valueAndGrad"],
    shapes: {
      default: [[4096, 1000], [1024, 32000], [256, 512, 20000]],
      quick: [[4096, 1000], [256, 512, 5000]],
      full: [[4096, 1000], [1024, 32000], [256, 512, 100000], [128, 128, 1000000]],
    },
    timing: { default: { slowBudget: 6, minSamples: 3, skipAbove: 20 }, full: { slowBudget: 40, minSamples: 3 } },
    flags: { "--threads T": "threads to compare with one (default 2)" },
    work: (s) => s.reduce((a, b) => a * b, 1),
    library: (lib) => [
      ...["fresh", "host", "alloc"].flatMap((p) => [1, T].map((t) => threads(lib, p, t, false, p === "alloc"))),
      ...[1, T].map((t) => threads(lib, "head", t, true)),
    ],
    contenders: [
      ...[1, T].map(copy),
      { name: "GEMMs alone", floor: true, setup: (ctx) => (ctx.shape.length === 3 ? { run: gemms(ctx) } : "n/a") },
    ],
    context,
    dispose: (ctx) => ctx.free.forEach((f) => f()),
    baseline: "host 1",
    pairs: [
      ...["fresh", "host", "alloc", "copy", "head"].map((p) => [`${p} 1`, `${p} ${T}`]),
      ["GEMMs alone", "head 1"],
      // --baseline: the baseline's call against this tree's, one pair per path and count
      ...(libs.length > 1
        ? ["fresh", "host", "alloc", "head"].flatMap((p) => [1, T].map((t) => [`base ${p} ${t}`, `${p} ${t}`]))
        : []),
    ] as [string, string][],
    memory: { when: (s) => s.length === 3 },
  };
});
