/**
 * Benchmark of the WebGPU backend (`init({ backend: "webgpu" })`) against the WebAssembly
 * one (`init({ backend: "wasm" })`), `valueAndGrad`, on the shapes of the other benchmarks:
 * `crossEntropy` and `arcface` on `ROW_SHAPES`, `marginHead` (kind `"arcface"`) at
 * N = 256, D = 512, C = 10000 (`--head-c 10000,100000` adds C = 100000; C = 1000 with
 * `--quick`). Per shape:
 *
 * 1. `wasm out=`: host arrays, `options.out` given; the CPU baseline.
 * 2. `webgpu resident`: the inputs already in GPUBuffers, `options.out` GPU buffers (the
 *    zero-allocation GPU-resident path): the kernel and the readback of the N row losses,
 *    no [N, C] transfer. G logits/s, and the effective bandwidth at 8 bytes per logit (read
 *    the logits, write the gradient). `arcface` on resident cosines makes one more small
 *    dispatch and readback first (each row's label cosine, for the host's margin).
 * 3. `webgpu host`: Float32Arrays in and out (`options.out` host): upload, kernel, readback,
 *    what a user holding CPU arrays gets. Beside it, measured in the same rounds,
 *    `upload alone` (`queue.writeBuffer` of the inputs' bytes, then
 *    `await queue.onSubmittedWorkDone()`) and `readback alone` (`copyBufferToBuffer` of the
 *    gradients' bytes into a MAP_READ buffer, `mapAsync`, copy out of `getMappedRange`),
 *    so the table shows where the host path's time goes.
 * 4. Dispatch latency: `crossEntropy` from 1 x 8 to 1024 x 1000 with host arrays, webgpu
 *    against wasm (and webgpu resident, and an empty submit + `onSubmittedWorkDone`), and
 *    the crossover estimate: the size where webgpu's host-array time equals wasm's. It is
 *    printed beside what `init({ backend: "auto", device })` decides on the same device
 *    (host problems under one measured round trip times `WASM_LOGITS_PER_SECOND` stay on
 *    wasm; `options.minGpuLogits` overrides it).
 *
 * Every figure is labelled with the adapter it was measured on: Deno on a machine without
 * a GPU finds Mesa's llvmpipe, a software (CPU) Vulkan driver, which says nothing of a
 * GPU's speed ("software (llvmpipe)"). `bench/device_h100.sh` runs this file on an H100.
 *
 * ```sh
 * deno run -A bench/webgpu_bench.ts [--quick] [--json out.json] [--head-c 10000,100000]
 * bun bench/webgpu_bench.ts   # Bun has no WebGPU: prints "no WebGPU adapter: ..." and exits 0
 * ```
 *
 * Method: as `harness.ts` (interleaved rounds in a rotated order, median of per-round
 * means, slow contenders within a time budget), with an asynchronous twin of its
 * `Measurer`: every call is awaited. The wasm calls go through `init`'s Promise API too,
 * as `"auto"` would make them. The first timed output of each contender is checked: the
 * row losses against the float64 reference (`js`), marginHead's webgpu results against
 * wasm's (the float64 head takes seconds per call).
 *
 * @module
 */
import { writeFileSync } from "node:fs";
import process from "node:process";
import { js, type Matrix, wasm as wasmSync } from "../cpu.ts";
import { init, type Losses, WASM_LOGITS_PER_SECOND } from "../mod.ts";
import { findAdapter, requestDevice } from "../src/backend.ts";
import {
  type ArgSpec,
  type Cell as BaseCell,
  collectEnv,
  type Config as BaseConfig,
  configJson,
  type EnvInfo,
  errorText,
  finishRun,
  fmtErr,
  fmtG,
  fmtSamples,
  fmtSeconds,
  fmtSpread,
  fmtTimes,
  gradDiff,
  median,
  methodLine,
  mulberry32,
  now,
  pad,
  pairedRatio,
  parseArgs,
  printMarkdown,
  relDiff,
  ROW_SHAPES,
  shapeName,
  sink,
  type Timing,
} from "./harness.ts";

// ---------------------------------------------------------------------------------------
// Command line

/** The sections; `--modes` picks some. */
type Mode = "crossEntropy" | "arcface" | "marginHead" | "latency";
const MODES: readonly Mode[] = ["crossEntropy", "arcface", "marginHead", "latency"];
type Shape = readonly [number, number];

/** Full runs: about 2 minutes on llvmpipe here (a 1024 x 32000 call of webgpu takes 1-1.5 s on it). */
const TIMING: Timing = {
  rounds: 7,
  roundTime: 0.1,
  warmupTime: 0.3,
  slowBudget: 5,
  minSamples: 3,
  noWarmupAbove: 3,
  skipAbove: Infinity,
};
/**
 * `--quick`: about 10-15 s on llvmpipe here. Predictions scale a contender's time at the last shape by
 * the logits, which over-predicts a latency-bound GPU call several times: hence the high `skipAbove`.
 */
const QUICK_TIMING: Timing = {
  rounds: 3,
  roundTime: 0.03,
  warmupTime: 0.05,
  slowBudget: 0.6,
  minSamples: 1,
  noWarmupAbove: 0.5,
  skipAbove: 6,
};

/** N and D of the marginHead cells (as margin_head_bench.ts). */
const HEAD_N = 256, HEAD_D = 512;
/** crossEntropy sizes of the latency section, [N, C]: 8 logits, then 1e3 to 1.02e6 logits. */
const LATENCY: readonly Shape[] = [[1, 8], [1, 1000], [8, 1000], [32, 1000], [128, 1000], [1024, 1000]];
const LATENCY_QUICK: readonly Shape[] = [[1, 8], [32, 1000], [1024, 1000]];

