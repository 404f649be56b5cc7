/**
 * WebGPU glue of `accuracy`: src/webgpu/accuracy.wgsl.
 *
 * @module
 */
import { type Raw, then } from "../kernels/core.ts";
import type { AccuracyProblem } from "../kernels/topk_hits.ts";
import { type GpuContext, runRows } from "./context.ts";

/** The number of top-k hits, as `rows[0][0]`. */
export function topkHits(ctx: GpuContext, p: AccuracyProblem): Raw | Promise<Raw> {
  return then(
    runRows(ctx, {
      kernel: "accuracy",
      n: p.n,
      c: p.c,
      // k >= C always hits (at most C - 1 logits are above the label's).
      params: { k: Math.min(p.k, p.c) },
      ins: [p.logits],
      outs: [],
      labels: p.labels,
      rsOut: 1,
    }),
    ({ rows }) => {
      let hits = 0;
      for (let i = 0; i < p.n; i++) hits += rows[i];
      return { rows: [Float64Array.of(hits)], grads: {} };
    },
  );
}
