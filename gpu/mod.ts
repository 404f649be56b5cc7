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
import { hardLabel } from "./cross_entropy.ts";
import { head as embeddingHead } from "./margin_head.ts";
import { klDiv, softTarget } from "./soft_cross_entropy.ts";
import { distill } from "./distillation.ts";
import { topkHits } from "./accuracy.ts";
import { softmaxTransform } from "./softmax.ts";

/** The WebGPU kernels of a context. */
export function webgpuKernels(ctx: GpuContext): Kernels {
  const rows = (p: Parameters<typeof hardLabel>[1]) => hardLabel(ctx, p);
  return {
    crossEntropy: rows,
    focal: rows,
    arcface: rows,
    cosface: rows,
    normface: rows,
    combinedMargin: rows,
    softCrossEntropy: (p) => softTarget(ctx, p),
    klDiv: (p) => klDiv(ctx, p),
    distillation: (p) => distill(ctx, p),
    accuracy: (p) => topkHits(ctx, p),
    marginHead: (p) => embeddingHead(ctx, p),
    sphereface: (p) => embeddingHead(ctx, p),
    lsoftmax: (p) => embeddingHead(ctx, p),
    softmax: (p) => softmaxTransform(ctx, p),
  };
}

/** The adapter found, or null with the reason. */
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
 * WebAssembly's speed on a row loss, logits per second (crossEntropy valueAndGrad with
 * `out`, bench/README.md): `"auto"` keeps a host-data problem on WebAssembly when it
 * would take less than one GPU round trip there.
 */
export const WASM_LOGITS_PER_SECOND = 5e8;

/** Options of {@linkcode gpuLosses}. */
export interface GpuLossesOptions extends ContextOptions {
  /** Route small host problems, and every call after a device loss, to the CPU. */
  auto: boolean;
  /** Why this backend (`Losses.note`). */
  note: string;
  /**
   * `auto`: host problems with fewer logits than this stay on WebAssembly (default: the
   * measured GPU round trip times {@linkcode WASM_LOGITS_PER_SECOND}). A head counts
   * `N * C * D / 16` (its GEMM runs about 16 multiply-adds per logit-time of a row loss).
   */
  minGpuLogits?: number;
}

/**
 * The losses on a device; with `auto`, small host problems and every call after a device loss run on wasm. */
export async function gpuLosses(device: GPUDevice, options: GpuLossesOptions): Promise<Losses> {
  const { auto } = options;
  let note = options.note;
  const ctx = new GpuContext(device, options);
  let kernels = webgpuKernels(ctx);
  if (auto) {
    // The caller compiled the WebAssembly module when the engine has SIMD.
    const cpu = simdSupported() ? wasmKernels : referenceKernels;
    let min = options.minGpuLogits;
    if (min === undefined) {
      const seconds = await ctx.roundTrip();
      min = Math.round(seconds * WASM_LOGITS_PER_SECOND);
      note += `; a GPU round trip takes ${(seconds * 1e3).toFixed(2)} ms`;
    }
    note += `; host problems under ${min} logits run on ${simdSupported() ? "wasm" : "js"}`;
    kernels = routeKernels(kernels, cpu, ctx, min);
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

/** `auto`'s routing: host problems below `min` logits, and all once the device is lost, on the CPU. */
function routeKernels(gpu: Kernels, cpu: Kernels, ctx: GpuContext, min: number): Kernels {
  const out: Record<string, unknown> = {};
  for (const name of Object.keys(gpu) as (keyof Kernels)[]) {
    const g = gpu[name] as (p: object) => unknown, c = cpu[name] as (p: object) => unknown;
    out[name] = async (p: { n: number; c: number; d?: number }) => {
      const resident = Object.values(p).some(v.onDevice);
      if (!resident && (ctx.lost !== null || p.n * p.c * (p.d ? p.d / 16 : 1) < min)) return c(p);
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