const ARGS: ArgSpec<Mode, Shape> = {
  file: "webgpu_bench.ts",
  modes: MODES,
  shapes: ROW_SHAPES,
  quickShapes: [ROW_SHAPES[0], ROW_SHAPES[3]],
  dims: 2,
  timing: TIMING,
  quickTiming: QUICK_TIMING,
  help: {
    quick: `${QUICK_TIMING.rounds} rounds, small budgets, shapes ${shapeName(ROW_SHAPES[0])} and ${
      shapeName(ROW_SHAPES[3])
    }, 3 latency sizes; skips calls predicted > ${QUICK_TIMING.skipAbove} s`,
    shapes: "256x1000,8192x32000 (crossEntropy and arcface)",
    skip: "webgpu host,readback alone",
  },
  extra: [
    {
      flag: "--head-c",
      value: true,
      help: `classes C of the marginHead cells, N = ${HEAD_N}, D = ${HEAD_D} (default 10000, 1000 with --quick; ` +
        `"10000,100000"; "none")`,
    },
    {
      flag: "--require-gpu",
      value: false,
      help: "exit 1 (not 0) when there is no WebGPU adapter or only a software one (device runs)",
    },
  ],
};

type Config = BaseConfig<Mode, Shape>;

// ---------------------------------------------------------------------------------------
// Contenders and the asynchronous measurement

/** What a call produced: the loss, and a way to fetch its gradients for the one check. */
interface Out {
  loss?: number;
  grads?: () => Promise<Float32Array[]>;
}

interface Runner {
  run(): Promise<Out>;
}

/** A way of doing a cell's work; `make` returns a runner or says why there is none. */
interface Contender<X> {
  name: string;
  /** Transfers alone: reference points (no checks, no speed-up). */
  floor?: boolean;
  make(ctx: X): Runner | string;
}

interface Cell extends BaseCell {
  section: Mode;
  /** [N, C], or [N, D, C] for marginHead. */
  shape: number[];
  /** The adapter's label ("software (llvmpipe)", "hardware (...)"). */
  device: string;
  /** Logits per call (N * C). */
  logits: number;
  /** Bytes per call the GB/s column counts: 8 per logit for the losses, the bytes moved for transfers. */
  bytes: number;
  gLogitsPerSec: number | null;
  gbPerSec: number | null;
  /** Median time of wasm / median time of this contender, paired by round (above 1: faster than wasm). */
  speedup: number | null;
}

const secondsPerUnit = new Map<string, number>();

/**
 * `harness.ts`'s `Measurer.measure` for asynchronous calls: warm-up and estimate per
 * contender, then interleaved rounds in a rotated order, each contender's first timed
 * output checked (not timed). It remembers seconds per logit from one shape to the next
 * to skip warm-ups of slow calls and, with `skipAbove`, the calls themselves.
 */
