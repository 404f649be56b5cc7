/**
 * WebAssembly glue of `centerRegularization`: the normalised centres, one product
 * V = M c^ with M = (A + A^T) / 2 by the heads' GEMM, then the value and the gradients
 * (`assembly/center_regularization.ts`).
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { CenterRegProblem } from "../kernels/center_reg.ts";
import { Frame, NONE } from "./frame.ts";

/** `centerRegularization` on the WebAssembly backend. */
export function centerReg(p: CenterRegProblem): Raw {
  const { b, c, d, A } = p;
  const f = new Frame();
  const F = f.input(p.f), centers = f.input(p.centers), labels = f.input(p.labels);
  const gf = p.grad ? f.output(p.outF?.data ?? null, b * d) : NONE;
  const gc = p.grad ? f.output(p.outCenters?.data ?? null, c * d) : NONE;
  const M = f.scratch(c * c * 4), ch = f.scratch(c * d * 4), V = f.scratch(c * d * 4);
  const inv64 = f.scratch(c * 8), rows = f.scratch(16);
  const acc = p.grad ? f.scratch(c * d * 8) : NONE, w = p.grad ? f.scratch(c * 8) : NONE;
  const near = p.grad ? f.scratch(c * 4) : NONE;
  f.place();
  // M = (A + A^T) / 2: sum_c c^_c . (A c^)_c = sum_c c^_c . (M c^)_c, and d/dc^ of it is 2 M c^.
  const m = f.f32(M);
  for (let i = 0; i < c; i++) {
    for (let j = i; j < c; j++) m[i * c + j] = m[j * c + i] = (A[i * c + j] + A[j * c + i]) / 2;
  }
  const k = f.rt.k;
  k.center_reg_prep(f.ptr(centers), c, d, f.ptr(ch), f.ptr(inv64));
  k.gemm(f.ptr(V), d, c, d, c, f.ptr(M), c, 1, f.ptr(ch), d, 0);
  k.center_reg(
    f.ptr(F),
    b,
    d,
    f.ptr(centers),
    f.ptr(ch),
    f.ptr(V),
    c,
    f.ptr(labels),
    p.upstream,
    p.prototypeWeight,
    f.ptr(rows),
    f.ptr(gf),
    f.ptr(gc),
    f.ptr(inv64),
    f.ptr(M),
    f.ptr(acc),
    f.ptr(w),
    f.ptr(near),
  );
  const [center, proto] = f.f64(rows, 2);
  return {
    rows: [Float64Array.of(center), Float64Array.of(proto)],
    grads: p.grad ? { f: f.take(gf), centers: f.take(gc) } : {},
  };
}
