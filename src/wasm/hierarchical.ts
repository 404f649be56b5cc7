/**
 * WebAssembly glue of `hierarchical`.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { HierarchicalProblem } from "../kernels/hierarchical.ts";
import { Frame, NONE } from "./frame.ts";

/** `hierarchical` on the WebAssembly backend. */
export function hierarchical(p: HierarchicalProblem): Raw {
  const { b, k, c } = p;
  const f = new Frame();
  const coarse = f.input(p.coarse), fine = f.input(p.fine), labels = f.input(p.labels);
  const coarseLabels = f.input(p.coarseLabels), children = f.input(p.children), start = f.input(p.start);
  const scales = f.input(p.grad ? p.scales : null);
  const gc = p.grad ? f.output(p.outCoarse?.data ?? null, b * k) : NONE;
  const gf = p.grad ? f.output(p.outFine?.data ?? null, b * c) : NONE;
  const coarseRows = f.scratch(b * 8), fineRows = f.scratch(b * 8), sub = f.scratch(c * 4), at = f.scratch(4);
  f.place();
  f.rt.k.hierarchical(
    f.ptr(coarse),
    f.ptr(gc),
    b,
    k,
    f.ptr(fine),
    f.ptr(gf),
    c,
    f.ptr(labels),
    f.ptr(coarseLabels),
    f.ptr(children),
    f.ptr(start),
    f.ptr(scales),
    f.ptr(coarseRows),
    f.ptr(fineRows),
    f.ptr(sub),
    f.ptr(at),
  );
  return {
    rows: [f.f64(coarseRows, b), f.f64(fineRows, b)],
    grads: p.grad ? { coarse: f.take(gc), fine: f.take(gf) } : {},
  };
}
