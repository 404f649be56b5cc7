/**
 * softmargin: loss functions for training classifiers and embedding models, exact
 * and fast, on WebGPU (WGSL compute shaders), WebAssembly SIMD (CPUs) and a
 * plain-TypeScript float64 reference.
 *
 * `init()` picks a backend and resolves to a {@linkcode Losses} object whose methods
 * return Promises; the CPU backends are also available synchronously from
 * `@softmargin/softmargin/cpu`. Importing this module has no side effects: the
 * WebAssembly module is compiled in `init()` (or on first synchronous use).
 *
 * @example Cross-entropy on the best backend
 * ```ts
 * import { init } from "@softmargin/softmargin";
 * const losses = await init();
 * const logits = { data: new Float32Array([2, 1, 0.1, 0.5, 2.5, 0.3]), shape: [2, 3] as const };
 * const { loss, grads } = await losses.crossEntropy.valueAndGrad({ logits, labels: [0, 1] });
 * console.log(losses.backend, loss, grads.logits.shape); // wasm 0.3185 [2, 3] (PyTorch: 0.3185397696)
 * ```
 *
 * @example Data already on the GPU stays there (WebGPU)
 * ```ts
 * import { init } from "@softmargin/softmargin";
 * const adapter = await navigator.gpu?.requestAdapter();
 * if (adapter) {
 *   const device = await adapter.requestDevice();
 *   const losses = await init({ backend: "webgpu", device });
 *   const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
 *   const buffer = device.createBuffer({ size: 24, usage });
 *   device.queue.writeBuffer(buffer, 0, new Float32Array([2, 1, 0.1, 0.5, 2.5, 0.3]));
 *   const logits = { buffer, shape: [2, 3] as const };
 *   const { loss, grads } = await losses.crossEntropy.valueAndGrad({ logits, labels: [0, 1] });
 *   console.log(loss, grads.logits.shape); // 0.3185 [2, 3]: grads.logits is { buffer, shape }, on the GPU
 * }
 * ```
 *
 * @module
 */
import { bindLosses } from "./src/losses/mod.ts";
import { referenceKernels } from "./src/reference/mod.ts";
import { compileWasm, simdSupported } from "./src/wasm/runtime.ts";
import { wasmKernels } from "./src/wasm/mod.ts";
import { findAdapter, gpuLosses, type Losses, requestDevice, WASM_LOGITS_PER_SECOND } from "./gpu/mod.ts";
import type { BackendName } from "./src/types.ts";
import * as v from "./src/validate.ts";

export * from "./src/types.ts";
export type { AsyncLosses, LossSet, Methods, SyncLosses } from "./src/losses/mod.ts";
export type { SoftmaxMethods } from "./src/losses/softmax.ts";
export type { CrossEntropyGrads, CrossEntropyInputs, CrossEntropyOptions } from "./src/losses/cross_entropy.ts";
export type { FocalOptions } from "./src/losses/focal.ts";
export type {
  SoftCrossEntropyGrads,
  SoftCrossEntropyInputs,
  SoftCrossEntropyOptions,
} from "./src/losses/soft_cross_entropy.ts";
export type { KlDivGrads, KlDivInputs, KlDivOptions, KlReduction } from "./src/losses/kl_div.ts";
export type { DistillationGrads, DistillationInputs, DistillationOptions } from "./src/losses/distillation.ts";
export type { AccuracyOptions } from "./src/losses/accuracy.ts";
export type { SoftmaxGrads, SoftmaxInputs, SoftmaxOptions, SoftmaxOutput } from "./src/losses/softmax.ts";
export type { ArcfaceOptions } from "./src/losses/arcface.ts";
export type { CosfaceOptions } from "./src/losses/cosface.ts";
export type { NormfaceOptions } from "./src/losses/normface.ts";
export type { CombinedMarginOptions } from "./src/losses/combined_margin.ts";
export type { MarginGrads, MarginInputs, MarginOptions } from "./src/losses/margin.ts";
export type { HeadGrads, HeadInputs, HeadOptions, MarginHeadOptions } from "./src/losses/margin_head.ts";
export { sphereFaceLambda, type SphereFaceLambdaOptions, type SpherefaceOptions } from "./src/losses/sphereface.ts";
export { lSoftmaxBeta, type LSoftmaxBetaOptions, type LsoftmaxOptions } from "./src/losses/lsoftmax.ts";
export { alloc, setWasmModule, WasmMatrix } from "./src/wasm/runtime.ts";
export { DeviceLostError } from "./gpu/context.ts";
export { type Losses, WASM_LOGITS_PER_SECOND };
export { isGpuMatrix } from "./src/validate.ts";

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
}

/**
 * Resolves to every loss bound to one backend.
 *
 * `"auto"` (default) uses WebGPU when a hardware adapter exists (or a `device` is
 * passed), keeping small problems held in Float32Arrays on WebAssembly (see
 * `minGpuLogits`) and moving every later call to WebAssembly if the GPU device is
 * lost; otherwise WebAssembly SIMD (relaxed SIMD's fused multiply-add where the engine
 * is V8) when the engine validates SIMD, else the float64 reference. `"webgpu"` fails
 * when there is no adapter, and its calls fail with a `DeviceLostError` once the device
 * is lost. `note` on the result says what was found and why this backend was chosen.
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
  const backend = v.oneOf("options.backend", o.backend, ["auto", "webgpu", "wasm", "js"] as const, "auto");
  if (o.device !== undefined && (typeof o.device !== "object" || o.device === null || !("queue" in o.device))) {
    throw new TypeError(`Expected options.device to be a GPUDevice, got ${v.show(o.device)}`);
  }
  if (backend === "wasm" && !simdSupported()) {
    throw new RangeError(
      'Expected options.backend "wasm" to run on an engine with WebAssembly SIMD, this one has none',
    );
  }
  const minGpuLogits = minLogits(o.minGpuLogits);
  let note = "";
  if (backend === "webgpu" || (backend === "auto" && o.device)) {
    let device = o.device, why = "a GPUDevice was given";
    if (!device) {
      const found = await findAdapter();
      if (!found.adapter) throw new Error(`Expected a WebGPU adapter for options.backend "webgpu": ${found.note}`);
      device = await requestDevice(found.adapter);
      why = found.note;
    }
    if (backend === "auto" && simdSupported()) await compileWasm();
    return await gpuLosses(device, { auto: backend === "auto", note: why, minGpuLogits });
  }
  if (backend === "auto") {
    const found = await findAdapter();
    if (found.adapter && !found.adapter.info?.isFallbackAdapter) {
      if (simdSupported()) await compileWasm();
      return await gpuLosses(await requestDevice(found.adapter), { auto: true, note: found.note, minGpuLogits });
    }
    note = found.adapter ? `${found.note} is slower than WebAssembly here` : found.note;
  }
  const useWasm = backend === "wasm" || (backend === "auto" && simdSupported());
  if (useWasm) await compileWasm();
  const losses = bindLosses(useWasm ? wasmKernels : referenceKernels, false);
  note = backend === "auto" ? `${useWasm ? "wasm" : "js"}: ${note}` : `${backend}: asked for`;
  return Object.assign(losses, { backend: (useWasm ? "wasm" : "js") as BackendName, note });
}

function minLogits(value: unknown): number | undefined {
  return value === undefined ? undefined : v.number("options.minGpuLogits", value, 0, { min: 0 });
}
