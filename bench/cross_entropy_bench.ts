/**
 * Benchmark of `crossEntropy` (hard labels, mean reduction) on the CPU backends of
 * softmargin against what a user would otherwise run: a hand-written TypeScript loop
 * and TensorFlow.js (cpu and wasm backends), with two bandwidth floors.
 *
 * Runs unchanged under Deno and Bun:
 *
 * ```sh
 * deno run -A bench/cross_entropy_bench.ts [--quick] [--json out.json]
 * bun bench/cross_entropy_bench.ts [--quick] [--json out.json]
 * ```
 *
 * Method (Liger-Kernel style: per op, modes forward / backward / full, shapes named after
 * real workloads). This 2-vCPU VM drifts 20-30 % between runs, so every contender of a
 * (shape, mode) cell is measured in the same process, round by round, in a rotated order;
 * the reported figure is the median over rounds of the time per call. Contenders too slow
 * for every round (TF.js cpu takes seconds per call) take part in the first rounds only,
 * within a time budget, and never fewer than `minSamples` of them.
 *
 * Every timed call is the full user-visible work: validation, copies in and out of
 * WebAssembly memory, allocation of a fresh gradient (where the API returns one), and for
 * TF.js the tensor creation from the Float32Array, the one-hot labels, the loss/gradient
 * and the `dataSync` downloads.
 *
 * @module
 */
import process from "node:process";
import * as tf from "@tensorflow/tfjs";
import { alloc, js, type Matrix, wasm, type WasmMatrix } from "../cpu.ts";
import {
  type ArgSpec,
  type Cell as BaseCell,
  collectEnv,
  type Config as BaseConfig,
  configJson,
  type Contender as BaseContender,
  finishRun,
  fmtErr,
  fmtG,
  fmtRatio,
  fmtSamples,
  fmtSpread,
  gradDiff,
  initTf,
  Measurer,
  methodLine,
  missing,
  mulberry32,
  now,
  pad,
  parseArgs,
  printHeader,
  printMarkdown,
  relDiff,
  ROW_QUICK_TIMING,
  ROW_SHAPES,
  ROW_TIMING,
  sink,
  tfStatus,
} from "./harness.ts";
import { plainCrossEntropy } from "./impls.ts";

// ---------------------------------------------------------------------------------------
// Command line

type Mode = "forward" | "backward" | "valueAndGrad";
const MODES: readonly Mode[] = ["forward", "backward", "valueAndGrad"];

const ARGS: ArgSpec<Mode, readonly [number, number]> = {
  file: "cross_entropy_bench.ts",
  modes: MODES,
  shapes: ROW_SHAPES,
  dims: 2,
  timing: ROW_TIMING,
  quickTiming: ROW_QUICK_TIMING,
  help: {
    quick: "3 rounds, small time budgets; skips calls predicted to take > 1.5 s",
    shapes: "256x1000,64x100000",
    skip: "tfjs-cpu,js reference",
  },
};

type Config = BaseConfig<Mode, readonly [number, number]>;

// ---------------------------------------------------------------------------------------
// Contenders

/** One shape's data and buffers. */
interface Ctx {
  n: number;
  c: number;
  logits: Float32Array;
  labels: Int32Array;
  /** Preallocated ordinary gradient buffer (`wasm out=`). */
  out: Float32Array;
  /** The memcpy floor's destination (its own: sharing `out` would overwrite `wasm out=`'s gradient before the check). */
  copyOut: Float32Array;
  /** Input and gradient in WebAssembly memory (`wasm zero-copy`), or the error allocating them. */
  zx: WasmMatrix | null;
  zg: WasmMatrix | null;
  zError: string | null;
}

/** What a call produced; checked once against the reference, never retained (no extra live memory). */
interface Out {
  loss?: number;
  grad?: { readonly data: Float32Array };
}

type Contender = BaseContender<Ctx, Mode, Out>;

/** Bytes per staging chunk of the memcpy floor: the library streams through 128 KiB chunks too. */
const STAGE_FLOATS = (128 * 1024) / 4;
const stage = new Float32Array(STAGE_FLOATS);

