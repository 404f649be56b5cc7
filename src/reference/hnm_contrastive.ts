/**
 * Reference kernel of `hnmContrastive`, in float64.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { HnmProblem } from "../kernels/hnm.ts";
import { normalizeBackward, normalizeRows } from "./normalize.ts";

/**
 * Per row, with `lse = log(e^pos + mean_j e^neg_j)`: `loss = lse - pos`;
 * d/dpos = e^(pos - lse) - 1, d/dneg_j = e^(neg_j - lse) / k, then through the cosines
 * and the normalisation of f (the prototypes are constants).
 */
export function hnm(p: HnmProblem): Raw {
  const { b, c, d, k, f, prototypes, labels, hard, temperature: t } = p;
  const [fh, norms] = normalizeRows(f, b, d);
  const [ph] = normalizeRows(prototypes, c, d);
  const cos = (i: number, cls: number) => {
    let s = 0;
    for (let q = 0; q < d; q++) s += fh[i * d + q] * ph[cls * d + q];
    return s;
  };
  const rows = new Float64Array(b), gh = new Float64Array(p.grad ? b * d : 0);
  const neg = new Float64Array(k);
  for (let i = 0; i < b; i++) {
    const pos = cos(i, labels[i]) / t;
    let m = pos;
    for (let j = 0; j < k; j++) m = Math.max(m, neg[j] = cos(i, hard[i * k + j]) / t);
    let s = 0;
    for (let j = 0; j < k; j++) s += Math.exp(neg[j] - m);
    const lse = m + Math.log(Math.exp(pos - m) + s / k);
    rows[i] = lse - pos;
    if (!p.grad) continue;
    const a = (p.scales[i] * (Math.exp(pos - lse) - 1)) / t;
    for (let q = 0; q < d; q++) gh[i * d + q] += a * ph[labels[i] * d + q];
    for (let j = 0; j < k; j++) {
      const aj = (p.scales[i] * Math.exp(neg[j] - lse)) / (k * t);
      for (let q = 0; q < d; q++) gh[i * d + q] += aj * ph[hard[i * k + j] * d + q];
    }
  }
  if (!p.grad) return { rows: [rows], grads: {} };
  const out = p.out?.data ?? new Float32Array(b * d);
  out.set(normalizeBackward(gh, fh, norms, b, d));
  return { rows: [rows], grads: { f: out } };
}
