/**
 * The benchmark engine. A benchmark is a spec: contenders (sync or async calls, each with
 * its own setup), shapes and modes; `run` parses the command line, measures every (shape,
 * mode) cell and prints Markdown tables (and JSON with `--json FILE`), under Deno and Bun.
 *
 * Method (this 2-vCPU VM drifts 20-30 % between runs): every contender of a cell runs in
 * the same process, in interleaved rounds, each round in an order rotated from the last.
 * A contender's figure is the median over rounds of its time per call; a ratio of two is
 * the median over rounds of the per-round ratio (paired: drift between rounds cancels).
 * Each contender is warmed up (at least one call); one too slow for every round takes part
 * in the first rounds only, within a time budget; one predicted (from its time at its
 * largest shape so far) above `skipAbove` is skipped. The first timed output of each is
 * checked against the spec's float64 reference. Memory: before a cell's rounds, each
 * contender makes one call in a fresh process (this file with `--probe`), which reports its
 * peak resident memory and the growth of WebAssembly memory and of the TF.js heap.
 * `--baseline DIR` imports the library of another checkout and adds a copy of every
 * library contender, named `base ...`, to the same rounds.
 *
 * @module
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import process from "node:process";
import { pathToFileURL } from "node:url";
import * as cpu from "../cpu.ts";
import * as mod from "../mod.ts";
import { currentRuntime, wasmVariant } from "../src/wasm/runtime.ts";

export type Shape = readonly number[];

/** A library tree: this one, or the `--baseline` one (its contenders' names start with `tag`). */
export type Lib = { tag: "" | "base "; dir: string; cpu: typeof cpu; mod: typeof mod };

/** What the first timed call of a contender is checked on; `err`: its own error against float64. */
export type Out = {
  loss?: number;
  grads?: ArrayLike<number>[] | (() => Promise<ArrayLike<number>[]>);
  err?: () => number;
};

/**
 * A contender's calls. `timed`: one that times itself (a call in another process): the
 * seconds of `reps` calls, measured there, and the last call's output.
 */
export type Runner = {
  run(): Out | void | Promise<Out | void>;
  timed?(reps: number): Promise<{ seconds: number; out: Out }>;
};

export interface Contender<X> {
  name: string;
  /** A reference point (a floor, a part): not checked. */
  floor?: boolean;
  /** softmargin's own: its failure or wrong result makes the exit status 1. */
  ours?: boolean;
  /** The reference its output is checked against (`spec.reference`; default ""). */
  group?: string;
  /** Its ratio: its time / this contender's (default `spec.baseline`). */
  ratioTo?: string;
  /** Runs in another process (PyTorch): its memory is not probed. */
  external?: boolean;
  /** Before each batch of calls (a TF.js backend switch, a thread count). */
  enter?(): void | Promise<void>;
  /** A runner for this context and mode, or why there is none. */
  setup(ctx: X, mode: string): Runner | string | Promise<Runner | string>;
  lib?: Lib;
}

/** Seconds: rounds of `roundTime` per contender; a slow contender gets >= `minSamples` within `slowBudget`. */
export type Timing = Record<"rounds" | "roundTime" | "warmupTime" | "slowBudget" | "minSamples" | "skipAbove", number>;

const TIMING: Timing = { rounds: 7, roundTime: 0.05, warmupTime: 0.2, slowBudget: 2, minSamples: 2, skipAbove: 1.5 };
const QUICK: Timing = { rounds: 3, roundTime: 0.02, warmupTime: 0.05, slowBudget: 0.3, minSamples: 1, skipAbove: 1.5 };
const FULL: Timing = { ...TIMING, rounds: 9, roundTime: 0.06, warmupTime: 0.25, slowBudget: 3, skipAbove: Infinity };

