/**
 * Benchmark of one full `physMoe` value-and-gradient step at the seed's configuration
 * (B = 256 features of width D = 1024, 230 fine classes in 7 coarse classes, E = 8
 * experts of which 4, [4, 5, 6, 7], are tail experts; rule [230, 230]; SPEC's default
 * weights), on each backend against a plain-TypeScript composition of the same parts
 * (`plainPhysMoe` in `impls.ts`) and against TensorFlow.js wasm (autodiff of the composed
 * graph, `tfPhysMoeLoss`): the time of one step and its peak memory.
 *
 * ```sh
 * deno run -A bench/phys_moe_bench.ts [--quick] [--json out.json] [--no-memory] [--no-webgpu]
 * bun bench/phys_moe_bench.ts [--quick] [--json out.json] [--no-memory]
 * ```
 *
 * Contenders, each one call = one step, inputs as `Float32Array`s, all gradients returned:
 *
 * - `wasm`, `wasm out=`: `wasm.physMoe.valueAndGrad` (fresh gradients; preallocated
 *   `options.out` for all five gradients);
 * - `js`: the float64 reference backend;
 * - `plain TS`: `plainPhysMoe`, the parts written out by hand, forward and backward;
 * - `tfjs-wasm`: every tensor made from the arrays, the masks and constants in TF.js ops,
 *   the constant collaboration target, then `tf.valueAndGrads` of `tfPhysMoeLoss` w.r.t.
 *   features, coarse, the 8 expert logits, gating and centres, and every gradient downloaded;
 * - `wasm part: ...` (reference points, not checked): each of the four parts alone, by its
 *   own loss on the wasm backend, to show where a step's time goes;
 * - `webgpu` (Deno, when an adapter is found, `--no-webgpu` to leave out): `init({ backend:
 *   "webgpu" })`, awaited calls, measured in its own interleaved rounds against the wasm
 *   backend through `init({ backend: "wasm" })` (the harness's `Measurer` times
 *   synchronous calls only); host arrays in and out (its terms one by one), and
 *   `webgpu GPU-resident in and out`: the differentiable inputs already in `GPUBuffer`s,
 *   one submission per step that reads back only the parts, the gradients left on the GPU
 *   (checked once, then destroyed after each step).
 *
 * Peak memory (`--no-memory` to leave out): for each contender a fresh process (this file
 * with `--probe NAME`) makes one step at a small size (JIT, module instantiation), then
 * collects garbage, resets the kernel's peak-RSS mark (`/proc/self/clear_refs`, Linux) and
 * makes one step at the measured size: `peak RSS` is `VmHWM` after the step minus `VmRSS`
 * before it. Beside it: the growth of softmargin's WebAssembly memory during the step and
 * its size after, the growth of TF.js's wasm heap, and TF.js's own `tf.profile` peak of live
 * tensor bytes (a second step, under `tf.profile`). Inputs and preallocated `out=` buffers
 * exist before the mark; returned gradients are counted.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";
import * as tf from "@tensorflow/tfjs";
import { js, type Matrix, wasm } from "../cpu.ts";
import { type GpuMatrix, init, type Losses } from "../mod.ts";
import { download, upload } from "../tests/helpers/gpu.ts";
import { runtime } from "../src/wasm/runtime.ts";
import {
  type ArgSpec,
  type Cell as BaseCell,
  collectEnv,
  type Config as BaseConfig,
  configJson,
  type Contender as BaseContender,
  emptyCell,
  errorText,
  finishRun,
  fmtErr,
  fmtMB,
  fmtSamples,
  fmtSeconds,
  fmtSpread,
  fmtTimes,
  gradDiff,
  initTf,
  Measurer,
  median,
  methodLine,
  now,
  pad,
  pairedRatio,
  parseArgs,
  printHeader,
  printMarkdown,
  relDiff,
  shapeName,
  sink,
  tfGuard,
  tfStatus,
  tfWasmHeapBytes,
} from "./harness.ts";
import { type PlainMoeOptions, plainPhysMoe, tfMoeConsts, tfPhysMoeLoss } from "./impls.ts";
import { type MoeData, moeData } from "./moe_data.ts";

// ---------------------------------------------------------------------------------------
// Command line

type Mode = "valueAndGrad";
/** B x D x E. */
type Shape = readonly [number, number, number];
const SEED: Shape = [256, 1024, 8];

