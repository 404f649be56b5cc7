/**
 * Benchmark of `marginHead` (kind `"arcface"`): the ArcFace head from embeddings
 * `x [N, D]` and class weights `W [C, D]`, fused on the WebAssembly backend (W streamed
 * in chunks of 128 classes, the `[N, C]` cosines never stored), against
 *
 * - `unfused`: the cosines materialised with TF.js wasm (normalise, `matMul`), downloaded,
 *   `wasm.arcface.valueAndGrad` on them, then the two gradient products and the
 *   normalisation backward in TF.js wasm ops;
 * - `tfjs-wasm`: everything in TF.js wasm ops, gradients by `tf.valueAndGrads`;
 *
 * with the peak memory of each, and the matrix product alone: softmargin's GEMM
 * micro-kernel used as the head uses it, against `tf.matMul` and a plain-TypeScript loop.
 *
 * Runs unchanged under Deno and Bun:
 *
 * ```sh
 * deno run -A bench/margin_head_bench.ts [--quick] [--json out.json]
 * bun bench/margin_head_bench.ts [--quick] [--json out.json]
 * ```
 *
 * Method: see `harness.ts`. Before the timed rounds of a cell each contender makes one
 * call that measures its memory (that call is its warm-up when it takes longer than the
 * warm-up time). Calls of tens of seconds (TF.js at C = 100000) get 1 timed sample.
 *
 * @module
 */
import process from "node:process";
import * as tf from "@tensorflow/tfjs";
import { js, type Matrix, wasm } from "../cpu.ts";
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
  fmtG,
  fmtMB,
  fmtRatio,
  fmtSamples,
  fmtSeconds,
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
  shapeName,
  sink,
  TF_WASM_HEAP_MAX,
  tfGuard,
  tfStatus,
  tfWasmHeapBytes,
} from "./harness.ts";
import { plainMatMulT, tfArcfaceLoss, tfNormalizeRows } from "./impls.ts";

// ---------------------------------------------------------------------------------------
// Command line

type Mode = "forward" | "valueAndGrad";
const MODES: readonly Mode[] = ["forward", "valueAndGrad"];
type Shape = readonly [number, number, number];

/** N x D x C: a face-recognition batch of 512-d embeddings, 10k and 100k identities. */
const SHAPES: readonly Shape[] = [[256, 512, 10000], [256, 512, 100000]];

const SCALE = 64;
const MARGIN = 0.5;
/** Classes per chunk of the head (src/wasm/margin_head.ts). */
const CHUNK = 128;

const ARGS: ArgSpec<Mode, Shape> = {
  file: "margin_head_bench.ts",
  modes: MODES,
  shapes: SHAPES,
  quickShapes: [SHAPES[0]],
  dims: 3,
  timing: {
    rounds: 5,
    roundTime: 0.5,
    warmupTime: 1,
    slowBudget: 20,
    minSamples: 1,
    noWarmupAbove: 5,
    skipAbove: Infinity,
  },
  quickTiming: {
    rounds: 2,
    roundTime: 0.2,
    warmupTime: 0.3,
    slowBudget: 2,
    minSamples: 1,
    noWarmupAbove: 2,
    skipAbove: 8,
  },
  help: {
    quick: `2 rounds, small budgets, only ${shapeName(SHAPES[0])} and GEMM at C = 1024; skips calls predicted > 8 s`,
    shapes: "256x512x10000,256x512x100000",
    skip: "tfjs-wasm,unfused",
  },
  extra: [
    {
      flag: "--gemm",
      value: true,
      help: `classes C of the GEMM-alone cells, N = 256, D = 512 (default 1024,10000; 1024 with --quick; "none")`,
    },
    {
      flag: "--ref-max-c",
      value: true,
      help: "largest C checked against the float64 reference (default 10000; above, against ours' float32 result)",
    },
  ],
};

type Config = BaseConfig<Mode, Shape>;

// ---------------------------------------------------------------------------------------
// The head: contenders

/** One shape's data and buffers. */
interface Ctx {
  n: number;
  d: number;
  c: number;
  /** Embeddings and class weights, uniform in (-1, 1). */
  x: Float32Array;
  W: Float32Array;
  labels: Int32Array;
  /** Preallocated gradient buffers (`ours out=`; the unfused path's arcface gradient). */
  outX: Float32Array;
  outW: Float32Array;
  outCos: Float32Array;
}

/** What a call produced; checked once, never retained. */
interface Out {
  loss?: number;
  gx?: Float32Array;
  gW?: Float32Array;
  /** Bytes of JS-side arrays the call held at its peak besides TF.js tensors and softmargin's memory. */
  jsBytes?: Record<string, number>;
}

type Contender = BaseContender<Ctx, Mode, Out> & { ours?: boolean };

const HEAD_OPTIONS = { kind: "arcface", scale: SCALE, margin: MARGIN } as const;

function oursContender(name: string, useOut: boolean): Contender {
  return {
    name,
    ours: true,
    make(ctx, mode) {
      if (useOut && mode === "forward") return "no gradient in forward (same call as `ours`)";
      const { n, d, c } = ctx;
      const inputs = { x: { data: ctx.x, shape: [n, d] } as Matrix, W: { data: ctx.W, shape: [c, d] } as Matrix };
      const all = { ...inputs, labels: ctx.labels };
      const out: Record<string, Matrix> = {
        x: { data: ctx.outX, shape: [n, d] },
        W: { data: ctx.outW, shape: [c, d] },
      };
      const options = useOut ? { ...HEAD_OPTIONS, out } : HEAD_OPTIONS;
      return {
        run: mode === "forward"
          ? (): Out => {
            const loss = wasm.marginHead.forward(all, options).loss as number;
            sink.value += loss;
            return { loss };
          }
          : (): Out => {
            const r = wasm.marginHead.valueAndGrad(all, options);
            sink.value += (r.loss as number) + r.grads.W.data[0];
            const gx = r.grads.x.data, gW = r.grads.W.data;
            return { loss: r.loss as number, gx, gW, jsBytes: { "gradients x, W": gx.byteLength + gW.byteLength } };
          },
      };
    },
  };
}