export interface Spec<X> {
  name: string;
  title: string;
  modes: string[];
  defaultModes?: string[];
  shapes: { default: Shape[]; quick: Shape[]; full?: Shape[] };
  timing?: { default?: Partial<Timing>; quick?: Partial<Timing>; full?: Partial<Timing> };
  /** Units of work per call: predictions, and the throughput column `unit` (its name, units per unit of it). */
  work(shape: Shape, mode: string): number;
  unit?: [string, number];
  contenders: Contender<X>[];
  /** Contenders made from a library tree: this one, and the baseline's with `--baseline`. */
  library?(lib: Lib): Contender<X>[];
  context(shape: Shape): X | Promise<X>;
  dispose?(ctx: X): void;
  /** The float64 reference of a group, computed once per shape before the timing. */
  reference?(ctx: X, group: string): Out | Promise<Out>;
  baseline: string;
  /** More paired ratios for the summary: time of the first / time of the second. */
  pairs?: [string, string][];
  /** Memory probes, in the cells `when` accepts, after one call at `warm` (JIT, instantiation). */
  memory?: { warm?: Shape; when?(shape: Shape, mode: string, name: string): boolean };
  /** The benchmark's own flags and their help. */
  flags?: Record<string, string>;
  /** More output after the summary; returns more JSON. */
  after?(cells: Cell[]): Record<string, unknown>;
}

type Config = Timing & {
  preset: "quick" | "default" | "full";
  json: string | null;
  shapes: Shape[];
  modes: string[];
  memory: boolean;
};

/** Memory of one call in a fresh process, bytes: VmHWM after it - VmRSS before; each meter's growth. */
type Memory = { peakRss: number | null; growth: Record<string, number>; error?: string };

/**
 * A measured contender at a shape and mode: median seconds per call, the per-round samples
 * (of `reps` calls each; `warm`: after a warm-up), the paired ratio to `ratioTo`, memory,
 * errors against the reference, or why it has no time (not applicable, skipped, failed).
 */
export type Cell = { contender: string; shape: number[]; mode: string; floor: boolean; ours: boolean } & {
  seconds: number | null;
  samples: number[];
  reps: number;
  warm: boolean;
  ratio: number | null;
  ratioTo: string;
} & { memory?: Memory; lossErr?: number; gradErr?: number; na?: string; skipped?: string; error?: string };

/** Run when the benchmark ends (a helper process stopped, its files removed). */
export const cleanups: (() => void)[] = [];
/** Results feed this so no engine drops a call as dead code. */
export const sink = { value: 0 };
/** Header lines that benchmarks add (the TF.js backends, the adapter). */
export const envNotes: string[] = [];
/** What the memory probes read before and after a call (bytes, or null). */
export const meters: { name: string; read(): number | null }[] = [
  { name: "wasm", read: () => currentRuntime()?.buffer.byteLength ?? null },
];

const now = () => performance.now() / 1000;
const BROKEN = 1e-3;
export const shapeName = (s: Shape): string => s.join("x");

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** A seeded generator of uniform [0, 1) numbers. */
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

/** `n` numbers from U(-a, a); `n` labels in [0, c). */
export const uniform = (rand: () => number, n: number, a = 1): Float32Array =>
  Float32Array.from({ length: n }, () => (rand() * 2 - 1) * a);
export const labelsOf = (rand: () => number, n: number, c: number): Int32Array =>
  Int32Array.from({ length: n }, () => Math.floor(rand() * c));

export function errorText(e: unknown): string {
  return (e instanceof Error ? `${e.name}: ${e.message}` : String(e)).split("\n")[0].slice(0, 160);
}

/** max |g - ref| / max |ref| (NaN propagates). */
function gradDiff(g: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (g.length !== ref.length) return Infinity;
  let d = 0, m = 0;
  for (let i = 0; i < g.length; i++) {
    const e = Math.abs(g[i] - ref[i]);
    if (!(e <= d)) d = e;
    m = Math.max(m, Math.abs(ref[i]));
  }
  return d / m;
}

/**
 * One call of a library loss (`wasm.crossEntropy`, an `init` instance's, a baseline tree's)
 * in `mode`, as an `Out` with the gradients named `keys` (lists flattened). Loosely typed:
 * the benchmarks call several trees' versions of the API.
 */