const ARGS: ArgSpec<Mode, Shape> = {
  file: "phys_moe_bench.ts",
  modes: ["valueAndGrad"],
  shapes: [SEED],
  dims: 3,
  timing: {
    rounds: 9,
    roundTime: 0.3,
    warmupTime: 0.5,
    slowBudget: 15,
    minSamples: 3,
    noWarmupAbove: 20,
    skipAbove: Infinity,
  },
  quickTiming: {
    rounds: 3,
    roundTime: 0.1,
    warmupTime: 0.1,
    slowBudget: 3,
    minSamples: 1,
    noWarmupAbove: 20,
    skipAbove: Infinity,
  },
  help: {
    quick: "3 rounds, small time budgets",
    shapes: "256x1024x8 (B x D x E; C = 230, K = 7)",
    skip: "js,tfjs-wasm",
  },
  extra: [
    { flag: "--no-memory", value: false, help: "leave out the peak-memory probes (one fresh process per contender)" },
    { flag: "--no-webgpu", value: false, help: "leave out the webgpu backend" },
    { flag: "--probe", value: true, help: "(internal) measure one contender's memory in this process, print it" },
  ],
};

type Config = BaseConfig<Mode, Shape>;

// ---------------------------------------------------------------------------------------
// Contenders

/** The tail experts are the upper half, [4, 5, 6, 7] for E = 8 (the seed's `tail_expert_ids`). */
const tailOf = (e: number) => Array.from({ length: e - Math.floor(e / 2) }, (_, i) => Math.floor(e / 2) + i);

/** SPEC's defaults, written out for the plain-TS and TF.js compositions. */
const optionsOf = (e: number): PlainMoeOptions => ({
  tailExperts: tailOf(e),
  gamma: 2,
  lambdaScl: 0.1,
  lambdaHier: 1,
  lambdaReg: 0.001,
  temperature: 0.07,
  threshold: 0.8,
  prototypeWeight: 0.5,
});

interface Ctx extends MoeData {
  /** The inputs as softmargin takes them. */
  inputs: {
    features: Matrix;
    coarse: Matrix;
    expertLogits: Matrix[];
    gating: Matrix;
    labels: Int32Array;
    rule: Matrix;
    fineToCoarse: Int32Array;
    centers: Matrix;
  };
  /** Preallocated gradients (`out=`). */
  out: { features: Matrix; coarse: Matrix; expertLogits: Matrix[]; gating: Matrix; centers: Matrix };
  /** The gated ensemble, the fine logits of the `hierarchical` part alone. */
  fine: Matrix;
}

function makeCtx([b, d, e]: Shape, seed: number): Ctx {
  const m = moeData(b, d, e, seed);
  const { c, k } = m;
  const mat = (data: Float32Array, rows: number, cols: number): Matrix => ({ data, shape: [rows, cols] });
  const zeros = (rows: number, cols: number) => mat(new Float32Array(rows * cols).fill(0), rows, cols);
  const fine = new Float32Array(b * c);
  for (let i = 0; i < b; i++) {
    for (let x = 0; x < e; x++) {
      for (let j = 0; j < c; j++) fine[i * c + j] += m.gating[i * e + x] * m.expertLogits[x][i * c + j];
    }
  }
  return {
    ...m,
    inputs: {
      features: mat(m.f, b, d),
      coarse: mat(m.coarse, b, k),
      expertLogits: m.expertLogits.map((z) => mat(z, b, c)),
      gating: mat(m.gating, b, e),
      labels: m.labels,
      rule: mat(m.rule, c, c),
      fineToCoarse: m.fineToCoarse,
      centers: mat(m.centers, c, d),
    },
    out: {
      features: zeros(b, d),
      coarse: zeros(b, k),
      expertLogits: m.expertLogits.map(() => zeros(b, c)),
      gating: zeros(b, e),
      centers: zeros(c, d),
    },
    fine: mat(fine, b, c),
  };
}

/** What a step produced: the total and every gradient (checked once, never retained). */
interface Out {
  loss: number;
  grads: Float32Array[] | null;
}

