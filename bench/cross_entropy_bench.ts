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
import { readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import process from "node:process";
import { fileURLToPath } from "node:url";
import * as tf from "@tensorflow/tfjs";
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
import { alloc, js, type Matrix, wasm, type WasmMatrix } from "../cpu.ts";

// ---------------------------------------------------------------------------------------
// Command line

type Mode = "forward" | "backward" | "valueAndGrad";
const MODES: readonly Mode[] = ["forward", "backward", "valueAndGrad"];

/** Shapes: a classifier head (ImageNet-1k) small and large batch, a LLaMA-2 vocabulary, a face-ID class count. */
const SHAPES: readonly (readonly [number, number])[] = [[256, 1000], [4096, 1000], [1024, 32000], [64, 100000]];

const USAGE = `Usage: cross_entropy_bench.ts [options]
  --quick              3 rounds, small time budgets; skips calls predicted to take > 1.5 s
  --json <file>        also write the results as JSON
  --rounds <n>         rounds per cell (default 9; 3 with --quick)
  --shapes <list>      e.g. 256x1000,64x100000 (default: ${SHAPES.map(([n, c]) => `${n}x${c}`).join(",")})
  --modes <list>       subset of forward,backward,valueAndGrad
  --skip <list>        contenders to leave out, e.g. "tfjs-cpu,js reference"
  --help`;

interface Config {
  quick: boolean;
  json: string | null;
  rounds: number;
  shapes: (readonly [number, number])[];
  modes: Mode[];
  skip: Set<string>;
  /** Target time of one contender's batch of calls in one round, seconds. */
  roundTime: number;
  /** Warm-up time per contender and cell, seconds (at least one call). */
  warmupTime: number;
  /** Time budget per contender and cell for slow contenders, seconds. */
  slowBudget: number;
  /** Fewest timed samples (rounds) per contender and cell. */
  minSamples: number;
  /** A contender predicted slower than this per call skips its warm-up call (its code is warm from smaller shapes). */
  noWarmupAbove: number;
  /** A contender predicted slower than this per call is skipped (only with --quick). */
  skipAbove: number;
}

function parseArgs(argv: string[]): Config {
  const quick = argv.includes("--quick");
  const cfg: Config = {
    quick,
    json: null,
    rounds: quick ? 3 : 9,
    shapes: [...SHAPES],
    modes: [...MODES],
    skip: new Set(),
    roundTime: quick ? 0.02 : 0.06,
    warmupTime: quick ? 0.05 : 0.25,
    slowBudget: quick ? 0.3 : 2.5,
    minSamples: quick ? 1 : 2,
    noWarmupAbove: quick ? 0.3 : 3,
    skipAbove: quick ? 1.5 : Infinity,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new TypeError(`Expected a value after ${a}`);
      return v;
    };
    if (a === "--quick") continue;
    else if (a === "--json") cfg.json = value();
    else if (a === "--rounds") cfg.rounds = Math.max(1, parseInt(value(), 10));
    else if (a === "--shapes") {
      cfg.shapes = value().split(",").map((s) => {
        const m = /^(\d+)x(\d+)$/.exec(s.trim());
        if (!m) throw new TypeError(`Expected a shape like 256x1000, got "${s}"`);
        return [parseInt(m[1], 10), parseInt(m[2], 10)] as const;
      });
    } else if (a === "--modes") {
      cfg.modes = value().split(",").map((s) => {
        if (!(MODES as readonly string[]).includes(s)) throw new TypeError(`Expected a mode in ${MODES}, got "${s}"`);
        return s as Mode;
      });
    } else if (a === "--skip") { for (const s of value().split(",")) cfg.skip.add(s.trim().toLowerCase()); }
    else if (a === "--help" || a === "-h") {
      console.log(USAGE);
      process.exit(0);
    } else throw new TypeError(`Unknown argument "${a}"\n${USAGE}`);
  }
  return cfg;
}

// ---------------------------------------------------------------------------------------
// Environment

interface EnvInfo {
  runtime: string;
  version: string;
  engine: string;
  cpu: string;
  cores: number;
  memoryGiB: number;
  date: string;
  wasmVariant: string;
  tfjs: string;
  tfjsWasm: string;
  /** 1-minute load average at the start and the end (other processes skew a 2-core machine). */
  load: { start: number | null; end: number | null };
}

function load1(): number | null {
  try {
    const l = loadavg()[0];
    return Number.isFinite(l) ? Math.round(l * 100) / 100 : null;
  } catch {
    return null;
  }
}

