/**
 * The finish step of a WebGPU call with `readback: false` (SPEC §10): the loss and the
 * parts that a loss's `finish` formed from per-row values left on the GPU (the
 * expressions of src/kernels/deferred.ts: sums, means, weighted sums, reciprocals) are
 * computed by src/webgpu/finish.wgsl into small buffers of their own, in the call's
 * command encoder, after its kernel: a reduced value is a `[1, 1]` GPU matrix, per-row
 * values `[N, 1]`. Host numbers and vectors of the result (a part that is 0) are
 * uploaded; GPU-resident values (`DeviceValues`) become `{ buffer, shape }`. The
 * gradient of a number input (clip's `scale`) becomes a `[1, 1]` GPU matrix as the loss does.
 *
 * @module
 */
import { type Deferred, isDeferred } from "../kernels/deferred.ts";
import { onDevice } from "../validate.ts";
import type { GpuContext } from "./context.ts";

/** Where a node's values are: element `offset + i * stride` of `buffer`. */
interface Src {
  buffer: GPUBuffer;
  offset: number;
  stride: number;
}

/**
 * `r` (a finished result) with its loss and parts as GPU matrices, their computation
 * recorded into the call being recorded; `grads` and lists are left as they are.
 */
export function materialize(ctx: GpuContext, r: Record<string, unknown>): Record<string, unknown> {
  const enc = ctx.recording!.enc;
  const memo = new Map<Deferred, Src>();
  let pass: GPUComputePassEncoder | null = null;
  const dispatch = (entry: "sum" | "axpy" | "recip", src: Src, n: number, dst: GPUBuffer, k = 1, c = 0, acc = 0) => {
    const pipeline = ctx.pipelineNow("finish", "rw", entry);
    const params = ctx.temp(ctx.params("finish", { n, off: src.offset, stride: src.stride, acc, k, c, zero: 0 }));
    pass ??= enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, ctx.bind(pipeline, params, [src.buffer, dst]));
    pass.dispatchWorkgroups(entry === "sum" ? 1 : Math.min(ctx.maxGroups, Math.ceil(n / 64)));
  };
  /** Computes `d` into `dst` (element i at i). */
  const compute = (d: Deferred, dst: GPUBuffer): void => {
    const node = d.node, n = d.vector ? d.n : 1;
    if (node.op === "rows") dispatch("axpy", source(d), n, dst);
    else if (node.op === "sum") dispatch("sum", source(node.of), node.of.n, dst);
    else if (node.op === "recip") dispatch("recip", source(node.of), n, dst);
    else node.terms.forEach(([x, k], j) => dispatch("axpy", source(x), n, dst, k, node.c, j > 0 ? 1 : 0));
  };
  /** Where `d`'s values are: a kernel's column in place, or a buffer of the call computed once. */
  const source = (d: Deferred): Src => {
    if (d.node.op === "rows") return d.node;
    let s = memo.get(d);
    if (!s) {
      s = { buffer: ctx.temp(ctx.buffer((d.vector ? d.n : 1) * 4)), offset: 0, stride: 1 };
      compute(d, s.buffer);
      memo.set(d, s);
    }
    return s;
  };
  /** A value of the result on the GPU: computed, in place, or uploaded (a host number or vector); else as it is. */
  const place = (value: unknown): unknown => {
    if (isDeferred(value)) {
      const rows = value.vector ? value.n : 1;
      const buffer = ctx.buffer(rows * 4);
      compute(value, buffer);
      return { buffer, shape: [rows, 1] };
    }
    if (onDevice(value)) return { buffer: value.buffer, shape: value.shape };
    if (typeof value === "number" || (ArrayBuffer.isView(value) && !onDevice(value))) {
      const data = typeof value === "number" ? Float32Array.of(value) : Float32Array.from(value as Float32Array);
      return { buffer: ctx.upload(data), shape: [data.length, 1] };
    }
    return value;
  };
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(r)) {
    // Gradients are GPU matrices already, but for those of number inputs (clip's scale): [1, 1].
    if (key === "grads") {
      out[key] = Object.fromEntries(
        Object.entries(value as Record<string, unknown>).map(([k, g]) => [
          k,
          typeof g === "number" || isDeferred(g) ? place(g) : g,
        ]),
      );
    } else out[key] = place(value);
  }
  (pass as GPUComputePassEncoder | null)?.end();
  return out;
}
