/**
 * WebAssembly glue of `accuracy`.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { AccuracyProblem } from "../kernels/topk_hits.ts";
import { Layout, runtime } from "./runtime.ts";
import { streamRows } from "./stream.ts";

/** `accuracy` on the WebAssembly backend. */
export function topkHits(p: AccuracyProblem): Raw {
  const rt = runtime();
  const lay = new Layout();
  const labels = lay.add(p.n * 4);
  let base = 0, hits = 0;
  streamRows(rt, lay, p.n, p.c, [p.logits], [], false, (b) => {
    base = b;
    rt.put(b + labels, p.labels);
  }, ({ r0, rows, ins }) => {
    hits += rt.k.topk_hits(ins[0], rows, p.c, base + labels + r0 * 4, p.k);
  }, false); // the hits are the kernel's result: one thread
  return { rows: [Float64Array.of(hits)], grads: {} };
}