/**
 * The unfused path: the cosines on TF.js wasm (the non-transposed `matMul` form, the fast
 * one: W^T is formed with `tf.transpose`), downloaded, softmargin's `arcface` on them, the
 * gradient uploaded, and the backward products and normalisation backward in TF.js:
 *   dxn = G Wn, dWn = G^T xn, dx = (dxn - xn (xn . dxn)) / max(||x||, eps), same for W.
 */
const unfused: Contender = {
  name: "unfused",
  tfBackend: "wasm",
  make(ctx, mode) {
    if (tfStatus.wasm) return `backend unavailable: ${tfStatus.wasm}`;
    const { n, d, c, x, W, labels, outCos } = ctx;
    return { run: () => tfGuard(`unfused at ${shapeName([n, d, c])} ${mode}`, run) };
    function run(): Out {
      const f = tf.tidy(() => {
        const { unit: xn, inv: rx } = tfNormalizeRows(tf.tensor2d(x, [n, d]));
        const { unit: Wn, inv: rw } = tfNormalizeRows(tf.tensor2d(W, [c, d]));
        return { xn, rx, Wn, rw, cos: tf.matMul(xn, tf.transpose(Wn)) };
      });
      try {
        const cos = f.cos.dataSync() as Float32Array;
        f.cos.dispose();
        const cosM = { data: cos, shape: [n, c] as const };
        if (mode === "forward") {
          const loss = wasm.arcface.forward({ cos: cosM, labels }, { scale: SCALE, margin: MARGIN }).loss as number;
          sink.value += loss;
          return { loss, jsBytes: { "cos downloaded [N, C]": cos.byteLength } };
        }
        const r = wasm.arcface.valueAndGrad({ cos: cosM, labels }, {
          scale: SCALE,
          margin: MARGIN,
          out: { cos: { data: outCos, shape: [n, c] } },
        });
        let gx: Float32Array = new Float32Array(0), gW: Float32Array = gx;
        // (tf.tidy must not return the Float32Arrays: it walks every element of what it returns.)
        tf.tidy(() => {
          const G = tf.tensor2d(outCos, [n, c]);
          const dxn = tf.matMul(G, f.Wn);
          const dWn = tf.matMul(tf.transpose(G), f.xn);
          const back = (dv: tf.Tensor, v: tf.Tensor, inv: tf.Tensor) =>
            tf.mul(tf.sub(dv, tf.mul(v, tf.sum(tf.mul(dv, v), 1, true))), inv);
          gx = back(dxn, f.xn, f.rx).dataSync() as Float32Array;
          gW = back(dWn, f.Wn, f.rw).dataSync() as Float32Array;
        });
        sink.value += (r.loss as number) + gW[0];
        return {
          loss: r.loss as number,
          gx,
          gW,
          jsBytes: {
            "cos downloaded [N, C]": cos.byteLength,
            "arcface gradient [N, C]": outCos.byteLength,
            "gradients x, W": gx.byteLength + gW.byteLength,
          },
        };
      } finally {
        tf.dispose([f.xn, f.rx, f.Wn, f.rw, f.cos]);
      }
    }
  },
};

/**
 * Everything in TF.js wasm, as a TF.js user writes it: normalise, `tf.matMul(xn, Wn, false,
 * true)` (W is [C, D], one row per class), the ArcFace margin in tf ops (`tfArcfaceLoss`),
 * and `tf.valueAndGrads` w.r.t. x and W.
 */
const tfjsFull: Contender = {
  name: "tfjs-wasm",
  tfBackend: "wasm",
  make(ctx, mode) {
    if (tfStatus.wasm) return `backend unavailable: ${tfStatus.wasm}`;
    const { n, d, c, x, W, labels } = ctx;
    return { run: () => tfGuard(`tfjs-wasm at ${shapeName([n, d, c])} ${mode}`, run) };
    function run(): Out {
      let last: Out = {};
      tf.tidy(() => {
        const xt = tf.tensor2d(x, [n, d]), Wt = tf.tensor2d(W, [c, d]);
        const onehot = tf.oneHot(tf.tensor1d(labels, "int32"), c); // int32: see README
        const mask = tf.cast(onehot, "float32");
        const f = (a: tf.Tensor, b: tf.Tensor) =>
          tfArcfaceLoss(
            tf.matMul(tfNormalizeRows(a).unit, tfNormalizeRows(b).unit, false, true),
            onehot,
            mask,
            SCALE,
            MARGIN,
          );
        if (mode === "forward") {
          const loss = f(xt, Wt).dataSync()[0];
          sink.value += loss;
          last = { loss };
        } else {
          const { value, grads } = tf.valueAndGrads(f)([xt, Wt]);
          const loss = value.dataSync()[0];
          const gx = grads[0].dataSync() as Float32Array, gW = grads[1].dataSync() as Float32Array;
          sink.value += loss + gW[0];
          last = { loss, gx, gW, jsBytes: { "gradients x, W": gx.byteLength + gW.byteLength } };
        }
      });
      return last;
    }
  },
};

const HEAD_CONTENDERS: Contender[] = [
  oursContender("ours", false),
  oursContender("ours out=", true),
  unfused,
  tfjsFull,
];

