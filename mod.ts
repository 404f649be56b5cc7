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
 * Three kinds of export: **losses** (members of `Losses` with `forward`, `backward`,
 * `valueAndGrad`; results typed by the call's reduction and by where its inputs live),
 * **metrics** (`accuracy`: `compute`, no gradient) and the softmax transforms, all bound
 * to one backend by `init()`; and **schedules** (`sphereFaceLambda`, `lSoftmaxBeta`,
 * `marginWarmup`), **seeded samplers** (`elasticMargins`, `partialFcSample`) and
 * **state functions** (`centerUpdate`, the hard-negative-mining `hnmInit`,
 * `hnmUpdatePrototypes`, `hnmUpdateConfusion`, `hnmDecay`, `hnmHardNegatives`): plain
 * synchronous functions, the same on every backend, that never change their inputs. The reference of every loss
 * (formula, shapes, defaults, edge decisions, paper) is docs/LOSSES.md.
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
export * from "./src/types.ts";
export type {
  AsyncLosses,
  GpuSyncLosses,
  LossSet,
  MemberOf,
  Methods,
  MetricMethods,
  SyncLosses,
} from "./src/losses/mod.ts";
export type { Definition, MemberKind, ShardForm } from "./src/loss.ts";
export type * from "./src/losses/registry.ts";
export * from "./src/schedules.ts";
export {
  elasticMargins,
  type ElasticMarginsOptions,
  partialFcSample,
  type PartialFcSampleOptions,
} from "./src/sampling.ts";
export { mergeShardStats, mergeShardTopK } from "./src/kernels/shards.ts";
export type { ShardStats, ShardTopK } from "./src/kernels/shards.ts";
export type {
  LabelCosines,
  Registry,
  ShardedLoss,
  ShardedOptions,
  ShardedReturn,
  ShardedSet,
  ShardOf,
  ShardOptions,
  ShardResult,
} from "./src/losses/sharded.ts";
export * from "./src/state.ts";
export { adafaceInit, type AdafaceState } from "./src/losses/adaface.ts";
export type { CurricularFaceState } from "./src/losses/curricular_face.ts";
export { alloc, setWasmModule, WasmMatrix } from "./src/wasm/runtime.ts";
export { DeviceLostError } from "./src/webgpu/context.ts";
export { init, type InitOptions, type Losses, WASM_LOGITS_PER_SECOND } from "./src/backend.ts";
export { isGpuMatrix } from "./src/validate.ts";
