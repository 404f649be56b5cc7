/**
 * The entry for edge runtimes that refuse to compile WebAssembly from bytes
 * (Cloudflare Workers and workerd, Vercel Edge): there the module is imported as a
 * precompiled `WebAssembly.Module` from the package's `.wasm` file and handed to
 * {@linkcode withWasmModule}, which returns every loss on the WebAssembly SIMD backend,
 * synchronous. The float64 reference (`js`) needs no WebAssembly at all.
 *
 * The package's `workerd` and `edge-light` builds carry no inline WebAssembly (it
 * could not be used there), so they are smaller than the default build.
 *
 * @example A Cloudflare Worker (wrangler imports `.wasm` files as `WebAssembly.Module`)
 * ```ts ignore
 * import wasmModule from "@softmargin/softmargin/softmargin.wasm";
 * import { withWasmModule } from "@softmargin/softmargin/edge";
 *
 * const losses = withWasmModule(wasmModule);
 * export default {
 *   fetch(): Response {
 *     const logits = { data: new Float32Array([2, 1, 0.1, 0.5, 2.5, 0.3]), shape: [2, 3] as const };
 *     const { loss } = losses.crossEntropy.forward({ logits, labels: [0, 1] });
 *     return Response.json({ loss });
 *   },
 * };
 * ```
 *
 * @module
 */
import { wasm } from "./cpu.ts";
import type { SyncLosses } from "./src/losses/mod.ts";
import { setWasmModule } from "./src/wasm/runtime.ts";

export { js } from "./cpu.ts";
export { alloc, setWasmModule, WasmMatrix } from "./src/wasm/runtime.ts";
export * from "./src/schedules.ts";
export {
  elasticMargins,
  type ElasticMarginsOptions,
  partialFcSample,
  type PartialFcSampleOptions,
} from "./src/sampling.ts";
export type { SyncLosses } from "./src/losses/mod.ts";
export * from "./src/types.ts";

/** Exports that only softmargin's module has: a check that the right `.wasm` file was imported. */
const REQUIRED_EXPORTS = ["memory", "heap_base", "hard_label"];

/**
 * Uses a precompiled softmargin WebAssembly module (`softmargin.wasm`, or
 * `softmargin-relaxed.wasm`, the relaxed-SIMD build, on V8) and returns every loss on
 * the WebAssembly SIMD backend, synchronous. Call it once, at the top of the worker.
 *
 * @param module The module, as the runtime's `.wasm` import gives it.
 * @returns The losses on WebAssembly (the same object as `wasm` of `@softmargin/softmargin/cpu`).
 * @throws {TypeError} When `module` is not a `WebAssembly.Module`, or not softmargin's.
 *
 * @example Another module is refused, naming what it lacks
 * ```ts
 * import { withWasmModule } from "@softmargin/softmargin/edge";
 *
 * const empty = await WebAssembly.compile(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]));
 * try {
 *   withWasmModule(empty);
 * } catch (e) {
 *   console.log((e as TypeError).message); // Expected module to be softmargin's WebAssembly module (...)
 * }
 * ```
 */
export function withWasmModule(module: WebAssembly.Module): SyncLosses {
  if (!(module instanceof WebAssembly.Module)) {
    const got = module === null
      ? "null"
      : typeof module === "object"
      ? (module as object).constructor?.name ?? "an object"
      : typeof module;
    throw new TypeError(
      `Expected module to be a WebAssembly.Module (import softmargin.wasm, which edge runtimes give as one), got ${got}`,
    );
  }
  const names = WebAssembly.Module.exports(module).map((e) => e.name);
  const absent = REQUIRED_EXPORTS.filter((n) => !names.includes(n));
  if (absent.length) {
    throw new TypeError(
      `Expected module to be softmargin's WebAssembly module (exporting ${REQUIRED_EXPORTS.join(", ")}), ` +
        `got one without ${absent.join(", ")} (exports: ${names.slice(0, 8).join(", ") || "none"})`,
    );
  }
  setWasmModule(module);
  return wasm;
}
