/**
 * Every loss, metric and transform, by public name, and how a backend's kernels
 * (`Kernels`, one per family) become the public objects (`bindLosses`). The members and
 * their types are derived from the definitions in `./registry.ts`: nothing here names a
 * loss.
 *
 * @module
 */
import type { GpuPath, KernelName, Kernels } from "../kernels/mod.ts";
import type { CompositeDef, Definition, LossDef, MetricDef } from "../loss.ts";
import { bindComposite, bindGpuLoss, bindLoss, bindMetric, composite, releasingTerms } from "../loss.ts";
import type { AsyncLoss, AsyncMetric, GpuSyncLoss, Loss, Metric } from "../types.ts";
import * as registry from "./registry.ts";
import { bindSoftmax, type SoftmaxMethods, type TransformDef } from "./softmax.ts";
import { bindSharded, type Registry, type ShardedSet } from "./sharded.ts";

/** A loss's methods, synchronous (`"sync"`, the CPU entry point) or returning Promises (`"async"`, `init`). */
export type Methods<W extends "sync" | "async", I, O, G, Parts = unknown> = W extends "sync" ? Loss<I, O, G, Parts>
  : AsyncLoss<I, O, G, Parts>;

/** A metric's `compute`, synchronous or returning a Promise. */
export type MetricMethods<W extends "sync" | "async", I, O> = W extends "sync" ? Metric<I, O> : AsyncMetric<I, O>;

/** The public member a definition becomes on a backend: a transform's, a metric's or a loss's methods. */
export type MemberOf<W extends "sync" | "async", D> = D extends
  Definition<infer I, infer O, infer G, infer Parts, infer Kind, infer _> ? (
    Kind extends "transform" ? SoftmaxMethods<W>
      : Kind extends "metric" ? MetricMethods<W, I, O>
      : Methods<W, I, O, G, Parts>
  )
  : never;

/**
 * Every loss, metric and transform, bound to one backend. A loss has `forward`,
 * `backward` and `valueAndGrad`; a metric has `compute`; inputs are row-major float32
 * matrices `{ data, shape }` (on WebGPU also `{ buffer, shape }`) and integer labels. An
 * unknown input, option or `out` key is a `TypeError`. Each member's documentation
 * (formula, shapes, defaults, paper, example) is on its definition in `src/losses/`, and
 * docs/LOSSES.md is the reference of every loss. `sharded` holds the class-sharded forms
 * of the losses that have one (see {@linkcode ShardedSet}).
 */
export type LossSet<W extends "sync" | "async"> = { [K in keyof Registry]: MemberOf<W, Registry[K]> } & {
  /** The class-sharded losses (docs/SHARDING.md). */
  sharded: ShardedSet<W>;
};

/**
 * Every loss (not the metrics and transforms) in its synchronous GPU form (`Losses.sync`,
 * SPEC §10): GPU-resident inputs, results on the GPU as the call returns.
 */
export type GpuSyncLosses = {
  [
    K in keyof Registry as Registry[K] extends Definition<unknown, unknown, unknown, unknown, "loss", infer _> ? K
      : never
  ]: Registry[K] extends Definition<infer I, infer O, infer G, infer Parts, "loss", infer _>
    ? GpuSyncLoss<I, O, G, Parts>
    : never;
};

/** Every loss with synchronous methods (the CPU backends). */
export type SyncLosses = LossSet<"sync">;
/** Every loss with methods returning Promises. */
export type AsyncLosses = LossSet<"async">;

type AnyDef =
  | TransformDef
  | MetricDef<unknown, unknown, KernelName>
  | CompositeDef<unknown, unknown, unknown, unknown>
  | LossDef<unknown, unknown, unknown, KernelName>;

/** The registry's definitions, by public name. */
export const definitions: Readonly<Record<string, AnyDef>> = registry as unknown as Record<string, AnyDef>;

/** Binds every definition to a backend's kernels: synchronous methods, or (`sync` false) Promises. */
export function bindLosses(kernels: Kernels, sync: true): SyncLosses;
export function bindLosses(kernels: Kernels, sync: false, gpu?: GpuPath): AsyncLosses & { sync: GpuSyncLosses };
export function bindLosses(kernels: Kernels, sync: boolean, gpu?: GpuPath): SyncLosses | AsyncLosses {
  const async = !sync;
  const out: Record<string, unknown> = { sharded: bindSharded(definitions, kernels, async) };
  const onGpu: Record<string, unknown> = {};
  for (const [name, d] of Object.entries(definitions)) {
    if ("transform" in d) out[name] = bindSoftmax(kernels.softmax, d.log, async);
    else if ("terms" in d) {
      const g = bindGpuLoss(
        releasingTerms(d) as never,
        gpu && { path: gpu, solve: composite(d, gpu.kernels) as never },
      );
      out[name] = bindComposite(d, kernels, async, gpu && g);
      onGpu[name] = g;
    } else if (!("grads" in d)) out[name] = bindMetric(d, kernels[d.kernel] as (p: unknown) => never, async);
    else {
      const g = bindGpuLoss(d as never, gpu && { path: gpu, solve: gpu.kernels[d.kernel] as (p: unknown) => never });
      out[name] = bindLoss(d as never, kernels[d.kernel] as (p: unknown) => never, async, gpu && g);
      onGpu[name] = g;
    }
  }
  // The synchronous GPU forms (their methods throw a TypeError without a GPU path).
  if (async) Object.defineProperty(out, "sync", { value: onGpu });
  return out as unknown as SyncLosses | AsyncLosses;
}
