/**
 * One call of a whole-matrix kernel family (the metric-learning and mixture-of-experts
 * families): several entry points of one kernel dispatched in one compute pass over one
 * bind group, then every host result copied into one staging buffer: one submission and
 * one readback per call. GPU-resident inputs are bound in place and GPU outputs stay on
 * the GPU. A call is planned first (`Plan`: its jobs, and the buffers its results will
 * be in), so that a composite's terms can share one submission and one readback
 * (src/webgpu/composite.ts, `runJobs`).
 *
 * @module
 */
import { type Raw, then } from "../kernels/core.ts";
import { DeviceValues, onDevice } from "../validate.ts";
import type { GpuContext, KernelName, Params } from "./context.ts";

/** One dispatch of a pass: an entry point of the kernel and its workgroup grid. */
export type Dispatch = [entry: string, x: number, y?: number];

/** A whole-matrix call: a kernel, its uniform values, bindings 1.. and dispatches. */
export interface PassJob<K extends KernelName> {
  kernel: K;
  params: Params<K>;
  /** Binding 1..: a buffer, or null (a placeholder), with "r" or "w" in `layout`. */
  bindings: (GPUBuffer | GPUBufferBinding | null)[];
  /** "r" (read-only) or "w" (read-write) per binding. */
  layout: string;
  dispatches: Dispatch[];
  /** Buffers to read back, bytes of each. */
  reads: [GPUBuffer, number][];
  /** Commands (copies) of the same submission before the pass, and after it (before the readback). */
  before?: (enc: GPUCommandEncoder) => void;
  after?: (enc: GPUCommandEncoder) => void;
}

/**
 * The buffers of one call: host inputs uploaded, scratch taken from the pool, all given
 * back (or destroyed) by `done`.
 */
export class Buffers {
  readonly #temps: GPUBuffer[] = [];
  readonly #pooled: GPUBuffer[] = [];
  constructor(readonly ctx: GpuContext) {}

  /** The buffer of a problem's values: a GPU input in place, or an upload of host values (null: none). */
  input(data: ArrayBufferView | null | undefined): GPUBuffer | null {
    if (data === null || data === undefined) return null;
    if (onDevice(data)) return data.buffer;
    return this.temp(this.ctx.upload(data));
  }

  /** A scratch buffer of `bytes` from the context's pool. */
  scratch(bytes: number): GPUBuffer {
    const b = this.ctx.scratch(bytes);
    this.#pooled.push(b);
    return b;
  }

  /** A buffer destroyed by `done`. */
  temp(b: GPUBuffer): GPUBuffer {
    this.#temps.push(b);
    return b;
  }

  /**
   * A gradient's buffer: on the GPU (the caller's `out`, or a new buffer the result
   * owns) when `resident`, else scratch read back into the host result.
   */
  output(resident: boolean, out: { buffer?: GPUBuffer } | null | undefined, bytes: number): GPUBuffer {
    if (!resident) return this.scratch(bytes);
    return out?.buffer ?? this.ctx.buffer(bytes);
  }

