/**
 * Benchmark of the WebAssembly backend at scale (issue 12): every core of one machine,
 * and a million classes.
 *
 * 1. Threads: `crossEntropy` valueAndGrad at 4096x1000 and 1024x32000 and `marginHead`
 *    (ArcFace margin) at 256x512x100000 on 1 and on `--threads` threads of one pool, as
 *    speed-ups measured in one run (paired per round). The row loss runs twice: on host
 *    arrays (the calling thread copies them into the shared memory and the gradient out)
 *    and on matrices allocated in WebAssembly memory (`alloc`, no copies). Beside it, the
 *    stream bound: a copy of the same bytes (read the logits, write the gradient) on 1 and
 *    on `--threads` threads, the most a bandwidth-bound kernel can gain.
 * 2. A million classes: `marginHead` with C = 1,000,000, D = 128 (insightface's large-scale
 *    setting), N = 128 per step: seconds per forward+backward step on 1 and `--threads`
 *    threads, WebAssembly memory and the process's peak resident memory, and the share of
 *    the step that its GEMMs take (the same GEMM calls timed alone, one thread).
 *
 * ```sh
 * deno run -A bench/scale_bench.ts [--quick] [--threads 2] [--modes threads,million] [--json out.json]
 * bun bench/scale_bench.ts [--quick]
 * ```
 *
 * @module
 */
import process from "node:process";
import { readFileSync } from "node:fs";
import { alloc, type Matrix, wasm } from "../cpu.ts";
import { init } from "../mod.ts";
import { poolsInUse, withPool } from "../src/wasm/pool.ts";
import { runtime } from "../src/wasm/runtime.ts";
import {
  type Cell,
  collectEnv,
  configJson,
  type Contender,
  emptyCell,
  finishRun,
  fmtG,
  fmtMB,
  fmtSpread,
  initTf,
  Measurer,
  methodLine,
  mulberry32,
  now,
  pairedRatio,
  parseArgs,
  printHeader,
  printMarkdown,
  type Timing,
} from "./harness.ts";

type Mode = "threads" | "million";
const TIMING: Timing = {
  rounds: 7,
  roundTime: 0.1,
  warmupTime: 0.3,
  slowBudget: 40,
  minSamples: 3,
  noWarmupAbove: 5,
  skipAbove: Infinity,
};
const QUICK: Timing = { ...TIMING, rounds: 3, roundTime: 0.03, warmupTime: 0.1, slowBudget: 10, minSamples: 2 };

const cfg = parseArgs(process.argv.slice(2), {
  file: "bench/scale_bench.ts",
  modes: ["threads", "million"] as Mode[],
  shapes: [[4096, 1000], [1024, 32000]] as [number, number][],
  quickShapes: [[4096, 1000]],
  dims: 2,
  timing: TIMING,
  quickTiming: QUICK,
  help: { quick: "fewer rounds, the smaller shapes", shapes: "4096x1000,1024x32000", skip: "copy" },
  extra: [
    { flag: "--threads", value: true, help: "threads to compare with one (default 2)" },
    { flag: "--head", value: true, help: "N x D x C of the threaded head (default 256x512x100000)" },
    { flag: "--million", value: true, help: "N x D x C of the large head (default 128x128x1000000)" },
  ],
});
const dims = (flag: string, fallback: string) => String(cfg.extra.get(flag) ?? fallback).split("x").map(Number);
const T = Number(cfg.extra.get("--threads") ?? 2);

await initTf();
const env = await collectEnv();
const losses = await init({ backend: "wasm", threads: T });
printHeader("softmargin at scale: threads and a million classes (WebAssembly)", env);
console.log(`threads: ${losses.note}`);
console.log(methodLine(cfg, "Speed-ups are paired per round: the median of (1 thread / n threads) round times."));
if (losses.threads < T) {
  console.log(`only ${losses.threads} thread(s) available: ${losses.note}`);
  process.exit(1);
}
const pl = poolsInUse().get(T)!;

