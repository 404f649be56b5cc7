/**
 * WebAssembly glue of the `experts` family (`mixOutputs`, `iclMoe`, and `physMoe`'s
 * expert terms): pass 1 (`experts_ce`) takes every expert's softmax statistics and CE or
 * focal terms, the host forms the gradient weights from their means (`ceWeights`), pass 2
 * (`experts_main`) the collaboration and pair terms and the gradients
 * (`assembly/experts.ts`).
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import { ceWeights, ensemble, expertOutputs, type ExpertsProblem } from "../kernels/experts.ts";
import { Frame, NONE } from "./frame.ts";

/** The experts family on the WebAssembly backend. */
export function experts(p: ExpertsProblem): Raw {
  const { e, b, c } = p;
  const f = new Frame();
  // The host reads the logits and the gating for the ensemble: views of WebAssembly memory (alloc)
  // that an earlier term's growth detached are taken again first (Runtime.pin).
  const ens = p.gating ? ensemble(f.rt.pin(p.gating)(), p.logits.map((x) => f.rt.pin(x)()), b, c) : null;
  const z = p.logits.map((x) => f.input(x));
  const labels = f.input(p.labels), gamma = f.input(p.gamma), target = f.input(ens);
  const grads = p.grad ? p.logits.map((_, k) => f.output(p.outs[k]?.data ?? null, b * c)) : [];
  const shift = p.shift ? f.scratch(c * 4) : NONE;
  const ztab = f.scratch(e * 4), gtab = f.scratch(e * 4), wce = f.scratch(e * 8);
  const ceRows = f.scratch(e * b * 8), colRows = f.scratch(e * b * 8), pairRows = f.scratch(b * 8);
  const stats = f.scratch(b * e * 72), u = f.scratch(c * 4), spare = f.scratch(8), scratch = f.scratch((e + 3) * c * 4);
  f.place();
  const rt = f.rt, k = rt.k;
  new Int32Array(rt.buffer, f.ptr(ztab), e).set(z.map((h) => f.ptr(h)));
  if (p.grad) new Int32Array(rt.buffer, f.ptr(gtab), e).set(grads.map((h) => f.ptr(h)));
  // The log prior in float32 (the kernel adds it to z - max, where it is small next to nothing).
  if (p.shift) f.f32(shift).set(p.shift);
  k.experts_ce(
    f.ptr(ztab),
    e,
    b,
    c,
    f.ptr(labels),
    f.ptr(gamma),
    f.ptr(shift),
    f.ptr(ceRows),
    f.ptr(stats),
    f.ptr(u),
    f.ptr(spare),
  );
  const ceAll = f.f64(ceRows, e * b);
  const ce = Array.from({ length: e }, (_, k) => ceAll.subarray(k * b, (k + 1) * b));
  let wcol = 0, wpairs = 0;
  if (p.grad) {
    const w = p.weights, means = Float64Array.from(ce, (r) => r.reduce((a, x) => a + x, 0) / b);
    new Float64Array(rt.buffer, f.ptr(wce), e).set(ceWeights(w, means).map((x) => x / b));
    [wcol, wpairs] = [w.col / b, w.pairs / b];
  }
  if (p.grad || ens || p.pairs) {
    k.experts_main(
      f.ptr(ztab),
      p.grad ? f.ptr(gtab) : 0,
      e,
      b,
      c,
      f.ptr(labels),
      f.ptr(shift),
      f.ptr(target),
      p.pairs ? 1 : 0,
      f.ptr(stats),
      f.ptr(wce),
      wcol,
      wpairs,
      f.ptr(colRows),
      f.ptr(pairRows),
      f.ptr(scratch),
    );
  }
  const colAll = ens ? f.f64(colRows, e * b) : new Float64Array(e * b);
  const col = Array.from({ length: e }, (_, k) => colAll.subarray(k * b, (k + 1) * b));
  const pairs = p.pairs ? f.f64(pairRows, b) : new Float64Array(b);
  const out: Record<string, Float32Array> = {};
  grads.forEach((h, k) => (out[`expertLogits.${k}`] = f.take(h)));
  return { rows: [...ce, ...col, pairs], grads: out, outputs: expertOutputs(p, ens) };
}
