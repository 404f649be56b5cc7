/**
 * Backend selection: `init()` looks for WebGPU, WebAssembly SIMD and the float64
 * reference, picks one (`"auto"`) or the one asked for, routes small host problems and
 * a lost GPU device to the CPU, and says why in `note`. The backends themselves are
 * `src/reference/`, `src/wasm/` and `src/webgpu/`; each is one kernel per family.
 *
 * @module
 */
import { holdsDevice } from "./kernels/core.ts";
import type { Kernels } from "./kernels/mod.ts";
import { type AsyncLosses, bindLosses, type GpuSyncLosses } from "./losses/mod.ts";
import { referenceKernels } from "./reference/mod.ts";
import { compileWasm, simdSupported } from "./wasm/runtime.ts";
import { acquirePool, onPool, releasePool } from "./wasm/pool.ts";
import { wasmKernels } from "./wasm/mod.ts";
import type { BackendName } from "./types.ts";
import * as v from "./validate.ts";
import { type ContextOptions, DeviceLostError, GpuContext, webgpuKernels, webgpuPath } from "./webgpu/mod.ts";

/** Every loss bound to one backend, with Promise-returning methods. */
export interface Losses extends AsyncLosses {
  /**
   * Every loss in its synchronous GPU form (SPEC §10, docs/BACKENDS.md): on the WebGPU
   * backend, with GPU-resident inputs, `losses.sync.crossEntropy.valueAndGrad(inputs,
   * { encoder })` returns `{ loss, ...parts, grads }` as GPU matrices at once (as
   * `readback: false`, without a Promise; `encoder` optional), for a synchronous callback
   * such as `tf.customGrad`'s. Device errors are reported by a later call or by
   * `dispose()`. On a CPU backend its methods throw a `TypeError`.
   */
  readonly sync: GpuSyncLosses;
  /** The backend in use (an `"auto"` instance whose GPU was lost reports `"wasm"`). */
  readonly backend: BackendName;
  /** Why this backend: the adapter found, or why WebGPU was not used; the threads, or why one; the options it ignores. */
  readonly note: string;
  /**
   * The threads this instance's WebAssembly calls run on (1 on the other backends): the
   * count it was created with (or 1, `note` saying why), whatever other instances asked
   * for. Instances of one count share a pool of workers; all share one WebAssembly memory.
   */
  readonly threads: number;
  /**
   * Releases what this instance holds: on WebAssembly its share of its thread pool (the
   * workers stop when no other instance of its thread count holds the pool), on WebGPU
   * its share of the device's context (pipelines and pooled buffers are freed when the
   * last instance on the device is disposed). Idempotent. On every backend, later calls
   * of a disposed instance throw an Error ("This Losses instance was disposed"); other
   * instances are untouched.
   */
  dispose(): void;
}

/** Options of {@linkcode init}. */
export interface InitOptions {
  /**
   * `"auto"`: WebGPU when a hardware adapter is there (or `device` is given), else
   * WebAssembly SIMD when the engine validates it, else the plain-TypeScript reference
   * (`"js"`). A software adapter (llvmpipe, SwiftShader) is passed over by `"auto"`: it
   * runs these kernels far slower than WebAssembly SIMD (bench/README.md); ask for
   * `"webgpu"` to use it anyway.
   * @default "auto"
   */
  backend?: "auto" | "webgpu" | "wasm" | "js";
  /** A `GPUDevice` of your own for `"webgpu"` / `"auto"` (default: one from the adapter). */
  device?: GPUDevice;
  /**
   * `"auto"` on WebGPU: problems held in Float32Arrays with fewer logits than this run on
   * WebAssembly. Default: one measured GPU round trip times
   * {@linkcode WASM_LOGITS_PER_SECOND} (under Deno a round trip takes at least 10 ms, so
   * about 5 million logits). GPU-resident problems always run on the GPU.
   */
  minGpuLogits?: number;
  /**
   * Threads of this instance on the WebAssembly backend: the calling one and `threads - 1`
   * workers sharing one `WebAssembly.Memory`, whatever other instances asked for
   * (instances asking for the same count share the workers; `dispose()` gives them back,
   * docs/SCALE.md). Row losses split their rows, heads their classes, when a
   * problem is large enough to pay for waking the workers (row losses from 2^18 logits).
   * Where shared memory or workers are missing (a page that is not cross-origin isolated,
   * Cloudflare Workers, a module given with `setWasmModule`) it runs on one thread and
   * `note` says why. Default: the cores available (`navigator.hardwareConcurrency`), at
   * most 4 (row losses are bound by memory bandwidth; ask for more for the heads).
   * @default min(cores, 4)
   */
  threads?: number;
  /**
   * WebGPU: compile every kernel's pipelines before `init` resolves (a few seconds on a
   * software adapter), so that no call compiles one: for `Losses.sync` inside a training
   * step (SPEC §10). Without it a pipeline is compiled on its first use (synchronously in
   * `Losses.sync`, asynchronously otherwise), once per device. Ignored on the CPU backends.
   * @default false
   */
  precompile?: boolean;
}