type Contender = BaseContender<Ctx, Mode, Out> & { ours: boolean };

/** The gradients in one order: features, coarse, the expert logits, gating, centres. */
function gradList(g: { features: Matrix; coarse: Matrix; expertLogits: Matrix[]; gating: Matrix; centers: Matrix }) {
  return [g.features.data, g.coarse.data, ...g.expertLogits.map((z) => z.data), g.gating.data, g.centers.data];
}

function libraryContender(name: string, lib: typeof wasm, useOut: boolean): Contender {
  return {
    name,
    ours: true,
    make(ctx) {
      const options = { tailExperts: tailOf(ctx.e), ...(useOut ? { out: ctx.out } : {}) };
      return {
        run(): Out {
          const r = lib.physMoe.valueAndGrad(ctx.inputs, options);
          const loss = r.loss as number;
          sink.value += loss + r.grads.features.data[0];
          return { loss, grads: gradList(r.grads) };
        },
      };
    },
  };
}

const plainContender: Contender = {
  name: "plain TS",
  ours: false,
  make(ctx) {
    const inputs = { ...ctx, features: ctx.f };
    const o = optionsOf(ctx.e);
    return {
      run(): Out {
        const r = plainPhysMoe(inputs, o, true);
        const g = r.grads!;
        sink.value += r.loss + g.features[0];
        return { loss: r.loss, grads: [g.features, g.coarse, ...g.expertLogits, g.gating, g.centers] };
      },
    };
  },
};

const tfContender: Contender = {
  name: "tfjs-wasm",
  ours: false,
  tfBackend: "wasm",
  make(ctx) {
    if (tfStatus.wasm) return `backend unavailable: ${tfStatus.wasm}`;
    const { b, d, c, k, e } = ctx;
    const o = optionsOf(e);
    return {
      run(): Out {
        let out: Out = { loss: NaN, grads: null };
        tfGuard("tfjs-wasm physMoe", () =>
          tf.tidy(() => {
            // Every tensor from the user's arrays, every step, as our API takes them.
            const x = {
              features: tf.tensor2d(ctx.f, [b, d]),
              coarse: tf.tensor2d(ctx.coarse, [b, k]),
              expertLogits: ctx.expertLogits.map((z) => tf.tensor2d(z, [b, c])),
              gating: tf.tensor2d(ctx.gating, [b, e]),
              centers: tf.tensor2d(ctx.centers, [c, d]),
            };
            const labels = tf.tensor1d(ctx.labels, "int32");
            const consts = tfMoeConsts(
              labels,
              tf.tensor2d(ctx.rule, [c, c]),
              tf.tensor1d(ctx.fineToCoarse, "int32"),
              c,
              k,
              o.threshold,
            );
            // iclMoe's collaboration target: the ensemble's softmax, outside the gradient.
            const gates = tf.split(x.gating, e, 1);
            const fine = tf.addN(x.expertLogits.map((z, i) => tf.mul(gates[i], z)));
            const target = { t: tf.softmax(fine), logT: tf.logSoftmax(fine) };
            const xs = [x.features, x.coarse, ...x.expertLogits, x.gating, x.centers];
            const { value, grads } = tf.valueAndGrads((...t: tf.Tensor[]) =>
              tfPhysMoeLoss(
                { features: t[0], coarse: t[1], expertLogits: t.slice(2, 2 + e), gating: t[2 + e], centers: t[3 + e] },
                labels,
                consts,
                target,
                o,
              ).loss
            )(xs);
            const loss = value.dataSync()[0];
            const g = grads.map((t) => t.dataSync() as Float32Array);
            sink.value += loss + g[0][0];
            out = { loss, grads: g };
          }));
        return out;
      },
    };
  },
};