export function lossCall(loss: unknown, mode: string, inputs: unknown, options: unknown, keys: readonly string[]) {
  const m = (loss as Record<string, (i: unknown, o: unknown) => unknown>)[mode];
  type R = { loss?: number; grads?: Record<string, unknown> } & Record<string, unknown>;
  const out = (r: R): Out => {
    const g = mode === "backward" ? r : r.grads;
    const grads = g ? keys.flatMap((k) => [g[k]].flat().map((x) => (x as { data: Float32Array }).data)) : undefined;
    sink.value += (r.loss ?? 0) + (grads?.[0]?.[0] ?? 0);
    return { loss: mode === "backward" ? undefined : r.loss, grads };
  };
  return (): Out | Promise<Out> => {
    const r = m.call(loss, inputs, options);
    return r instanceof Promise ? r.then(out) : out(r as R);
  };
}

// ---------------------------------------------------------------------------------------
// Command line, libraries, environment

const COMMON: Record<string, string> = {
  "--quick": "fewer rounds and shapes, small budgets (a smoke run)",
  "--full": "every shape and mode, larger budgets, no skipping of slow calls",
  "--json FILE": "also write every cell as JSON",
  "--rounds N": "interleaved rounds per cell",
  "--shapes LIST": "shapes to run, e.g. 256x1000,1024x32000",
  "--modes LIST": "modes to run",
  "--only LIST": 'contenders to run (names; * matches anything: "*wasm*,CE plain TS")',
  "--skip LIST": "contenders to leave out (the same patterns)",
  "--baseline DIR": "also run the library of the checkout at DIR (contenders `base ...`)",
  "--no-memory": "leave out the memory probes",
};

function usage(spec: Spec<unknown>): string {
  const s = spec.shapes, names = (l: Shape[]) => l.map(shapeName).join(",");
  return [
    `${spec.title}\nUsage: ${spec.name}_bench.ts [flags]`,
    ...Object.entries({ ...COMMON, ...spec.flags }).map(([f, h]) => `  ${f.padEnd(17)}${h}`),
    `modes: ${spec.modes.join(",")} (default ${(spec.defaultModes ?? spec.modes).join(",")})`,
    `shapes: ${names(s.default)}; --quick ${names(s.quick)}${s.full ? `; --full ${names(s.full)}` : ""}`,
  ].join("\n");
}

function parseFlags(argv: string[]): Map<string, string | true> {
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    if (!argv[i].startsWith("--")) throw new TypeError(`Expected a flag, got "${argv[i]}"`);
    const v = argv[i + 1];
    flags.set(argv[i], v !== undefined && !v.startsWith("--") ? (i++, v) : true);
  }
  return flags;
}

function config(spec: Spec<unknown>, flags: Map<string, string | true>): Config {
  const known = Object.keys({ ...COMMON, ...spec.flags, "--probe": "" }).map((f) => f.split(" ")[0]);
  for (const f of flags.keys()) if (!known.includes(f)) throw new TypeError(`Unknown flag ${f}\n${usage(spec)}`);
  const preset = flags.has("--quick") ? "quick" : flags.has("--full") ? "full" : "default";
  const timing = { ...{ quick: QUICK, full: FULL, default: TIMING }[preset], ...spec.timing?.[preset] };
  const str = (f: string) => (typeof flags.get(f) === "string" ? flags.get(f) as string : null);
  const shapes = str("--shapes")?.split(",").map((s) => {
    if (!/^\d+(x\d+)*$/.test(s)) throw new TypeError(`Expected a shape like 256x1000, got "${s}"`);
    return s.split("x").map(Number);
  });
  const modes = str("--modes")?.split(",") ?? (preset === "full" ? spec.modes : spec.defaultModes ?? spec.modes);
  for (const m of modes) if (!spec.modes.includes(m)) throw new TypeError(`Expected a mode in ${spec.modes}: "${m}"`);
  return {
    ...timing,
    rounds: str("--rounds") ? Math.max(1, parseInt(str("--rounds")!, 10)) : timing.rounds,
    preset,
    json: str("--json"),
    shapes: shapes ?? spec.shapes[preset] ?? spec.shapes.default,
    modes,
    memory: !!spec.memory && !flags.has("--no-memory"),
  };
}