function libraryContender(name: string, lib: typeof wasm, how: "fresh" | "out" | "zero-copy"): Contender {
  return {
    name,
    make(ctx, mode) {
      const { n, c } = ctx;
      let logits: Matrix = { data: ctx.logits, shape: [n, c] };
      let out: Matrix | null = null;
      if (how === "out") {
        if (mode === "forward") return "no gradient in forward (same call as `wasm`)";
        out = { data: ctx.out, shape: [n, c] };
      } else if (how === "zero-copy") {
        if (!ctx.zx || !ctx.zg) return `alloc failed: ${ctx.zError}`;
        logits = ctx.zx;
        if (mode !== "forward") out = ctx.zg;
      }
      const inputs = { logits, labels: ctx.labels };
      const options = out ? { out: { logits: out } } : undefined;
      const run = mode === "forward"
        ? (): Out => {
          const loss = lib.crossEntropy.forward(inputs, options).loss as number;
          sink.value += loss;
          return { loss };
        }
        : mode === "backward"
        ? (): Out => {
          const g = lib.crossEntropy.backward(inputs, options).logits;
          sink.value += g.data[0];
          return { grad: g };
        }
        : (): Out => {
          const r = lib.crossEntropy.valueAndGrad(inputs, options);
          sink.value += (r.loss as number) + r.grads.logits.data[0];
          return { loss: r.loss as number, grad: r.grads.logits };
        };
      return { run };
    },
  };
}

const plainTs: Contender = {
  name: "plain TS",
  make(ctx, mode) {
    const { n, c, logits, labels } = ctx;
    const run = (): Out => {
      const grad = mode === "forward" ? null : new Float32Array(n * c);
      const loss = plainCrossEntropy(logits, labels, n, c, grad);
      sink.value += loss + (grad ? grad[0] : 0);
      return grad ? (mode === "backward" ? { grad: { data: grad } } : { loss, grad: { data: grad } }) : { loss };
    };
    return { run };
  },
};

function tfContender(backend: "cpu" | "wasm"): Contender {
  return {
    name: `tfjs-${backend}`,
    tfBackend: backend,
    make(ctx, mode) {
      const failed = backend === "cpu" ? tfStatus.cpu : tfStatus.wasm;
      if (failed) return `backend unavailable: ${failed}`;
      const { n, c, logits, labels } = ctx;
      // Mean over rows: for unit weights TF's default SUM_BY_NONZERO_WEIGHTS is the same; say it explicitly.
      const lossOf = (y: tf.Tensor) => (z: tf.Tensor) =>
        tf.losses.softmaxCrossEntropy(y, z, undefined, 0, tf.Reduction.MEAN);
      const run = (): Out => {
        let last: Out = {};
        tf.tidy(() => {
          // The user's inputs are a Float32Array and integer labels, as for our API.
          const z = tf.tensor2d(logits, [n, c]);
          // Default (int32) one-hot: TF.js 4.22's wasm OneHot kernel ignores dtype "float32" and writes
          // integer bit patterns (1.4e-45 for 1) into the float32 tensor; the check below caught it.
          const y = tf.oneHot(tf.tensor1d(labels, "int32"), c);
          if (mode === "forward") {
            const loss = lossOf(y)(z).dataSync()[0];
            sink.value += loss;
            last = { loss };
          } else if (mode === "backward") {
            const g = tf.grad(lossOf(y))(z).dataSync() as Float32Array;
            sink.value += g[0];
            last = { grad: { data: g } };
          } else {
            const { value, grad } = tf.valueAndGrad(lossOf(y))(z);
            const loss = value.dataSync()[0];
            const g = grad.dataSync() as Float32Array;
            sink.value += loss + g[0];
            last = { loss, grad: { data: g } };
          }
        });
        return last;
      };
      return { run };
    },
  };
}

/** Copies N*C floats in (through a 128 KiB staging buffer, as the library does) and, with a gradient, N*C out. */
const memcpyFloor: Contender = {
  name: "memcpy",
  floor: true,
  make(ctx, mode) {
    const { logits, copyOut: out } = ctx;
    const total = logits.length;
    const back = mode !== "forward";
    return {
      run() {
        for (let off = 0; off < total; off += STAGE_FLOATS) {
          const end = Math.min(total, off + STAGE_FLOATS);
          stage.set(logits.subarray(off, end));
          if (back) out.set(end - off === STAGE_FLOATS ? stage : stage.subarray(0, end - off), off);
        }
        sink.value += back ? out[total - 1] : stage[0];
        return {};
      },
    };
  },
};

/** Allocates a fresh N*C gradient and writes it once: what returning a new gradient costs at least. */
const freshFloor: Contender = {
  name: "fresh alloc+write",
  floor: true,
  make(ctx, mode) {
    if (mode === "forward") return "no gradient in forward";
    const total = ctx.n * ctx.c;
    return {
      run() {
        const g = new Float32Array(total);
        g.fill(0.5);
        sink.value += g[total - 1];
        return {};
      },
    };
  },
};