/** The default thread count: the cores available, at most 4. */
function defaultThreads(): number {
  const cores = (globalThis.navigator as { hardwareConcurrency?: number } | undefined)?.hardwareConcurrency;
  return Math.max(1, Math.min(4, Number.isInteger(cores) ? (cores as number) : 1));
}

/**
 * WebAssembly's speed on a row loss, logits per second (crossEntropy valueAndGrad with
 * `out`, bench/README.md): `"auto"` keeps a host-data problem on WebAssembly when it
 * would take less than one GPU round trip there.
 */
export const WASM_LOGITS_PER_SECOND = 5e8;

/**
 * Resolves to every loss bound to one backend.
 *
 * `"auto"` (default) uses WebGPU when a hardware adapter exists (or a `device` is
 * passed), keeping small problems held in Float32Arrays on WebAssembly (see
 * `minGpuLogits`) and moving every later call to WebAssembly if the GPU device is
 * lost; otherwise WebAssembly SIMD (relaxed SIMD's fused multiply-add where the engine
 * is V8) when the engine validates SIMD, else the float64 reference. `"webgpu"` fails
 * when there is no adapter, and its calls fail with a `DeviceLostError` once the device
 * is lost. `note` on the result says what was found and why this backend was chosen,
 * and names the options given that it ignores (`threads` off WebAssembly, `device` off
 * WebGPU, `minGpuLogits` outside `"auto"` on WebGPU).
 * Every `init()` on one `GPUDevice` shares one context (compiled pipelines, buffer pool).
 *
 * On WebGPU, inputs may also be GPU-resident matrices `{ buffer: GPUBuffer, shape }`;
 * the gradients of a call with a GPU-resident input stay on the GPU as
 * `{ buffer, shape }` (yours to `destroy()`, or pass `options.out` buffers), and only the
 * loss is read back.
 *
 * @param options Which backend, and optionally your own `GPUDevice`.
 * @returns The losses, each with `forward`, `backward` and `valueAndGrad`.
 *
 * @example Pick a backend explicitly
 * ```ts
 * import { init } from "@softmargin/softmargin";
 * const js = await init({ backend: "js" });
 * const logits = { data: new Float32Array([0, 0]), shape: [1, 2] as const };
 * console.log(js.backend, (await js.crossEntropy.forward({ logits, labels: [0] })).loss); // js 0.6931471805599453
 * ```
 */