/** `*` patterns, case-insensitive. */
function patterns(s: string | true | undefined): RegExp[] | null {
  const esc = (p: string) => p.trim().replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*");
  return typeof s === "string" ? s.split(",").map((p) => new RegExp(`^${esc(p)}$`, "i")) : null;
}

/** The library of the checkout at `dir`: its `cpu.ts` and `mod.ts`, imported into this process. */
async function loadLib(dir: string): Promise<Lib> {
  if (!existsSync(`${dir}/cpu.ts`)) throw new TypeError(`Expected a softmargin checkout at --baseline ${dir}`);
  const load = (f: string) => import(pathToFileURL(`${dir}/${f}`).href);
  const [c, m] = await Promise.all([load("cpu.ts"), load("mod.ts")]);
  const rt = await load("src/wasm/runtime.ts").catch(() => ({})) as { currentRuntime?: typeof currentRuntime };
  const read = () => rt.currentRuntime?.()?.buffer.byteLength ?? null;
  if (rt.currentRuntime) meters.push({ name: "base wasm", read });
  return { tag: "base ", dir, cpu: c, mod: m };
}

function environment(libs: Lib[]): Record<string, string> {
  const g = globalThis as { Deno?: { version: { deno: string; v8: string } }; Bun?: { version: string } };
  const tree = (dir: string) => {
    try {
      const git = (...a: string[]) => execFileSync("git", ["-C", dir, ...a], { encoding: "utf8" }).trim();
      const dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src", "gpu", "assembly", "cpu.ts");
      return `${dir} at ${git("rev-parse", "--short", "HEAD")}${dirty ? " + uncommitted changes" : ""}`;
    } catch {
      return dir;
    }
  };
  return {
    runtime: g.Bun ? `Bun ${g.Bun.version}` : g.Deno ? `Deno ${g.Deno.version.deno} (V8 ${g.Deno.version.v8})` : "?",
    machine: `${cpus()[0]?.model ?? "?"}, ${cpus().length} CPUs, load ${loadavg()[0].toFixed(2)}`,
    date: new Date().toISOString(),
    wasm: `${wasmVariant()} build`,
    trees: libs.map((l) => `${l.tag || "this "}tree ${tree(l.dir)}`).join("; "),
  };
}

// ---------------------------------------------------------------------------------------
// Memory probes: one call per contender and cell in a fresh process

function procStatus(): { rss: number; hwm: number } | null {
  try {
    const s = readFileSync("/proc/self/status", "utf8");
    const kb = (key: string) => parseInt(new RegExp(`${key}:\\s+(\\d+)`).exec(s)![1], 10) * 1024;
    return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
  } catch {
    return null;
  }
}

/** The child's side: one call at `warm`, garbage collection, the peak-RSS mark reset, the measured call. */
async function probe<X>(spec: Spec<X>, k: Contender<X>, shape: Shape, mode: string): Promise<Memory> {
  const call = async (s: Shape) => {
    const r = await k.setup(await spec.context(s), mode);
    if (typeof r === "string") return () => Promise.resolve();
    return async () => (await k.enter?.(), await r.run());
  };
  if (spec.memory?.warm) await (await call(spec.memory.warm))();
  const measured = await call(shape), g = globalThis as { gc?: () => void; Bun?: { gc(force: boolean): void } };
  for (let i = 0; i < 2; i++) g.Bun ? g.Bun.gc(true) : g.gc?.();
  let reset = true;
  try {
    writeFileSync("/proc/self/clear_refs", "5");
  } catch {
    reset = false;
  }
  const before = procStatus(), m0 = meters.map((m) => m.read());
  await measured();
  const after = procStatus(), growth: Record<string, number> = {};
  meters.forEach((m, i) => m.read() !== null && (growth[m.name] = m.read()! - (m0[i] ?? 0)));
  return { peakRss: reset && before && after ? after.hwm - before.rss : null, growth };
}