const CONTENDERS: Contender[] = [
  libraryContender("wasm", wasm, "fresh"),
  libraryContender("wasm out=", wasm, "out"),
  libraryContender("wasm zero-copy", wasm, "zero-copy"),
  libraryContender("js reference", js, "fresh"),
  plainTs,
  tfContender("cpu"),
  tfContender("wasm"),
  memcpyFloor,
  freshFloor,
];

// ---------------------------------------------------------------------------------------
// Measurement

interface Cell extends BaseCell {
  shape: [number, number];
  mode: Mode;
  gLogitsPerSec: number | null;
}

function newCell(ctx: Ctx, mode: Mode, k: Contender): Cell {
  return {
    shape: [ctx.n, ctx.c],
    mode,
    contender: k.name,
    floor: !!k.floor,
    seconds: null,
    gLogitsPerSec: null,
    spread: null,
    samples: 0,
    callsPerSample: 0,
    sampleSeconds: [],
    warmup: false,
  };
}

function makeCtx(n: number, c: number, seed: number): Ctx {
  const rand = mulberry32(seed);
  const logits = new Float32Array(n * c);
  for (let i = 0; i < logits.length; i++) logits[i] = rand() * 6 - 3;
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) labels[i] = Math.floor(rand() * c);
  const out = new Float32Array(n * c);
  out.fill(0); // touch the pages once, as a reused buffer would be
  const copyOut = new Float32Array(n * c).fill(0);
  let zx: WasmMatrix | null = null, zg: WasmMatrix | null = null, zError: string | null = null;
  try {
    zx = alloc([n, c]);
    zx.data.set(logits);
    zg = alloc([n, c]);
  } catch (e) {
    zx?.free();
    zx = null;
    zError = String(e);
  }
  return { n, c, logits, labels, out, copyOut, zx, zg, zError };
}

function freeCtx(ctx: Ctx): void {
  ctx.zx?.free();
  ctx.zg?.free();
}

const measurer = new Measurer();

async function measureCell(cfg: Config, ctx: Ctx, mode: Mode): Promise<Cell[]> {
  const size = ctx.n * ctx.c;
  const cells = await measurer.measure(cfg, ctx, mode, {
    contenders: CONTENDERS,
    newCell: (k) => newCell(ctx, mode, k),
    units: size,
    // Accuracy of the first timed call, against the float64 reference.
    check: (cell, o) => check(cell, o, reference(ctx), mode),
  });
  for (const cell of cells) if (cell.seconds !== null) cell.gLogitsPerSec = size / cell.seconds / 1e9;
  return cells;
}

function check(cell: Cell, o: Out, ref: { loss: number; grad: Float32Array }, mode: Mode): void {
  if (mode !== "backward") cell.lossRelDiff = relDiff(o.loss, ref.loss);
  if (mode !== "forward") cell.gradRelDiff = o.grad ? gradDiff(o.grad.data, ref.grad) : Infinity;
}

let refCache: { ctx: Ctx; loss: number; grad: Float32Array } | null = null;

/** The float64 reference backend's loss and gradient for this shape (computed once per shape). */
function reference(ctx: Ctx): { loss: number; grad: Float32Array } {
  if (refCache?.ctx !== ctx) {
    const r = js.crossEntropy.valueAndGrad({ logits: { data: ctx.logits, shape: [ctx.n, ctx.c] }, labels: ctx.labels });
    refCache = { ctx, loss: r.loss as number, grad: r.grads.logits.data };
  }
  return refCache;
}

// ---------------------------------------------------------------------------------------
// Output

const RATIO_BASES = ["plain TS", "tfjs-wasm", "tfjs-cpu"] as const;

function g(cells: Cell[], name: string): number | null {
  return cells.find((x) => x.contender === name)?.gLogitsPerSec ?? null;
}

