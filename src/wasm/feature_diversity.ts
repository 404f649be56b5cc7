/**
 * WebAssembly glue of `featureDiversity`.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { DiversityProblem } from "../kernels/diversity.ts";
import { Frame } from "./frame.ts";

/** `featureDiversity` on the WebAssembly backend. */
export function diversity(p: DiversityProblem): Raw {
  const { e, b, d } = p;
  const f = new Frame();
  const features = p.features.map((x) => f.input(x));
  const grads = p.grad ? p.features.map((_, k) => f.output(p.outs[k]?.data ?? null, b * d)) : [];
  const ftab = f.scratch(e * 4), gtab = f.scratch(e * 4), rows = f.scratch(b * 8);
  f.place();
  const tab = (h: number) => new Int32Array(f.rt.buffer, f.ptr(h), e);
  tab(ftab).set(features.map((h) => f.ptr(h)));
  if (p.grad) tab(gtab).set(grads.map((h) => f.ptr(h)));
  f.rt.k.diversity(f.ptr(ftab), p.grad ? f.ptr(gtab) : 0, e, b, d, p.scale, f.ptr(rows));
  const out: Record<string, Float32Array> = {};
  grads.forEach((h, k) => (out[`features.${k}`] = f.take(h)));
  return { rows: [f.f64(rows, b)], grads: out };
}
