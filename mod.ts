/**
 * softmargin: loss functions for training classifiers and embedding models, exact
 * and fast, on WebAssembly SIMD (CPUs) with a plain-TypeScript float64 reference.
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
 * @module
 */
import { type AsyncLosses, bindLosses } from "./src/losses/mod.ts";
import { referenceKernels } from "./src/reference/mod.ts";
import { compileWasm, simdSupported } from "./src/wasm/runtime.ts";
import { wasmKernels } from "./src/wasm/mod.ts";
import type { BackendName } from "./src/types.ts";
import * as v from "./src/validate.ts";

export * from "./src/types.ts";
export type { AsyncLosses, LossSet, SyncLosses } from "./src/losses/mod.ts";
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

/** Options of {@linkcode init}. */
export interface InitOptions {
  /**
   * `"auto"` picks WebAssembly SIMD when the engine validates it, else the
   * plain-TypeScript reference (`"js"`). WebGPU is not available in this version.
   * @default "auto"
   */
  backend?: "auto" | "wasm" | "js";
}

/** Every loss bound to one backend, with Promise-returning methods. */
export interface Losses extends AsyncLosses {
  /** The backend chosen. */
  readonly backend: BackendName;
}

/**
 * Resolves to every loss bound to one backend.
 *
 * `"auto"` (default) uses WebAssembly SIMD (relaxed SIMD's fused multiply-add where the
 * engine is V8) when the engine validates SIMD, else the float64 reference.
 *
 * @param options Which backend.
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
  const backend = v.oneOf("options.backend", o.backend, ["auto", "wasm", "js"] as const, "auto");
  if (backend === "wasm" && !simdSupported()) {
    throw new RangeError(
      'Expected options.backend "wasm" to run on an engine with WebAssembly SIMD, this one has none',
    );
  }
  const useWasm = backend === "wasm" || (backend === "auto" && simdSupported());
  if (useWasm) await compileWasm();
  const losses = bindLosses(useWasm ? wasmKernels : referenceKernels, false);
  return Object.assign(losses, { backend: (useWasm ? "wasm" : "js") as BackendName });
}
