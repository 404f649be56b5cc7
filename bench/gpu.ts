/**
 * WebGPU for the benchmarks: a device of this runtime's adapter (with the adapter's largest
 * buffer limits, as `init` asks for), labelled hardware or software, and matrices moved to
 * and from it.
 *
 * @module
 */
import { errorText } from "./engine.ts";

/** `label`: "software (llvmpipe)" for a software adapter (the shaders run on the CPU), else "hardware (...)". */
export type Gpu = { device: GPUDevice; label: string; software: boolean; limits: GPUSupportedLimits };

const MAP_READ = 0x01, COPY_DST = 0x08, STORAGE_COPY = 0x80 | 0x04 | COPY_DST;

/** The device of this runtime's adapter, or why there is none. */
export async function gpuDevice(): Promise<Gpu | string> {
  const gpu = (globalThis.navigator as { gpu?: GPU } | undefined)?.gpu;
  if (!gpu) return "this runtime has no WebGPU (navigator.gpu is undefined)";
  try {
    const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
    if (!adapter) return "navigator.gpu.requestAdapter() found no adapter";
    const info = adapter.info, l = adapter.limits;
    const desc = [info?.vendor, info?.architecture, info?.description].filter((s) => s).join(" ") || "unnamed";
    const sw = /llvmpipe|lavapipe|swiftshader|softpipe|warp/i.exec(desc), software = !!info?.isFallbackAdapter || !!sw;
    const { maxStorageBufferBindingSize, maxBufferSize, maxComputeWorkgroupStorageSize } = l;
    const requiredLimits = { maxStorageBufferBindingSize, maxBufferSize, maxComputeWorkgroupStorageSize };
    const device = await adapter.requestDevice({
      requiredLimits: {
        ...requiredLimits,
        maxStorageBuffersPerShaderStage: Math.min(l.maxStorageBuffersPerShaderStage, 10),
      },
    });
    return {
      device,
      label: software ? `software (${sw?.[0].toLowerCase() ?? desc})` : `hardware (${desc})`,
      software,
      limits: l,
    };
  } catch (e) {
    return `no WebGPU device: ${errorText(e)}`;
  }
}

export const gpuBuffer = (device: GPUDevice, bytes: number, usage = STORAGE_COPY): GPUBuffer =>
  device.createBuffer({ size: Math.max(16, Math.ceil(bytes / 8) * 8), usage });

/** A GPU-resident copy of `data` as the API takes it, `{ buffer, shape }`. */
export function upload(device: GPUDevice, data: Float32Array, shape: readonly number[]) {
  const buffer = gpuBuffer(device, data.byteLength);
  device.queue.writeBuffer(buffer, 0, data as Float32Array<ArrayBuffer>);
  return { buffer, shape: [shape[0], shape[1]] as [number, number] };
}

/** A MAP_READ buffer for `readback` into these arrays. */
export const stagingFor = (device: GPUDevice, dst: Float32Array[]): GPUBuffer =>
  gpuBuffer(device, dst.reduce((s, d) => s + Math.ceil(d.byteLength / 8) * 8, 0), MAP_READ | COPY_DST);

/** Copies the buffers `src` into the arrays `dst` through one MAP_READ buffer (a fresh one unless `staging` is given). */
export async function readback(device: GPUDevice, src: GPUBuffer[], dst: Float32Array[], staging?: GPUBuffer) {
  const offs = dst.map((_, k) => dst.slice(0, k).reduce((s, d) => s + Math.ceil(d.byteLength / 8) * 8, 0));
  const stage = staging ?? stagingFor(device, dst), enc = device.createCommandEncoder();
  src.forEach((b, k) => enc.copyBufferToBuffer(b, 0, stage, offs[k], dst[k].byteLength));
  device.queue.submit([enc.finish()]);
  await stage.mapAsync(MAP_READ, 0, offs[dst.length - 1] + Math.ceil(dst[dst.length - 1].byteLength / 8) * 8);
  dst.forEach((d, k) => d.set(new Float32Array(stage.getMappedRange(offs[k], d.byteLength))));
  stage.unmap();
  if (!staging) stage.destroy();
}