/** The parent's side: this file again with `--probe`, in the same runtime, with the same flags. */
function probeInChild(name: string, shape: Shape, mode: string): Memory {
  const argv = process.argv.slice(2), pass: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (!["--json", "--shapes", "--modes"].includes(argv[i])) pass.push(argv[i]);
    else if (argv[i + 1] && !argv[i + 1].startsWith("--")) i++;
  }
  const deno = "Deno" in globalThis ? ["run", "-A", "--v8-flags=--expose-gc"] : [];
  const own = ["--probe", name, "--shapes", shapeName(shape), "--modes", mode];
  const r = spawnSync(process.execPath, [...deno, process.argv[1], ...pass, ...own], { encoding: "utf8" });
  const line = r.stdout?.split("\n").find((l) => l.startsWith("PROBE "));
  if (line) return JSON.parse(line.slice(6));
  // deno-lint-ignore no-control-regex
  const lines = (r.stderr ?? "").replace(/\x1b\[[0-9;]*m/g, "").split("\n").filter((l) =>
    /\S/.test(l) && !/^\s+at /.test(l)
  );
  const why = lines.at(-1) ?? r.error?.message ?? `exit status ${r.status}`;
  return { peakRss: null, growth: {}, error: why.slice(0, 160) };
}

// ---------------------------------------------------------------------------------------
// Measurement

/** Each contender and mode's largest work so far and its seconds: the next call's time is predicted linearly, capped at 100x. */
const seen = new Map<string, [number, number]>();

async function measure<X>(spec: Spec<X>, cfg: Config, ks: Contender<X>[], ctx: X, shape: Shape, mode: string) {
  const work = spec.work(shape, mode), refs = new Map<string, Out>(), cells: Cell[] = [];
  const plans: { k: Contender<X>; runner: Runner; reps: number; rounds: number; cell: Cell }[] = [];
  for (const k of ks) {
    const cell: Cell = {
      contender: k.name,
      shape: [...shape],
      mode,
      floor: !!k.floor,
      ours: !!k.ours && !k.lib?.tag,
      seconds: null,
      samples: [],
      reps: 0,
      warm: true,
      ratio: null,
      ratioTo: k.ratioTo ?? spec.baseline,
    };
    cells.push(cell);
    try {
      const runner = await k.setup(ctx, mode);
      if (typeof runner === "string") {
        cell.na = runner;
        continue;
      }
      const [w0, s0] = seen.get(`${k.name}|${mode}`) ?? [0, 0];
      const predicted = w0 ? s0 * Math.min(work / w0, 100) : null;
      if (predicted !== null && predicted > cfg.skipAbove) {
        cell.skipped = `predicted ${predicted.toFixed(1)} s per call`;
        continue;
      }
      if (cfg.memory && !k.floor && !k.external && (spec.memory?.when?.(shape, mode, k.name) ?? true)) {
        cell.memory = probeInChild(k.name, shape, mode);
        if (cell.memory.error) {
          cell.error = `in its memory probe (a fresh process): ${cell.memory.error}`;
          continue;
        }
      }
      const group = k.group ?? "";
      if (!k.floor && spec.reference && !refs.has(group)) refs.set(group, await spec.reference(ctx, group));
      // Warm-up (JIT, memory growth, first-touch page faults) and an estimate of the time per call;
      // a call predicted to take half the slow budget is warm from smaller shapes.
      let estimate = predicted ?? 0;
      cell.warm = !(estimate > cfg.slowBudget / 2);
      if (cell.warm) {
        const times: number[] = [], t0 = now();
        do {
          const t = now();
          await k.enter?.();
          const self = runner.timed ? (await runner.timed(1)).seconds : (await runner.run(), null);
          times.push(self ?? now() - t);
        } while (now() - t0 < cfg.warmupTime && times.length < 1000);
        estimate = times.length > 1 ? median(times.slice(1)) : times[0];
      }
      const reps = Math.max(1, Math.round(cfg.roundTime / estimate));
      const rounds = Math.min(cfg.rounds, Math.max(cfg.minSamples, Math.floor(cfg.slowBudget / (reps * estimate))));
      plans.push({ k, runner, reps, rounds, cell });
    } catch (e) {
      cell.error = errorText(e);
    }
  }
  for (let r = 0; r < cfg.rounds; r++) {
    const live = plans.filter((p) => p.rounds > r && !p.cell.error);
    for (let i = 0; i < live.length; i++) {
      const { k, runner, reps, cell } = live[(i + r) % live.length];
      try {
        await k.enter?.();
        const t0 = now();
        let o: Out | void;
        if (runner.timed) {
          const t = await runner.timed(reps);
          [o] = [t.out, cell.samples.push(t.seconds / reps)];
        } else {
          o = await runner.run();
          for (let j = 1; j < reps; j++) o = await runner.run();
          cell.samples.push((now() - t0) / reps);
        }
        if (r === 0 && !k.floor && o) await check(cell, o, refs.get(k.group ?? ""));
      } catch (e) {
        cell.error = errorText(e);
      }
    }
  }
  for (const { k, cell, reps } of plans) {
    if (cell.error || !cell.samples.length) continue;
    [cell.seconds, cell.reps] = [median(cell.samples), reps];
    if (work >= (seen.get(`${k.name}|${mode}`)?.[0] ?? 0)) seen.set(`${k.name}|${mode}`, [work, cell.seconds]);
  }
  for (const cell of cells) {
    cell.ratio = cell.ratioTo === cell.contender
      ? null
      : pairedRatio(cell, cells.find((c) => c.contender === cell.ratioTo));
  }
  return cells;
}