/** The four parts alone on the wasm backend, each by its own loss (with physMoe's options). */
function partContender(part: "physicsContrastive" | "iclMoe" | "hierarchical" | "centerRegularization"): Contender {
  return {
    name: `wasm part: ${part}`,
    ours: true,
    floor: true,
    make(ctx) {
      const p = ctx.inputs;
      const run = part === "physicsContrastive"
        ? () => wasm.physicsContrastive.valueAndGrad({ f: p.features, labels: p.labels, rule: p.rule }).loss as number
        : part === "iclMoe"
        ? () =>
          wasm.iclMoe.valueAndGrad(
            { expertLogits: p.expertLogits, gating: p.gating, labels: p.labels },
            { tailExperts: tailOf(ctx.e) },
          ).loss
        : part === "hierarchical"
        ? () =>
          wasm.hierarchical.valueAndGrad({
            coarse: p.coarse,
            fine: ctx.fine,
            labels: p.labels,
            fineToCoarse: p.fineToCoarse,
          }).loss as number
        : () =>
          wasm.centerRegularization.valueAndGrad({ f: p.features, centers: p.centers, labels: p.labels, rule: p.rule })
            .loss;
      return {
        run(): Out {
          const loss = run() as number;
          sink.value += loss;
          return { loss, grads: null };
        },
      };
    },
  };
}

const CONTENDERS: Contender[] = [
  libraryContender("wasm", wasm, false),
  libraryContender("wasm out=", wasm, true),
  libraryContender("js", js, false),
  plainContender,
  tfContender,
  partContender("physicsContrastive"),
  partContender("iclMoe"),
  partContender("hierarchical"),
  partContender("centerRegularization"),
];

// ---------------------------------------------------------------------------------------
// Memory probes (one fresh process per contender)

/** What one probe measured, in bytes (null where not available). */
interface Memory {
  /** VmHWM after the step minus VmRSS before it (the peak-RSS mark reset just before the step). */
  peakRss: number | null;
  rssBefore: number | null;
  /** softmargin's WebAssembly memory: its growth during the step and its size after. */
  wasmGrowth: number;
  wasmAfter: number;
  /** TF.js's wasm heap: its growth during the step. */
  tfHeapGrowth: number | null;
  /** TF.js's `tf.profile` peak of live tensor bytes during a second step (TF.js contender only). */
  tfProfilePeak: number | null;
  error?: string;
}

function procStatus(): { rss: number; hwm: number } | null {
  try {
    const s = readFileSync("/proc/self/status", "utf8");
    const kb = (key: string) => parseInt(new RegExp(`${key}:\\s+(\\d+)`).exec(s)![1], 10) * 1024;
    return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
  } catch {
    return null;
  }
}

function collectGarbage(): void {
  const g = globalThis as { gc?: () => void; Bun?: { gc(force: boolean): void } };
  if (g.Bun) g.Bun.gc(true);
  else g.gc?.();
}

/** The child's side: a small step, then the measured one; prints `PROBE <json>`. */
async function probe(cfg: Config, name: string): Promise<void> {
  const k = CONTENDERS.find((k) => k.name === name);
  if (!k) throw new TypeError(`Expected --probe to name a contender, got "${name}"`);
  if (k.tfBackend) await tf.setBackend(k.tfBackend);
  const small = k.make(makeCtx([16, 32, cfg.shapes[0][2]], 5), "valueAndGrad");
  if (typeof small === "string") throw new Error(small);
  small.run();
  const ctx = makeCtx(cfg.shapes[0], 1234);
  const runner = k.make(ctx, "valueAndGrad") as { run(): Out };
  const rt = runtime();
  collectGarbage();
  collectGarbage();
  let reset = true;
  try {
    writeFileSync("/proc/self/clear_refs", "5");
  } catch {
    reset = false;
  }
  const before = procStatus(), wasm0 = rt.buffer.byteLength, tf0 = tfWasmHeapBytes();
  runner.run();
  const after = procStatus(), tf1 = tfWasmHeapBytes();
  let tfProfilePeak: number | null = null;
  if (k.tfBackend) {
    const info = await tf.profile(() => {
      runner.run();
    });
    tfProfilePeak = info.peakBytes;
  }
  const m: Memory = {
    peakRss: reset && before && after ? after.hwm - before.rss : null,
    rssBefore: before?.rss ?? null,
    wasmGrowth: rt.buffer.byteLength - wasm0,
    wasmAfter: rt.buffer.byteLength,
    tfHeapGrowth: tf0 !== null && tf1 !== null ? tf1 - tf0 : null,
    tfProfilePeak,
  };
  console.log(`PROBE ${JSON.stringify(m)}`);
}