async function measure<X>(
  cfg: Config,
  ctx: X,
  spec: {
    section: Mode;
    contenders: readonly Contender<X>[];
    newCell: (k: Contender<X>) => Cell;
    units: number;
    /** Predict a contender's time from its seconds per unit at the last shape (false: latency-bound sizes). */
    predict?: boolean;
    check?: (cell: Cell, out: Out) => Promise<void>;
  },
): Promise<Cell[]> {
  const cells: Cell[] = [];
  const plans: { k: Contender<X>; runner: Runner; reps: number; rounds: number; samples: number[]; cell: Cell }[] = [];
  for (const k of spec.contenders) {
    const cell = spec.newCell(k);
    cells.push(cell);
    if (cfg.skip.has(k.name.toLowerCase())) {
      cell.note = "skipped (--skip)";
      continue;
    }
    let runner: Runner | string;
    try {
      runner = k.make(ctx);
    } catch (e) {
      runner = `setup failed: ${errorText(e)}`;
    }
    if (typeof runner === "string") {
      if (runner.includes("failed")) cell.error = runner;
      else cell.note = runner;
      continue;
    }
    const key = `${spec.section}|${k.name}`;
    const predicted = spec.predict !== false && secondsPerUnit.has(key) ? secondsPerUnit.get(key)! * spec.units : null;
    if (predicted !== null && predicted > cfg.skipAbove) {
      cell.note = `skipped (--quick; predicted ${predicted.toFixed(1)} s per call)`;
      continue;
    }
    let estimate: number;
    try {
      if (predicted !== null && predicted > cfg.noWarmupAbove) {
        estimate = predicted;
      } else {
        // Warm-up: JIT tiers, pipeline creation (first call of a kernel), first-touch page faults.
        const times: number[] = [];
        const t0 = now();
        let first: Out | null = null;
        do {
          const t = now();
          const o = await runner.run();
          times.push(now() - t);
          first ??= o;
        } while (now() - t0 < cfg.warmupTime && times.length < 1000 && times[0] <= cfg.slowBudget);
        if (times[0] > cfg.slowBudget) {
          // One call took more than the cell's budget (marginHead on llvmpipe: ~20 s): it is the
          // only sample (shown "1x1*": no warm-up call before it).
          plans.push({ k, runner, reps: 1, rounds: 0, samples: [times[0]], cell });
          if (!k.floor) await spec.check?.(cell, first!);
          continue;
        }
        estimate = times.length > 1 ? median(times.slice(1)) : times[0];
        cell.warmup = true;
      }
    } catch (e) {
      cell.error = `failed: ${errorText(e)}`;
      continue;
    }
    const reps = Math.max(1, Math.round(cfg.roundTime / estimate));
    // A call predicted to take more than the budget gets one sample.
    const rounds = estimate > cfg.slowBudget
      ? 1
      : Math.min(cfg.rounds, Math.max(cfg.minSamples, Math.floor(cfg.slowBudget / (reps * estimate))));
    plans.push({ k, runner, reps, rounds, samples: [], cell });
  }
  for (let r = 0; r < cfg.rounds; r++) {
    const live = plans.filter((p) => p.rounds > r && !p.cell.error);
    for (let i = 0; i < live.length; i++) {
      const p = live[(i + r) % live.length];
      try {
        const t0 = now();
        let o = await p.runner.run();
        for (let j = 1; j < p.reps; j++) o = await p.runner.run();
        p.samples.push((now() - t0) / p.reps);
        if (r === 0 && !p.k.floor) await spec.check?.(p.cell, o);
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
    cell.gLogitsPerSec = p.k.floor ? null : cell.logits / med / 1e9;
    cell.gbPerSec = cell.bytes > 0 ? cell.bytes / med / 1e9 : null;
    secondsPerUnit.set(`${spec.section}|${p.k.name}`, med / spec.units);
  }
  const base = cells.find((x) => x.contender === WASM);
  for (const x of cells) if (!x.floor && x !== base) x.speedup = pairedRatio(base, x);
  if (base?.seconds) base.speedup = 1;
  return cells;
}

// ---------------------------------------------------------------------------------------
// GPU buffers and the transfers alone

const STORAGE = 0x80, COPY_SRC = 0x04, COPY_DST = 0x08, MAP_READ = 0x01;
const WASM = "wasm out=", RESIDENT = "webgpu resident", HOST = "webgpu host";
const UPLOAD = "upload alone", READBACK = "readback alone", ROUND_TRIP = "empty round trip";

/** The floor of every GPU call's wait: an empty submit and `onSubmittedWorkDone`. */
function roundTrip<X>(device: GPUDevice): Contender<X> {
  return {
    name: ROUND_TRIP,
    floor: true,
    make: () => ({
      run: async () => {
        device.queue.submit([]);
        await device.queue.onSubmittedWorkDone();
        return {};
      },
    }),
  };
}

function gpuBuffer(device: GPUDevice, bytes: number, usage = STORAGE | COPY_SRC | COPY_DST): GPUBuffer {
  return device.createBuffer({ size: Math.max(16, Math.ceil(bytes / 8) * 8), usage });
}

/** A GPU buffer holding `data` (queue write, waited for). */
async function gpuCopy(device: GPUDevice, data: Float32Array): Promise<GPUBuffer> {
  const b = gpuBuffer(device, data.byteLength);
  device.queue.writeBuffer(b, 0, data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
  await device.queue.onSubmittedWorkDone();
  return b;
}

/**
 * Copies the GPU buffers `src` into the host arrays `dst` (byte 0 of each, `dst[k].length`
 * floats) through one MAP_READ buffer: the readback a host-array call ends with.
 */
async function readInto(device: GPUDevice, staging: GPUBuffer, src: GPUBuffer[], dst: Float32Array[]): Promise<void> {
  const enc = device.createCommandEncoder();
  const offs: number[] = [];
  let at = 0;
  src.forEach((b, k) => {
    offs.push(at);
    enc.copyBufferToBuffer(b, 0, staging, at, dst[k].byteLength);
    at += Math.ceil(dst[k].byteLength / 8) * 8; // mapped ranges start at multiples of 8
  });
  device.queue.submit([enc.finish()]);
  await staging.mapAsync(MAP_READ, 0, at);
  try {
    dst.forEach((d, k) => d.set(new Float32Array(staging.getMappedRange(offs[k], d.byteLength))));
  } finally {
    staging.unmap();
  }
}

/**
 * The transfers alone for arrays of these sizes (floats): `upload alone` writes host arrays
 * into scratch GPU buffers and waits for the queue; `readback alone` reads the scratch
 * buffers back into host arrays. Its own buffers, so no contender's output is touched.
 */
class Transfers {
  readonly host: Float32Array[];
  readonly scratch: GPUBuffer[];
  readonly staging: GPUBuffer;
  readonly back: Float32Array[];
  readonly bytes: number;

  constructor(readonly device: GPUDevice, parts: Float32Array[]) {
    this.host = parts;
    this.scratch = parts.map((p) => gpuBuffer(device, p.byteLength));
    this.back = parts.map((p) => new Float32Array(p.length).fill(0));
    this.bytes = parts.reduce((s, p) => s + p.byteLength, 0);
    this.staging = gpuBuffer(
      device,
      parts.reduce((s, p) => s + Math.ceil(p.byteLength / 8) * 8, 0),
      MAP_READ | COPY_DST,
    );
  }

  async upload(): Promise<void> {
    this.host.forEach((h, k) =>
      this.device.queue.writeBuffer(this.scratch[k], 0, h.buffer as ArrayBuffer, h.byteOffset, h.byteLength)
    );
    await this.device.queue.onSubmittedWorkDone();
  }

  readback(): Promise<void> {
    return readInto(this.device, this.staging, this.scratch, this.back);
  }

  contenders<X>(): Contender<X>[] {
    return [
      roundTrip(this.device),
      {
        name: UPLOAD,
        floor: true,
        make: () => ({
          run: async () => {
            await this.upload();
            return {};
          },
        }),
      },
      {
        name: READBACK,
        floor: true,
        make: () => ({
          run: async () => {
            await this.readback();
            sink.value += this.back[0][0];
            return {};
          },
        }),
      },
    ];
  }

  destroy(): void {
    for (const b of [...this.scratch, this.staging]) b.destroy();
  }
}

// ---------------------------------------------------------------------------------------
// Row losses: crossEntropy, arcface

type RowLoss = "crossEntropy" | "arcface";
const ARC = { scale: 64, margin: 0.5 };

/** One (loss, shape)'s data: host arrays, GPU buffers, the float64 reference. */
interface RowCtx {
  gpu: GPUDevice;
  loss: RowLoss;
  n: number;
  c: number;
  x: Float32Array;
  labels: Int32Array;
  wasmOut: Float32Array;
  hostOut: Float32Array;
  inBuf: GPUBuffer;
  outBuf: GPUBuffer;
  /** Readback of the resident gradient for its check. */
  staging: GPUBuffer;
  transfers: Transfers | null;
  ref: { loss: number; grad: Float32Array };
}

/** A row loss's `valueAndGrad` with `options.out`; `x` and `out` host or GPU matrices. */
async function rowCall(losses: Losses, loss: RowLoss, x: Matrix, labels: Int32Array, out: Matrix): Promise<number> {
  const r = loss === "crossEntropy"
    ? await losses.crossEntropy.valueAndGrad({ logits: x, labels }, { out: { logits: out } })
    : await losses.arcface.valueAndGrad({ cos: x, labels }, { ...ARC, out: { cos: out } });
  const g = (r.grads as unknown as Record<string, Matrix>)[loss === "crossEntropy" ? "logits" : "cos"];
  const buffer = (g as unknown as { buffer?: GPUBuffer }).buffer;
  const given = (out as unknown as { buffer?: GPUBuffer }).buffer;
  if (buffer && buffer !== given) buffer.destroy(); // not expected: `out` was given
  return r.loss as number;
}

/** A GPU-resident matrix, typed as the API's inputs are (`isGpuMatrix` tells them apart). */
function onGpu(buffer: GPUBuffer, shape: readonly [number, number]): Matrix {
  return { buffer, shape } as unknown as Matrix;
}

function rowContenders(w: Losses, g: Losses): Contender<RowCtx>[] {
  const host = (data: Float32Array, n: number, c: number): Matrix => ({ data, shape: [n, c] });
  return [
    {
      name: WASM,
      make: (ctx) => {
        const x = host(ctx.x, ctx.n, ctx.c), out = host(ctx.wasmOut, ctx.n, ctx.c);
        return {
          run: async () => {
            const loss = await rowCall(w, ctx.loss, x, ctx.labels, out);
            sink.value += loss + ctx.wasmOut[0];
            return { loss, grads: () => Promise.resolve([ctx.wasmOut]) };
          },
        };
      },
    },
    {
      name: RESIDENT,
      make: (ctx) => {
        const x = onGpu(ctx.inBuf, [ctx.n, ctx.c]), out = onGpu(ctx.outBuf, [ctx.n, ctx.c]);
        const grads = async () => {
          const back = new Float32Array(ctx.n * ctx.c);
          await readInto(ctx.gpu, ctx.staging, [ctx.outBuf], [back]);
          return [back];
        };
        return {
          run: async () => {
            const loss = await rowCall(g, ctx.loss, x, ctx.labels, out);
            sink.value += loss;
            return { loss, grads };
          },
        };
      },
    },
    {
      name: HOST,
      make: (ctx) => {
        const x = host(ctx.x, ctx.n, ctx.c), out = host(ctx.hostOut, ctx.n, ctx.c);
        return {
          run: async () => {
            const loss = await rowCall(g, ctx.loss, x, ctx.labels, out);
            sink.value += loss + ctx.hostOut[0];
            return { loss, grads: () => Promise.resolve([ctx.hostOut]) };
          },
        };
      },
    },
  ];
}

async function makeRowCtx(device: GPUDevice, loss: RowLoss, n: number, c: number, seed: number): Promise<RowCtx> {
  const rand = mulberry32(seed);
  const x = new Float32Array(n * c);
  // Logits ~ U(-3, 3) (cross_entropy_bench.ts); cosines ~ U(-1, 1) with each label's raised by 0.5,
  // capped at 0.99 (arcface_bench.ts: phi' divides by sqrt(1 - cos^2)).
  const arc = loss === "arcface";
  for (let i = 0; i < x.length; i++) x[i] = (rand() * 2 - 1) * (arc ? 1 : 3);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = Math.floor(rand() * c);
    if (arc) x[i * c + labels[i]] = Math.min(x[i * c + labels[i]] + 0.5, 0.99);
  }
  const r = loss === "crossEntropy"
    ? js.crossEntropy.valueAndGrad({ logits: { data: x, shape: [n, c] }, labels })
    : js.arcface.valueAndGrad({ cos: { data: x, shape: [n, c] }, labels }, ARC);
  const refGrad = (r.grads as unknown as Record<string, Matrix>)[loss === "crossEntropy" ? "logits" : "cos"].data;
  return {
    gpu: device,
    loss,
    n,
    c,
    x,
    labels,
    wasmOut: new Float32Array(n * c).fill(0),
    hostOut: new Float32Array(n * c).fill(0),
    inBuf: await gpuCopy(device, x),
    outBuf: gpuBuffer(device, n * c * 4),
    staging: gpuBuffer(device, n * c * 4, MAP_READ | COPY_DST),
    transfers: null,
    ref: { loss: r.loss as number, grad: refGrad },
  };
}

function destroyRowCtx(ctx: RowCtx): void {
  for (const b of [ctx.inBuf, ctx.outBuf, ctx.staging]) b.destroy();
  ctx.transfers?.destroy();
}

// ---------------------------------------------------------------------------------------
// marginHead

const HEAD_OPTIONS = { kind: "arcface", scale: 64, margin: 0.5 } as const;

interface HeadCtx {
  gpu: GPUDevice;
  n: number;
  d: number;
  c: number;
  x: Float32Array;
  W: Float32Array;
  labels: Int32Array;
  wasmOut: [Float32Array, Float32Array];
  hostOut: [Float32Array, Float32Array];
  bufs: [GPUBuffer, GPUBuffer];
  outBufs: [GPUBuffer, GPUBuffer];
  staging: GPUBuffer;
  transfers: Transfers;
  /** wasm's result (the reference of the webgpu contenders), or null when they are not run. */
  ref: { loss: number; grads: Float32Array[] } | null;
}

/** Why the webgpu backend cannot run marginHead (a tiny call fails), or null when it can. */
async function headMissing(g: Losses): Promise<string | null> {
  try {
    await g.marginHead.valueAndGrad({
      x: { data: new Float32Array([1, 0, 0, 1]), shape: [2, 2] },
      W: { data: new Float32Array([1, 0, 0, 1, 1, 1]), shape: [3, 2] },
      labels: [0, 2],
    }, HEAD_OPTIONS);
    return null;
  } catch (e) {
    return errorText(e);
  }
}

function headContenders(w: Losses, g: Losses | null, why: string): Contender<HeadCtx>[] {
  const call = async (losses: Losses, x: Matrix, W: Matrix, labels: Int32Array, out: [Matrix, Matrix]) => {
    const r = await losses.marginHead.valueAndGrad({ x, W, labels }, {
      ...HEAD_OPTIONS,
      out: { x: out[0], W: out[1] },
    });
    return r.loss as number;
  };
  return [
    {
      name: WASM,
      make: (ctx) => {
        const x = { data: ctx.x, shape: [ctx.n, ctx.d] } as Matrix,
          W = { data: ctx.W, shape: [ctx.c, ctx.d] } as Matrix;
        const out: [Matrix, Matrix] = [
          { data: ctx.wasmOut[0], shape: [ctx.n, ctx.d] },
          { data: ctx.wasmOut[1], shape: [ctx.c, ctx.d] },
        ];
        return {
          run: async () => {
            const loss = await call(w, x, W, ctx.labels, out);
            sink.value += loss + ctx.wasmOut[1][0];
            return { loss };
          },
        };
      },
    },
    {
      name: RESIDENT,
      make: (ctx) => {
        if (!g) return why;
        const x = onGpu(ctx.bufs[0], [ctx.n, ctx.d]), W = onGpu(ctx.bufs[1], [ctx.c, ctx.d]);
        const out: [Matrix, Matrix] = [onGpu(ctx.outBufs[0], [ctx.n, ctx.d]), onGpu(ctx.outBufs[1], [ctx.c, ctx.d])];
        const grads = async () => {
          const back = [new Float32Array(ctx.n * ctx.d), new Float32Array(ctx.c * ctx.d)];
          await readInto(ctx.gpu, ctx.staging, ctx.outBufs, back);
          return back;
        };
        return {
          run: async () => {
            const loss = await call(g, x, W, ctx.labels, out);
            sink.value += loss;
            return { loss, grads };
          },
        };
      },
    },
    {
      name: HOST,
      make: (ctx) => {
        if (!g) return why;
        const x = { data: ctx.x, shape: [ctx.n, ctx.d] } as Matrix,
          W = { data: ctx.W, shape: [ctx.c, ctx.d] } as Matrix;
        const out: [Matrix, Matrix] = [
          { data: ctx.hostOut[0], shape: [ctx.n, ctx.d] },
          { data: ctx.hostOut[1], shape: [ctx.c, ctx.d] },
        ];
        return {
          run: async () => {
            const loss = await call(g, x, W, ctx.labels, out);
            sink.value += loss + ctx.hostOut[1][0];
            return { loss, grads: () => Promise.resolve(ctx.hostOut) };
          },
        };
      },
    },
  ];
}

async function makeHeadCtx(device: GPUDevice, c: number, withRef: boolean): Promise<HeadCtx> {
  const n = HEAD_N, d = HEAD_D;
  const rand = mulberry32(4321 + c);
  const x = Float32Array.from({ length: n * d }, () => rand() * 2 - 1);
  const W = Float32Array.from({ length: c * d }, () => rand() * 2 - 1);
  const labels = Int32Array.from({ length: n }, () => Math.floor(rand() * c));
  let ref: HeadCtx["ref"] = null;
  if (withRef) {
    const r = wasmSync.marginHead.valueAndGrad(
      { x: { data: x, shape: [n, d] }, W: { data: W, shape: [c, d] }, labels },
      HEAD_OPTIONS,
    );
    ref = { loss: r.loss as number, grads: [r.grads.x.data, r.grads.W.data] };
  }
  return {
    gpu: device,
    n,
    d,
    c,
    x,
    W,
    labels,
    wasmOut: [new Float32Array(n * d).fill(0), new Float32Array(c * d).fill(0)],
    hostOut: [new Float32Array(n * d).fill(0), new Float32Array(c * d).fill(0)],
    bufs: [await gpuCopy(device, x), await gpuCopy(device, W)],
    outBufs: [gpuBuffer(device, n * d * 4), gpuBuffer(device, c * d * 4)],
    staging: gpuBuffer(device, (Math.ceil(n * d / 2) * 2 + c * d) * 4, MAP_READ | COPY_DST),
    transfers: new Transfers(device, [x, W]),
    ref,
  };
}

function destroyHeadCtx(ctx: HeadCtx): void {
  for (const b of [...ctx.bufs, ...ctx.outBufs, ctx.staging]) b.destroy();
  ctx.transfers.destroy();
}

// ---------------------------------------------------------------------------------------
// Cells

function newCell(section: Mode, shape: number[], device: string, k: { name: string; floor?: boolean }, bytes: number) {
  const logits = section === "marginHead" ? shape[0] * shape[2] : shape[0] * shape[1];
  return {
    section,
    shape,
    device,
    logits,
    bytes,
    contender: k.name,
    floor: !!k.floor,
    seconds: null,
    gLogitsPerSec: null,
    gbPerSec: null,
    speedup: null,
    spread: null,
    samples: 0,
    callsPerSample: 0,
    sampleSeconds: [],
    warmup: false,
  } satisfies Cell as Cell;
}

async function checkOut(cell: Cell, o: Out, ref: { loss: number; grads: Float32Array[] }): Promise<void> {
  cell.lossRelDiff = relDiff(o.loss, ref.loss);
  if (!o.grads) return;
  const gs = await o.grads();
  cell.gradRelDiff = Math.max(...gs.map((g, k) => gradDiff(g, ref.grads[k])));
}

// ---------------------------------------------------------------------------------------
// Output

function fmtMs(s: number | null): string {
  if (s === null) return "-";
  const ms = s * 1e3;
  return ms >= 1000 ? ms.toFixed(0) : ms.toPrecision(3);
}

function fmtGB(x: number | null): string {
  return x === null ? "-" : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

/** A cell's value or why it has none, for the tables. */
function shown(x: Cell | undefined, f: (x: Cell) => string): string {
  if (!x) return "-";
  if (x.error) return "failed";
  if (x.note) {
    return x.note.startsWith("skipped") ? "skipped" : x.note.startsWith("not available") ? "not available" : "n/a";
  }
  return x.seconds === null ? "-" : f(x);
}

function printCells(cells: Cell[], title: string): void {
  console.log(`\n## ${title}`);
  const head = pad("contender", 17) + pad("ms/call", 10, true) + pad("G logits/s", 12, true) + pad("GB/s", 8, true) +
    pad("vs wasm", 9, true) + pad("spread", 8, true) + pad("samples", 9, true) + "   loss err  grad err";
  console.log(head);
  console.log("-".repeat(head.length));
  let floors = false;
  for (const x of cells) {
    if (x.floor && !floors) {
      floors = true;
      const mb = (cells.find((y) => y.contender === UPLOAD)?.bytes ?? 0) / 1e6;
      console.log(`-- floors: an empty round trip; transfers alone, ${mb.toPrecision(3)} MB `.padEnd(head.length, "-"));
    }
    if (x.error || x.note) {
      console.log(pad(x.contender, 17) + "  " + (x.error ? `FAILED: ${x.error}` : x.note!));
      continue;
    }
    console.log(
      pad(x.contender, 17) + pad(fmtMs(x.seconds), 10, true) + pad(x.floor ? "-" : fmtG(x.gLogitsPerSec), 12, true) +
        pad(fmtGB(x.gbPerSec), 8, true) + pad(x.floor ? "" : fmtTimes(x.speedup), 9, true) +
        pad(fmtSpread(x), 8, true) + pad(fmtSamples(x), 9, true) +
        (x.floor ? "" : `   ${pad(fmtErr(x.lossRelDiff), 9)} ${fmtErr(x.gradRelDiff)}`),
    );
  }
  const at = (name: string) => cells.find((x) => x.contender === name && x.seconds !== null)?.seconds ?? null;
  const h = at(HOST), up = at(UPLOAD), rb = at(READBACK), res = at(RESIDENT), rt = at(ROUND_TRIP);
  if (h !== null && res !== null && up !== null && rb !== null && rt !== null) {
    // Each transfer alone waits for one round trip, which the host call shares with its kernel.
    const net = Math.max(0, up - rt) + Math.max(0, rb - rt);
    console.log(
      `where webgpu host's ${fmtSeconds(h)} goes: webgpu resident (dispatch, kernel, row losses back) ` +
        `${fmtSeconds(res)}, host - resident ${h < res ? "-" : ""}${fmtSeconds(Math.abs(h - res))}; upload alone ${
          fmtSeconds(up)
        } and readback ` +
        `alone ${fmtSeconds(rb)} each include one empty round trip (${fmtSeconds(rt)}): the transfers' own cost ` +
        `is about ${fmtSeconds(net)}`,
    );
  }
}

/** Where webgpu's host-array time equals wasm's: interpolated, else extrapolated by linear fits, else none. */
interface Crossover {
  /** Logits per call, or null when there is none. */
  logits: number | null;
  how: string;
}

function crossover(points: { logits: number; wasm: number; gpu: number }[]): Crossover {
  const p = points.filter((x) => x.logits >= 1000).sort((a, b) => a.logits - b.logits);
  if (p.length < 2) return { logits: null, how: "too few sizes measured" };
  const r = p.map((x) => Math.log(x.gpu / x.wasm));
  if (r[0] <= 0) {
    return {
      logits: p[0].logits,
      how: `webgpu is already as fast as wasm at the smallest size (${p[0].logits} logits)`,
    };
  }
  for (let i = 0; i + 1 < p.length; i++) {
    if (r[i] > 0 && r[i + 1] <= 0) {
      const t = r[i] / (r[i] - r[i + 1]);
      const s = Math.exp(Math.log(p[i].logits) + t * (Math.log(p[i + 1].logits) - Math.log(p[i].logits)));
      return {
        logits: Math.round(s),
        how: `interpolated (log-log) between ${p[i].logits} and ${p[i + 1].logits} logits`,
      };
    }
  }
  // No crossing in range: fit t = a + b * logits to each and solve.
  const fit = (ys: number[]) => {
    const xs = p.map((x) => x.logits);
    const mx = xs.reduce((s, v) => s + v, 0) / xs.length, my = ys.reduce((s, v) => s + v, 0) / ys.length;
    let sxy = 0, sxx = 0;
    xs.forEach((x, i) => {
      sxy += (x - mx) * (ys[i] - my);
      sxx += (x - mx) ** 2;
    });
    const b = sxy / sxx;
    return { a: my - b * mx, b };
  };
  const fw = fit(p.map((x) => x.wasm)), fg = fit(p.map((x) => x.gpu));
  const per = (b: number) => `${(b * 1e9).toFixed(2)} ns/logit`;
  const last = p[p.length - 1];
  if (fg.b < fw.b) {
    const s = (fg.a - fw.a) / (fw.b - fg.b);
    return {
      logits: Math.round(s),
      how: `extrapolated beyond ${last.logits} logits by linear fits (wasm ${per(fw.b)} + ${fmtSeconds(fw.a)}, ` +
        `webgpu ${per(fg.b)} + ${fmtSeconds(fg.a)})`,
    };
  }
  return {
    logits: null,
    how: `webgpu host is ${fmtTimes(last.gpu / last.wasm)} wasm's time at ${last.logits} logits and its cost ` +
      `per logit (${per(fg.b)}) is above wasm's (${per(fw.b)}), so it stays slower at every size`,
  };
}

/** What `"auto"` decides on this device: its note, and the threshold it states. */
interface AutoInfo {
  note: string;
  /** Host problems under this many logits stay on wasm (parsed from the note), or null. */
  minGpuLogits: number | null;
}

function printLatency(cells: Cell[], device: string, auto: AutoInfo): Crossover {
  console.log(`\n## Dispatch latency: crossEntropy valueAndGrad, host arrays, ms per call [${device}]\n`);
  const sizes = [...new Set(cells.map((x) => shapeName(x.shape)))];
  const at = (s: string, name: string) => cells.find((x) => shapeName(x.shape) === s && x.contender === name);
  const rows = sizes.map((s) => {
    const w = at(s, WASM), h = at(s, HOST), r = at(s, RESIDENT);
    const ratio = w?.seconds && h?.seconds ? fmtTimes(pairedRatio(h, w)) : "-";
    return [
      s,
      String(w?.logits ?? "-"),
      shown(w, (x) => fmtMs(x.seconds)),
      shown(h, (x) => fmtMs(x.seconds)),
      ratio,
      shown(r, (x) => fmtMs(x.seconds)),
    ];
  });
  printMarkdown(["N x C", "logits", "wasm out=", "webgpu host", "host / wasm time", "webgpu resident"], rows);
  const trip = cells.find((x) => x.contender === ROUND_TRIP && x.seconds !== null);
  if (trip) {
    console.log(`\nempty GPU round trip (queue.submit([]), await onSubmittedWorkDone()): ${fmtSeconds(trip.seconds)}`);
  }
  const points = sizes.flatMap((s) => {
    const w = at(s, WASM), h = at(s, HOST);
    return w?.seconds && h?.seconds ? [{ logits: w.logits, wasm: w.seconds, gpu: h.seconds }] : [];
  });
  const x = crossover(points);
  const wasmCells = cells.filter((c) => c.contender === WASM && c.seconds !== null);
  const big = wasmCells.sort((a, b) => b.logits - a.logits)[0];
  console.log(
    `crossover (webgpu host time = wasm time) [${device}]: ${x.logits === null ? "none" : `~${x.logits} logits`} ` +
      `(${x.how}).\n"auto" on this device: ${auto.note} (its rule: round trip x WASM_LOGITS_PER_SECOND = ` +
      `${WASM_LOGITS_PER_SECOND.toExponential(1)}; wasm measured here: ${
        big ? (big.logits / big.seconds!).toExponential(2) : "-"
      } logits/s at ${big?.logits ?? "-"} logits).`,
  );
  return x;
}

function printSummary(all: Cell[], cfg: Config, device: string, headC: number[]): void {
  for (const section of ["crossEntropy", "arcface", "marginHead"] as const) {
    const cells = all.filter((x) => x.section === section);
    if (cells.length === 0) continue;
    const shapes = section === "marginHead" ? headC.map((c) => [HEAD_N, HEAD_D, c]) : cfg.shapes.map((s) => [...s]);
    const at = (name: string, s: number[]) =>
      cells.find((x) => x.contender === name && shapeName(x.shape) === shapeName(s));
    console.log(`\n### ${section} valueAndGrad [${device}]\n`);
    const row = (
      label: string,
      name: string,
      f: (x: Cell) => string,
    ) => [label, ...shapes.map((s) => shown(at(name, s), f))];
    const ms = (x: Cell) => fmtMs(x.seconds),
      gl = (x: Cell) => fmtG(x.gLogitsPerSec),
      gb = (x: Cell) => fmtGB(x.gbPerSec);
    // marginHead: GFLOP/s of its three products (2 N D C each), as margin_head_bench.ts counts them unfused.
    const gf = (x: Cell) => fmtG((6 * x.shape[0] * x.shape[1] * x.shape[2]) / x.seconds! / 1e9);
    const head = section === "marginHead";
    const rows = [
      row("wasm out=, ms", WASM, ms),
      row("webgpu resident, ms", RESIDENT, ms),
      row("webgpu host, ms", HOST, ms),
      row("empty round trip, ms", ROUND_TRIP, ms),
      row("upload alone, ms", UPLOAD, ms),
      row("readback alone, ms", READBACK, ms),
      row("wasm out=, G logits/s", WASM, gl),
      row("webgpu resident, G logits/s", RESIDENT, gl),
      ...(head
        ? [row("wasm out=, GFLOP/s (6 N D C)", WASM, gf), row("webgpu resident, GFLOP/s", RESIDENT, gf)]
        : [row("webgpu resident, GB/s (8 B/logit)", RESIDENT, gb)]),
      row("webgpu host, G logits/s", HOST, gl),
      row("upload alone, GB/s", UPLOAD, gb),
      row("readback alone, GB/s", READBACK, gb),
      row("*webgpu resident vs wasm (speed)*", RESIDENT, (x) => fmtTimes(x.speedup)),
      row("*webgpu host vs wasm (speed)*", HOST, (x) => fmtTimes(x.speedup)),
    ];
    printMarkdown([section, ...shapes.map((s) => shapeName(s))], rows);
  }
}

// ---------------------------------------------------------------------------------------
// Main

/** "software (llvmpipe)" for a software adapter, else "hardware (vendor description)". */
function adapterLabel(adapter: GPUAdapter): { label: string; software: boolean } {
  const info = adapter.info;
  const desc = [info?.description, info?.architecture, info?.device].find((s) => s) ?? "";
  const sw = /llvmpipe|lavapipe|swiftshader|softpipe|software|warp/i;
  const software = !!info?.isFallbackAdapter || sw.test(desc);
  if (software) {
    const m = /llvmpipe|lavapipe|swiftshader|softpipe|warp/i.exec(desc);
    return { label: `software (${m ? m[0].toLowerCase() : desc || "fallback adapter"})`, software };
  }
  return { label: `hardware (${[info?.vendor, desc].filter((s) => s).join(" ") || "unnamed adapter"})`, software };
}

async function main(): Promise<number> {
  const cfg: Config = parseArgs(process.argv.slice(2), ARGS);
  const headArg = cfg.extra.get("--head-c");
  const headC = headArg === "none"
    ? []
    : (typeof headArg === "string" ? headArg : cfg.quick ? "1000" : "10000").split(",").map((s) => {
      const c = parseInt(s, 10);
      if (!(c > 0)) throw new TypeError(`Expected --head-c to be class counts like 10000,100000, got "${headArg}"`);
      return c;
    });
  const requireGpu = cfg.extra.has("--require-gpu");
  const env = await collectEnv();
  console.log("# softmargin WebGPU benchmark: webgpu against wasm, valueAndGrad");
  console.log(`runtime: ${env.runtime} ${env.version} (${env.engine}); softmargin wasm build: ${env.wasmVariant}`);
  console.log(
    `machine: ${env.cpu}, ${env.cores} logical CPUs, ${env.memoryGiB} GiB, load ${
      env.load.start ?? "?"
    }; date: ${env.date}`,
  );

  const found = await findAdapter();
  if (!found.adapter) {
    console.log(`no WebGPU adapter: ${found.note}`);
    if (cfg.json) {
      writeJson(cfg.json, { env: envJson(env), webgpu: null, reason: found.note });
    }
    return requireGpu ? 1 : 0;
  }
  const { label: device, software } = adapterLabel(found.adapter);
  const limits = found.adapter.limits;
  console.log(
    `adapter: ${found.note}; figures labelled "${device}"; maxStorageBufferBindingSize ${limits.maxStorageBufferBindingSize}, maxBufferSize ${limits.maxBufferSize}`,
  );
  if (software) {
    console.log(
      `NOTE: ${device} runs the shaders on the CPU (a software Vulkan driver), not on a GPU: its figures show ` +
        `the API's fixed costs and the kernels' correctness, not GPU speed (bench/device_h100.sh runs this on an H100).`,
    );
  }
  if (requireGpu && software) {
    console.log("--require-gpu: the adapter is a software one");
    return 1;
  }
  const gpuDevice = await requestDevice(found.adapter);
  const g = await init({ backend: "webgpu", device: gpuDevice });
  const w = await init({ backend: "wasm" });
  // What "auto" decides with this device (it measures a round trip): printed beside the crossover.
  const autoNote = (await init({ backend: "auto", device: gpuDevice })).note;
  const auto: AutoInfo = { note: autoNote, minGpuLogits: Number(/under (\d+) logits/.exec(autoNote)?.[1] ?? NaN) };
  if (!Number.isFinite(auto.minGpuLogits)) auto.minGpuLogits = null;
  console.log(`"auto" with this device: ${auto.note}`);
  console.log(
    methodLine(
      cfg,
      `GB/s: 8 bytes per logit for the losses (read the input, write the gradient), the bytes moved for the ` +
        `transfers. "vs wasm": wasm's time / this time, median of per-round ratios (above 1x: faster than wasm). ` +
        `Errors vs the float64 reference (row losses) or wasm's result (marginHead).`,
    ),
  );

  const all: Cell[] = [];
  const t0 = now();
  const rowLosses = (["crossEntropy", "arcface"] as const).filter((m) => cfg.modes.includes(m));
  const rowKs = rowContenders(w, g);
  for (const [i, [n, c]] of cfg.shapes.entries()) {
    for (const loss of rowLosses) {
      let ctx: RowCtx;
      try {
        ctx = await makeRowCtx(gpuDevice, loss, n, c, 1234 + i);
      } catch (e) {
        console.log(`\n## ${loss} ${n} x ${c}: setup FAILED: ${errorText(e)}`);
        all.push({ ...newCell(loss, [n, c], device, { name: HOST }, 0), error: `setup failed: ${errorText(e)}` });
        continue;
      }
      ctx.transfers = new Transfers(gpuDevice, [ctx.x]);
      const ref = { loss: ctx.ref.loss, grads: [ctx.ref.grad] };
      const contenders = [...rowKs, ...ctx.transfers.contenders<RowCtx>()];
      const cells = await measure(cfg, ctx, {
        section: loss,
        contenders,
        newCell: (k) => newCell(loss, [n, c], device, k, k.name === ROUND_TRIP ? 0 : k.floor ? n * c * 4 : n * c * 8),
        units: n * c,
        check: (cell, o) => checkOut(cell, o, ref),
      });
      printCells(
        cells,
        `${loss} valueAndGrad ${n} x ${c} (${((n * c) / 1e6).toPrecision(3)} M logits, ${
          ((n * c * 4) / 1e6).toPrecision(3)
        } MB per matrix) [${device}]`,
      );
      all.push(...cells);
      destroyRowCtx(ctx);
    }
  }

  if (cfg.modes.includes("marginHead") && headC.length > 0) {
    const missingWhy = await headMissing(g);
    if (missingWhy) console.log(`\nmarginHead on webgpu: not available (${missingWhy})`);
    const ks = headContenders(w, missingWhy ? null : g, `not available: ${missingWhy}`);
    for (const c of headC) {
      const ctx = await makeHeadCtx(gpuDevice, c, !missingWhy);
      const n = HEAD_N, d = HEAD_D;
      const ref = ctx.ref;
      const cells = await measure(cfg, ctx, {
        section: "marginHead",
        contenders: [...ks, ...ctx.transfers.contenders<HeadCtx>()],
        // Losses: x and W read, their gradients written; floors: x and W moved once.
        newCell: (k) =>
          newCell(
            "marginHead",
            [n, d, c],
            device,
            k,
            k.name === ROUND_TRIP ? 0 : (k.floor ? 1 : 2) * ctx.transfers.bytes,
          ),
        units: n * c * d,
        // The webgpu results against wasm's (wasm against itself would say nothing).
        check: ref ? (cell, o) => cell.contender === WASM ? Promise.resolve() : checkOut(cell, o, ref) : undefined,
      });
      printCells(
        cells,
        `marginHead (arcface) valueAndGrad ${n} x ${d} x ${c} (N x D x C; transfers: x and W, ${
          (ctx.transfers.bytes / 1e6).toPrecision(3)
        } MB) [${device}]`,
      );
      all.push(...cells);
      destroyHeadCtx(ctx);
    }
  }

  let cross: Crossover | null = null;
  if (cfg.modes.includes("latency")) {
    const sizes = cfg.quick ? LATENCY_QUICK : LATENCY;
    const lat: Cell[] = [];
    for (const [i, [n, c]] of sizes.entries()) {
      const ctx = await makeRowCtx(gpuDevice, "crossEntropy", n, c, 777 + i);
      const ref = { loss: ctx.ref.loss, grads: [ctx.ref.grad] };
      lat.push(
        ...await measure(cfg, ctx, {
          section: "latency",
          // The empty round trip once, beside the smallest size.
          contenders: i === 0 ? [...rowKs, roundTrip(gpuDevice)] : rowKs,
          predict: false,
          newCell: (k) => newCell("latency", [n, c], device, k, k.floor ? 0 : n * c * 8),
          units: n * c,
          check: (cell, o) => checkOut(cell, o, ref),
        }),
      );
      destroyRowCtx(ctx);
    }
    cross = printLatency(lat, device, auto);
    all.push(...lat);
  }

  console.log(`\n# Summary [${device}] (${env.runtime} ${env.version}, ${env.cpu}, ${env.date.slice(0, 10)})`);
  printSummary(all, cfg, device, headC);
  if (cross) {
    console.log(
      `\ncrossover [${device}]: ${cross.logits === null ? "none" : `~${cross.logits} logits`} (${cross.how})`,
    );
  }

  // finishRun prints the failures; the JSON is written here, without the TF.js fields this file does not use.
  const { failed, broken } = finishRun(
    all,
    t0,
    env,
    { ...cfg, json: null },
    {},
    (x) => `${x.section} ${shapeName(x.shape)}`,
  );
  if (cfg.json) {
    writeJson(cfg.json, {
      env: envJson(env),
      config: { ...configJson(cfg), headC },
      adapter: { note: found.note, label: device, software, limits: adapterLimits(limits) },
      auto: { ...auto, wasmLogitsPerSecondAssumed: WASM_LOGITS_PER_SECOND },
      crossover: cross,
      results: all,
    });
  }
  gpuDevice.destroy();
  return failed.length > 0 || broken.length > 0 ? 1 : 0;
}

/** The environment without the TF.js fields (this benchmark does not load TF.js). */
function envJson(env: EnvInfo): Omit<EnvInfo, "tfjs" | "tfjsWasm"> {
  const { tfjs: _tfjs, tfjsWasm: _tfjsWasm, ...rest } = env;
  return rest;
}

function writeJson(file: string, value: unknown): void {
  writeFileSync(file, JSON.stringify(value, null, 2) + "\n");
  console.log(`wrote ${file}`);
}

/** The adapter's numeric limits as a plain object (GPUSupportedLimits is not enumerable everywhere). */
function adapterLimits(l: GPUSupportedLimits): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of ["maxStorageBufferBindingSize", "maxBufferSize", "maxComputeWorkgroupsPerDimension"] as const) {
    out[k] = l[k];
  }
  return out;
}

process.exitCode = await main();