async function check(cell: Cell, o: Out, ref: Out | undefined): Promise<void> {
  if (o.err) cell.gradErr = o.err();
  if (ref?.loss !== undefined && o.loss !== undefined) cell.lossErr = Math.abs(o.loss - ref.loss) / Math.abs(ref.loss);
  const [g, rg] = [o.grads, ref?.grads].map((x) => (typeof x === "function" ? x() : x));
  if (g && rg) {
    const [a, b] = [await g, await rg];
    cell.gradErr = Math.max(...a.map((x, i) => gradDiff(x, b[i])));
  }
}

/** The median over the rounds both took part in of `a`'s time / `b`'s. */
function pairedRatio(a: Cell | undefined, b: Cell | undefined): number | null {
  if (a?.seconds == null || b?.seconds == null) return null;
  return median(
    Array.from({ length: Math.min(a.samples.length, b.samples.length) }, (_, i) => a.samples[i] / b.samples[i]),
  );
}

// ---------------------------------------------------------------------------------------
// Output

/** 3 significant digits. */
export function fmt(x: number | null | undefined): string {
  if (x == null || !Number.isFinite(x)) return "-";
  return x >= 1000 ? x.toFixed(0) : x >= 0.001 ? x.toPrecision(3) : x.toExponential(1);
}

function fmtTime(s: number | null): string {
  return s === null ? "-" : s >= 1 ? `${fmt(s)} s` : s >= 1e-3 ? `${fmt(s * 1e3)} ms` : `${fmt(s * 1e6)} us`;
}

const fmtMB = (b: number | null | undefined) => (b == null ? "-" : fmt(b / 1e6));
const fmtErr = (x: number | undefined) =>
  x === undefined ? "" : x.toExponential(1).replace("NaN", "NaN BROKEN") + (x > BROKEN ? " BROKEN" : "");
const missing = (x: Cell | undefined) =>
  !x ? "-" : x.error ? "failed" : x.skipped ? "skipped" : x.na ? "n/a" : x.seconds === null ? "-" : null;
const broken = (x: Cell) => !x.floor && !((x.lossErr ?? 0) <= BROKEN && (x.gradErr ?? 0) <= BROKEN);

function printTable(title: string, header: string[], rows: string[][]): void {
  console.log(`\n${title}\n\n| ${header.join(" | ")} |\n| --- | ${header.slice(1).map(() => "---:").join(" | ")} |`);
  for (const r of rows) console.log(`| ${r.join(" | ")} |`);
}

