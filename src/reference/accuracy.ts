/**
 * Reference kernel of `accuracy`.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { AccuracyProblem } from "../kernels/topk_hits.ts";

/** Counts rows whose label has fewer than k strictly larger logits. */
export function topkHits(p: AccuracyProblem): Raw {
  let hits = 0;
  for (let i = 0; i < p.n; i++) {
    const y = p.labels[i];
    if (y < 0) continue;
    const zy = p.logits[i * p.c + y];
    let greater = 0;
    for (let j = 0; j < p.c; j++) if (p.logits[i * p.c + j] > zy) greater++;
    if (greater < p.k) hits++;
  }
  return { rows: [Float64Array.of(hits)], grads: {} };
}
