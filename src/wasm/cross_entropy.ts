/**
 * WebAssembly glue of the fused softmax cross-entropy kernel (`crossEntropy`, `focal`, the margin losses).
 *
 * @module
 */
import type { HardLabelProblem } from "../kernels/hard_label.ts";
import type { Raw } from "../kernels/core.ts";
import { Layout, runtime } from "./runtime.ts";
import { streamRows, threadsOf } from "./stream.ts";

/** Row losses and gradient of a hard-label problem on the WebAssembly backend. */
export function hardLabel(p: HardLabelProblem): Raw {
  const rt = runtime();
  const { n, c } = p;
  const lay = new Layout();
  const labels = lay.add(n * 4);
  const weight = p.weight ? lay.add(c * 4) : -1;
  const scales = p.grad ? lay.add(n * 8) : -1;
  const rowLoss = lay.add(n * 8);
  const target = p.target ? lay.add(n * 16) : -1;
  // crossEntropy's softcap (a scratch [2, c] per thread: the capped row, its derivative) and z-loss.
  const softcap = p.softcap ?? 0, zLoss = p.zLoss ?? 0;
  // The margin losses' non-target transform: its constants, its rows and (as the softcap's) a scratch [2, c] per thread.
  const nt = p.nonTarget;
  const cap = softcap || nt ? lay.add(threadsOf() * 8 * c) : -1;
  const ntc = nt ? lay.add(48) : -1;
  const ntRows = nt?.rows ? lay.add(n * 16) : -1;
  const zScales = zLoss && p.grad ? lay.add(n * 8) : -1;
  const rowZ = zLoss ? lay.add(n * 8) : -1;
  // The margin losses' sub-centres: a row is c * sub columns; a scratch [2, c] per thread (class cosines, winners).
  const sub = p.subcenters ?? 1;
  const subs = sub > 1 ? lay.add(threadsOf() * 8 * c) : -1;
  let base = 0;
  const [grad] = streamRows(rt, lay, n, c * sub, [p.logits], p.grad ? [p.out] : [], true, (b) => {
    base = b;
    rt.put(b + labels, p.labels);
    if (p.weight) rt.put(b + weight, p.weight);
    if (p.grad) rt.put(b + scales, p.scales);
    if (p.target) rt.put(b + target, p.target);
    if (zScales >= 0) rt.put(b + zScales, p.zScales!);
    if (nt) rt.put(b + ntc, Float64Array.of(nt.lo, nt.hi, nt.a, nt.b, nt.g, nt.cut));
    if (nt?.rows) rt.put(b + ntRows, nt.rows);
  }, ({ r0, rows, ins, outs, k, thread }) => {
    k.hard_label(
      ins[0],
      outs[0] ?? 0,
      rows,
      c,
      base + labels + r0 * 4,
      p.weight ? base + weight : 0,
      p.smoothing,
      p.gamma,
      p.grad ? base + scales + r0 * 8 : 0,
      base + rowLoss + r0 * 8,
      p.scale,
      p.clamp ? 1 : 0,
      p.target ? base + target + r0 * 16 : 0,
      softcap,
      cap >= 0 ? base + cap + thread * 8 * c : 0,
      zLoss,
      zScales >= 0 ? base + zScales + r0 * 8 : 0,
      zLoss ? base + rowZ + r0 * 8 : 0,
      nt ? base + ntc : 0,
      ntRows >= 0 ? base + ntRows + r0 * 16 : 0,
      sub,
      subs >= 0 ? base + subs + thread * 8 * c : 0,
    );
  });
  const rows = [rt.f64(base + rowLoss, n)];
  if (zLoss) rows.push(rt.f64(base + rowZ, n));
  return { rows, grads: grad ? { logits: grad } : {} };
}
