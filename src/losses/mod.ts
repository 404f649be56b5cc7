/**
 * Every loss definition, by public name. A backend supplies one kernel per entry
 * (`Kernels`); `bindLosses` turns definitions and kernels into the public objects.
 *
 * @module
 */
import type { Kernel, LossDef, Prepared } from "../loss.ts";
import { bindAsync, bindSync } from "../loss.ts";
import type { AsyncLoss, Loss } from "../types.ts";
import { crossEntropy } from "./cross_entropy.ts";

/** The loss definitions. */
export const definitions = {
  crossEntropy,
};

type Defs = typeof definitions;
// deno-lint-ignore no-explicit-any
type ProblemOf<D> = D extends LossDef<any, any, any, infer P> ? P : never;
// deno-lint-ignore no-explicit-any
type SyncOf<D> = D extends LossDef<infer I, infer O, infer G, any> ? Loss<I, O, G> : never;
// deno-lint-ignore no-explicit-any
type AsyncOf<D> = D extends LossDef<infer I, infer O, infer G, any> ? AsyncLoss<I, O, G> : never;

/** One kernel per loss: what a backend implements. */
export type Kernels = { [K in keyof Defs]: Kernel<ProblemOf<Defs[K]>> };
/** Every loss with synchronous methods (the CPU backends). */
export type SyncLosses = { [K in keyof Defs]: SyncOf<Defs[K]> };
/** Every loss with methods returning Promises. */
export type AsyncLosses = { [K in keyof Defs]: AsyncOf<Defs[K]> };

/** Binds every definition to a backend's kernels. */
export function bindLosses(kernels: Kernels, sync: true): SyncLosses;
export function bindLosses(kernels: Kernels, sync: false): AsyncLosses;
export function bindLosses(kernels: Kernels, sync: boolean): SyncLosses | AsyncLosses {
  const out: Record<string, unknown> = {};
  for (const name of Object.keys(definitions) as (keyof Defs)[]) {
    const def = definitions[name] as unknown as LossDef<unknown, unknown, unknown, Prepared>;
    const kernel = kernels[name] as unknown as Kernel<Prepared>;
    out[name] = sync ? bindSync(def, kernel) : bindAsync(def, kernel);
  }
  return out as SyncLosses | AsyncLosses;
}