/** Runs `f` (the synchronous `wasm` losses) on `threads` threads of the pool (the pool's other threads idle). */
const on = <O>(threads: number, f: () => O) => () => {
  pl.active = threads;
  return withPool(pl, f);
};
const random = (len: number, seed: number, scale = 1) => {
  const r = mulberry32(seed);
  return Float32Array.from({ length: len }, () => (r() * 2 - 1) * scale);
};
const labelsOf = (n: number, c: number, seed: number) => {
  const r = mulberry32(seed);
  return Int32Array.from({ length: n }, () => Math.floor(r() * c));
};
const newCell = emptyCell;
/** One marginHead (ArcFace) valueAndGrad step on random `[n, d]` x and `[c, d]` W, into host out buffers. */
const headStep = (n: number, d: number, c: number, seed: number) => {
  const x = { data: random(n * d, seed), shape: [n, d] as const };
  const W = { data: random(c * d, seed + 1), shape: [c, d] as const }, labels = labelsOf(n, c, seed + 2);
  const m = (rows: number) => ({ data: new Float32Array(rows * d), shape: [rows, d] as const });
  const out: { x: Matrix; W: Matrix } = { x: m(n), W: m(c) };
  return () => wasm.marginHead.valueAndGrad({ x, W, labels }, { margin: 0.5, out }).loss;
};
/** The process's peak resident memory (Linux: VmHWM), or null. */
const peakRss = () => {
  try {
    return Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"))?.[1]) * 1024 || null;
  } catch {
    return null;
  }
};

const measurer = new Measurer();
const all: Cell[] = [];
const results: Record<string, unknown>[] = [];
const t0 = now();
const speedup = (cells: Cell[], one: string, many: string) =>
  pairedRatio(cells.find((c) => c.contender === one), cells.find((c) => c.contender === many));
const row = (what: string, cells: Cell[], pairs: [string, string][]) => {
  const r = pairs.map(([a, b]) => speedup(cells, a, b));
  results.push({ what, cells, speedups: Object.fromEntries(pairs.map(([, b], i) => [b, r[i]])) });
  return r;
};

if (cfg.modes.includes("threads")) {
  console.log(`\n## 1 vs ${T} threads\n`);
  const table: string[][] = [];
  for (const [n, c] of cfg.shapes) {
    const logits = { data: random(n * c, 1, 4), shape: [n, c] as const }, labels = labelsOf(n, c, 2);
    const out = { data: new Float32Array(n * c), shape: [n, c] as const };
    const xa = alloc([n, c]), ga = alloc([n, c]);
    xa.data.set(logits.data);
    const host = () => wasm.crossEntropy.valueAndGrad({ logits, labels }, { out: { logits: out } }).loss;
    const zero = () => wasm.crossEntropy.valueAndGrad({ logits: xa, labels }, { out: { logits: ga } }).loss;
    const bytes = n * c * 4;
    const copy = (threads: number) => () => {
      // Stream bound: the same bytes read and written, split over the threads like the rows.
      const src = runtime().addressOf(xa.data), dst = runtime().addressOf(ga.data);
      pl.run(Array.from({ length: threads }, (_, t) => {
        const a = Math.floor((bytes / threads / 64) * t) * 64,
          b = t + 1 === threads ? bytes : Math.floor((bytes / threads / 64) * (t + 1)) * 64;
        const p: number[] = [];
        pl.recorder(p).copy_bytes(dst + a, src + a, b - a);
        return p;
      }));
      return 0;
    };
    const contenders: Contender<null, Mode, number>[] = [
      { name: "host 1", make: () => ({ run: on(1, host) }) },
      { name: `host ${T}`, make: () => ({ run: on(T, host) }) },
      { name: "alloc 1", make: () => ({ run: on(1, zero) }) },
      { name: `alloc ${T}`, make: () => ({ run: on(T, zero) }) },
      { name: "copy 1", floor: true, make: () => ({ run: copy(1) }) },
      { name: `copy ${T}`, floor: true, make: () => ({ run: copy(T) }) },
    ];
    const cells = await measurer.measure(cfg, null, "threads", { contenders, newCell, units: n * c });
    all.push(...cells);
    const [h, z, s] = row(`crossEntropy ${n}x${c}`, cells, [["host 1", `host ${T}`], ["alloc 1", `alloc ${T}`], [
      "copy 1",
      `copy ${T}`,
    ]]);
    const ms = (name: string) => fmtG((cells.find((x) => x.contender === name)?.seconds ?? NaN) * 1e3);
    table.push([
      `crossEntropy ${n}x${c}`,
      `${ms("host 1")} / ${ms(`host ${T}`)}`,
      fmtG(h),
      `${ms("alloc 1")} / ${ms(`alloc ${T}`)}`,
      fmtG(z),
      fmtG(s),
      `${(bytes * 2 / (cells.find((x) => x.contender === `copy ${T}`)?.seconds ?? NaN) / 1e9).toFixed(1)} GB/s`,
    ]);
    xa.free();
    ga.free();
  }
  const [n, d, c] = dims("--head", "256x512x100000");
  const step = headStep(n, d, c, 3);
  const cells = await measurer.measure(cfg, null, "threads", {
    contenders: [{ name: "head 1", make: () => ({ run: on(1, step) }) }, {
      name: `head ${T}`,
      make: () => ({ run: on(T, step) }),
    }],
    newCell,
    units: n * d * c,
  });
  all.push(...cells);
  const [hs] = row(`marginHead ${n}x${d}x${c}`, cells, [["head 1", `head ${T}`]]);
  const ms = (name: string) => fmtG((cells.find((x) => x.contender === name)?.seconds ?? NaN) * 1e3);
  table.push([`marginHead ${n}x${d}x${c}`, `${ms("head 1")} / ${ms(`head ${T}`)}`, fmtG(hs), "-", "-", "-", "-"]);
  printMarkdown(
    [
      "problem",
      `host arrays ms (1 / ${T})`,
      "speed-up",
      `alloc ms (1 / ${T})`,
      "speed-up",
      "stream bound",
      `copy bandwidth (${T})`,
    ],
    table,
  );
}