  /**
   * Releases the call's buffers: destroys its own and gives the scratch back to the pool,
   * or, inside a recorded call, hands them all to the recording (released after its
   * submission).
   */
  done(): void {
    if (this.ctx.recording) this.ctx.recording.temps.push(...this.#temps, ...this.#pooled);
    else {
      for (const b of this.#temps) b.destroy();
      this.ctx.release(...this.#pooled);
    }
  }
}

/** A job of kernel `K` as one of a plan's jobs (typed against its kernel's uniform struct). */
export const job = <K extends KernelName>(j: PassJob<K>): PassJob<KernelName> => j as unknown as PassJob<KernelName>;

/**
 * A kernel call planned but not yet run: its jobs (one compute pass each), the values a
 * later term of a composite may take as inputs or combine (its gradients and outputs, as
 * `DeviceValues` of the buffers they will be in: known before anything runs), and how
 * the jobs' reads become its result.
 */
export interface Plan {
  jobs: PassJob<KernelName>[];
  values: Record<string, Float32Array>;
  finish(reads: Float32Array[][]): Raw;
}

/**
 * A family's planner: checks the problem and plans its call into `bufs` (whose buffers
 * live until the whole submission is read). `resident` forces GPU-resident outputs (a
 * composite whose other inputs are on the GPU), else they are where the inputs are.
 */
export type Planner<P> = (ctx: GpuContext, p: P, bufs: Buffers, resident?: boolean) => Plan;

/**
 * Runs a planned call on its own: one submission and one readback, or, inside a recorded
 * call (`readback: false`), recorded synchronously with its reads left on the GPU.
 */
export function solve<P>(ctx: GpuContext, p: P, plan: Planner<P>): Raw | Promise<Raw> {
  return withBuffers(ctx, (bufs) => {
    const planned = plan(ctx, p, bufs);
    return then(runJobsNow(ctx, bufs, planned.jobs), (reads) => planned.finish(reads));
  });
}

/**
 * `body` with the buffers of one call, released ({@linkcode Buffers.done}) when its
 * result is ready (at once for a synchronous result) or it failed.
 */
export function withBuffers<T>(ctx: GpuContext, body: (bufs: Buffers) => T | Promise<T>): T | Promise<T> {
  const bufs = new Buffers(ctx);
  let r: T | Promise<T>;
  try {
    r = body(bufs);
  } catch (e) {
    bufs.done();
    throw e;
  }
  if (r instanceof Promise) return r.finally(() => bufs.done());
  bufs.done();
  return r;
}

/** Jobs recorded into the call being recorded (their reads left on the GPU), or run and read back. */
export function runJobsNow(
  ctx: GpuContext,
  bufs: Buffers,
  jobs: PassJob<KernelName>[],
): Float32Array[][] | Promise<Float32Array[][]> {
  return ctx.recording ? recordJobs(ctx, jobs) : runJobs(ctx, bufs, jobs);
}

/**
 * Records jobs into the call being recorded, one compute pass each (with their copies
 * before and after). Returns each job's reads as `DeviceValues` `[count, 1]` of the
 * buffers they are in (what `Plan.finish` reads: per-row values stay on the GPU).
 */
export function recordJobs(ctx: GpuContext, jobs: PassJob<KernelName>[]): Float32Array[][] {
  const enc = ctx.recording!.enc;
  for (const job of jobs) {
    const entries = [...new Set(job.dispatches.map(([e]) => e))];
    const pipes = new Map(entries.map((e) => [e, ctx.pipelineNow(job.kernel, job.layout, e)] as const));
    const params = ctx.temp(ctx.params(job.kernel, job.params));
    job.before?.(enc);
    const pass = enc.beginComputePass();
    // One bind group for every entry point: they share the explicit layout.
    const group = ctx.bind(pipes.get(entries[0])!, params, job.bindings);
    for (const [entry, x, y = 1] of job.dispatches) {
      if (x === 0 || y === 0) continue;
      pass.setPipeline(pipes.get(entry)!);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(x, y);
    }
    pass.end();
    job.after?.(enc);
  }
  return jobs.map((job) =>
    job.reads.map(([b, bytes]) => new DeviceValues(b, [Math.max(1, bytes / 4), 1]) as unknown as Float32Array)
  );
}

/**
 * Runs jobs in order, one compute pass each (with their copies before and after), in one
 * submission, then copies every job's reads into one staging buffer: one readback.
 * Returns each job's reads (in order).
 */
export async function runJobs(ctx: GpuContext, bufs: Buffers, jobs: PassJob<KernelName>[]): Promise<Float32Array[][]> {
  // Compiled asynchronously first, so that the recording finds them.
  await Promise.all(jobs.flatMap((job) => job.dispatches.map(([e]) => ctx.pipeline(job.kernel, job.layout, e))));
  // Staging offsets must be multiples of 8.
  const offsets: number[][] = [];
  let total = 0;
  for (const job of jobs) {
    offsets.push(job.reads.map(([, bytes]) => {
      const at = total;
      total += Math.ceil(bytes / 8) * 8;
      return at;
    }));
  }
  const staging = bufs.temp(ctx.staging(total));
  ctx.record(undefined, (enc) => {
    recordJobs(ctx, jobs);
    jobs.forEach((job, j) =>
      job.reads.forEach(([b, bytes], k) => {
        if (bytes > 0) enc.copyBufferToBuffer(b, 0, staging, offsets[j][k], Math.ceil(bytes / 4) * 4);
      })
    );
  });
  const all = await ctx.read(staging, 0, Math.max(4, total));
  await ctx.settled();
  ctx.check();
  return jobs.map((job, j) => job.reads.map(([, bytes], k) => new Float32Array(all, offsets[j][k], bytes / 4)));
}

/** Runs one whole-matrix job: one pass, one submission, one readback of `reads` (in order). */
export function runPass<K extends KernelName>(
  ctx: GpuContext,
  bufs: Buffers,
  job: PassJob<K>,
): Float32Array[] | Promise<Float32Array[]> {
  return then(runJobsNow(ctx, bufs, [job as unknown as PassJob<KernelName>]), (r) => r[0]);
}

/** A gradient result: the host copy (into the caller's `out` when given), or the GPU buffer. */
export function gradOf(
  resident: boolean,
  buffer: GPUBuffer,
  shape: readonly [number, number],
  host: Float32Array | undefined,
  out: { data?: Float32Array } | null | undefined,
): Float32Array {
  if (resident) return new DeviceValues(buffer, shape) as unknown as Float32Array;
  const data = out?.data ?? new Float32Array(shape[0] * shape[1]);
  data.set(host!);
  return data;
}

/**
 * The rows grouped by class, for kernels that go through a class's rows: `ints` holds the labels (n), the
 * rows in class order (a stable counting sort, n) and each class's first index into that order (c + 1);
 * `most` is the most rows of one class (what those kernels' loops are split by, src/webgpu/loops.ts).
 */
export function byClass(labels: Int32Array, c: number): { ints: Int32Array; most: number } {
  const n = labels.length, ints = new Int32Array(2 * n + c + 1);
  ints.set(labels);
  for (let i = 0; i < n; i++) ints[2 * n + labels[i] + 1]++;
  let most = 0;
  for (let j = 0; j < c; j++) {
    most = Math.max(most, ints[2 * n + j + 1]);
    ints[2 * n + j + 1] += ints[2 * n + j];
  }
  const next = ints.slice(2 * n, 2 * n + c);
  for (let i = 0; i < n; i++) ints[n + next[labels[i]]++] = i;
  return { ints, most };
}

/** Throws a `RangeError` when a matrix of `count` float32 values does not fit one storage binding. */
export function fits(ctx: GpuContext, what: string, count: number): void {
  if (count * 4 > ctx.maxBinding) {
    throw new RangeError(
      `Expected ${what} (${count} float32 values) to fit one WebGPU storage binding (${ctx.maxBinding} bytes), got ${
        count * 4
      } bytes`,
    );
  }
}