/** The parent's side: runs `--probe NAME` in a fresh process of the same runtime. */
function probeInChild(cfg: Config, name: string): Memory {
  const script = fileURLToPath(import.meta.url);
  const isBun = !!(globalThis as { Bun?: unknown }).Bun;
  const args = [
    ...(isBun ? [] : ["run", "-A", "--v8-flags=--expose-gc"]),
    script,
    "--probe",
    name,
    "--shapes",
    shapeName(cfg.shapes[0]),
  ];
  const r = spawnSync(process.execPath, args, { encoding: "utf8", env: process.env, maxBuffer: 1 << 24 });
  const line = r.stdout?.split("\n").find((l) => l.startsWith("PROBE "));
  if (line) return JSON.parse(line.slice(6)) as Memory;
  const why = (r.stderr || r.error?.message || `exit ${r.status}`).trim().split("\n").slice(-1)[0];
  return {
    peakRss: null,
    rssBefore: null,
    wasmGrowth: 0,
    wasmAfter: 0,
    tfHeapGrowth: null,
    tfProfilePeak: null,
    error: why.slice(0, 160),
  };
}

// ---------------------------------------------------------------------------------------
// webgpu (awaited calls, its own interleaved rounds)

interface AsyncCell {
  contender: string;
  /** What `init` said it chose (webgpu: the adapter). */
  backend?: string;
  seconds: number | null;
  sampleSeconds: number[];
  lossRelDiff?: number;
  gradRelDiff?: number;
  note?: string;
}

async function measureWebgpu(cfg: Config, ctx: Ctx, ref: Out): Promise<AsyncCell[]> {
  let gpu: Losses;
  let device: GPUDevice;
  try {
    const adapter = await navigator.gpu?.requestAdapter();
    if (!adapter) throw new Error("no WebGPU adapter");
    device = await adapter.requestDevice();
    gpu = await init({ backend: "webgpu", device });
  } catch (e) {
    return [{ contender: "webgpu", seconds: null, sampleSeconds: [], note: `unavailable: ${errorText(e)}` }];
  }
  const w = await init({ backend: "wasm" });
  const options = { tailExperts: tailOf(ctx.e) };
  const cells: AsyncCell[] = [
    { contender: "webgpu", seconds: null, sampleSeconds: [], backend: gpu.note },
    { contender: "wasm via init()", seconds: null, sampleSeconds: [] },
    { contender: "webgpu GPU-resident in and out", seconds: null, sampleSeconds: [] },
  ];
  // The differentiable inputs on the GPU (the rule is host data): the step reads back only
  // the parts, and its gradients stay on the GPU (destroyed after each step here).
  const { inputs } = ctx;
  const resident = {
    ...inputs,
    features: await upload(inputs.features, device),
    coarse: await upload(inputs.coarse, device),
    expertLogits: await Promise.all(inputs.expertLogits.map((z) => upload(z, device))),
    gating: await upload(inputs.gating, device),
    centers: await upload(inputs.centers, device),
  };
  const call = (at: number) =>
    at === 2
      ? gpu.physMoe.valueAndGrad(resident as never, options)
      : [gpu, w][at].physMoe.valueAndGrad(inputs, options);
  const t0 = now();
  for (let r = 0; r < cfg.rounds; r++) {
    for (let i = 0; i < 3; i++) {
      const at = (i + r) % 3;
      const t = now();
      const res = await call(at);
      cells[at].sampleSeconds.push(now() - t);
      if (at < 2) {
        if (r === 0) check(cells[at], { loss: res.loss as number, grads: gradList(res.grads) }, ref);
        continue;
      }
      const g = res.grads as unknown as Record<string, GpuMatrix | GpuMatrix[]>;
      const list = [g.features, g.coarse, ...(g.expertLogits as GpuMatrix[]), g.gating, g.centers] as GpuMatrix[];
      if (r === 0) {
        const grads = await Promise.all(list.map((m) => download(m, device)));
        check(cells[at], { loss: res.loss as number, grads }, ref);
      }
      for (const m of list) m.buffer.destroy();
    }
    if (now() - t0 > cfg.slowBudget && r + 1 >= cfg.minSamples) break;
  }
  gpu.dispose();
  for (const m of [resident.features, resident.coarse, ...resident.expertLogits, resident.gating, resident.centers]) {
    m.buffer.destroy();
  }
  device.destroy();
  for (const c of cells) c.seconds = median(c.sampleSeconds);
  return cells;
}

