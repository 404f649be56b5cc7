/**
 * The plain-TypeScript float64 backend: obviously correct, the test oracle and the
 * last-resort backend.
 *
 * @module
 */
import type { Kernels } from "../losses/mod.ts";
import { hardLabel } from "./cross_entropy.ts";

/** The reference kernels. */
export const referenceKernels: Kernels = {
  crossEntropy: hardLabel,
};
