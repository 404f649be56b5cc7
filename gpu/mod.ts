/**
 * The WebGPU backend: one kernel per loss over a device's `GpuContext`.
 *
 * @module
 */
import type { Kernels } from "../src/losses/mod.ts";
import { type ContextOptions, DeviceLostError, GpuContext } from "./context.ts";
import { type AsyncLosses, bindLosses } from "../src/losses/mod.ts";
import { referenceKernels } from "../src/reference/mod.ts";
import { simdSupported } from "../src/wasm/runtime.ts";
import { wasmKernels } from "../src/wasm/mod.ts";
import type { BackendName } from "../src/types.ts";
import * as v from "../src/validate.ts";
import { hardLabel } from "./hard_label.ts";

/** The WebGPU kernels of a context. */
export function webgpuKernels(ctx: GpuContext): Kernels {
  const rows = (p: Parameters<typeof hardLabel>[1]) => hardLabel(ctx, p);
  const todo = (name: string) => () => Promise.reject(new Error(`${name} is not implemented on webgpu yet`));
  return {
    crossEntropy: rows,
    focal: rows,
    arcface: rows,
    cosface: rows,
    normface: rows,
    combinedMargin: rows,
    softCrossEntropy: todo("softCrossEntropy"),
    klDiv: todo("klDiv"),
    distillation: todo("distillation"),
    accuracy: todo("accuracy"),
    marginHead: todo("marginHead"),
    sphereface: todo("sphereface"),
    lsoftmax: todo("lsoftmax"),
    softmax: todo("softmax"),
  };
}

/** Why no WebGPU adapter can be used here, or null when one can. */
export interface Adapter {
  adapter: GPUAdapter | null;
  /** What was found: the adapter's description, or why there is none. */
  note: string;
}

/**
 * Looks for a WebGPU adapter. `navigator.gpu` is absent in runtimes without WebGPU
 * (Bun, Node) and in Deno before 2 without `--unstable-webgpu`.
 */
export async function findAdapter(): Promise<Adapter> {
  const gpu = (globalThis.navigator as { gpu?: GPU } | undefined)?.gpu;
  if (!gpu) return { adapter: null, note: "this runtime has no WebGPU (navigator.gpu is undefined)" };
  let adapter: GPUAdapter | null = null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch (e) {
    return { adapter: null, note: `navigator.gpu.requestAdapter() failed: ${(e as Error).message}` };
  }
  if (!adapter) return { adapter: null, note: "navigator.gpu.requestAdapter() found no adapter" };
  const info = adapter.info;
  const name = [info?.vendor, info?.architecture, info?.description].filter((s) => s).join(" ") || "unnamed";
  const software = info?.isFallbackAdapter ? " (a software fallback adapter)" : "";
  return { adapter, note: `WebGPU adapter ${name}${software}` };
}

/** A device of an adapter, with the adapter's largest storage-binding and buffer limits. */
export async function requestDevice(adapter: GPUAdapter): Promise<GPUDevice> {
  const l = adapter.limits;
  return await adapter.requestDevice({
    requiredLimits: {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxStorageBuffersPerShaderStage: Math.min(l.maxStorageBuffersPerShaderStage, 10),
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
    },
  });
}

/** Every loss bound to one backend, with Promise-returning methods. */
export interface Losses extends AsyncLosses {
  /** The backend in use (an `"auto"` instance whose GPU was lost reports `"wasm"`). */
  readonly backend: BackendName;
  /** Why this backend: the adapter found, or why WebGPU was not used. */
  readonly note: string;
}

/**
 * Host-data problems with fewer logits than this stay on WebAssembly under `"auto"`:
 * below it the fixed cost of a dispatch and its readback exceeds the whole WebAssembly
 * computation (bench/README.md, "WebGPU").
 */
export const AUTO_GPU_MIN_LOGITS = 1 << 17;

/** Options of {@linkcode gpuLosses}. */
export interface GpuLossesOptions extends ContextOptions {
  /** Route small host problems, and every call after a device loss, to the CPU. */
  auto: boolean;
  /** Why this backend (`Losses.note`). */
  note: string;
}

/**
 * The losses on a device; with `auto`, small host problems and every call after a device loss run on wasm. */
export function gpuLosses(device: GPUDevice, options: GpuLossesOptions): Losses {
  const { auto, note } = options;
  const ctx = new GpuContext(device, options);
  let kernels = webgpuKernels(ctx);
  if (auto) {
    // The caller compiled the WebAssembly module when the engine has SIMD.
    const cpu = simdSupported() ? wasmKernels : referenceKernels;
    kernels = routeKernels(kernels, cpu, ctx);
  }
  const losses = bindLosses(kernels, false);
  return Object.defineProperties(losses, {
    backend: {
      get: () => (auto && ctx.lost !== null ? (simdSupported() ? "wasm" : "js") : "webgpu"),
      enumerable: true,
    },
    note: {
      get: () => (ctx.lost === null ? `webgpu: ${note}` : `the WebGPU device was lost (${ctx.lost})`),
      enumerable: true,
    },
  }) as Losses;
}

/** `auto`'s routing: host problems below AUTO_GPU_MIN_LOGITS, and all once the device is lost, on the CPU. */
function routeKernels(gpu: Kernels, cpu: Kernels, ctx: GpuContext): Kernels {
  const out: Record<string, unknown> = {};
  for (const name of Object.keys(gpu) as (keyof Kernels)[]) {
    const g = gpu[name] as (p: object) => unknown, c = cpu[name] as (p: object) => unknown;
    out[name] = async (p: { n: number; c: number; d?: number }) => {
      const resident = Object.values(p).some(v.onDevice);
      if (!resident && (ctx.lost !== null || p.n * p.c * (p.d ?? 1) < AUTO_GPU_MIN_LOGITS)) return c(p);
      try {
        return await g(p);
      } catch (e) {
        if (e instanceof DeviceLostError && !resident) return c(p);
        throw e;
      }
    };
  }
  return out as Kernels;
}

export { type ContextOptions, GpuContext };