// ---------------------------------------------------------------------------------------
// Measurement and output

interface Cell extends BaseCell {
  shape: Shape;
  mode: Mode;
  memory?: Memory;
}

function check(cell: { lossRelDiff?: number; gradRelDiff?: number }, o: Out, ref: Out): void {
  cell.lossRelDiff = relDiff(o.loss, ref.loss);
  if (!o.grads) return;
  cell.gradRelDiff = o.grads.length === ref.grads!.length
    ? Math.max(...o.grads.map((g, i) => gradDiff(g, ref.grads![i])))
    : Infinity;
}

function printCell(cells: Cell[], gpu: AsyncCell[]): void {
  const [b, d, e] = cells[0].shape;
  console.log(
    `\n## physMoe valueAndGrad, B = ${b}, D = ${d}, C = 230, K = 7, E = ${e} (tail ${tailOf(e)}), one step`,
  );
  const head = pad("contender", 34) + pad("s/step", 10, true) + pad("spread", 8, true) + pad("samples", 9, true) +
    pad("this/wasm", 11, true) + pad("peak RSS MB", 13, true) + pad("wasm mem MB", 13, true) +
    pad("TF heap MB", 12, true) + pad("tf.profile", 12, true) + "   loss err  grad err";
  console.log(head);
  console.log("-".repeat(head.length));
  const ours = cells.find((x) => x.contender === "wasm");
  for (const x of cells) {
    const m = x.memory;
    const mem = m
      ? pad(m.error ? "failed" : fmtMB(m.peakRss), 13, true) +
        pad(`+${fmtMB(m.wasmGrowth)} (${fmtMB(m.wasmAfter)})`, 13, true) + pad(fmtMB(m.tfHeapGrowth), 12, true) +
        pad(fmtMB(m.tfProfilePeak), 12, true)
      : pad("", 50);
    if (x.error || x.note) {
      console.log(pad(x.contender, 34) + pad(x.error ? `FAILED: ${x.error}` : x.note!, 38, true) + mem);
      continue;
    }
    console.log(
      pad(x.contender, 34) + pad(fmtSeconds(x.seconds), 10, true) + pad(fmtSpread(x), 8, true) +
        pad(fmtSamples(x), 9, true) + pad(x === ours ? "" : fmtTimes(pairedRatio(x, ours)), 11, true) + mem +
        `   ${pad(fmtErr(x.lossRelDiff), 9)} ${fmtErr(x.gradRelDiff)}`,
    );
    if (m?.error) console.log(`  memory probe of ${x.contender} failed: ${m.error}`);
  }
  for (const x of gpu) {
    if (x.backend) console.log(`(webgpu: init({ backend: "webgpu" }) chose ${x.backend})`);
    console.log(
      pad(x.contender.slice(0, 34), 34) +
        (x.note ? pad(x.note, 60, true) : pad(fmtSeconds(x.seconds), 10, true) +
          pad(`${x.sampleSeconds.length} awaited`, 17, true) +
          pad(fmtTimes(pairedRatio(x as unknown as BaseCell, gpu[1] as unknown as BaseCell)), 11, true) +
          pad("(vs wasm via init)", 50, true) + `   ${pad(fmtErr(x.lossRelDiff), 9)} ${fmtErr(x.gradRelDiff)}`),
    );
  }
}

