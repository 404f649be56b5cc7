/**
 * WebGPU glue of the `metric` family (`ntXent`, `tripletMargin`, `multiSimilarity`,
 * `proxyAnchor`): no shader of its own yet. GPU-resident inputs are read back, the float64
 * reference kernel (src/reference/metric.ts) computes the loss and the gradients on the
 * host, and the gradients go back to the GPU (into the caller's `out` buffers when given),
 * so the API is the same as for every other loss; host inputs run the reference directly.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { MetricProblem } from "../kernels/metric.ts";
import { DeviceValues, onDevice } from "../validate.ts";
import { metric as reference } from "../reference/metric.ts";
import { checkOut, type GpuContext } from "./context.ts";

/** The `metric` family on a WebGPU context (see the module). */
export async function metric(ctx: GpuContext, p: MetricProblem): Promise<Raw> {
  ctx.check();
  const resident = onDevice(p.f) || onDevice(p.proxies);
  checkOut("f", p.outF as { buffer?: unknown } | null, resident);
  if (p.proxies) checkOut("proxies", p.outProxies as { buffer?: unknown } | null, resident);
  if (!resident) return reference(p);
  await ctx.checkFinite(p.f, ...(p.proxies ? [p.proxies] : []));
  const host = async (v: Float32Array | null) => (v && onDevice(v) ? await ctx.readMatrix(v) : v);
  const [f, proxies] = [await host(p.f) as Float32Array, await host(p.proxies)];
  const raw = reference({ ...p, f, proxies, outF: null, outProxies: null });
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
}
