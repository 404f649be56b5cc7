/**
 * Before/after benchmark of the Core v2 contract (issue 8: "bench/ shows no slowdown"):
 * the WebAssembly backend of the tree before those changes (commit 79662d4, checked out
 * in a separate directory) against the current tree, both imported into one process and
 * measured in the same interleaved rounds, `valueAndGrad` of
 *
 * - `crossEntropy` (logits U(-3, 3)) and `arcface` (s = 64, m = 0.5; cosines U(-1, 1), the
 *   label's raised by 0.5, at most 0.99) at 256x1000, 4096x1000 and 1024x32000;
 * - `marginHead` (kind arcface, x and W U(-1, 1)) at 256x512x10000;
 *
 * each on three paths: `fresh` (ordinary arrays, fresh gradients), `out=` (gradients into
 * preallocated ordinary arrays, shared by the two versions) and `zero-copy` (inputs and
 * gradients from each version's own `alloc`). The figure is `new/old`: the median over
 * rounds of the per-round ratio of the two versions' times on the same path (below 1: the
 * current tree is faster), with the quartiles of those ratios.
 *
 * ```sh
 * git worktree add --detach /tmp/softmargin-79662d4 79662d4   # once, outside this tree
 * deno run -A bench/core_v2_bench.ts [--old /tmp/softmargin-79662d4] [--new DIR] [--quick] [--json out.json]
 * bun bench/core_v2_bench.ts [--old DIR]
 * ```
 *
 * The old tree's `marginHead` on `alloc` inputs throws on its first call when WebAssembly
 * memory grows during it (issue 8, defect 1); its zero-copy contender makes that call (and
 * says so) before it is timed.
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import process from "node:process";
import { pathToFileURL } from "node:url";
import * as cur from "../cpu.ts";
import {
  type ArgSpec,
  type Cell as BaseCell,
  collectEnv,
  type Config as BaseConfig,
  configJson,
  type Contender as BaseContender,
  errorText,
  finishRun,
  fmtErr,
  fmtSeconds,
  fmtSpread,
  gradDiff,
  initTf,
  Measurer,
  median,
  methodLine,
  mulberry32,
  now,
  pad,
  parseArgs,
  printHeader,
  printMarkdown,
  relDiff,
  ROW_QUICK_TIMING,
  ROW_TIMING,
  shapeName,
  sink,
  type Timing,
} from "./harness.ts";

// ---------------------------------------------------------------------------------------
// Command line

type Mode = "valueAndGrad";
/** NxC for the row losses, NxDxC for the head. */
type Shape = readonly number[];
type Family = "crossEntropy" | "arcface" | "marginHead";
type Path = "fresh" | "out=" | "zero-copy";
const PATHS: readonly Path[] = ["fresh", "out=", "zero-copy"];

const ROWS: readonly Shape[] = [[256, 1000], [4096, 1000], [1024, 32000]];
const HEAD: Shape = [256, 512, 10000];
const DEFAULT_OLD = "/tmp/softmargin-79662d4";

const ARGS: ArgSpec<Mode, Shape> = {
  file: "core_v2_bench.ts",
  modes: ["valueAndGrad"],
  shapes: ROWS,
  quickShapes: [ROWS[0]],
  dims: 2,
  timing: { ...ROW_TIMING, rounds: 21 },
  quickTiming: ROW_QUICK_TIMING,
  help: {
    quick: "3 rounds, small budgets, only 256x1000 and the head",
    shapes: "256x1000,1024x32000 (N x C of the row losses)",
    skip: "old zero-copy crossEntropy",
  },
  extra: [
    { flag: "--old", value: true, help: `the tree before Core v2 (default ${DEFAULT_OLD})` },
    { flag: "--new", value: true, help: "the tree after it (default: this one, uncommitted changes included)" },
    { flag: "--no-head", value: false, help: "leave out marginHead" },
    { flag: "--families", value: true, help: "subset of crossEntropy,arcface,marginHead" },
  ],
};