// ---------------------------------------------------------------------------------------
// The head: measurement

/** Peak memory of one call of a contender, and what is counted. */
interface Memory {
  /** The sum of `parts`. */
  total: number;
  /** Bytes by what holds them. */
  parts: Record<string, number>;
  /** TF.js wasm heap size after the call: the high-water mark of the process so far (not in the total). */
  tfHeap?: number | null;
}

interface Cell extends BaseCell {
  shape: [number, number, number];
  mode: Mode;
  /** What the accuracy is measured against. */
  reference: "float64 (js.marginHead)" | "ours (float32)" | "none";
  gxRelDiff?: number;
  gWRelDiff?: number;
  /** The memory probe's call: its seconds (with tf.profile where TF.js) and memory. */
  probeSeconds?: number;
  memory?: Memory;
  /** How a deferred call was measured. */
  remark?: string;
  /** A deferred call: the TF.js wasm heap size after it. */
  tfHeapAfter?: number | null;
}

function newCell(ctx: Ctx, mode: Mode, k: { name: string; floor?: boolean }): Cell {
  return {
    shape: [ctx.n, ctx.d, ctx.c],
    mode,
    ...emptyCell(k),
    reference: "none",
  };
}

function makeCtx(n: number, d: number, c: number, seed: number): Ctx {
  const rand = mulberry32(seed);
  const x = new Float32Array(n * d);
  for (let i = 0; i < x.length; i++) x[i] = rand() * 2 - 1;
  const W = new Float32Array(c * d);
  for (let i = 0; i < W.length; i++) W[i] = rand() * 2 - 1;
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) labels[i] = Math.floor(rand() * c);
  return {
    n,
    d,
    c,
    x,
    W,
    labels,
    outX: new Float32Array(n * d).fill(0),
    outW: new Float32Array(c * d).fill(0),
    outCos: new Float32Array(n * c).fill(0),
  };
}

interface Ref {
  kind: Cell["reference"];
  loss: number;
  gx?: Float32Array;
  gW?: Float32Array;
}

/** Runs one call of `k` and measures its memory; returns the call's seconds and output. */
async function probe(k: Contender, ctx: Ctx, mode: Mode, cell: Cell): Promise<{ seconds: number; out: Out } | null> {
  let runner;
  try {
    runner = k.make(ctx, mode);
  } catch {
    return null; // the harness reports it
  }
  if (typeof runner === "string") return null;
  let t0 = now();
  try {
    if (k.tfBackend && tf.getBackend() !== k.tfBackend) await tf.setBackend(k.tfBackend);
    const rt = runtime();
    let out: Out = {};
    t0 = now();
    if (k.tfBackend) {
      const before = tf.memory().numBytes;
      const info = await tf.profile(() => {
        out = runner.run();
      });
      const seconds = now() - t0;
      const parts: Record<string, number> = {
        "TF.js tensors (tf.profile peakBytes)": info.peakBytes - before,
        ...out.jsBytes,
      };
      if (k === unfused) parts["softmargin wasm memory"] = rt.buffer.byteLength;
      cell.memory = { total: sum(parts), parts, tfHeap: tfWasmHeapBytes() };
      cell.probeSeconds = seconds;
      return { seconds, out };
    }
    out = runner.run();
    const seconds = now() - t0;
    const parts: Record<string, number> = { "softmargin wasm memory": rt.buffer.byteLength, ...out.jsBytes };
    cell.memory = { total: sum(parts), parts };
    cell.probeSeconds = seconds;
    return { seconds, out };
  } catch (e) {
    cell.error = `failed: ${errorText(e)}`;
    cell.probeSeconds = now() - t0;
    return null;
  }
}

function sum(parts: Record<string, number>): number {
  return Object.values(parts).reduce((a, b) => a + b, 0);
}

function check(cell: Cell, o: Out, ref: Ref, mode: Mode): void {
  cell.reference = ref.kind;
  cell.lossRelDiff = relDiff(o.loss, ref.loss);
  if (mode === "valueAndGrad" && ref.gx && ref.gW) {
    cell.gxRelDiff = o.gx ? gradDiff(o.gx, ref.gx) : Infinity;
    cell.gWRelDiff = o.gW ? gradDiff(o.gW, ref.gW) : Infinity;
    cell.gradRelDiff = Math.max(cell.gxRelDiff, cell.gWRelDiff);
  }
}

const measurer = new Measurer();

/**
 * Peak bytes of TF.js tensors per class and per (N + D), a priori, from a 256 x 512 x 10000 run:
 * used to predict whether a TF.js call fits in its wasm heap when no smaller shape was probed.
 */
const TF_BYTES_PER_CLASS_ROW: Record<string, number> = {
  "unfused|forward": 12.2,
  "unfused|valueAndGrad": 19.1,
  "tfjs-wasm|forward": 25.5,
  "tfjs-wasm|valueAndGrad": 68.5,
};

/** The same, measured by this run's probes (latest shape). */
const tfBytesPerClassRow = new Map<string, number>();

/** A TF.js call predicted not to fit in the wasm heap: tried once, at the very end of the run. */
interface Deferred {
  k: Contender;
  ctx: Ctx;
  mode: Mode;
  cell: Cell;
  ref: Ref | null;
}
const deferred: Deferred[] = [];

/** Room for fragmentation and the heap's other contents: a call predicted above this share of the heap is deferred. */
const HEAP_SHARE = 0.85;