export async function init(options: InitOptions = {}): Promise<Losses> {
  const o = v.options(options);
  v.keys("options of init", o, ["backend", "device", "minGpuLogits", "threads", "precompile"]);
  const precompile = v.boolean("options.precompile", o.precompile, false);
  const backend = v.oneOf("options.backend", o.backend, ["auto", "webgpu", "wasm", "js"] as const, "auto");
  if (o.device !== undefined && (typeof o.device !== "object" || o.device === null || !("queue" in o.device))) {
    throw new TypeError(`Expected options.device to be a GPUDevice, got ${v.show(o.device)}`);
  }
  if (backend === "wasm" && !simdSupported()) {
    throw new RangeError(
      'Expected options.backend "wasm" to run on an engine with WebAssembly SIMD, this one has none',
    );
  }
  const minGpuLogits = o.minGpuLogits === undefined
    ? undefined
    : v.number("options.minGpuLogits", o.minGpuLogits, 0, { min: 0 });
  const threads = o.threads === undefined
    ? defaultThreads()
    : v.number("options.threads", v.integer("options.threads", o.threads, 1), 1, { min: 1, max: 256 });
  let note = "";
  if (backend === "webgpu" || (backend === "auto" && o.device)) {
    let device = o.device, why = "a GPUDevice was given";
    if (!device) {
      const found = await findAdapter();
      if (!found.adapter) throw new Error(`Expected a WebGPU adapter for options.backend "webgpu": ${found.note}`);
      device = await requestDevice(found.adapter);
      why = found.note;
    }
    const cpu = backend === "auto" ? await autoCpu() : undefined;
    why += ignored(o, backend === "auto" ? ["device", "minGpuLogits", "precompile"] : ["device", "precompile"]);
    return await gpuLosses(device, { auto: backend === "auto", note: why, minGpuLogits, cpu, precompile });
  }
  if (backend === "auto") {
    const found = await findAdapter();
    if (found.adapter && !found.adapter.info?.isFallbackAdapter) {
      const cpu = await autoCpu();
      const note = found.note + ignored(o, ["minGpuLogits", "precompile"]);
      return await gpuLosses(await requestDevice(found.adapter), { auto: true, note, minGpuLogits, cpu, precompile });
    }
    note = found.adapter ? `${found.note} is slower than WebAssembly here` : found.note;
  }
  let cpu: CpuBackend = { name: "js", kernels: referenceKernels, why: "" };
  if (backend === "wasm") {
    await compileWasm();
    cpu = { name: "wasm", kernels: wasmKernels, why: "" };
  } else if (backend === "auto") cpu = await autoCpu();
  note = backend === "auto" ? `${cpu.name}: ${[note, cpu.why].filter((s) => s).join("; ")}` : `${backend}: asked for`;
  note += ignored(o, cpu.name === "wasm" ? ["threads"] : []);
  // This instance's threads: its own pool (shared with the instances of its count) runs its calls.
  const { pool, threads: running, why } = cpu.name === "wasm"
    ? await acquirePool(threads)
    : { pool: null, threads: 1, why: "" };
  const threadNote = running > 1 ? `; ${running} threads` : threads > 1 ? `; one thread: ${why}` : "; one thread";
  let disposed = false;
  const losses = bindLosses(untilDisposed(pool ? onPool(cpu.kernels, pool) : cpu.kernels, () => disposed), false);
  /** A pool whose runtime was replaced (setWasmModule, useWasmVariant) stopped: the calls run on one thread. */
  const stopped = () => pool !== null && !disposed && !pool.live();
  return Object.defineProperties(losses, {
    backend: { value: cpu.name, enumerable: true },
    threads: { get: () => (stopped() ? 1 : running), enumerable: true },
    note: {
      get: () =>
        cpu.name !== "wasm"
          ? note
          : note + (stopped()
            ? "; one thread: the WebAssembly module was replaced since init (setWasmModule), which stops its pool"
            : threadNote),
      enumerable: true,
    },
    dispose: {
      value: () => {
        if (disposed) return;
        disposed = true;
        if (pool) releasePool(pool);
      },
    },
  }) as Losses;
}

/** The words of `note` for the options given that the backend chosen does not use (`used`: those it does). */
function ignored(o: InitOptions, used: readonly (keyof InitOptions)[]): string {
  const unused = (["device", "minGpuLogits", "threads", "precompile"] as const).filter((k) =>
    o[k] !== undefined && !used.includes(k)
  );
  return unused.length === 0 ? "" : `; ${unused.map((k) => `options.${k}`).join(", ")} ignored on this backend`;
}

/** `kernels` whose every call throws once `disposed()` says so. */
function untilDisposed<K extends object>(kernels: K, disposed: () => boolean): K {
  const out: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(kernels)) {
    out[name] = (p: unknown) => {
      if (disposed()) throw new Error("This Losses instance was disposed; call init() again");
      return (f as (p: unknown) => unknown)(p);
    };
  }
  return out as K;
}

/** A CPU backend: its name, its kernels, and why it was chosen when that needs saying. */
export interface CpuBackend {
  name: "wasm" | "js";
  kernels: Kernels;
  why: string;
}

