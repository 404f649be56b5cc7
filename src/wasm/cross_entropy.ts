/**
 * WebAssembly glue of the hard-label kernel (`crossEntropy`, `focal`): lays out the
 * problem in the arena and streams the logits through it in row chunks.
 *
 * @module
 */
import type { HardLabelProblem } from "../losses/cross_entropy.ts";
import type { Raw } from "../loss.ts";
import { Layout, runtime } from "./runtime.ts";
import { streamRows } from "./stream.ts";

/** Row losses and gradient of a hard-label problem on the WebAssembly backend. */
export function hardLabel(p: HardLabelProblem): Raw {
  const rt = runtime();
  const { n, c } = p;
  const lay = new Layout();
  const labels = lay.add(n * 4);
  const weight = p.weight ? lay.add(c * 4) : -1;
  const scales = p.grad ? lay.add(n * 8) : -1;
  const rowLoss = lay.add(n * 8);
  const r = streamRows(rt, lay, n, c, p.logits, p.grad, p.out, (base) => {
    rt.put(base + labels, p.labels);
    if (p.weight) rt.put(base + weight, p.weight);
    if (p.grad) rt.put(base + scales, p.scales);
  }, (base, r0, rows, z, g) => {
    rt.k.hard_label(
      z, g, rows, c, base + labels + r0 * 4, p.weight ? base + weight : 0, p.smoothing, p.gamma,
      p.grad ? base + scales + r0 * 8 : 0, base + rowLoss + r0 * 8,
    );
  }, (base) => [new Float64Array(rt.buffer, base + rowLoss, n).slice()]);
  return { rows: r.rows, grads: r.grad ? { logits: r.grad } : {} };
}
