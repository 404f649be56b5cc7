/**
 * WebAssembly glue of `centerLoss`.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { CenterProblem } from "../kernels/center.ts";
import { Frame, NONE } from "./frame.ts";

/** `centerLoss` on the WebAssembly backend. */
export function center(p: CenterProblem): Raw {
  const { n, c, d } = p;
  const f = new Frame();
  const x = f.input(p.x), centers = f.input(p.centers), labels = f.input(p.labels);
  const scales = f.input(p.grad ? p.scales : null);
  const rows = f.scratch(n * 8);
  const gx = p.grad ? f.output(p.outX?.data ?? null, n * d) : NONE;
  const gc = p.grad ? f.output(p.outCenters?.data ?? null, c * d) : NONE;
  const order = f.scratch(n * 4), count = f.scratch((c + 1) * 4), acc = f.scratch(d * 8);
  f.place();
  f.rt.k.center_loss(
    f.ptr(x),
    f.ptr(centers),
    f.ptr(labels),
    n,
    c,
    d,
    f.ptr(scales),
    f.ptr(rows),
    f.ptr(gx),
    f.ptr(gc),
    f.ptr(order),
    f.ptr(count),
    f.ptr(acc),
  );
  return { rows: [f.f64(rows, n)], grads: p.grad ? { x: f.take(gx), centers: f.take(gc) } : {} };
}
