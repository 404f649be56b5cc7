/**
 * Measurement machinery shared by the benchmarks in this folder: the command line, the
 * environment header, the TensorFlow.js backends, interleaved timing with medians and
 * spreads, the accuracy checks against a float64 reference, table formatting and JSON
 * output. It runs unchanged under Deno and Bun.
 *
 * Method: this 2-vCPU VM drifts 20-30 % between runs, so every contender of a cell is
 * measured in the same process, round by round, in an order that rotates from round to
 * round; the reported figure is the median over rounds of the time per call. Contenders
 * too slow for every round take part in the first rounds only, within a time budget, and
 * never fewer than `minSamples` of them.
 *
 * @module
 */
import { readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import process from "node:process";
import { fileURLToPath } from "node:url";
import * as tf from "@tensorflow/tfjs";
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";

// ---------------------------------------------------------------------------------------
// Command line

/** Time budgets of the interleaved measurement, all in seconds. */
export interface Timing {
  /** Rounds per cell. */
  rounds: number;
  /** Target time of one contender's batch of calls in one round. */
  roundTime: number;
  /** Warm-up time per contender and cell (at least one call). */
  warmupTime: number;
  /** Time budget per contender and cell for slow contenders. */
  slowBudget: number;
  /** Fewest timed samples (rounds) per contender and cell. */
  minSamples: number;
  /** A contender predicted slower than this per call skips its warm-up call (its code is warm from smaller shapes). */
  noWarmupAbove: number;
  /** A contender predicted slower than this per call is skipped. */
  skipAbove: number;
}

/** The parsed command line. */
/** The row shapes of the per-row benchmarks: ImageNet-1k head, large batch, LLaMA-2 vocabulary, 100k identities. */
export const ROW_SHAPES: readonly (readonly [number, number])[] = [[256, 1000], [4096, 1000], [1024, 32000], [
  64,
  100000,
]];

/** The timing of the per-row benchmarks (cross-entropy, ArcFace): full runs and `--quick`. */
export const ROW_TIMING: Timing = {
  rounds: 9,
  roundTime: 0.06,
  warmupTime: 0.25,
  slowBudget: 2.5,
  minSamples: 2,
  noWarmupAbove: 3,
  skipAbove: Infinity,
};
export const ROW_QUICK_TIMING: Timing = {
  rounds: 3,
  roundTime: 0.02,
  warmupTime: 0.05,
  slowBudget: 0.3,
  minSamples: 1,
  noWarmupAbove: 0.3,
  skipAbove: 1.5,
};

export interface Config<M extends string, S extends readonly number[]> extends Timing {
  quick: boolean;
  json: string | null;
  shapes: S[];
  modes: M[];
  skip: Set<string>;
  /** Values of the benchmark's own flags (`ArgSpec.extra`), by flag; `true` for a flag without a value. */
  extra: Map<string, string | true>;
}

/** What a benchmark's command line looks like. */
export interface ArgSpec<M extends string, S extends readonly number[]> {
  /** The file, for the usage text. */
  file: string;
  modes: readonly M[];
  /** Modes run by default (all of `modes` when absent). */
  defaultModes?: readonly M[];
  shapes: readonly S[];
  /** Shapes run with `--quick` and no `--shapes` (`shapes` when absent). */
  quickShapes?: readonly S[];
  /** Numbers per shape: 2 for `256x1000`, 3 for `256x512x10000`. */
  dims: number;
  timing: Timing;
  quickTiming: Timing;
  /** Usage lines. */
  help: { quick: string; shapes: string; skip: string };
  /** The benchmark's own flags: name (with `--`), whether it takes a value, and its usage line. */
  extra?: readonly { flag: string; value: boolean; help: string }[];
}

/** `256x1000`. */
export function shapeName(s: readonly number[]): string {
  return s.join("x");
}

/** The usage text of a benchmark. */
export function usage<M extends string, S extends readonly number[]>(spec: ArgSpec<M, S>): string {
  const line = (flag: string, help: string) => `  ${flag.padEnd(21)}${help}`;
  return [
    `Usage: ${spec.file} [options]`,
    line("--quick", spec.help.quick),
    line("--json <file>", "also write the results as JSON"),
    line("--rounds <n>", `rounds per cell (default ${spec.timing.rounds}; ${spec.quickTiming.rounds} with --quick)`),
    line("--shapes <list>", `e.g. ${spec.help.shapes} (default: ${spec.shapes.map(shapeName).join(",")})`),
    line("--modes <list>", `subset of ${spec.modes.join(",")}`),
    line("--skip <list>", `contenders to leave out, e.g. "${spec.help.skip}"`),
    ...(spec.extra ?? []).map((e) => line(e.value ? `${e.flag} <value>` : e.flag, e.help)),
    "  --help",
  ].join("\n");
}

/** Parses the command line; `--help` prints the usage and exits. */
export function parseArgs<M extends string, S extends readonly number[]>(
  argv: string[],
  spec: ArgSpec<M, S>,
): Config<M, S> {
  const quick = argv.includes("--quick");
  const t = quick ? spec.quickTiming : spec.timing;
  const cfg: Config<M, S> = {
    quick,
    json: null,
    rounds: t.rounds,
    shapes: [...(quick && spec.quickShapes ? spec.quickShapes : spec.shapes)],
    modes: [...(spec.defaultModes ?? spec.modes)],
    skip: new Set(),
    roundTime: t.roundTime,
    warmupTime: t.warmupTime,
    slowBudget: t.slowBudget,
    minSamples: t.minSamples,
    noWarmupAbove: t.noWarmupAbove,
    skipAbove: t.skipAbove,
    extra: new Map(),
  };
  const help = usage(spec);
  const example = shapeName(spec.shapes[0]);
  const shapeRe = new RegExp(`^${Array(spec.dims).fill("(\\d+)").join("x")}$`);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new TypeError(`Expected a value after ${a}`);
      return v;
    };
    const own = spec.extra?.find((e) => e.flag === a);
    if (a === "--quick") continue;
    else if (a === "--json") cfg.json = value();
    else if (a === "--rounds") cfg.rounds = Math.max(1, parseInt(value(), 10));
    else if (a === "--shapes") {
      cfg.shapes = value().split(",").map((s) => {
        const m = shapeRe.exec(s.trim());
        if (!m) throw new TypeError(`Expected a shape like ${example}, got "${s}"`);
        return m.slice(1).map((x) => parseInt(x, 10)) as unknown as S;
      });
    } else if (a === "--modes") {
      cfg.modes = value().split(",").map((s) => {
        if (!(spec.modes as readonly string[]).includes(s)) {
          throw new TypeError(`Expected a mode in ${spec.modes}, got "${s}"`);
        }
        return s as M;
      });
    } else if (a === "--skip") { for (const s of value().split(",")) cfg.skip.add(s.trim().toLowerCase()); }
    else if (a === "--help" || a === "-h") {
      console.log(help);
      process.exit(0);
    } else if (own) cfg.extra.set(a, own.value ? value() : true);
    else throw new TypeError(`Unknown argument "${a}"\n${help}`);
  }
  return cfg;
}