async function measureHead(
  cfg: Config,
  ctx: Ctx,
  mode: Mode,
  ref64: Ref | null,
  refs: { ours?: Ref },
): Promise<Cell[]> {
  const { n, d, c } = ctx;
  // Memory probes, one call per contender, in a fixed order (ours first: softmargin's memory
  // only grows, and the unfused path's arcface call uses it too).
  const probes = new Map<string, Cell>();
  const prewarmed = new Map<string, number>();
  const later = new Map<string, string>();
  for (const k of HEAD_CONTENDERS) {
    const cell = newCell(ctx, mode, k);
    probes.set(k.name, cell);
    if (cfg.skip.has(k.name.toLowerCase())) continue;
    const key = `${k.name}|${mode}`;
    if (k.tfBackend && !tfStatus.wasm) {
      // An Emscripten abort (out of memory) kills the TF.js wasm backend for the rest of the
      // process, so a call predicted not to fit is left to the end of the run.
      const perUnit = tfBytesPerClassRow.get(key) ?? TF_BYTES_PER_CLASS_ROW[key] ?? 0;
      const predicted = perUnit * c * (n + d);
      if (predicted > HEAP_SHARE * TF_WASM_HEAP_MAX) {
        const why = `deferred: predicted peak ${(predicted / 1e9).toFixed(1)} GB of TF.js tensors, more than ` +
          `${HEAP_SHARE} x the ${
            (TF_WASM_HEAP_MAX / 2 ** 30).toFixed(0)
          } GiB wasm heap; tried once at the end of the run`;
        later.set(k.name, why);
        deferred.push({ k, ctx, mode, cell, ref: null });
        continue;
      }
    }
    const r = await probe(k, ctx, mode, cell);
    if (!r) continue;
    if (r.seconds >= cfg.warmupTime) prewarmed.set(k.name, r.seconds);
    const tensors = cell.memory?.parts["TF.js tensors (tf.profile peakBytes)"];
    if (tensors !== undefined) tfBytesPerClassRow.set(key, tensors / (c * (n + d)));
    // Without a float64 reference, ours' first result is the one to agree with.
    if (k.name === "ours" && !ref64 && !refs.ours) {
      refs.ours = { kind: "ours (float32)", loss: r.out.loss!, gx: r.out.gx, gW: r.out.gW };
    }
  }
  const skip = new Set([...cfg.skip, ...[...later.keys()].map((s) => s.toLowerCase())]);
  const cells = await measurer.measure({ ...cfg, skip }, ctx, mode, {
    contenders: HEAD_CONTENDERS,
    newCell: (k) => {
      const p = probes.get(k.name)!;
      return p.error ? { ...newCell(ctx, mode, k), probeSeconds: p.probeSeconds } : p;
    },
    units: 2 * n * d * c,
    prewarmed,
    check: (cell, o) => {
      const ref = ref64 ?? refs.ours;
      if (ref) check(cell, o, ref, mode);
    },
  });
  for (const cell of cells) {
    // A probe that failed makes the cell failed even when the timed calls worked.
    const p = probes.get(cell.contender)!;
    if (p.error && !cell.error) cell.error = p.error;
    const why = later.get(cell.contender);
    if (why) cell.note = why;
  }
  for (const dfr of deferred) if (dfr.ctx === ctx && dfr.mode === mode) dfr.ref = ref64 ?? refs.ours ?? null;
  return cells;
}

/**
 * The deferred TF.js calls, one each, after everything else (an abort ends TF.js for the
 * process). Not under tf.profile: when the wasm module aborts inside a profiled kernel, the
 * profiler throws a TypeError of its own and leaves the abort as an unhandled rejection.
 */
async function runDeferred(): Promise<Cell[]> {
  const done: Cell[] = [];
  for (const { k, ctx, mode, cell, ref } of deferred) {
    cell.note = undefined;
    cell.error = undefined;
    done.push(cell);
    let runner;
    try {
      runner = tfStatus.wasm ? `backend unavailable: ${tfStatus.wasm}` : k.make(ctx, mode);
    } catch (e) {
      runner = `setup failed: ${errorText(e)}`;
    }
    if (typeof runner === "string") {
      cell.error = runner;
      continue;
    }
    if (k.tfBackend && tf.getBackend() !== k.tfBackend) await tf.setBackend(k.tfBackend);
    const t0 = now();
    try {
      const out = runner.run();
      const seconds = now() - t0;
      cell.seconds = seconds;
      cell.sampleSeconds = [seconds];
      cell.samples = 1;
      cell.callsPerSample = 1;
      cell.remark = "1 call, at the end of the run (memory not profiled)";
      if (ref) check(cell, out, ref, mode);
    } catch (e) {
      cell.error = `failed: ${errorText(e)}`;
    }
    cell.probeSeconds = now() - t0;
    cell.tfHeapAfter = tfWasmHeapBytes();
  }
  return done;
}

// ---------------------------------------------------------------------------------------
// GEMM alone

type GemmMode = "gemm";

/** GEMM data: everything our kernel reads in WebAssembly memory, the same as arrays and tensors for the others. */
interface GemmCtx {
  n: number;
  d: number;
  c: number;
  x: Float32Array;
  W: Float32Array;
  /** [N, CHUNK]: the gradient blocks G and H of one chunk (the same for every chunk here). */
  G: Float32Array;
  /** Addresses in softmargin's memory. */
  at: { X: number; W: number; WT: number; G: number; H: number; S: number; dX: number; dWJ: number };
  /** TF.js tensors, made once (the matMul alone is timed). */
  t: { x: tf.Tensor; W: tf.Tensor; WT: tf.Tensor; G: tf.Tensor } | null;
  tfOuts: tf.Tensor[];
  plainOut: Float32Array | null;
  free(): void;
}

