/**
 * WebAssembly glue of `distillation`.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { DistillationProblem } from "../kernels/distill.ts";
import { Layout, runtime } from "./runtime.ts";
import { streamRows, threadsOf } from "./stream.ts";

/** `distillation` on the WebAssembly backend. */
export function distill(p: DistillationProblem): Raw {
  const rt = runtime();
  const { n, c } = p;
  const lay = new Layout();
  const labels = lay.add(n * 4);
  const ka = p.grad ? lay.add(n * 8) : -1;
  const ca = p.grad ? lay.add(n * 8) : -1;
  const klRows = lay.add(n * 8);
  const ceRows = lay.add(n * 8);
  const stride = Math.ceil((c * 12 + 16) / 64) * 64; // one scratch row per thread
  const scratch = lay.add(stride * threadsOf());
  let base = 0;
  const [grad] = streamRows(rt, lay, n, c, [p.student, p.teacher], p.grad ? [p.out] : [], false, (b) => {
    base = b;
    rt.put(b + labels, p.labels);
    if (p.grad) {
      rt.put(b + ka, p.ka);
      rt.put(b + ca, p.ca);
    }
  }, ({ r0, rows, ins, outs, k, thread }) => {
    k.distill(
      ins[0],
      ins[1],
      outs[0] ?? 0,
      rows,
      c,
      base + labels + r0 * 4,
      p.temperature,
      p.grad ? base + ka + r0 * 8 : 0,
      p.grad ? base + ca + r0 * 8 : 0,
      base + klRows + r0 * 8,
      base + ceRows + r0 * 8,
      base + scratch + thread * stride,
    );
  });
  return { rows: [rt.f64(base + klRows, n), rt.f64(base + ceRows, n)], grads: grad ? { student: grad } : {} };
}
