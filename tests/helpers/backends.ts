/**
 * The backends every test suite runs on. Tests look a loss up by name with
 * `lossOf` and always `await` what it returns, so the asynchronous WebGPU backend
 * runs the same suites: it is appended when the runtime has a WebGPU adapter (Deno;
 * here the llvmpipe software adapter), and `webgpuMissing` says why it is not
 * otherwise (the WebGPU tests are then skipped with that reason).
 *
 * @module
 */
import { js, wasm } from "../../cpu.ts";
import { init } from "../../mod.ts";
import { findAdapter } from "../../src/backend.ts";

/** A backend: its name and its losses, keyed by public name. */
export interface Backend {
  readonly name: string;
  readonly losses: object;
}

/** Every backend under test; `js`, the float64 reference, first. */
export const backends: Backend[] = [
  { name: "js", losses: js },
  { name: "wasm", losses: wasm },
];

/** Why the WebGPU backend is not under test here, or false when it is. */
export const webgpuMissing: string | false = await (async () => {
  if (Deno_env("SOFTMARGIN_NO_WEBGPU")) return "SOFTMARGIN_NO_WEBGPU is set";
  const found = await findAdapter();
  if (!found.adapter) {
    console.log(`webgpu backend not under test (its tests are skipped): ${found.note}`);
    return `no WebGPU adapter: ${found.note}`;
  }
  backends.push({ name: "webgpu", losses: await init({ backend: "webgpu" }) });
  return false;
})();

function Deno_env(name: string): string | undefined {
  return (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env[name];
}

/** The float64 reference backend (the oracle of the agreement tests). */
export const reference: Backend = backends[0];

/** A value, or a Promise of it (what a method of a sync or async backend returns). */
export type MaybePromise<T> = T | Promise<T>;

// deno-lint-ignore no-explicit-any
type Any = any;

/** What `forward` of a loss returns (softmax / logSoftmax return `output` instead of `loss`). */
export interface Forward {
  loss?: number | Float32Array;
  /** Named parts of a composite loss (`kl`, `ce` of distillation). */
  [part: string]: Any;
  output?: { data: Float32Array; shape: readonly [number, number] };
}

/** A loss as the tests see it: loosely typed, every result possibly a Promise. */
export interface AnyLoss {
  forward(inputs: Any, options?: Any): MaybePromise<Forward>;
  backward(inputs: Any, options?: Any, upstream?: Any): MaybePromise<Record<string, Any>>;
  valueAndGrad(inputs: Any, options?: Any, upstream?: Any): MaybePromise<Forward & { grads: Record<string, Any> }>;
}

/**
 * The loss `name` of `backend`, or undefined while it is not implemented there. A
 * metric (`compute` only) is seen through a loss's shape so that the shared suites run
 * it: `forward` gives `{ loss: value }`, and `backward` / `valueAndGrad` call `compute`
 * too (so that bad inputs throw there as well) and return no gradients.
 */
export function lossOf(backend: Backend, name: string): AnyLoss | undefined {
  const l = (backend.losses as Record<string, unknown>)[name] as AnyLoss & { compute?: unknown } | undefined;
  if (l && typeof l.compute === "function") {
    const compute = l.compute as (inputs: Any, options?: Any) => MaybePromise<number>;
    return {
      forward: async (inputs, options) => ({ loss: await compute(inputs, options) }),
      backward: async (inputs, options) => (await compute(inputs, options), {}),
      valueAndGrad: async (inputs, options) => ({ loss: await compute(inputs, options), grads: {} }),
    };
  }
  if (
    !l || typeof l.forward !== "function" || typeof l.backward !== "function" || typeof l.valueAndGrad !== "function"
  ) {
    return undefined;
  }
  return l;
}

/** A `skip` option for `it` when `name` is missing on any of `backendsNeeded`: the reason, else false. */
export function missing(
  name: string | readonly string[],
  backendsNeeded: readonly Backend[] = backends,
): string | false {
  const names = typeof name === "string" ? [name] : name;
  for (const b of backendsNeeded) {
    for (const n of names) if (!lossOf(b, n)) return `${n} is not implemented on backend ${b.name} yet`;
  }
  return false;
}
