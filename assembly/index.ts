// Entry point of the WebAssembly module: every kernel the TypeScript side calls.
// Kernels take pointers and sizes into this module's memory and never allocate;
// the host lays out all buffers (src/wasm/runtime.ts) above `heap_base()`.
export { hard_label } from "./cross_entropy";
export { soft_target } from "./soft_cross_entropy";
export { kl_div } from "./kl_div";
export { distill } from "./distillation";
export { topk_hits } from "./accuracy";
export { softmax_rows, softmax_vjp } from "./softmax";
export { gemm, dots64, gemm_tn64 } from "./gemm";
export { head_prep, head_forward, head_backward, head_chunk_max, row_finish } from "./margin_head";

/** First free byte above the static data: the host's allocator starts here. */
export function heap_base(): usize {
  return __heap_base;
}
