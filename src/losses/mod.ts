/**
 * Every loss definition, by public name. A backend supplies one kernel per entry
 * (`Kernels`); `bindLosses` turns definitions and kernels into the public objects.
 *
 * @module
 */
import type { Kernel, LossDef, Prepared } from "../loss.ts";
import { bindAsync, bindSync } from "../loss.ts";
import type { AsyncLoss, Loss } from "../types.ts";
import { accuracy } from "./accuracy.ts";
import { crossEntropy } from "./cross_entropy.ts";
import { distillation } from "./distillation.ts";
import { focal } from "./focal.ts";
import { klDiv } from "./kl_div.ts";
import { softCrossEntropy } from "./soft_cross_entropy.ts";
import { bindSoftmax, type SoftmaxKernel, type SoftmaxMethods } from "./softmax.ts";

/** The loss definitions. */
export const definitions = {
  crossEntropy,
  softCrossEntropy,
  klDiv,
  distillation,
  focal,
  accuracy,
};

type Defs = typeof definitions;
// deno-lint-ignore no-explicit-any
type ProblemOf<D> = D extends LossDef<any, any, any, infer P> ? P : never;
// deno-lint-ignore no-explicit-any
type SyncOf<D> = D extends LossDef<infer I, infer O, infer G, any> ? Loss<I, O, G> : never;
// deno-lint-ignore no-explicit-any
type AsyncOf<D> = D extends LossDef<infer I, infer O, infer G, any> ? AsyncLoss<I, O, G> : never;

/** What a backend implements: one kernel per loss, one for the softmax transforms. */
export type Kernels = { [K in keyof Defs]: Kernel<ProblemOf<Defs[K]>> } & { softmax: SoftmaxKernel };
/** Every loss with synchronous methods (the CPU backends). */
export type SyncLosses = { [K in keyof Defs]: SyncOf<Defs[K]> } & {
  softmax: SoftmaxMethods<"sync">;
  logSoftmax: SoftmaxMethods<"sync">;
};
/** Every loss with methods returning Promises. */
export type AsyncLosses = { [K in keyof Defs]: AsyncOf<Defs[K]> } & {
  softmax: SoftmaxMethods<"async">;
  logSoftmax: SoftmaxMethods<"async">;
};

/** Binds every definition to a backend's kernels. */
export function bindLosses(kernels: Kernels, sync: true): SyncLosses;
export function bindLosses(kernels: Kernels, sync: false): AsyncLosses;
export function bindLosses(kernels: Kernels, sync: boolean): SyncLosses | AsyncLosses {
  const out: Record<string, unknown> = sync
    ? { softmax: bindSoftmax(kernels.softmax, false), logSoftmax: bindSoftmax(kernels.softmax, true) }
    : { softmax: asyncMethods(bindSoftmax(kernels.softmax, false)), logSoftmax: asyncMethods(bindSoftmax(kernels.softmax, true)) };
  for (const name of Object.keys(definitions) as (keyof Defs)[]) {
    const def = definitions[name] as unknown as LossDef<unknown, unknown, unknown, Prepared>;
    const kernel = kernels[name] as unknown as Kernel<Prepared>;
    out[name] = sync ? bindSync(def, kernel) : bindAsync(def, kernel);
  }
  return out as SyncLosses | AsyncLosses;
}

/** Makes every method of an object return a Promise (CPU kernels under the async `Losses`). */
// deno-lint-ignore no-explicit-any
function asyncMethods<T extends object>(methods: T): T {
  const out: Record<string, unknown> = {};
  // deno-lint-ignore no-explicit-any
  for (const [k, f] of Object.entries(methods)) out[k] = async (...args: any[]) => await f(...args);
  return out as T;
}
