/**
 * The CPU backends bound once, synchronous: every loss on WebAssembly SIMD (`wasm`)
 * and on the float64 reference (`js`). `cpu.ts` exports them; the adapters
 * (`src/tfjs/`) import them from here, never from an entry file.
 *
 * @module
 */
import { bindLosses, type SyncLosses } from "./losses/mod.ts";
import { referenceKernels } from "./reference/mod.ts";
import { wasmKernels } from "./wasm/mod.ts";

/** Every loss on the WebAssembly SIMD backend, synchronous. */
export const wasm: SyncLosses = bindLosses(wasmKernels, true);

/** Every loss on the plain-TypeScript float64 reference backend, synchronous. */
export const js: SyncLosses = bindLosses(referenceKernels, true);