function cpuModel(): string {
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
    if (m) return m[1].trim();
  } catch { /* not Linux, or not readable: fall back below */ }
  try {
    return cpus()[0]?.model ?? "unknown CPU";
  } catch {
    return "unknown CPU";
  }
}

function runtimeInfo(): { runtime: string; version: string; engine: string } {
  const g = globalThis as {
    Deno?: { version: { deno: string; v8: string } };
    Bun?: { version: string; revision?: string };
  };
  if (g.Bun) {
    return {
      runtime: "Bun",
      version: g.Bun.version,
      engine: `JavaScriptCore (bun ${g.Bun.revision?.slice(0, 9) ?? "?"})`,
    };
  }
  if (g.Deno) return { runtime: "Deno", version: g.Deno.version.deno, engine: `V8 ${g.Deno.version.v8}` };
  return { runtime: "Node", version: process.versions.node ?? "?", engine: `V8 ${process.versions.v8 ?? "?"}` };
}

/** The wasm build in use ("relaxed" or "simd"); an internal detail, so read defensively. */
async function wasmVariantName(): Promise<string> {
  try {
    const m = await import("../src/wasm/runtime.ts") as { wasmVariant?: () => string };
    return m.wasmVariant?.() ?? "unknown";
  } catch {
    return "unknown";
  }
}

// ---------------------------------------------------------------------------------------
// TensorFlow.js setup

const tfStatus: { cpu: string | null; wasm: string | null; wasmSimd: boolean; wasmThreads: boolean } = {
  cpu: null,
  wasm: null,
  wasmSimd: false,
  wasmThreads: false,
};

/** Initialises both TF.js backends; an error is recorded (and reported), not thrown. */
async function initTf(): Promise<void> {
  tf.enableProdMode(); // skip TF.js debug-time checks: give it its best shot
  // The cpu backend greets Node-like runtimes with a hint to install tfjs-node; keep the output readable.
  const warn = console.warn;
  console.warn = (...a: unknown[]) => {
    if (!String(a[0]).includes("Hi, looks like you are running TensorFlow.js")) warn(...a);
  };
  try {
    if (!(await tf.setBackend("cpu"))) tfStatus.cpu = "tf.setBackend('cpu') returned false";
    else tf.dispose(tf.tensor1d([1])); // the first write prints the greeting
  } catch (e) {
    tfStatus.cpu = String(e);
  }
  console.warn = warn;
  try {
    // The .wasm binaries ship in the package's dist folder; in Deno and Bun the Emscripten
    // loader takes its Node path (fs.readFile), so a plain file-system prefix works.
    const dist = new URL("../node_modules/@tensorflow/tfjs-backend-wasm/dist/", import.meta.url);
    setWasmPaths(fileURLToPath(dist));
    if (!(await tf.setBackend("wasm"))) tfStatus.wasm = "tf.setBackend('wasm') returned false";
    tfStatus.wasmSimd = tf.env().getBool("WASM_HAS_SIMD_SUPPORT");
    tfStatus.wasmThreads = tf.env().getBool("WASM_HAS_MULTITHREAD_SUPPORT");
  } catch (e) {
    tfStatus.wasm = String(e);
  }
}

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

interface Runner {
  run(): Out;
}

interface Contender {
  name: string;
  /** Floors are reference points (no ratios, no checks). */
  floor?: boolean;
  /** TF.js backend to select before each batch. */
  tfBackend?: "cpu" | "wasm";
  /** A runner for this shape and mode, or a string saying why there is none. */
  make(ctx: Ctx, mode: Mode): Runner | string;
}

/** Results feed this so no engine can drop a call as dead code. */
let sink = 0;

/**
 * The cross-entropy a user would write by hand: three passes per row (max; exp stored in
 * the gradient while summing; scale), float64 arithmetic, fresh gradient. Returns the mean loss.
 *   loss_i = log(sum_j exp(z_ij - m_i)) + m_i - z_{i,y_i}
 *   dz_ij  = softmax(z_i)_j / N - [j == y_i] / N
 */
