// Entry point of the WebAssembly module: every kernel the TypeScript side calls.
// Kernels take pointers and sizes into this module's memory and never allocate;
// the host lays out all buffers (src/wasm/runtime.ts) above `heap_base()`.
export { hard_label } from "./cross_entropy";
export { soft_target } from "./soft_cross_entropy";
export { kl_div } from "./kl_div";
export { distill } from "./distillation";
export { topk_hits } from "./accuracy";
export { softmax_rows, softmax_vjp } from "./softmax";
export { gemm, dots64, gemm_tn64, transpose, fma_peak } from "./gemm";
export { head_prep, head_forward, head_backward, head_chunk_max, row_finish, head_submax, head_subexpand, head_topk } from "./margin_head";
export { center_loss } from "./center_loss";
export { contrastive_dots, contrastive_rows, contrastive_max, contrastive_grad } from "./physics_contrastive";
export { diversity } from "./feature_diversity";
export { center_reg_prep, center_reg } from "./center_regularization";
export { experts_ce, experts_main } from "./experts";
export { hierarchical } from "./hierarchical";
export { hnm_prep, hnm_rows, hnm_grad } from "./hnm_contrastive";
export { ntxent_rows, ms_rows, proxy_rows, triplet_rows, triplet_count, metric_backward, gemm_acc64, metric_relative, metric_near_split, metric_near } from "./metric";
export { normalize_rows } from "./vectors";
export { shard_stats, shard_grads } from "./sharded";
export { clip_stats, clip_grad, siglip } from "./clip";
export { lce_stats, lce_grads, lce_colsum, lce_flush, lce_cap_relative, lce_mul, lce_pair, lce_max_norm } from "./linear_cross_entropy";

/** Copies n bytes from src to dst (memory.copy): the stream bound of the benchmarks. */
export function copy_bytes(dst: usize, src: usize, n: usize): void {
  memory.copy(dst, src, n);
}

/** First free byte above the static data: the host's allocator starts here. */
export function heap_base(): usize {
  return __heap_base;
}
