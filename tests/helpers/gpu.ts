/**
 * What the WebGPU tests share: one device per test process, moving matrices to and
 * from it, and counting what a call submits and maps.
 *
 * @module
 */
import { findAdapter, requestDevice } from "../../src/backend.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const USAGE = 0x80 | 0x04 | 0x08; // STORAGE | COPY_SRC | COPY_DST

let shared: Promise<GPUDevice> | null = null;

/** A device of the adapter here, made once per process (callers check `webgpuMissing` first). */
export function sharedDevice(): Promise<GPUDevice> {
  return shared ??= findAdapter().then((found) => requestDevice(found.adapter!));
}

/** A GPU-resident copy of a host matrix, on `on` (default: the shared device). */
export async function upload(
  m: { data: Float32Array; shape: readonly number[] },
  on?: GPUDevice,
): Promise<{ buffer: GPUBuffer; shape: readonly [number, number] }> {
  const dev = on ?? await sharedDevice();
  const buffer = dev.createBuffer({ size: Math.max(16, m.data.byteLength), usage: USAGE });
  dev.queue.writeBuffer(buffer, 0, m.data as Float32Array<ArrayBuffer>);
  return { buffer, shape: [m.shape[0], m.shape[1]] };
}

/** Reads a GPU matrix back from `on` (default: the shared device). */
export async function download(
  m: { buffer: GPUBuffer; shape: readonly number[] },
  on?: GPUDevice,
): Promise<Float32Array> {
  const dev = on ?? await sharedDevice();
  const bytes = m.shape.reduce((a, b) => a * b, 1) * 4;
  const staging = dev.createBuffer({ size: Math.max(16, bytes), usage: 0x01 | 0x08 });
  const enc = dev.createCommandEncoder();
  enc.copyBufferToBuffer(m.buffer, 0, staging, 0, bytes);
  dev.queue.submit([enc.finish()]);
  await staging.mapAsync(0x01);
  const out = new Float32Array(staging.getMappedRange(0, bytes).slice(0));
  staging.destroy();
  return out;
}

/** What `call` submits and maps, by wrapping the device's queue and GPUBuffer.prototype.mapAsync. */
export async function count<T>(
  dev: GPUDevice,
  call: () => Promise<T>,
): Promise<{ submits: number; maps: number; r: T }> {
  const queue = dev.queue as Any, submit = queue.submit, mapAsync = GPUBuffer.prototype.mapAsync;
  let submits = 0, maps = 0;
  queue.submit = (...a: Any[]) => (submits++, submit.apply(queue, a));
  GPUBuffer.prototype.mapAsync = function (this: GPUBuffer, ...a: Any[]) {
    maps++;
    return (mapAsync as Any).apply(this, a);
  };
  try {
    const r = await call();
    return { submits, maps, r };
  } finally {
    queue.submit = submit;
    GPUBuffer.prototype.mapAsync = mapAsync;
  }
}