/**
 * `"auto"`'s CPU backend: WebAssembly SIMD when the engine validates it and compiling is
 * allowed (a Content-Security-Policy without `'wasm-unsafe-eval'`, or an edge runtime,
 * refuses to compile from bytes), else the float64 reference, saying why.
 */
async function autoCpu(): Promise<CpuBackend> {
  if (!simdSupported()) return { name: "js", kernels: referenceKernels, why: "this engine has no WebAssembly SIMD" };
  try {
    await compileWasm();
    return { name: "wasm", kernels: wasmKernels, why: "" };
  } catch (e) {
    return {
      name: "js",
      kernels: referenceKernels,
      why: `compiling WebAssembly was refused (${(e as Error).message}; a Content-Security-Policy needs ` +
        `'wasm-unsafe-eval', an edge runtime a precompiled module: see setWasmModule)`,
    };
  }
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
  /** `auto`: the CPU backend for small host problems and after a device loss (default: wasm when it compiled, else js). */
  cpu?: CpuBackend;
  /** Compile every kernel's pipelines first ({@linkcode GpuContext.precompile}). */
  precompile?: boolean;
}

/** How many live `Losses` instances share each device's context. */
const users = new WeakMap<GpuContext, number>();

/** The losses on a device; with `auto`, small host problems and every call after a device loss run on the CPU. */
export async function gpuLosses(device: GPUDevice, options: GpuLossesOptions): Promise<Losses> {
  const { auto } = options;
  let note = options.note;
  const ctx = GpuContext.of(device, options);
  users.set(ctx, (users.get(ctx) ?? 0) + 1);
  if (options.precompile) await ctx.precompile();
  let kernels = webgpuKernels(ctx);
  if (auto) {
    const cpu = options.cpu?.kernels ?? (simdSupported() ? wasmKernels : referenceKernels);
    const cpuName = options.cpu?.name ?? (simdSupported() ? "wasm" : "js");
    let min = options.minGpuLogits;
    if (min === undefined) {
      const seconds = await ctx.roundTrip();
      min = Math.round(seconds * WASM_LOGITS_PER_SECOND);
      note += `; a GPU round trip takes ${(seconds * 1e3).toFixed(2)} ms`;
    }
    note += `; host problems under ${min} logits run on ${cpuName}`;
    kernels = routeKernels(kernels, cpu, ctx, min);
  }
  let disposed = false;
  const gpu = webgpuPath(ctx, untilDisposed(webgpuKernels(ctx), () => disposed));
  const losses = bindLosses(untilDisposed(kernels, () => disposed), false, gpu);
  return Object.defineProperties(losses, {
    threads: { value: 1, enumerable: true },
    backend: {
      get: () => (auto && ctx.lost !== null ? (options.cpu?.name ?? (simdSupported() ? "wasm" : "js")) : "webgpu"),
      enumerable: true,
    },
    note: {
      get: () => (ctx.lost === null ? `webgpu: ${note}` : `the WebGPU device was lost (${ctx.lost})`),
      enumerable: true,
    },
    dispose: {
      value: () => {
        if (disposed) return;
        disposed = true;
        const left = (users.get(ctx) ?? 1) - 1;
        users.set(ctx, left);
        if (left === 0) ctx.dispose();
        // Device errors of recorded calls (readback: false) not reported by a later call.
        ctx.reportErrors();
      },
    },
  }) as Losses;
}

/** `auto`'s routing: host problems below `min` logits, and all once the device is lost, on the CPU. */
function routeKernels(gpu: Kernels, cpu: Kernels, ctx: GpuContext, min: number): Kernels {
  const out: Record<string, unknown> = {};
  for (const name of Object.keys(gpu) as (keyof Kernels)[]) {
    const g = gpu[name] as (p: object) => unknown, c = cpu[name] as (p: object) => unknown;
    out[name] = async (p: { n: number; c: number; d?: number }) => {
      const resident = holdsDevice(p);
      if (!resident && (ctx.lost !== null || p.n * p.c * (p.d ? p.d / 16 : 1) < min)) return c(p);
      try {
        return await g(p);
      } catch (e) {
        if (e instanceof DeviceLostError && !resident) return c(p);
        throw e;
      }
    };
  }
  return out as unknown as Kernels;
}
