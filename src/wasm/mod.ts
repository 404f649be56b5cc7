/**
 * The WebAssembly SIMD backend: kernels compiled from `assembly/`.
 *
 * @module
 */
import type { Kernels } from "../losses/mod.ts";
import { hardLabel } from "./cross_entropy.ts";

/** The WebAssembly kernels. */
export const wasmKernels: Kernels = {
  crossEntropy: hardLabel,
};
