/**
 * The synchronous CPU entry point: every loss on the WebAssembly SIMD backend
 * (`wasm`) and on the plain-TypeScript float64 reference (`js`), without `await`.
 * The WebAssembly module is compiled on first use.
 *
 * @example Cross-entropy and its gradient
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const logits = { data: new Float32Array([2, 1, 0.1, 0.5, 2.5, 0.3]), shape: [2, 3] as const };
 * const { loss, grads } = wasm.crossEntropy.valueAndGrad({ logits, labels: [0, 1] });
 * console.log(loss, grads.logits.shape);
 * ```
 *
 * @module
 */
export { alloc, setWasmModule, WasmMatrix } from "./src/wasm/runtime.ts";
export * from "./src/schedules.ts";
export {
  elasticMargins,
  type ElasticMarginsOptions,
  partialFcSample,
  type PartialFcSampleOptions,
} from "./src/sampling.ts";
export { mergeShardStats, mergeShardTopK } from "./src/kernels/shards.ts";
export type {
  LabelCosines,
  ShardedLoss,
  ShardedOptions,
  ShardedReturn,
  ShardedSet,
  ShardOptions,
  ShardResult,
} from "./src/losses/sharded.ts";
export type { ShardStats, ShardTopK } from "./src/kernels/shards.ts";
export * from "./src/state.ts";
export { adafaceInit, type AdafaceState } from "./src/losses/adaface.ts";
export type { CurricularFaceState } from "./src/losses/curricular_face.ts";
export type { SyncLosses } from "./src/losses/mod.ts";
export * from "./src/types.ts";

export { js, wasm } from "./src/sync.ts";