function printCell(cells: Cell[]): void {
  const { shape: [n, c], mode } = cells[0];
  console.log(`\n## ${n} x ${c} (${((n * c) / 1e6).toFixed(2)} M logits), ${mode}`);
  const head = pad("contender", 19) + pad("G logits/s", 11, true) + pad("ns/logit", 10, true) +
    pad("spread", 8, true) + pad("samples", 9, true) + RATIO_BASES.map((b) => pad(`vs ${b}`, 14, true)).join("") +
    "   loss err  grad err";
  console.log(head);
  console.log("-".repeat(head.length));
  let floors = false;
  for (const x of cells) {
    if (x.floor && !floors) {
      floors = true;
      console.log(`${"-- floors".padEnd(head.length, "-")}`);
    }
    if (x.error || x.note) {
      console.log(pad(x.contender, 19) + pad(x.error ? `FAILED: ${x.error}` : x.note!, 60, true));
      continue;
    }
    const ratios = x.floor
      ? ""
      : RATIO_BASES.map((b) => pad(fmtRatio(x.gLogitsPerSec, g(cells, b)), 14, true)).join("");
    console.log(
      pad(x.contender, 19) + pad(fmtG(x.gLogitsPerSec), 11, true) +
        pad(x.seconds === null ? "-" : ((x.seconds / (n * c)) * 1e9).toFixed(2), 10, true) +
        pad(fmtSpread(x), 8, true) + pad(fmtSamples(x), 9, true) + pad(ratios, 42, true) +
        (x.floor ? "" : `   ${pad(fmtErr(x.lossRelDiff), 9)} ${fmtErr(x.gradRelDiff)}`),
    );
  }
  const r = (a: string, b: string) => fmtRatio(g(cells, a), g(cells, b));
  console.log(
    `headline: wasm/plain-TS ${r("wasm", "plain TS")}, wasm/tfjs-wasm ${r("wasm", "tfjs-wasm")}, ` +
      `wasm/tfjs-cpu ${r("wasm", "tfjs-cpu")}, zero-copy/plain-TS ${r("wasm zero-copy", "plain TS")}, ` +
      `zero-copy/tfjs-wasm ${r("wasm zero-copy", "tfjs-wasm")}`,
  );
}

function printSummary(all: Cell[], cfg: Config): void {
  for (const mode of cfg.modes) {
    const cells = all.filter((x) => x.mode === mode);
    if (cells.length === 0) continue;
    console.log(`\n### ${mode}, G logits/s (median)\n`);
    const at = (name: string, [n, c]: readonly [number, number]) =>
      cells.find((x) => x.contender === name && x.shape[0] === n && x.shape[1] === c);
    const rows: string[][] = [];
    for (const k of CONTENDERS) {
      const row = cfg.shapes.map((s) => {
        const x = at(k.name, s);
        return missing(x) ?? fmtG(x!.gLogitsPerSec);
      });
      if (row.every((v) => v === "n/a")) continue;
      rows.push([k.floor ? `floor: ${k.name}` : k.name, ...row]);
    }
    const ratio = (a: string, b: string) =>
      cfg.shapes.map((s) => fmtRatio(at(a, s)?.gLogitsPerSec ?? null, at(b, s)?.gLogitsPerSec ?? null));
    for (
      const [a, b] of [["wasm", "plain TS"], ["wasm", "tfjs-wasm"], ["wasm", "tfjs-cpu"], [
        "wasm zero-copy",
        "plain TS",
      ], ["wasm zero-copy", "tfjs-wasm"]]
    ) {
      rows.push([`*${a} / ${b}*`, ...ratio(a, b)]);
    }
    printMarkdown(["contender", ...cfg.shapes.map(([n, c]) => `${n}x${c}`)], rows);
  }
}

// ---------------------------------------------------------------------------------------
// Main

async function main(): Promise<number> {
  const cfg: Config = parseArgs(process.argv.slice(2), ARGS);
  await initTf();
  const env = await collectEnv();
  printHeader(`# softmargin crossEntropy benchmark (mean reduction, logits ~ U(-3, 3), random labels)`, env);
  console.log(
    methodLine(cfg, "Errors vs the float64 reference: |loss - ref| / |ref| and max|grad - ref| / max|ref|."),
  );

  const all: Cell[] = [];
  const t0 = now();
  for (const [i, [n, c]] of cfg.shapes.entries()) {
    const ctx = makeCtx(n, c, 1234 + i);
    reference(ctx); // computed once per shape, before any timing
    for (const mode of cfg.modes) {
      const cells = await measureCell(cfg, ctx, mode);
      printCell(cells);
      all.push(...cells);
    }
    freeCtx(ctx);
    refCache = null;
  }
  console.log(`\n# Summary (${env.runtime} ${env.version}, ${env.cpu}, ${env.date.slice(0, 10)})`);
  printSummary(all, cfg);

  const { failed, broken } = finishRun(
    all,
    t0,
    env,
    cfg,
    { config: configJson(cfg), results: all },
    (x) => `${x.shape.join("x")} ${x.mode}`,
  );
  // A wrong result from one of ours fails the run; a failing third party is reported above.
  const ours = broken.filter((x) => ["wasm", "wasm out=", "wasm zero-copy", "js reference"].includes(x.contender));
  return ours.length > 0 || failed.some((x) => x.contender.startsWith("wasm")) ? 1 : 0;
}

process.exitCode = await main();