/** A sampled check of an output: entries (i, j) of a product and the function that reads them. */
interface GemmOut {
  /** Rows and columns of the product, and its entry (i, j). */
  rows: number;
  cols: number;
  get(i: number, j: number): number;
  /** The float64 value of entry (i, j). */
  ref(i: number, j: number): number;
}

type GemmContender = BaseContender<GemmCtx, GemmMode, GemmOut> & { group: string };

async function makeGemmCtx(n: number, d: number, c: number, seed: number): Promise<GemmCtx> {
  const rand = mulberry32(seed);
  const x = Float32Array.from({ length: n * d }, () => rand() * 2 - 1);
  const W = Float32Array.from({ length: c * d }, () => rand() * 2 - 1);
  const G = Float32Array.from({ length: n * CHUNK }, () => (rand() * 2 - 1) * 1e-3);
  const rt = runtime();
  const ptrs: number[] = [];
  const m = (floats: number) => {
    const p = rt.malloc(floats * 4);
    ptrs.push(p);
    return p;
  };
  const at = {
    X: m(n * d),
    W: m(c * d),
    WT: m(c * d),
    G: m(n * CHUNK),
    H: m(n * CHUNK),
    S: m(n * CHUNK),
    dX: m(n * d),
    dWJ: m(CHUNK * d),
  };
  const f32 = rt.f32;
  f32.set(x, at.X >>> 2);
  f32.set(W, at.W >>> 2);
  // W^T pre-transposed chunk by chunk: chunk J (cols classes from j0) is [D, cols] at WT + j0 * D.
  for (let j0 = 0; j0 < c; j0 += CHUNK) {
    const cols = Math.min(CHUNK, c - j0), base = (at.WT >>> 2) + j0 * d;
    for (let jj = 0; jj < cols; jj++) for (let k = 0; k < d; k++) f32[base + k * cols + jj] = W[(j0 + jj) * d + k];
  }
  f32.set(G, at.G >>> 2);
  f32.set(G, at.H >>> 2);
  let t: GemmCtx["t"] = null;
  if (!tfStatus.wasm) {
    if (tf.getBackend() !== "wasm") await tf.setBackend("wasm");
    const Wt = tf.tensor2d(W, [c, d]);
    const big = Float32Array.from({ length: n * c }, (_, i) => G[Math.floor(i / c) * CHUNK + ((i % c) % CHUNK)]);
    t = { x: tf.tensor2d(x, [n, d]), W: Wt, WT: tf.transpose(Wt), G: tf.tensor2d(big, [n, c]) };
  }
  const ctx: GemmCtx = {
    n,
    d,
    c,
    x,
    W,
    G,
    at,
    t,
    tfOuts: [],
    plainOut: null,
    free() {
      for (const p of ptrs) rt.free(p);
      if (ctx.t) tf.dispose(Object.values(ctx.t));
      tf.dispose(ctx.tfOuts);
    },
  };
  return ctx;
}

/** x_i . W_j in float64. */
function dotRef(ctx: GemmCtx, i: number, j: number): number {
  let s = 0;
  for (let k = 0; k < ctx.d; k++) s += ctx.x[i * ctx.d + k] * ctx.W[j * ctx.d + k];
  return s;
}

/** (G W)[i, k] over all classes, G's chunk repeated for every chunk, in float64. */
function gwRef(ctx: GemmCtx, i: number, k: number): number {
  let s = 0;
  for (let j = 0; j < ctx.c; j++) s += ctx.G[i * CHUNK + (j % CHUNK)] * ctx.W[j * ctx.d + k];
  return s;
}

/** (G^T X)[j, k] for a class j of the full product (G's column j mod CHUNK), in float64. */
function gtxRef(ctx: GemmCtx, j: number, k: number): number {
  let s = 0;
  for (let i = 0; i < ctx.n; i++) s += ctx.G[i * CHUNK + (j % CHUNK)] * ctx.x[i * ctx.d + k];
  return s;
}

/** Our kernel as the head calls it, over all C classes in chunks of 128. */
function oursGemm(which: "X W^T" | "dX += G W" | "dW = H^T X"): GemmContender {
  return {
    name: `ours ${which}`,
    group: which,
    make(ctx) {
      const { n, d, c, at } = ctx;
      const k = runtime().k;
      const rt = runtime();
      if (which === "X W^T") {
        return {
          run(): GemmOut {
            for (let j0 = 0; j0 < c; j0 += CHUNK) {
              const cols = Math.min(CHUNK, c - j0);
              k.gemm(at.S, cols, n, cols, d, at.X, d, 1, at.WT + j0 * d * 4, cols, 0);
            }
            // S holds the last chunk [N, cols].
            const j0 = Math.floor((c - 1) / CHUNK) * CHUNK, cols = c - j0;
            sink.value += rt.f32[at.S >>> 2];
            return {
              rows: n,
              cols,
              get: (i, j) => rt.f32[(at.S >>> 2) + i * cols + j],
              ref: (i, j) => dotRef(ctx, i, j0 + j),
            };
          },
        };
      }
      if (which === "dX += G W") {
        return {
          run(): GemmOut {
            rt.f32.fill(0, at.dX >>> 2, (at.dX >>> 2) + n * d);
            for (let j0 = 0; j0 < c; j0 += CHUNK) {
              const cols = Math.min(CHUNK, c - j0);
              k.gemm(at.dX, d, n, d, cols, at.G, cols, 1, at.W + j0 * d * 4, d, 1);
            }
            sink.value += rt.f32[at.dX >>> 2];
            // As in the head, chunk J's G block is [N, cols] with row stride cols (the one
            // [N, 128] buffer, so the last, shorter chunk reads it with a shorter stride).
            return {
              rows: n,
              cols: d,
              get: (i, kk) => rt.f32[(at.dX >>> 2) + i * d + kk],
              ref: (i, kk) => gemmGwRef(ctx, i, kk),
            };
          },
        };
      }
      return {
        run(): GemmOut {
          for (let j0 = 0; j0 < c; j0 += CHUNK) {
            const cols = Math.min(CHUNK, c - j0);
            k.gemm(at.dWJ, d, cols, d, n, at.H, 1, cols, at.X, d, 0);
          }
          const j0 = Math.floor((c - 1) / CHUNK) * CHUNK, cols = c - j0;
          sink.value += rt.f32[at.dWJ >>> 2];
          return {
            rows: cols,
            cols: d,
            get: (j, kk) => rt.f32[(at.dWJ >>> 2) + j * d + kk],
            ref: (j, kk) => {
              // H read as [N, cols] (stride cols) over the buffer.
              let s = 0;
              for (let i = 0; i < n; i++) s += ctx.G[i * cols + j] * ctx.x[i * d + kk];
              return s;
            },
          };
        },
      };
    },
  };
}