if (cfg.modes.includes("million")) {
  const [n, d, c] = dims("--million", "128x128x1000000");
  console.log(`\n## marginHead (ArcFace) at N=${n}, D=${d}, C=${c}\n`);
  const step = headStep(n, d, c, 6);
  const memory: Record<string, number> = {};
  // The step's GEMMs alone (one thread, the same calls on scratch buffers): per chunk of 128 classes,
  // S = X W_J^T twice (statistics, gradients), v += G W_J and t = H^T X.
  const rt = runtime(), B = 128;
  const buf = (floats: number) => rt.malloc(floats * 4);
  const X = buf(n * d), WT = buf(d * B), S = buf(n * B), dX = buf(n * d), WJ = buf(B * d), dWJ = buf(B * d);
  const gemms = () => {
    for (let j = 0; j < c; j += B) {
      rt.k.gemm(S, B, n, B, d, X, d, 1, WT, B, 0);
      rt.k.gemm(S, B, n, B, d, X, d, 1, WT, B, 0);
      rt.k.gemm(dX, d, n, d, B, S, B, 1, WJ, d, 1);
      rt.k.gemm(dWJ, d, B, d, n, S, 1, B, X, d, 0);
    }
    return 0;
  };
  const contenders: Contender<null, Mode, number>[] = [
    ...[1, T].map((t) => ({
      name: `${t} thread${t > 1 ? "s" : ""}`,
      make: () => ({
        run: () => {
          const loss = on(t, step)();
          // After its first call (the one-thread warm-up runs before any threaded call).
          memory[`${t}`] ??= runtime().stats().bytes;
          return loss;
        },
      }),
    })),
    { name: "GEMMs alone", floor: true, make: () => ({ run: on(1, gemms) }) },
  ];
  const cells = await measurer.measure({ ...cfg, rounds: Math.min(cfg.rounds, 3), minSamples: 2 }, null, "million", {
    contenders,
    newCell,
    units: n * d * c,
  });
  all.push(...cells);
  [X, WT, S, dX, WJ, dWJ].forEach((p) => rt.free(p));
  const [s, share] = row(`marginHead ${n}x${d}x${c}`, cells, [[contenders[0].name, contenders[1].name], [
    contenders[2].name,
    contenders[0].name,
  ]]);
  printMarkdown(
    ["threads", "s per step", "spread", "WebAssembly memory MB after the first step"],
    cells.slice(0, 2).map((x, i) => [
      x.contender,
      fmtG(x.seconds),
      fmtSpread(x),
      fmtMB(memory[`${[1, T][i]}`] ?? null),
    ]),
  );
  console.log(
    `\nspeed-up ${fmtG(s)}; the GEMMs alone take ${fmtG(cells[2].seconds)} s, ${((share ?? NaN) * 100).toFixed(0)}% ` +
      `of a one-thread step (paired); W ${fmtMB(c * d * 4)} MB and dW ${fmtMB(c * d * 4)} MB on the host; ` +
      `peak resident ${fmtMB(peakRss())} MB`,
  );
  results.push({ what: "million", gemmShare: share, memory, peakRss: peakRss() });
}

const { failed } = finishRun(all, t0, env, cfg, { config: configJson(cfg), results }, (x) => x.contender);
process.exit(failed.length ? 1 : 0);