function printCell(spec: Spec<unknown>, cells: Cell[]): void {
  const { shape, mode } = cells[0], mem = cells.some((x) => x.memory), ratios = cells.some((x) => x.ratio !== null);
  const speed = (x: Cell) => fmt(spec.work(x.shape, x.mode) / x.seconds! / spec.unit![1]);
  const rows = cells.filter((x) => !x.na).map((x) => {
    const m = missing(x);
    const growth = Object.entries(x.memory?.growth ?? {}).filter(([, v]) => v).map(([k, v]) => `${k} +${fmtMB(v)}`);
    return [
      x.floor ? `${x.contender} (floor)` : x.contender,
      m ? `${m}: ${x.error ?? x.skipped}` : fmtTime(x.seconds),
      ...(spec.unit ? [m ? "" : speed(x)] : []),
      ...(ratios
        ? [x.ratio === null ? "" : fmt(x.ratio) + (x.ratioTo !== spec.baseline ? ` (${x.ratioTo})` : "")]
        : []),
      m ? "" : `${((Math.max(...x.samples) - Math.min(...x.samples)) / x.seconds! * 100).toFixed(0)}%`,
      m ? "" : `${x.samples.length}x${x.reps}${x.warm ? "" : "*"}`,
      ...(mem ? [fmtMB(x.memory?.peakRss), growth.join(", ")] : []),
      fmtErr(x.lossErr),
      fmtErr(x.gradErr),
    ];
  });
  const head = [
    "contender",
    "time",
    ...(spec.unit ? [spec.unit[0]] : []),
    ...(ratios ? [`time / ${spec.baseline}`] : []),
  ];
  const tail = ["spread", "samples", ...(mem ? ["peak RSS MB", "growth MB"] : []), "loss err", "grad err"];
  printTable(`## ${spec.name} ${shapeName(shape)} ${mode}`, [...head, ...tail], rows);
}

function printSummary(spec: Spec<unknown>, cfg: Config, all: Cell[], names: string[]): void {
  for (const mode of cfg.modes) {
    const cells = all.filter((x) => x.mode === mode), shapes = cfg.shapes.map(shapeName);
    const at = (name: string, s: string) => cells.find((x) => x.contender === name && shapeName(x.shape) === s);
    const table = (title: string, rows: [string, (s: string) => string][]) => {
      const body = rows.map(([l, f]) => [l, ...shapes.map(f)]).filter((r) => r.slice(1).some((v) => v !== "-"));
      if (body.length) printTable(`### ${spec.name} ${mode}: ${title}`, ["contender", ...shapes], body);
    };
    const live = names.filter((n) => cells.some((x) => x.contender === n && !x.na));
    const value = (
      x: Cell,
    ) => (spec.unit ? fmt(spec.work(x.shape, mode) / x.seconds! / spec.unit[1]) : fmtTime(x.seconds));
    table(
      `${spec.unit?.[0] ?? "time per call"} (median)`,
      live.map((n) => [n, (s) => missing(at(n, s)) ?? value(at(n, s)!)]),
    );
    table(
      "time ratios (paired median; below 1: faster)",
      live.map((n) => [`${n} / ${cells.find((x) => x.contender === n)!.ratioTo}`, (s) => fmt(at(n, s)?.ratio)]),
    );
    const pair = (a: string, b: string) => (s: string) => fmt(pairedRatio(at(a, s), at(b, s)));
    table("paired time ratios", (spec.pairs ?? []).map(([a, b]) => [`${a} / ${b}`, pair(a, b)]));
    const twins = live.filter((n) => live.includes(`base ${n}`));
    const vsBase = "this tree / the baseline tree (paired median time ratio; below 1: this tree is faster)";
    table(vsBase, twins.map((n) => [n, pair(n, `base ${n}`)]));
    table("peak RSS of one call in a fresh process, MB", live.map((n) => [n, (s) => fmtMB(at(n, s)?.memory?.peakRss)]));
  }
}