/** The head's calls take about 0.7 s: fewer, longer rounds. */
const HEAD_TIMING: Timing = {
  rounds: 9,
  roundTime: 0.5,
  warmupTime: 1,
  slowBudget: 40,
  minSamples: 3,
  noWarmupAbove: 5,
  skipAbove: Infinity,
};
const HEAD_QUICK: Timing = { ...HEAD_TIMING, rounds: 2, warmupTime: 0.1, slowBudget: 5, minSamples: 1 };

type Config = BaseConfig<Mode, Shape>;

// ---------------------------------------------------------------------------------------
// The two versions

/** What this file calls on either version (the API did not change between them). */
interface Loss {
  valueAndGrad(
    inputs: Record<string, unknown>,
    options?: Record<string, unknown>,
  ): { loss: unknown; grads: Record<string, { data: Float32Array }> };
}
interface Version {
  name: "old" | "new";
  commit: string;
  lib: Record<Family, Loss>;
  alloc(shape: readonly [number, number]): cur.WasmMatrix;
}

function commitOf(dir: string): string {
  try {
    const head = execFileSync("git", ["-C", dir, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
    const dirty = execFileSync("git", [
      "-C",
      dir,
      "status",
      "--porcelain",
      "--untracked-files=no",
      "--",
      "src",
      "cpu.ts",
    ], {
      encoding: "utf8",
    }).trim();
    return dirty ? `${head} + uncommitted changes in src/` : head;
  } catch {
    return "unknown";
  }
}

/** A tree's `cpu.ts`, imported from its directory (this tree's when `dir` is null). */
async function load(dir: string | null): Promise<typeof cur> {
  if (dir === null) return cur;
  const file = `${dir}/cpu.ts`;
  if (!existsSync(file)) {
    throw new TypeError(
      `Expected a softmargin tree at ${dir} (no cpu.ts there): ` +
        `run \`git worktree add --detach ${dir} <commit>\` or pass another directory`,
    );
  }
  return await import(pathToFileURL(file).href) as typeof cur;
}

/** The old tree (`--old`) and the new one (`--new`, default this tree), and the new tree's float64 reference. */
async function versions(oldDir: string, newDir: string | null): Promise<[Version[], Record<Family, Loss>]> {
  const [old, now] = [await load(oldDir), await load(newDir)];
  const here = newDir ?? new URL("..", import.meta.url).pathname;
  return [[
    { name: "old", commit: commitOf(oldDir), lib: old.wasm as unknown as Version["lib"], alloc: old.alloc },
    { name: "new", commit: commitOf(here), lib: now.wasm as unknown as Version["lib"], alloc: now.alloc },
  ], now.js as unknown as Record<Family, Loss>];
}

// ---------------------------------------------------------------------------------------
// Problems and contenders

const ARC = { scale: 64, margin: 0.5 };
const HEAD_OPTIONS = { kind: "arcface", ...ARC };

interface Ctx {
  family: Family;
  shape: Shape;
  labels: Int32Array;
  /** The inputs by name, host arrays with their shapes. */
  inputs: Record<string, { data: Float32Array; shape: [number, number] }>;
  /** The differentiable inputs, in order (their gradients are checked). */
  grads: string[];
  options: Record<string, unknown>;
  /** Preallocated host gradients (`out=`), shared by both versions (each output is checked at once). */
  outs: Record<string, { data: Float32Array; shape: [number, number] }>;
  /** Per version: inputs and gradients in its WebAssembly memory, or why not. */
  zero: Map<string, { inputs: Record<string, cur.WasmMatrix>; outs: Record<string, cur.WasmMatrix> } | string>;
}

function makeCtx(family: Family, shape: Shape, seed: number, vs: Version[]): Ctx {
  const rand = mulberry32(seed);
  const uniform = (len: number, a: number) => Float32Array.from({ length: len }, () => (rand() * 2 - 1) * a);
  let inputs: Ctx["inputs"], labels: Int32Array;
  if (family === "marginHead") {
    const [n, d, c] = shape;
    inputs = { x: { data: uniform(n * d, 1), shape: [n, d] }, W: { data: uniform(c * d, 1), shape: [c, d] } };
    labels = Int32Array.from({ length: n }, () => Math.floor(rand() * c));
  } else {
    const [n, c] = shape;
    const z = uniform(n * c, family === "arcface" ? 1 : 3);
    labels = Int32Array.from({ length: n }, () => Math.floor(rand() * c));
    if (family === "arcface") {
      for (let i = 0; i < n; i++) z[i * c + labels[i]] = Math.min(z[i * c + labels[i]] + 0.5, 0.99);
    }
    inputs = { [family === "arcface" ? "cos" : "logits"]: { data: z, shape: [n, c] } };
  }
  const grads = Object.keys(inputs);
  const outs = Object.fromEntries(
    grads.map((g) => [g, { data: new Float32Array(inputs[g].data.length).fill(0), shape: inputs[g].shape }]),
  );
  const zero: Ctx["zero"] = new Map();
  for (const v of vs) {
    const made: cur.WasmMatrix[] = [];
    try {
      const alloc = (shape: [number, number], from?: Float32Array) => {
        const m = v.alloc(shape);
        made.push(m);
        if (from) m.data.set(from);
        return m;
      };
      zero.set(v.name, {
        inputs: Object.fromEntries(grads.map((g) => [g, alloc(inputs[g].shape, inputs[g].data)])),
        outs: Object.fromEntries(grads.map((g) => [g, alloc(inputs[g].shape)])),
      });
    } catch (e) {
      for (const m of made) m.free();
      zero.set(v.name, `alloc failed: ${errorText(e)}`);
    }
  }
  const options = family === "crossEntropy" ? {} : family === "arcface" ? ARC : HEAD_OPTIONS;
  return { family, shape, labels, inputs, grads, options, outs, zero };
}

function freeCtx(ctx: Ctx): void {
  for (const z of ctx.zero.values()) {
    if (typeof z === "string") continue;
    for (const m of [...Object.values(z.inputs), ...Object.values(z.outs)]) m.free();
  }
}

interface Out {
  loss: number;
  grads: Float32Array[];
}

type Contender = BaseContender<Ctx, Mode, Out> & { version: Version; path: Path };

function contender(v: Version, path: Path): Contender {
  return {
    name: `${v.name} ${path}`,
    version: v,
    path,
    make(ctx) {
      const loss = v.lib[ctx.family];
      let inputs: Record<string, unknown> = { ...ctx.inputs, labels: ctx.labels };
      let options = ctx.options;
      if (path === "out=") options = { ...options, out: ctx.outs };
      if (path === "zero-copy") {
        const z = ctx.zero.get(v.name)!;
        if (typeof z === "string") return z;
        inputs = { ...z.inputs, labels: ctx.labels };
        options = { ...options, out: z.outs };
      }
      let remark: string | null = null;
      if (path === "zero-copy" && ctx.family === "marginHead" && v.name === "old") {
        try {
          loss.valueAndGrad(inputs, options);
        } catch (e) {
          remark = errorText(e);
        }
      }
      const run = (): Out => {
        const r = loss.valueAndGrad(inputs, options);
        const l = r.loss as number;
        const grads = ctx.grads.map((g) => r.grads[g].data);
        sink.value += l + grads[0][0];
        return { loss: l, grads };
      };
      if (remark) {
        console.log(`(${v.name} zero-copy ${ctx.family}: first call threw "${remark}"; timed from the second)`);
      }
      return { run };
    },
  };
}

// ---------------------------------------------------------------------------------------
// Measurement and output

interface Cell extends BaseCell {
  family: Family;
  shape: Shape;
  mode: Mode;
  path: Path;
  version: "old" | "new";
}

/** new/old for one path: paired median and quartiles of the per-round time ratios. */
interface Ratio {
  family: Family;
  shape: Shape;
  path: Path;
  median: number | null;
  q1: number | null;
  q3: number | null;
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const at = (s.length - 1) * q, lo = Math.floor(at);
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (at - lo);
}

function ratioOf(a: Cell | undefined, b: Cell | undefined): Omit<Ratio, "family" | "shape" | "path"> {
  if (!a || !b || a.seconds === null || b.seconds === null) return { median: null, q1: null, q3: null };
  const n = Math.min(a.sampleSeconds.length, b.sampleSeconds.length);
  const r = Array.from({ length: n }, (_, i) => a.sampleSeconds[i] / b.sampleSeconds[i]);
  return { median: median(r), q1: quantile(r, 0.25), q3: quantile(r, 0.75) };
}

function printCell(cells: Cell[], ratios: Ratio[]): void {
  const { family, shape } = cells[0];
  console.log(`\n## ${family} valueAndGrad ${shapeName(shape)}`);
  const head = pad("path", 11) + pad("old", 10, true) + pad("new", 10, true) + pad("new/old", 9, true) +
    pad("quartiles", 14, true) + pad("spread old/new", 16, true) + pad("samples", 9, true) +
    "   errors (old; new): loss, grad";
  console.log(head);
  console.log("-".repeat(head.length));
  for (const path of PATHS) {
    const o = cells.find((x) => x.path === path && x.version === "old")!;
    const n = cells.find((x) => x.path === path && x.version === "new")!;
    const r = ratios.find((x) => x.path === path)!;
    const bad = [o, n].find((x) => x.error || x.note);
    if (bad) {
      console.log(pad(path, 11) + `  ${bad.contender}: ${bad.error ?? bad.note}`);
      continue;
    }
    const err = (x: Cell) => `${fmtErr(x.lossRelDiff)}, ${fmtErr(x.gradRelDiff)}`;
    console.log(
      pad(path, 11) + pad(fmtSeconds(o.seconds), 10, true) + pad(fmtSeconds(n.seconds), 10, true) +
        pad(r.median === null ? "-" : r.median.toFixed(3), 9, true) +
        pad(r.q1 === null ? "-" : `${r.q1.toFixed(2)}-${r.q3!.toFixed(2)}`, 14, true) +
        pad(`${fmtSpread(o)} / ${fmtSpread(n)}`, 16, true) + pad(`${o.samples}x${o.callsPerSample}`, 9, true) +
        `   ${err(o)}; ${err(n)}`,
    );
  }
}

function printSummary(ratios: Ratio[]): void {
  const shapes = [...new Set(ratios.map((r) => shapeName(r.shape)))];
  console.log("\n### Time new/old (paired median over rounds; below 1: the current tree is faster)\n");
  const rows: string[][] = [];
  for (const family of ["crossEntropy", "arcface", "marginHead"] as const) {
    for (const path of PATHS) {
      const row = shapes.map((s) => {
        const r = ratios.find((x) => x.family === family && x.path === path && shapeName(x.shape) === s);
        return r?.median == null ? "" : `${r.median.toFixed(3)} (${r.q1!.toFixed(2)}-${r.q3!.toFixed(2)})`;
      });
      if (row.some((x) => x)) rows.push([`${family} ${path}`, ...row]);
    }
  }
  printMarkdown(["loss, path", ...shapes], rows);
  const all = ratios.map((r) => r.median).filter((x): x is number => x !== null);
  if (all.length) {
    console.log(
      `\nover all ${all.length} cells: median new/old ${median(all).toFixed(3)}, range ${Math.min(...all).toFixed(3)}-${
        Math.max(...all).toFixed(3)
      }`,
    );
  }
}

// ---------------------------------------------------------------------------------------
// Main

async function main(): Promise<number> {
  const cfg: Config = parseArgs(process.argv.slice(2), ARGS);
  const oldArg = cfg.extra.get("--old");
  const famArg = cfg.extra.get("--families");
  const families = (typeof famArg === "string" ? famArg.split(",") : ["crossEntropy", "arcface", "marginHead"])
    .filter((f) => f !== "marginHead" || !cfg.extra.has("--no-head")) as Family[];
  const newArg = cfg.extra.get("--new");
  const [vs, reference] = await versions(
    typeof oldArg === "string" ? oldArg : DEFAULT_OLD,
    typeof newArg === "string" ? newArg : null,
  );
  await initTf(); // not used here; the header reports it like the other files
  const env = await collectEnv();
  printHeader(
    `# softmargin Core v2 before/after: old = ${vs[0].commit}, new = ${vs[1].commit} (wasm backend, valueAndGrad)`,
    env,
  );
  console.log(
    methodLine(
      cfg,
      "new/old: median over rounds of the per-round time ratio of the two versions on the same path " +
        "(quartiles beside it). marginHead: " +
        `${
          (cfg.quick ? HEAD_QUICK : HEAD_TIMING).rounds
        } rounds of ~0.5 s. Errors vs the new tree's float64 reference (js).`,
    ),
  );
  const contenders = vs.flatMap((v) => PATHS.map((p) => contender(v, p)));
  const work: [Family, Shape][] = [
    ...families.filter((f) => f !== "marginHead").flatMap((f) => cfg.shapes.map((s) => [f, s] as [Family, Shape])),
    ...(families.includes("marginHead") ? [["marginHead", HEAD] as [Family, Shape]] : []),
  ];
  // One per family: a Measurer predicts a contender's time at the next shape from the last.
  const measurers = new Map<Family, Measurer>();
  const all: Cell[] = [];
  const ratios: Ratio[] = [];
  const t0 = now();
  for (const [i, [family, shape]] of work.entries()) {
    const ctx = makeCtx(family, shape, 31 + i, vs);
    const inputs = { ...ctx.inputs, labels: ctx.labels };
    const r = reference[family].valueAndGrad(inputs, ctx.options);
    const ref = { loss: r.loss as number, grads: ctx.grads.map((g) => r.grads[g].data) };
    const timing = family === "marginHead" ? (cfg.quick ? HEAD_QUICK : HEAD_TIMING) : cfg;
    try {
      if (!measurers.has(family)) measurers.set(family, new Measurer());
      const cells = await measurers.get(family)!.measure({ ...cfg, ...timing }, ctx, "valueAndGrad", {
        contenders,
        newCell: (k): Cell => {
          const c = k as Contender;
          return {
            family,
            shape,
            mode: "valueAndGrad",
            path: c.path,
            version: c.version.name,
            contender: `${c.name} ${family}`,
            floor: false,
            seconds: null,
            spread: null,
            samples: 0,
            callsPerSample: 0,
            sampleSeconds: [],
            warmup: false,
          };
        },
        units: shape.reduce((a, b) => a * b, 1),
        check: (cell, o) => {
          cell.lossRelDiff = relDiff(o.loss, ref.loss);
          cell.gradRelDiff = Math.max(...o.grads.map((g, j) => gradDiff(g, ref.grads[j])));
        },
      });
      const here = PATHS.map((path): Ratio => ({
        family,
        shape,
        path,
        ...ratioOf(
          cells.find((x) => x.path === path && x.version === "new"),
          cells.find((x) => x.path === path && x.version === "old"),
        ),
      }));
      printCell(cells, here);
      all.push(...cells);
      ratios.push(...here);
    } finally {
      freeCtx(ctx);
    }
  }
  console.log(`\n# Summary (${env.runtime} ${env.version}, ${env.cpu}, ${env.date.slice(0, 10)})`);
  printSummary(ratios);
  const { failed, broken } = finishRun(
    all,
    t0,
    env,
    cfg,
    { config: configJson(cfg), old: vs[0].commit, new: vs[1].commit, results: all, ratios },
    (x) => `${x.family} ${shapeName(x.shape)}`,
  );
  return broken.length || failed.some((x) => x.version === "new") ? 1 : 0;
}

process.exitCode = await main();
