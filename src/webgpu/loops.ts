/**
 * The loop budget of one shader invocation (docs/DEVELOPMENT.md, the seventh WebGPU rule): Mesa's llvmpipe,
 * the software adapter of GPU-less Linux machines, silently leaves every loop of an invocation once that
 * invocation has made 65,535 loop iterations in all (gallivm's loop limiter: one counter per invocation,
 * shared by nested and successive loops and the functions called, each loop costing its iterations plus
 * one for its exit test). Kernels whose work per invocation grows with C, N or k split it into windows
 * that stay within {@linkcode LOOP_BUDGET}, on every adapter (the results do not depend on the windows).
 * @module
 */

import type { GpuContext } from "./context.ts";

/** The iterations after which llvmpipe stops an invocation's loops. */
export const LOOP_LIMIT = 65_535;

/** Loop iterations one invocation may spend on a window of work (65,535, less a margin for the fixed loops). */
export const LOOP_BUDGET = 60_000;

/**
 * The depth (the summed dimension) of a tiled product one invocation may go through
 * (src/webgpu/gemm_loop.wgsl: about 17 iterations per 16 of it): the heads' chunks of classes.
 */
export const GEMM_DEPTH = 32_768;

/**
 * The columns of D one dispatch of linearCrossEntropy's logit tiles goes through
 * (src/webgpu/linear_cross_entropy.wgsl's `dots`: about 2 iterations per unit for its gate's norms and 6.5 for
 * the products in float pairs, measured on llvmpipe), a multiple of their steps.
 */
export const DEPTH_WINDOW = 4096;

/**
 * Rows one invocation of linearCrossEntropy's dW and db sums goes through per dispatch
 * (src/webgpu/linear_cross_entropy_mm.wgsl: about 300 iterations per block of 256 rows for dW): a
 * multiple of its blocks.
 */
export const ROW_RANGE = 32_768;

/**
 * interTopK's classes per window of a row's scan (src/webgpu/topk.wgsl's heap, by one invocation per row):
 * each class costs at most its K sub-centres' loop (K + 1), the class loop's own iteration, and an offer
 * (log2(k) + 3); at least `unit`, and a multiple of it.
 */
export function topKWindow(subs: number, k: number, unit = 1): number {
  const perClass = subs + 6 + Math.ceil(Math.log2(k + 1));
  return Math.max(unit, Math.floor(LOOP_BUDGET / perClass / unit) * unit);
}

/**
 * Refuses, on llvmpipe only ({@linkcode GpuContext.loopLimited}), a call whose kernel would loop more than
 * {@linkcode LOOP_LIMIT} times in one invocation (`iterations`, the kernel's count for these shapes): a
 * `RangeError` naming `what` (the shapes that set it) instead of values llvmpipe would silently get wrong.
 * The kernels that are not split yet (docs/LOSSES.md lists them); other adapters have no such limit.
 */
export function checkLoops(ctx: GpuContext, iterations: number, what: string): void {
  if (!ctx.loopLimited || iterations <= LOOP_LIMIT) return;
  throw new RangeError(
    `Expected ${what} to need at most ${LOOP_LIMIT} loop iterations per shader invocation on llvmpipe ` +
      `(Mesa's software adapter stops any invocation there), got ${Math.ceil(iterations)}`,
  );
}