// ---------------------------------------------------------------------------------------
// Environment

/** Where and with what a run was made. */
export interface EnvInfo {
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

/** The 1-minute load average, or null where the runtime cannot read it. */
export function load1(): number | null {
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

/** The environment of this run (call `initTf` first). */
export async function collectEnv(): Promise<EnvInfo> {
  return {
    ...runtimeInfo(),
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
}

/** Prints the title and the runtime, machine and TensorFlow.js lines. */
export function printHeader(title: string, env: EnvInfo): void {
  console.log(title);
  console.log(`runtime: ${env.runtime} ${env.version} (${env.engine}); softmargin wasm build: ${env.wasmVariant}`);
  console.log(
    `machine: ${env.cpu}, ${env.cores} logical CPUs, ${env.memoryGiB} GiB, load ${
      env.load.start ?? "?"
    }; date: ${env.date}`,
  );
  console.log(
    `TensorFlow.js ${env.tfjs}: cpu ${tfStatus.cpu ? `unavailable (${tfStatus.cpu})` : "ok"}, wasm ${env.tfjsWasm}`,
  );
}

/** The method line of the header: the timing budgets, then `tail` (what the accuracy columns mean). */
export function methodLine(cfg: Timing & { quick: boolean }, tail: string): string {
  return `method: ${cfg.rounds} interleaved rounds${cfg.quick ? " (--quick)" : ""}, median of per-round means, ` +
    `~${cfg.roundTime * 1000} ms per contender per round; slow contenders: >= ${cfg.minSamples} samples within ` +
    `~${cfg.slowBudget} s per cell. "samples" = rounds x calls per round; * = no warm-up call at this shape ` +
    `(predicted > ${cfg.noWarmupAbove} s per call; warm from smaller shapes). ${tail}`;
}

// ---------------------------------------------------------------------------------------
// TensorFlow.js setup

/** Whether each TF.js backend loaded (null) or why not, and the wasm backend's features. */
export const tfStatus: { cpu: string | null; wasm: string | null; wasmSimd: boolean; wasmThreads: boolean } = {
  cpu: null,
  wasm: null,
  wasmSimd: false,
  wasmThreads: false,
};

/** Initialises both TF.js backends; an error is recorded (and reported), not thrown. */
export async function initTf(): Promise<void> {
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

/** The most memory TF.js 4.22's wasm backend can grow to (its Emscripten `getHeapMax()`). */
export const TF_WASM_HEAP_MAX = 4294901760;

/**
 * Runs `f`, a TF.js wasm call; when the Emscripten module aborts (out of memory: it cannot
 * grow past `TF_WASM_HEAP_MAX`), the backend is dead for the rest of the process, so
 * `tfStatus.wasm` records it and the contenders that check it report it instead of aborting again.
 */
export function tfGuard<T>(where: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (/Aborted\(/.test(String(e))) tfStatus.wasm = `aborted earlier (${where}: ${errorText(e)})`;
    throw e;
  }
}

/** The byte size of the TF.js wasm backend's WebAssembly memory (it only grows), or null. */
export function tfWasmHeapBytes(): number | null {
  try {
    const b = tf.findBackend("wasm") as unknown as { wasm?: { HEAPU8?: Uint8Array } } | null;
    return b?.wasm?.HEAPU8?.buffer.byteLength ?? null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------
// Contenders and cells

/** One way of doing a cell's work; `run` is one timed call. */
export interface Runner<O> {
  run(): O;
}

/** A contender: makes a runner per shape context and mode, or says why it has none. */
export interface Contender<X, M extends string, O> {
  name: string;
  /** Floors are reference points (no ratios, no checks). */
  floor?: boolean;
  /** TF.js backend to select before each batch. */
  tfBackend?: "cpu" | "wasm";
  /** A runner for this shape and mode, or a string saying why there is none. */
  make(ctx: X, mode: M): Runner<O> | string;
}

/** What the harness fills in for every contender of a cell. */
export interface Cell {
  contender: string;
  floor: boolean;
  /** Median seconds per call; null when not measured. */
  seconds: number | null;
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

/** A cell of contender `k` with every harness field at its empty value (benchmarks add their own fields). */
export function emptyCell(k: { name: string; floor?: boolean }): Cell {
  return {
    contender: k.name,
    floor: !!k.floor,
    seconds: null,
    spread: null,
    samples: 0,
    callsPerSample: 0,
    sampleSeconds: [],
    warmup: false,
  };
}

/** Results feed this so no engine can drop a call as dead code. */
export const sink = { value: 0 };

export const now = (): number => performance.now() / 1000;

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** A small seeded generator of uniform [0, 1) numbers. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The first line of an error, at most 160 characters. */
export function errorText(e: unknown): string {
  const s = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return s.split("\n")[0].slice(0, 160);
}

async function enter(k: { tfBackend?: "cpu" | "wasm" }): Promise<void> {
  if (k.tfBackend && tf.getBackend() !== k.tfBackend) await tf.setBackend(k.tfBackend);
}

/** How to measure one cell. */
export interface CellSpec<X, M extends string, O, C extends Cell> {
  contenders: readonly Contender<X, M, O>[];
  /** A fresh cell for a contender, every harness field at its empty value. */
  newCell(k: Contender<X, M, O>): C;
  /** Work per call (logits, flops): predicts a contender's time at the next shape from this one. */
  units: number;
  /** Checks the output of a contender's first timed call (not called for floors); the output is then dropped. */
  check?(cell: C, out: O, k: Contender<X, M, O>): void;
  /**
   * Contenders already run at this shape (for example by a memory probe), with the seconds
   * that call took: they skip the warm-up and use it as their estimate.
   */
  prewarmed?: Map<string, number>;
}

interface Plan<X, M extends string, O, C extends Cell> {
  k: Contender<X, M, O>;
  runner: Runner<O>;
  reps: number;
  rounds: number;
  samples: number[];
  cell: C;
}

/**
 * Interleaved measurement of cells. It remembers each contender's seconds per unit of work
 * from one shape to the next, to skip warm-ups of slow calls and, with `skipAbove`, the
 * calls themselves.
 */
export class Measurer {
  readonly secondsPerUnit: Map<string, number> = new Map();

  /** Measures every contender of one cell; each gets a cell, measured, skipped or failed. */
  async measure<X, M extends string, O, C extends Cell>(
    cfg: Timing & { skip: Set<string> },
    ctx: X,
    mode: M,
    spec: CellSpec<X, M, O, C>,
  ): Promise<C[]> {
    const size = spec.units;
    const cells: C[] = [];
    const plans: Plan<X, M, O, C>[] = [];
    for (const k of spec.contenders) {
      const cell = spec.newCell(k);
      cells.push(cell);
      if (cfg.skip.has(k.name.toLowerCase())) {
        cell.note = "skipped (--skip)";
        continue;
      }
      let runner: Runner<O> | string;
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
      const predicted = this.secondsPerUnit.has(key) ? this.secondsPerUnit.get(key)! * size : null;
      if (predicted !== null && predicted > cfg.skipAbove) {
        cell.note = `skipped (--quick; predicted ${predicted.toFixed(1)} s per call)`;
        continue;
      }
      // Warm up (JIT tiers, memory growth, first-touch page faults), and estimate the time per call.
      let estimate: number;
      try {
        await enter(k);
        const pre = spec.prewarmed?.get(k.name);
        if (pre !== undefined) {
          estimate = pre;
          cell.warmup = true;
        } else if (predicted !== null && predicted > cfg.noWarmupAbove) {
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
          // Accuracy of the first timed call; the output is dropped at once.
          if (r === 0 && !p.k.floor) spec.check?.(p.cell, o, p.k);
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
      cell.spread = (Math.max(...samples) - Math.min(...samples)) / med;
      cell.samples = samples.length;
      cell.callsPerSample = p.reps;
      cell.sampleSeconds = samples;
      this.secondsPerUnit.set(`${p.k.name}|${mode}`, med / size);
    }
    return cells;
  }
}

/** Median over the rounds both took part in of `a`'s per-round time / `b`'s (paired, so drift between rounds cancels). */
export function pairedRatio(a: Cell | undefined, b: Cell | undefined): number | null {
  if (!a || !b || a.seconds === null || b.seconds === null) return null;
  const n = Math.min(a.sampleSeconds.length, b.sampleSeconds.length);
  if (n === 0) return null;
  return median(Array.from({ length: n }, (_, i) => a.sampleSeconds[i] / b.sampleSeconds[i]));
}

// ---------------------------------------------------------------------------------------
// Accuracy

/** Above this relative error a contender is counted as broken. */
export const BROKEN = 1e-3;
/** Above this it is flagged as inaccurate. */
export const LOOSE = 1e-5;

/** |x - ref| / |ref| (Infinity when x is missing). */
export function relDiff(x: number | undefined, ref: number): number {
  return x === undefined ? Infinity : Math.abs(x - ref) / Math.abs(ref);
}

/** max |g - ref| / max |ref|. */
export function gradDiff(g: ArrayLike<number>, ref: ArrayLike<number>): number {
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

/** Whether a (non-floor) cell's checked error is above `BROKEN`, or NaN. */
export function isBroken(x: Cell): boolean {
  return !x.floor && ((x.lossRelDiff ?? 0) > BROKEN || (x.gradRelDiff ?? 0) > BROKEN ||
    Number.isNaN(x.lossRelDiff ?? 0) || Number.isNaN(x.gradRelDiff ?? 0));
}

// ---------------------------------------------------------------------------------------
// Output

/** A throughput with 3-4 significant digits. */
export function fmtG(x: number | null): string {
  if (x === null) return "-";
  return x >= 1 ? x.toFixed(2) : x >= 0.1 ? x.toFixed(3) : x >= 0.01 ? x.toFixed(4) : x.toPrecision(2);
}

/** `a / b` as `12.3x`. */
export function fmtRatio(a: number | null, b: number | null): string {
  if (a === null || b === null) return "-";
  return fmtTimes(a / b);
}

/** A ratio as `12.3x`. */
export function fmtTimes(r: number | null): string {
  if (r === null) return "-";
  return `${r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2)}x`;
}

/** A relative error, flagged `BROKEN` or `(loose)`. */
export function fmtErr(x: number | undefined): string {
  if (x === undefined) return "";
  if (!Number.isFinite(x)) return "MISSING/NaN";
  const s = x === 0 ? "0" : x.toExponential(1);
  return x > BROKEN ? `${s} BROKEN` : x > LOOSE ? `${s} (loose)` : s;
}

/** Seconds with a unit that keeps 3 significant digits. */
export function fmtSeconds(s: number | null): string {
  if (s === null) return "-";
  if (s >= 1) return `${s.toPrecision(3)} s`;
  if (s >= 1e-3) return `${(s * 1e3).toPrecision(3)} ms`;
  return `${(s * 1e6).toPrecision(3)} us`;
}

/** Bytes in MB (10^6), 3 significant digits. */
export function fmtMB(b: number | null): string {
  if (b === null) return "-";
  const mb = b / 1e6;
  return mb >= 100 ? mb.toFixed(0) : mb >= 10 ? mb.toFixed(1) : mb.toFixed(2);
}

export function pad(s: string, w: number, right = false): string {
  return right ? s.padStart(w) : s.padEnd(w);
}

/** The `spread` and `samples` columns of a measured cell: `12%`, `9x3` (`*`: no warm-up call). */
export function fmtSpread(x: Cell): string {
  return x.spread === null ? "-" : `${(x.spread * 100).toFixed(0)}%`;
}

export function fmtSamples(x: Cell): string {
  return `${x.samples}x${x.callsPerSample}${x.warmup ? "" : "*"}`;
}

/** Prints a Markdown table: the first column left-aligned, the others right-aligned. */
export function printMarkdown(header: string[], rows: string[][]): void {
  console.log(`| ${header.join(" | ")} |`);
  console.log(`| --- | ${header.slice(1).map(() => "---:").join(" | ")} |`);
  for (const r of rows) console.log(`| ${r.join(" | ")} |`);
}

/** What a summary table shows for a cell that has no number: failed, skipped or n/a. */
export function missing(x: Cell | undefined): string | null {
  if (!x) return "-";
  if (x.error) return "failed";
  if (x.note) return x.note.startsWith("skipped") ? "skipped" : "n/a";
  return null;
}

/**
 * The end of a run: total time and load, the failed and broken cells, the JSON file.
 * Returns the failed and broken cells.
 */
export function finishRun<C extends Cell>(
  all: C[],
  t0: number,
  env: EnvInfo,
  cfg: { json: string | null; skip: Set<string> },
  json: Record<string, unknown>,
  where: (x: C) => string,
): { failed: C[]; broken: C[] } {
  const broken = all.filter(isBroken);
  const failed = all.filter((x) => x.error);
  env.load.end = load1();
  console.log(
    `\ntotal time ${(now() - t0).toFixed(0)} s, load ${env.load.end ?? "?"} (sink ${sink.value.toPrecision(3)})`,
  );
  for (const x of failed) console.log(`FAILED: ${x.contender} at ${where(x)}: ${x.error}`);
  for (const x of broken) {
    console.log(
      `BROKEN: ${x.contender} at ${where(x)}: loss err ${x.lossRelDiff}, grad err ${x.gradRelDiff}`,
    );
  }
  if (cfg.json) {
    writeFileSync(
      cfg.json,
      JSON.stringify({ env, tfjs: tfStatus, ...json }, null, 2) + "\n",
    );
    console.log(`wrote ${cfg.json}`);
  }
  return { failed, broken };
}

/** The config as JSON (the skip set as an array, the extra flags as an object). */
export function configJson(cfg: Config<string, readonly number[]>): Record<string, unknown> {
  const { extra, ...rest } = cfg;
  return { ...rest, skip: [...cfg.skip], ...(extra.size ? { extra: Object.fromEntries(extra) } : {}) };
}
