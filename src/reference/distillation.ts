/**
 * Reference kernel of `distillation`, in float64.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { DistillationProblem } from "../kernels/distill.ts";
import { logSoftmaxRow } from "./softmax.ts";

/** Per row: KL(softmax(t/T) || softmax(s/T)) and CE(s, y); d/ds = ka (Q - P) + ca (p - onehot). */
export function distill(p: DistillationProblem): Raw {
  const { n, c, student: s, teacher: t, labels, temperature: T } = p;
  const klRows = new Float64Array(n), ceRows = new Float64Array(n);
  const g = p.grad ? (p.out?.data ?? new Float32Array(n * c)) : null;
  const logP = new Float64Array(c), logQ = new Float64Array(c), logp = new Float64Array(c);
  for (let i = 0; i < n; i++) {
    logSoftmaxRow(t, i * c, c, logP, 1 / T);
    logSoftmaxRow(s, i * c, c, logQ, 1 / T);
    logSoftmaxRow(s, i * c, c, logp);
    let kl = 0;
    for (let j = 0; j < c; j++) kl += Math.exp(logP[j]) * (logP[j] - logQ[j]);
    klRows[i] = kl;
    const y = labels[i];
    ceRows[i] = y >= 0 ? -logp[y] : 0;
    if (!g) continue;
    for (let j = 0; j < c; j++) {
      const ce = y >= 0 ? p.ca[i] * (Math.exp(logp[j]) - (j === y ? 1 : 0)) : 0;
      g[i * c + j] = p.ka[i] * (Math.exp(logQ[j]) - Math.exp(logP[j])) + ce;
    }
  }
  return { rows: [klRows, ceRows], grads: g ? { student: g } : {} };
}