function plainCrossEntropy(
  z: Float32Array,
  labels: Int32Array,
  n: number,
  c: number,
  grad: Float32Array | null,
): number {
  const invN = 1 / n;
  let total = 0;
  for (let i = 0; i < n; i++) {
    const off = i * c;
    const end = off + c;
    let m = -Infinity;
    for (let j = off; j < end; j++) {
      const v = z[j];
      if (v > m) m = v;
    }
    let s = 0;
    if (grad) {
      for (let j = off; j < end; j++) {
        const e = Math.exp(z[j] - m);
        grad[j] = e;
        s += e;
      }
      const k = invN / s;
      for (let j = off; j < end; j++) grad[j] *= k;
      grad[off + labels[i]] -= invN;
    } else {
      for (let j = off; j < end; j++) s += Math.exp(z[j] - m);
    }
    total += Math.log(s) + m - z[off + labels[i]];
  }
  return total * invN;
}

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
          sink += loss;
          return { loss };
        }
        : mode === "backward"
        ? (): Out => {
          const g = lib.crossEntropy.backward(inputs, options).logits;
          sink += g.data[0];
          return { grad: g };
        }
        : (): Out => {
          const r = lib.crossEntropy.valueAndGrad(inputs, options);
          sink += (r.loss as number) + r.grads.logits.data[0];
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
      sink += loss + (grad ? grad[0] : 0);
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
            sink += loss;
            last = { loss };
          } else if (mode === "backward") {
            const g = tf.grad(lossOf(y))(z).dataSync() as Float32Array;
            sink += g[0];
            last = { grad: { data: g } };
          } else {
            const { value, grad } = tf.valueAndGrad(lossOf(y))(z);
            const loss = value.dataSync()[0];
            const g = grad.dataSync() as Float32Array;
            sink += loss + g[0];
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
        sink += back ? out[total - 1] : stage[0];
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
        sink += g[total - 1];
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

interface Cell {
  shape: [number, number];
  mode: Mode;
  contender: string;
  floor: boolean;
  /** Median seconds per call; null when not measured. */
  seconds: number | null;
  gLogitsPerSec: number | null;
  /** (max - min) / median of the per-round samples. */
  spread: number | null;
  samples: number;
  callsPerSample: number;
  /** The per-round samples, seconds per call. */
  sampleSeconds: number[];
  warmup: boolean;
  note?: string;
  error?: string;
  /** Accuracy against the float64 reference. */
  lossRelDiff?: number;
  gradRelDiff?: number;
}

const now = () => performance.now() / 1000;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
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

function errorText(e: unknown): string {
  const s = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return s.split("\n")[0].slice(0, 160);
}

/** Seconds per logit last measured per contender and mode, to predict calls at the next shape. */
const secondsPerLogit = new Map<string, number>();

async function enter(k: Contender): Promise<void> {
  if (k.tfBackend && tf.getBackend() !== k.tfBackend) await tf.setBackend(k.tfBackend);
}

interface Plan {
  k: Contender;
  runner: Runner;
  reps: number;
  rounds: number;
  samples: number[];
  cell: Cell;
}

async function measureCell(cfg: Config, ctx: Ctx, mode: Mode): Promise<Cell[]> {
  const { n, c } = ctx;
  const size = n * c;
  const cells: Cell[] = [];
  const plans: Plan[] = [];
  for (const k of CONTENDERS) {
    const cell: Cell = {
      shape: [n, c],
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
    cells.push(cell);
    if (cfg.skip.has(k.name.toLowerCase())) {
      cell.note = "skipped (--skip)";
      continue;
    }
    let runner: Runner | string;
    try {
      runner = k.make(ctx, mode);
    } catch (e) {
      runner = `setup failed: ${errorText(e)}`;
    }
    if (typeof runner === "string") {
      if (runner.includes("failed") || runner.includes("unavailable")) cell.error = runner;
      else cell.note = runner;
      continue;
    }
    const key = `${k.name}|${mode}`;
    const predicted = secondsPerLogit.has(key) ? secondsPerLogit.get(key)! * size : null;
    if (predicted !== null && predicted > cfg.skipAbove) {
      cell.note = `skipped (--quick; predicted ${predicted.toFixed(1)} s per call)`;
      continue;
    }
    // Warm up (JIT tiers, memory growth, first-touch page faults), and estimate the time per call.
    let estimate: number;
    try {
      await enter(k);
      if (predicted !== null && predicted > cfg.noWarmupAbove) {
        estimate = predicted;
      } else {
        const times: number[] = [];
        const t0 = now();
        do {
          const t = now();
          runner.run();
          times.push(now() - t);
        } while (now() - t0 < cfg.warmupTime && times.length < 1000);
        estimate = times.length > 1 ? median(times.slice(1)) : times[0];
        cell.warmup = true;
      }
    } catch (e) {
      cell.error = `failed: ${errorText(e)}`;
      continue;
    }
    const reps = Math.max(1, Math.round(cfg.roundTime / estimate));
    const rounds = Math.min(cfg.rounds, Math.max(cfg.minSamples, Math.floor(cfg.slowBudget / (reps * estimate))));
    plans.push({ k, runner, reps, rounds, samples: [], cell });
  }
  // Interleaved rounds, each in a rotated order so no contender always follows the same one.
  for (let r = 0; r < cfg.rounds; r++) {
    const live = plans.filter((p) => p.rounds > r && !p.cell.error);
    for (let i = 0; i < live.length; i++) {
      const p = live[(i + r) % live.length];
      try {
        await enter(p.k);
        const t0 = now();
        let o = p.runner.run();
        for (let j = 1; j < p.reps; j++) o = p.runner.run();
        p.samples.push((now() - t0) / p.reps);
        // Accuracy of the first timed call, against the float64 reference; the output is dropped at once.
        if (r === 0 && !p.k.floor) check(p.cell, o, reference(ctx), mode);
      } catch (e) {
        p.cell.error = `failed: ${errorText(e)}`;
      }
    }
  }
  for (const p of plans) {
    const { cell, samples } = p;
    if (cell.error || samples.length === 0) continue;
    const med = median(samples);
    cell.seconds = med;
    cell.gLogitsPerSec = size / med / 1e9;
    cell.spread = (Math.max(...samples) - Math.min(...samples)) / med;
    cell.samples = samples.length;
    cell.callsPerSample = p.reps;
    cell.sampleSeconds = samples;
    secondsPerLogit.set(`${p.k.name}|${mode}`, med / size);
  }
  return cells;
}

function check(cell: Cell, o: Out, ref: { loss: number; grad: Float32Array }, mode: Mode): void {
  if (mode !== "backward") {
    cell.lossRelDiff = o.loss === undefined ? Infinity : Math.abs(o.loss - ref.loss) / Math.abs(ref.loss);
  }
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

/** max |g - ref| / max |ref|. */
function gradDiff(g: Float32Array, ref: Float32Array): number {
  if (g.length !== ref.length) return Infinity;
  let d = 0, m = 0;
  for (let i = 0; i < g.length; i++) {
    const e = Math.abs(g[i] - ref[i]);
    if (!(e <= d)) d = e; // NaN propagates
    const a = Math.abs(ref[i]);
    if (a > m) m = a;
  }
  return d / m;
}

/** Above this relative error a contender is counted as broken and the run fails. */
const BROKEN = 1e-3;
/** Above this it is flagged as inaccurate. */
const LOOSE = 1e-5;

// ---------------------------------------------------------------------------------------
// Output

const RATIO_BASES = ["plain TS", "tfjs-wasm", "tfjs-cpu"] as const;

function fmtG(x: number | null): string {
  if (x === null) return "-";
  return x >= 1 ? x.toFixed(2) : x >= 0.1 ? x.toFixed(3) : x >= 0.01 ? x.toFixed(4) : x.toPrecision(2);
}

function fmtRatio(a: number | null, b: number | null): string {
  if (a === null || b === null) return "-";
  const r = a / b;
  return `${r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2)}x`;
}

function fmtErr(x: number | undefined): string {
  if (x === undefined) return "";
  if (!Number.isFinite(x)) return "MISSING/NaN";
  const s = x === 0 ? "0" : x.toExponential(1);
  return x > BROKEN ? `${s} BROKEN` : x > LOOSE ? `${s} (loose)` : s;
}

function pad(s: string, w: number, right = false): string {
  return right ? s.padStart(w) : s.padEnd(w);
}

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
        pad(x.spread === null ? "-" : `${(x.spread * 100).toFixed(0)}%`, 8, true) +
        pad(`${x.samples}x${x.callsPerSample}${x.warmup ? "" : "*"}`, 9, true) + pad(ratios, 42, true) +
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
    const shapes = cfg.shapes.map(([n, c]) => `${n}x${c}`);
    console.log(`| contender | ${shapes.join(" | ")} |`);
    console.log(`| --- | ${shapes.map(() => "---:").join(" | ")} |`);
    const at = (name: string, [n, c]: readonly [number, number]) =>
      cells.find((x) => x.contender === name && x.shape[0] === n && x.shape[1] === c);
    for (const k of CONTENDERS) {
      const row = cfg.shapes.map((s) => {
        const x = at(k.name, s);
        if (!x) return "-";
        if (x.error) return "failed";
        if (x.note) return x.note.startsWith("skipped") ? "skipped" : "n/a";
        return fmtG(x.gLogitsPerSec);
      });
      if (row.every((v) => v === "n/a")) continue;
      console.log(`| ${k.floor ? `floor: ${k.name}` : k.name} | ${row.join(" | ")} |`);
    }
    const ratio = (a: string, b: string) =>
      cfg.shapes.map((s) => fmtRatio(at(a, s)?.gLogitsPerSec ?? null, at(b, s)?.gLogitsPerSec ?? null));
    for (
      const [a, b] of [["wasm", "plain TS"], ["wasm", "tfjs-wasm"], ["wasm", "tfjs-cpu"], [
        "wasm zero-copy",
        "plain TS",
      ], ["wasm zero-copy", "tfjs-wasm"]]
    ) {
      console.log(`| *${a} / ${b}* | ${ratio(a, b).join(" | ")} |`);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Main

async function main(): Promise<number> {
  const cfg = parseArgs(process.argv.slice(2));
  await initTf();
  const rt = runtimeInfo();
  const env: EnvInfo = {
    ...rt,
    cpu: cpuModel(),
    cores: (() => {
      try {
        return cpus().length;
      } catch {
        return 0;
      }
    })(),
    memoryGiB: (() => {
      try {
        return Math.round(totalmem() / 2 ** 30);
      } catch {
        return 0;
      }
    })(),
    date: new Date().toISOString(),
    wasmVariant: await wasmVariantName(),
    tfjs: tf.version.tfjs,
    tfjsWasm: tfStatus.wasm
      ? `unavailable (${tfStatus.wasm})`
      : `SIMD ${tfStatus.wasmSimd ? "yes" : "no"}, threads ${tfStatus.wasmThreads ? "yes" : "no"}`,
    load: { start: load1(), end: null },
  };
  console.log(`# softmargin crossEntropy benchmark (mean reduction, logits ~ U(-3, 3), random labels)`);
  console.log(`runtime: ${env.runtime} ${env.version} (${env.engine}); softmargin wasm build: ${env.wasmVariant}`);
  console.log(
    `machine: ${env.cpu}, ${env.cores} logical CPUs, ${env.memoryGiB} GiB, load ${
      env.load.start ?? "?"
    }; date: ${env.date}`,
  );
  console.log(
    `TensorFlow.js ${env.tfjs}: cpu ${tfStatus.cpu ? `unavailable (${tfStatus.cpu})` : "ok"}, wasm ${env.tfjsWasm}`,
  );
  console.log(
    `method: ${cfg.rounds} interleaved rounds${cfg.quick ? " (--quick)" : ""}, median of per-round means, ` +
      `~${cfg.roundTime * 1000} ms per contender per round; slow contenders: >= ${cfg.minSamples} samples within ` +
      `~${cfg.slowBudget} s per cell. "samples" = rounds x calls per round; * = no warm-up call at this shape ` +
      `(predicted > ${cfg.noWarmupAbove} s per call; warm from smaller shapes). Errors vs the float64 reference: ` +
      `|loss - ref| / |ref| and max|grad - ref| / max|ref|.`,
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

  const broken = all.filter((x) =>
    !x.floor && ((x.lossRelDiff ?? 0) > BROKEN || (x.gradRelDiff ?? 0) > BROKEN ||
      Number.isNaN(x.lossRelDiff ?? 0) || Number.isNaN(x.gradRelDiff ?? 0))
  );
  const failed = all.filter((x) => x.error);
  env.load.end = load1();
  console.log(`\ntotal time ${(now() - t0).toFixed(0)} s, load ${env.load.end ?? "?"} (sink ${sink.toPrecision(3)})`);
  for (const x of failed) console.log(`FAILED: ${x.contender} at ${x.shape.join("x")} ${x.mode}: ${x.error}`);
  for (const x of broken) {
    console.log(
      `BROKEN: ${x.contender} at ${x.shape.join("x")} ${x.mode}: loss err ${x.lossRelDiff}, grad err ${x.gradRelDiff}`,
    );
  }
  if (cfg.json) {
    writeFileSync(
      cfg.json,
      JSON.stringify({ env, tfjs: tfStatus, config: { ...cfg, skip: [...cfg.skip] }, results: all }, null, 2) + "\n",
    );
    console.log(`wrote ${cfg.json}`);
  }
  // A wrong result from one of ours fails the run; a failing third party is reported above.
  const ours = broken.filter((x) => ["wasm", "wasm out=", "wasm zero-copy", "js reference"].includes(x.contender));
  return ours.length > 0 || failed.some((x) => x.contender.startsWith("wasm")) ? 1 : 0;
}

process.exitCode = await main();
