/**
 * One call of a whole-matrix kernel family (the metric-learning and mixture-of-experts
 * families): several entry points of one kernel dispatched in one compute pass over one
 * bind group, then every host result copied into one staging buffer: one submission and
 * one readback per call. GPU-resident inputs are bound in place and GPU outputs stay on
 * the GPU.
 *
 * @module
 */
import { DeviceValues, onDevice } from "../src/validate.ts";
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

/** Runs a whole-matrix call: one pass, one submission, one readback of `reads` (in order). */
export async function runPass<K extends KernelName>(
  ctx: GpuContext,
  bufs: Buffers,
  job: PassJob<K>,
): Promise<Float32Array[]> {
  const params = bufs.temp(ctx.params(job.kernel, job.params));
  const entries = [...new Set(job.dispatches.map(([e]) => e))];
  const pipes = new Map(
    await Promise.all(entries.map(async (e) => [e, await ctx.pipeline(job.kernel, job.layout, e)] as const)),
  );
  // Staging offsets must be multiples of 8.
  const offsets: number[] = [];
  let total = 0;
  for (const [, bytes] of job.reads) offsets.push(total), total += Math.ceil(bytes / 8) * 8;
  const staging = bufs.temp(ctx.staging(total));
  await ctx.submit((enc) => {
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
    job.reads.forEach(([b, bytes], k) => {
      if (bytes > 0) enc.copyBufferToBuffer(b, 0, staging, offsets[k], Math.ceil(bytes / 4) * 4);
    });
  });
  const all = await ctx.read(staging, 0, Math.max(4, total));
  ctx.check();
  return job.reads.map(([, bytes], k) => new Float32Array(all, offsets[k], bytes / 4));
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
