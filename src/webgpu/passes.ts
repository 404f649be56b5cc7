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
import type { Raw } from "../kernels/core.ts";
import { DeviceValues, onDevice } from "../validate.ts";
import type { GpuContext, KernelName, Params } from "./context.ts";

/** One dispatch of a pass: an entry point of the kernel and its workgroup grid. */
export type Dispatch = [entry: string, x: number, y?: number];

/** A whole-matrix call: a kernel, its uniform values, bindings 1.. and dispatches. */
export interface PassJob<K extends KernelName> {
  kernel: K;
  params: Params<K>;
  /** Binding 1..: a buffer, or null (a placeholder), with "r" or "w" in `layout`. */
  bindings: (GPUBuffer | null)[];
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

  done(): void {
    for (const b of this.#temps) b.destroy();
    this.ctx.release(...this.#pooled);
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
export type Planner<P> = (ctx: GpuContext, p: P, bufs: Buffers, resident?: boolean) => Promise<Plan>;

/** Runs a planned call on its own: one submission and one readback. */
export async function solve<P>(ctx: GpuContext, p: P, plan: Planner<P>): Promise<Raw> {
  const bufs = new Buffers(ctx);
  try {
    const planned = await plan(ctx, p, bufs);
    return planned.finish(await runJobs(ctx, bufs, planned.jobs));
  } finally {
    bufs.done();
  }
}

/**
 * Runs jobs in order, one compute pass each (with their copies before and after), in one
 * submission, then copies every job's reads into one staging buffer: one readback.
 * Returns each job's reads (in order).
 */
export async function runJobs(ctx: GpuContext, bufs: Buffers, jobs: PassJob<KernelName>[]): Promise<Float32Array[][]> {
  const ready = await Promise.all(jobs.map(async (job) => {
    const entries = [...new Set(job.dispatches.map(([e]) => e))];
    const pipes = new Map(
      await Promise.all(entries.map(async (e) => [e, await ctx.pipeline(job.kernel, job.layout, e)] as const)),
    );
    return { job, entries, pipes, params: bufs.temp(ctx.params(job.kernel, job.params)) };
  }));
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
  await ctx.submit((enc) => {
    for (const { job, entries, pipes, params } of ready) {
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
    jobs.forEach((job, j) =>
      job.reads.forEach(([b, bytes], k) => {
        if (bytes > 0) enc.copyBufferToBuffer(b, 0, staging, offsets[j][k], Math.ceil(bytes / 4) * 4);
      })
    );
  });
  const all = await ctx.read(staging, 0, Math.max(4, total));
  ctx.check();
  return jobs.map((job, j) => job.reads.map(([, bytes], k) => new Float32Array(all, offsets[j][k], bytes / 4)));
}

/** Runs one whole-matrix job: one pass, one submission, one readback of `reads` (in order). */
export async function runPass<K extends KernelName>(
  ctx: GpuContext,
  bufs: Buffers,
  job: PassJob<K>,
): Promise<Float32Array[]> {
  return (await runJobs(ctx, bufs, [job as unknown as PassJob<KernelName>]))[0];
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