function printSummary(cells: Cell[]): void {
  const at = (name: string) => cells.find((x) => x.contender === name && x.seconds !== null);
  const speedup = (a: string, b: string) => fmtTimes(pairedRatio(at(b), at(a)));
  const memRatio = (a: string, b: string) => {
    const x = at(a)?.memory?.peakRss, y = at(b)?.memory?.peakRss;
    return x && y ? fmtTimes(y / x) : "-";
  };
  console.log(`\n### Headline: speed-up of one physMoe step (paired median of per-round time ratios)\n`);
  printMarkdown(["ratio", "time", "peak RSS (other / ours)", "target"], [
    ["wasm vs tfjs-wasm", speedup("wasm", "tfjs-wasm"), memRatio("wasm", "tfjs-wasm"), ">= 10x"],
    ["wasm vs plain TS", speedup("wasm", "plain TS"), memRatio("wasm", "plain TS"), ">= 4x"],
    ["wasm out= vs tfjs-wasm", speedup("wasm out=", "tfjs-wasm"), memRatio("wasm out=", "tfjs-wasm"), ""],
    ["wasm out= vs plain TS", speedup("wasm out=", "plain TS"), memRatio("wasm out=", "plain TS"), ""],
    ["wasm vs js", speedup("wasm", "js"), memRatio("wasm", "js"), ""],
  ]);
}

// ---------------------------------------------------------------------------------------
// Main

async function main(): Promise<number> {
  const cfg: Config = parseArgs(process.argv.slice(2), ARGS);
  await initTf();
  const probeName = cfg.extra.get("--probe");
  if (typeof probeName === "string") {
    await probe(cfg, probeName);
    return 0;
  }
  const env = await collectEnv();
  printHeader(
    "# softmargin physMoe benchmark (one valueAndGrad step; SPEC's default weights, tail experts the upper half; " +
      "long-tailed labels, group rule: bench/moe_data.ts)",
    env,
  );
  console.log(
    methodLine(
      cfg,
      "this/wasm: paired median of the per-round time ratio of this contender and wasm. Errors vs the float64 " +
        "reference (js.physMoe): |loss - ref| / |ref| and the largest max|g - ref| / max|ref| over the 12 gradients. " +
        "Memory: a fresh process per contender (see the module doc); peak RSS = VmHWM after one step - VmRSS before.",
    ),
  );
  const all: Cell[] = [];
  const asyncCells: AsyncCell[] = [];
  const t0 = now();
  const measurer = new Measurer();
  for (const [i, shape] of cfg.shapes.entries()) {
    const ctx = makeCtx(shape, 1234 + i);
    const r = js.physMoe.valueAndGrad(ctx.inputs, { tailExperts: tailOf(ctx.e) });
    const ref: Out = { loss: r.loss as number, grads: gradList(r.grads) };
    console.log(
      `\nreference parts: scl ${r.scl.toFixed(4)}, dol ${r.dol.toFixed(4)}, col ${r.col.toFixed(4)}, ` +
        `hier ${r.hier.toFixed(4)}, reg ${r.reg.toFixed(4)}; total ${(r.loss as number).toFixed(4)}`,
    );
    const memory = new Map<string, Memory>();
    if (!cfg.extra.has("--no-memory") && i === 0) {
      for (const k of CONTENDERS) {
        if (k.floor || cfg.skip.has(k.name.toLowerCase())) continue;
        const t = now();
        memory.set(k.name, probeInChild(cfg, k.name));
        console.log(`memory probe of ${k.name}: ${(now() - t).toFixed(1)} s`);
      }
    }
    const cells = await measurer.measure(cfg, ctx, "valueAndGrad", {
      contenders: CONTENDERS,
      newCell: (k): Cell => ({
        shape,
        mode: "valueAndGrad",
        ...emptyCell(k),
        memory: memory.get(k.name),
      }),
      units: 1,
      check: (cell, o) => check(cell, o, ref),
    });
    const gpu = cfg.extra.has("--no-webgpu") || cfg.skip.has("webgpu") || !("gpu" in navigator)
      ? []
      : await measureWebgpu(cfg, ctx, ref);
    printCell(cells, gpu);
    all.push(...cells);
    asyncCells.push(...gpu);
  }
  console.log(`\n# Summary (${env.runtime} ${env.version}, ${env.cpu}, ${env.date.slice(0, 10)})`);
  printSummary(all);
  const { failed, broken } = finishRun(
    all,
    t0,
    env,
    cfg,
    { config: configJson(cfg), results: all, webgpu: asyncCells },
    (x) => shapeName(x.shape),
  );
  const ours = (x: Cell) => CONTENDERS.find((k) => k.name === x.contender)?.ours ?? false;
  return broken.some(ours) || failed.some(ours) ? 1 : 0;
}

process.exitCode = await main();