/** dX as our loop computes it: chunk J reads the [N, cols] block of the G buffer with stride cols. */
function gemmGwRef(ctx: GemmCtx, i: number, kk: number): number {
  const { c, d } = ctx;
  let s = 0;
  for (let j0 = 0; j0 < c; j0 += CHUNK) {
    const cols = Math.min(CHUNK, c - j0);
    for (let jj = 0; jj < cols; jj++) s += ctx.G[i * cols + jj] * ctx.W[(j0 + jj) * d + kk];
  }
  return s;
}

function tfGemm(which: "x W^T (transposeB)" | "x W^T (W^T stored)" | "G W" | "G^T x (transposeA)"): GemmContender {
  const group = which.startsWith("x") ? "X W^T" : which === "G W" ? "dX += G W" : "dW = H^T X";
  return {
    name: `tfjs ${which}`,
    group,
    tfBackend: "wasm",
    make(ctx) {
      if (!ctx.t) return `backend unavailable: ${tfStatus.wasm}`;
      const t = ctx.t;
      const op = which === "x W^T (transposeB)"
        ? () => tf.matMul(t.x, t.W, false, true)
        : which === "x W^T (W^T stored)"
        ? () => tf.matMul(t.x, t.WT)
        : which === "G W"
        ? () => tf.matMul(t.G, t.W)
        : () => tf.matMul(t.G, t.x, true, false);
      let last: tf.Tensor | null = null;
      return {
        run(): GemmOut {
          if (last) {
            ctx.tfOuts.splice(ctx.tfOuts.indexOf(last), 1);
            last.dispose();
          }
          const y = tfGuard(`tfjs ${which} at C = ${ctx.c}`, op);
          last = y;
          ctx.tfOuts.push(y);
          const [rows, cols] = y.shape as [number, number];
          let data: Float32Array | null = null;
          const get = (i: number, j: number) => (data ??= y.dataSync() as Float32Array)[i * cols + j];
          return {
            rows,
            cols,
            get,
            ref: group === "X W^T"
              ? (i, j) => dotRef(ctx, i, j)
              : group === "dX += G W"
              ? (i, k) => gwRef(ctx, i, k)
              : (j, k) => gtxRef(ctx, j, k),
          };
        },
      };
    },
  };
}

const plainGemm: GemmContender = {
  name: "plain TS x W^T",
  group: "X W^T",
  make(ctx) {
    const { n, d, c, x, W } = ctx;
    return {
      run(): GemmOut {
        const out = (ctx.plainOut ??= new Float32Array(n * c));
        plainMatMulT(x, W, out, n, d, c);
        sink.value += out[0];
        return { rows: n, cols: c, get: (i, j) => out[i * c + j], ref: (i, j) => dotRef(ctx, i, j) };
      },
    };
  },
};

const GEMM_CONTENDERS: GemmContender[] = [
  oursGemm("X W^T"),
  tfGemm("x W^T (transposeB)"),
  tfGemm("x W^T (W^T stored)"),
  plainGemm,
  oursGemm("dX += G W"),
  tfGemm("G W"),
  oursGemm("dW = H^T X"),
  tfGemm("G^T x (transposeA)"),
];

interface GemmCell extends BaseCell {
  shape: [number, number, number];
  mode: GemmMode;
  gflops: number | null;
  /** max |out - ref| / max |ref| over 64 sampled entries (float64 reference). */
  sampledRelDiff?: number;
}

const gemmMeasurer = new Measurer();

async function measureGemm(cfg: Config, ctx: GemmCtx): Promise<GemmCell[]> {
  const { n, d, c } = ctx;
  const flops = 2 * n * d * c;
  const rand = mulberry32(99);
  const cells = await gemmMeasurer.measure(cfg, ctx, "gemm", {
    contenders: GEMM_CONTENDERS,
    newCell: (k): GemmCell => ({
      shape: [n, d, c],
      mode: "gemm",
      contender: k.name,
      floor: false,
      seconds: null,
      gflops: null,
      spread: null,
      samples: 0,
      callsPerSample: 0,
      sampleSeconds: [],
      warmup: false,
    }),
    units: flops,
    check: (cell, o) => {
      let diff = 0, max = 0;
      for (let s = 0; s < 64; s++) {
        const i = Math.floor(rand() * o.rows), j = Math.floor(rand() * o.cols);
        const r = o.ref(i, j), v = o.get(i, j);
        const e = Math.abs(v - r);
        if (!(e <= diff)) diff = e;
        max = Math.max(max, Math.abs(r));
      }
      cell.sampledRelDiff = diff / max;
      cell.gradRelDiff = cell.sampledRelDiff; // counted as an output error (BROKEN above 1e-3)
    },
  });
  for (const cell of cells) if (cell.seconds !== null) cell.gflops = flops / cell.seconds / 1e9;
  return cells;
}