// ---------------------------------------------------------------------------------------
// The runner

/** Runs a benchmark: `make` gets the command line's flags and the library trees. Sets the exit status. */
export async function run<X>(make: (flags: Map<string, string | true>, libs: Lib[]) => Spec<X> | Promise<Spec<X>>) {
  const flags = parseFlags(process.argv.slice(2)), base = flags.get("--baseline"), probeName = flags.get("--probe");
  const here: Lib = { tag: "", dir: new URL("..", import.meta.url).pathname.replace(/\/$/, ""), cpu, mod };
  const libs = typeof base === "string" ? [here, await loadLib(base)] : [here];
  const spec = await make(flags, libs);
  if (flags.has("--help")) return console.log(usage(spec as Spec<unknown>));
  const cfg = config(spec as Spec<unknown>, flags);
  const only = patterns(flags.get("--only")), skip = patterns(flags.get("--skip")) ?? [];
  const own = libs.flatMap((lib) => (spec.library?.(lib) ?? []).map((k) => ({ ...k, ours: k.ours ?? true, lib })));
  for (const k of own) k.name = k.lib.tag + k.name;
  const twin = (k: Contender<X>) => [k, ...own.filter((b) => b.name === `base ${k.name}`)]; // this tree's, then the baseline's
  const ks = [...own.filter((k) => !k.lib.tag).flatMap(twin), ...spec.contenders]
    .filter((k) => (!only || only.some((p) => p.test(k.name))) && !skip.some((p) => p.test(k.name)));
  if (typeof probeName === "string") {
    const k = ks.find((k) => k.name === probeName)!;
    return console.log(`PROBE ${JSON.stringify(await probe(spec, k, cfg.shapes[0], cfg.modes[0]))}`);
  }
  const env = environment(libs), t0 = now(), all: Cell[] = [];
  console.log(`# ${spec.title}\n`);
  for (const line of [...Object.entries(env).map(([k, v]) => `${k}: ${v}`), ...envNotes]) console.log(`- ${line}`);
  console.log(
    `- method: ${cfg.rounds} interleaved rounds (${cfg.preset}) of ~${cfg.roundTime * 1e3} ms per contender, median ` +
      `time per call, ratios: medians of per-round ratios; slow contenders >= ${cfg.minSamples} samples within ` +
      `~${cfg.slowBudget} s, skipped when predicted above ${cfg.skipAbove} s per call; samples: rounds x calls ` +
      `(*: no warm-up); spread: (max - min) / median; errors vs float64: loss relative, grad max|g - ref| / max|ref|`,
  );
  for (const shape of cfg.shapes) {
    const ctx = await spec.context(shape);
    for (const mode of cfg.modes) {
      const cells = await measure(spec, cfg, ks, ctx, shape, mode);
      printCell(spec as Spec<unknown>, cells);
      all.push(...cells);
    }
    spec.dispose?.(ctx);
  }
  console.log(`\n# Summary (${env.runtime}, ${env.date})`);
  printSummary(spec as Spec<unknown>, cfg, all, ks.map((k) => k.name));
  const extra = spec.after?.(all) ?? {};
  console.log(
    `\ntotal ${(now() - t0).toFixed(0)} s, load ${loadavg()[0].toFixed(2)}, sink ${sink.value.toPrecision(3)}`,
  );
  for (const x of all) if (x.error) console.log(`FAILED: ${x.contender} ${shapeName(x.shape)} ${x.mode}: ${x.error}`);
  for (const x of all) if (broken(x)) console.log(`BROKEN: ${x.contender} ${shapeName(x.shape)} ${x.mode}`);
  if (cfg.json) {
    writeFileSync(cfg.json, JSON.stringify({ bench: spec.name, env, config: cfg, cells: all, ...extra }, null, 1));
    console.log(`wrote ${cfg.json}`);
  }
  process.exitCode = all.some((x) => x.ours && (x.error || broken(x))) ? 1 : 0;
  for (const f of cleanups.splice(0)) f();
}
