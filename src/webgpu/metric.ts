/**
 * WebGPU glue of the `metric` family (`ntXent`, `tripletMargin`, `multiSimilarity`,
 * `proxyAnchor`): no shader of its own yet. GPU-resident inputs are read back, the float64
 * reference kernel (src/reference/metric.ts) computes the loss and the gradients on the
 * host, and the gradients go back to the GPU (into the caller's `out` buffers when given),
 * so the API is the same as for every other loss; host inputs run the reference directly.
 * Reading back is what the GPU path (SPEC §10: `readback: false`, `encoder`, `Losses.sync`)
 * rules out, so a recorded call is refused with a `TypeError` naming the loss.
 *
 * @module
 */
import { type Raw, then } from "../kernels/core.ts";
import type { MetricProblem } from "../kernels/metric.ts";
import { DeviceValues, onDevice } from "../validate.ts";
import { metric as reference } from "../reference/metric.ts";
import { checkOut, type GpuContext } from "./context.ts";

/** The `metric` family on a WebGPU context (see the module). */
export function metric(ctx: GpuContext, p: MetricProblem): Raw | Promise<Raw> {
  ctx.check();
  if (ctx.recording) {
    throw new TypeError(
      `Expected a loss with a WebGPU kernel on the GPU path (options.readback false, options.encoder, losses.sync, softmargin/tfjs on TensorFlow.js's webgpu backend), got ${p.loss}, which has no shader yet (its GPU-resident inputs are read back for the float64 reference on the host): call it with readback true, or on the wasm backend`,
    );
  }
  const resident = onDevice(p.f) || onDevice(p.proxies);
  checkOut("f", p.outF as { buffer?: unknown } | null, resident);
  if (p.proxies) checkOut("proxies", p.outProxies as { buffer?: unknown } | null, resident);
  if (!resident) return reference(p);
  const host = (v: Float32Array | null) => (v && onDevice(v) ? ctx.readMatrix(v) : Promise.resolve(v));
  return then(Promise.all([host(p.f), host(p.proxies)]), ([f, proxies]) => {
    const raw = reference({ ...p, f: f as Float32Array, proxies, outF: null, outProxies: null });
    const grads: Record<string, Float32Array> = {};
    const back = (name: string, g: Float32Array, out: unknown, rows: number) => {
      const to = (out as { buffer?: GPUBuffer } | null)?.buffer;
      const buffer = to ?? ctx.buffer(g.byteLength);
      ctx.device.queue.writeBuffer(buffer, 0, g.buffer as ArrayBuffer, g.byteOffset, g.byteLength);
      grads[name] = new DeviceValues(buffer, [rows, p.d]) as unknown as Float32Array;
    };
    if (raw.grads.f) back("f", raw.grads.f, p.outF, p.b);
    if (raw.grads.proxies) back("proxies", raw.grads.proxies, p.outProxies, p.c);
    return { rows: raw.rows, grads };
  });
}