// ---------------------------------------------------------------------------------------
// Output

function printHead(cells: Cell[]): void {
  const { shape: [n, d, c], mode } = cells[0];
  const gf = (mode === "forward" ? 2 : 6) * n * d * c / 1e9;
  console.log(
    `\n## marginHead ${n} x ${d} x ${c} (N x D x C), ${mode} (${gf.toFixed(1)} GFLOP of products per call ` +
      `unfused, ${((mode === "forward" ? 2 : 8) * n * d * c / 1e9).toFixed(1)} fused: the head recomputes X W^T)`,
  );
  const ref = cells.find((x) => x.reference !== "none")?.reference ?? "none";
  const head = pad("contender", 12) + pad("s/call", 11, true) + pad("spread", 8, true) + pad("samples", 9, true) +
    pad("probe", 10, true) + pad("ours/this", 11, true) + pad("peak MB", 9, true) + pad("TF heap MB", 12, true) +
    `   loss err  x err     W err    (vs ${ref})`;
  console.log(head);
  console.log("-".repeat(head.length));
  const ours = cells.find((x) => x.contender === "ours")?.seconds ?? null;
  for (const x of cells) {
    if (x.error || x.note) {
      console.log(pad(x.contender, 12) + pad(x.error ? `FAILED: ${x.error}` : x.note!, 60, true));
      continue;
    }
    console.log(
      pad(x.contender, 12) + pad(fmtSeconds(x.seconds), 11, true) + pad(fmtSpread(x), 8, true) +
        pad(fmtSamples(x), 9, true) + pad(fmtSeconds(x.probeSeconds ?? null), 10, true) +
        pad(x.contender === "ours" ? "" : fmtRatio(x.seconds, ours), 11, true) +
        pad(fmtMB(x.memory?.total ?? null), 9, true) + pad(fmtMB(x.memory?.tfHeap ?? null), 12, true) +
        `   ${pad(fmtErr(x.lossRelDiff), 9)} ${pad(fmtErr(x.gxRelDiff), 9)} ${fmtErr(x.gWRelDiff)}`,
    );
  }
  for (const x of cells) {
    if (!x.memory) continue;
    const parts = Object.entries(x.memory.parts).map(([k, v]) => `${k} ${fmtMB(v)}`).join(" + ");
    console.log(`  memory of ${x.contender}: ${parts} = ${fmtMB(x.memory.total)} MB`);
  }
}

function printGemm(cells: GemmCell[]): void {
  const { shape: [n, d, c] } = cells[0];
  console.log(
    `\n## GEMM alone, ${n} x ${d} x ${c} (${(2 * n * d * c / 1e9).toFixed(2)} GFLOP per product; ours in chunks ` +
      `of ${CHUNK} classes, as the head calls it)`,
  );
  const head = pad("contender", 28) + pad("GFLOP/s", 9, true) + pad("s/call", 11, true) + pad("spread", 8, true) +
    pad("samples", 9, true) + pad("ours/this", 11, true) + "   sampled err";
  console.log(head);
  console.log("-".repeat(head.length));
  for (const x of cells) {
    if (x.error || x.note) {
      console.log(pad(x.contender, 28) + pad(x.error ? `FAILED: ${x.error}` : x.note!, 60, true));
      continue;
    }
    const k = GEMM_CONTENDERS.find((k) => k.name === x.contender)!;
    const ours = cells.find((y) => y.contender === `ours ${k.group}`);
    console.log(
      pad(x.contender, 28) + pad(fmtG(x.gflops), 9, true) + pad(fmtSeconds(x.seconds), 11, true) +
        pad(fmtSpread(x), 8, true) + pad(fmtSamples(x), 9, true) +
        pad(x === ours ? "" : fmtRatio(ours?.gflops ?? null, x.gflops), 11, true) + `   ${fmtErr(x.sampledRelDiff)}`,
    );
  }
}

/** A cell's median time, `failed`, `skipped`, `deferred` or `n/a`; `(1 call)` for a deferred call. */
function secondsText(x: Cell | undefined): string {
  if (x?.note?.startsWith("deferred")) return "deferred";
  return missing(x) ?? `${fmtSeconds(x!.seconds)}${x!.remark ? " (1 call)" : ""}`;
}

function printSummary(all: Cell[], gemm: GemmCell[], cfg: Config, gemmC: number[]): void {
  const shapes = cfg.shapes.map(shapeName);
  const at = (name: string, mode: Mode, s: Shape) =>
    all.find((x) => x.contender === name && x.mode === mode && shapeName(x.shape) === shapeName(s));
  for (const mode of cfg.modes) {
    if (!all.some((x) => x.mode === mode)) continue;
    console.log(`\n### marginHead ${mode}: seconds per call (median)\n`);
    printMarkdown(
      ["contender", ...shapes],
      HEAD_CONTENDERS.map((k) => [k.name, ...cfg.shapes.map((s) => secondsText(at(k.name, mode, s)))])
        .filter((r) => !r.slice(1).every((v) => v === "n/a")),
    );
    console.log(`\n### marginHead ${mode}: speed-up of ours (time of the other / time of ours)\n`);
    const sp = (b: string) =>
      cfg.shapes.map((s) => fmtRatio(at(b, mode, s)?.seconds ?? null, at("ours", mode, s)?.seconds ?? null));
    printMarkdown(["ratio", ...shapes], [["*unfused / ours*", ...sp("unfused")], [
      "*tfjs-wasm / ours*",
      ...sp("tfjs-wasm"),
    ]]);
    console.log(`\n### marginHead ${mode}: peak memory, MB (see the per-cell lines for what is counted)\n`);
    printMarkdown(
      ["contender", ...shapes],
      HEAD_CONTENDERS.map((k) => [
        k.name,
        ...cfg.shapes.map((s) => {
          const x = at(k.name, mode, s);
          return x?.memory ? fmtMB(x.memory.total) : missing(x) ?? "-";
        }),
      ]).filter((r) => !r.slice(1).every((v) => v === "n/a" || v === "-")),
    );
  }
  if (gemm.length) {
    console.log(`\n### GEMM alone (N = 256, D = 512): GFLOP/s (median)\n`);
    const g = (name: string, c: number) => gemm.find((x) => x.contender === name && x.shape[2] === c);
    printMarkdown(
      ["contender", ...gemmC.map((c) => `C = ${c}`)],
      GEMM_CONTENDERS.map((k) => [k.name, ...gemmC.map((c) => missing(g(k.name, c)) ?? fmtG(g(k.name, c)!.gflops))]),
    );
  }
}

// ---------------------------------------------------------------------------------------
// Main

async function main(): Promise<number> {
  const cfg: Config = parseArgs(process.argv.slice(2), ARGS);
  const gemmArg = cfg.extra.get("--gemm");
  const gemmC = typeof gemmArg === "string"
    ? (gemmArg === "none" ? [] : gemmArg.split(",").map((s) => parseInt(s, 10)))
    : cfg.quick
    ? [1024]
    : [1024, 10000];
  const refArg = cfg.extra.get("--ref-max-c");
  const refMaxC = typeof refArg === "string" ? parseInt(refArg, 10) : 10000;
  await initTf();
  const env = await collectEnv();
  printHeader(
    `# softmargin marginHead benchmark (kind arcface, s = ${SCALE}, m = ${MARGIN}, mean reduction; x, W ~ U(-1, 1), ` +
      `random labels)`,
    env,
  );
  console.log(
    methodLine(
      cfg,
      "probe: the memory-probe call before the rounds (TF.js's under tf.profile), its time is the warm-up " +
        "estimate. ours/this: time of the other / time of ours. Errors: |loss - ref| / |ref|, max|g - ref| / max|ref| " +
        `for x and W, against the float64 reference (js.marginHead) where C <= ${refMaxC}, else against ours' float32 ` +
        "result. Peak memory: see the per-cell lines.",
    ),
  );

  const all: Cell[] = [];
  const t0 = now();
  for (const [i, [n, d, c]] of cfg.shapes.entries()) {
    const ctx = makeCtx(n, d, c, 777 + i);
    let ref64: Ref | null = null;
    if (c <= refMaxC) {
      const t = now();
      const r = js.marginHead.valueAndGrad({
        x: { data: ctx.x, shape: [n, d] },
        W: { data: ctx.W, shape: [c, d] },
        labels: ctx.labels,
      }, HEAD_OPTIONS);
      ref64 = { kind: "float64 (js.marginHead)", loss: r.loss as number, gx: r.grads.x.data, gW: r.grads.W.data };
      console.log(`\n(float64 reference at ${shapeName([n, d, c])}: ${(now() - t).toFixed(1)} s)`);
    }
    const refs: { ours?: Ref } = {};
    // valueAndGrad first when there is no float64 reference: ours' result is then the reference of both modes.
    const first = (m: Mode) => (m === "valueAndGrad" ? 0 : 1);
    const modes = ref64 ? cfg.modes : [...cfg.modes].sort((a, b) => first(a) - first(b));
    for (const mode of modes) {
      const cells = await measureHead(cfg, ctx, mode, ref64, refs);
      printHead(cells);
      all.push(...cells);
    }
  }
  const gemm: GemmCell[] = [];
  for (const [i, c] of gemmC.entries()) {
    const ctx = await makeGemmCtx(256, 512, c, 555 + i);
    try {
      const cells = await measureGemm(cfg, ctx);
      printGemm(cells);
      gemm.push(...cells);
    } finally {
      ctx.free();
    }
  }
  if (deferred.length) {
    console.log(`\n## Deferred TF.js calls (predicted to exceed the TF.js wasm heap), one call each`);
    for (const cell of await runDeferred()) {
      const heap = `TF.js wasm heap ${fmtMB(cell.tfHeapAfter ?? null)} MB after it`;
      console.log(
        `${cell.contender} at ${shapeName(cell.shape)} ${cell.mode}: ` +
          (cell.error
            ? `FAILED: ${cell.error}` + (cell.probeSeconds ? ` after ${fmtSeconds(cell.probeSeconds)}` : "") +
              `, ${heap}`
            : `${fmtSeconds(cell.seconds)}, ${heap}, loss err ${fmtErr(cell.lossRelDiff)}, ` +
              `x err ${fmtErr(cell.gxRelDiff)}, W err ${fmtErr(cell.gWRelDiff)}`),
      );
    }
  }
  console.log(`\n# Summary (${env.runtime} ${env.version}, ${env.cpu}, ${env.date.slice(0, 10)})`);
  printSummary(all, gemm, cfg, gemmC);

  const { failed, broken } = finishRun<BaseCell & { shape: number[]; mode: string }>(
    [...all, ...gemm],
    t0,
    env,
    cfg,
    { config: { ...configJson(cfg), gemmC, refMaxC }, results: all, gemm },
    (x) => `${shapeName(x.shape)} ${x.mode}`,
  );
  const ours = (x: BaseCell) => x.contender.startsWith("ours");
  return broken.some(ours) || failed.some(ours) ? 1 : 0;
}

process.exitCode = await main();
