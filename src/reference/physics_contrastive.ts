/**
 * Reference kernel of `physicsContrastive`, in float64: the whole B x B similarity
 * matrix, then the chain rule written out.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { ContrastiveProblem } from "../kernels/contrastive.ts";

/**
 * Per valid anchor i, with `w_ij = 1 - R_ij` and `lse_i = log sum_{j != i} e^(S_ij) w_ij`:
 * `loss_i = lse_i - sum_j P_ij S_ij / |P_i|`; `d loss_i / d S_ij = e^(S_ij - lse_i) w_ij - P_ij / |P_i|`,
 * and `S_ij = f_i . f_j / tau` sends it to both f_i and f_j.
 */
export function contrastive(p: ContrastiveProblem): Raw {
  const { b, d, f, labels, rule, k, temperature: tau, threshold } = p;
  const rows = new Float64Array(b);
  const g = new Float64Array(p.grad ? b * d : 0);
  const S = new Float64Array(b), w = new Float64Array(b);
  for (let i = 0; i < b; i++) {
    if (!p.valid[i]) continue;
    // The shift: the largest S_ij among the terms of the denominator (w > 0), so that
    // the denominator is at least that term's weight even at tiny temperatures.
    let m = -Infinity;
    for (let j = 0; j < b; j++) {
      let dot = 0;
      for (let q = 0; q < d; q++) dot += f[i * d + q] * f[j * d + q];
      S[j] = dot / tau;
      w[j] = j === i ? 0 : 1 - (rule ? rule[labels[i] * k + labels[j]] : 0);
      if (w[j] > 0) m = Math.max(m, S[j]);
    }
    let den = 0;
    for (let j = 0; j < b; j++) if (w[j] > 0) den += Math.exp(S[j] - m) * w[j];
    const lse = m + Math.log(den);
    const isPos = (j: number) =>
      j !== i && (labels[i] === labels[j] || (rule ? rule[labels[i] * k + labels[j]] : 0) > threshold);
    let pos = 0;
    for (let j = 0; j < b; j++) if (isPos(j)) pos += S[j];
    rows[i] = lse - pos / p.positives[i];
    if (!p.grad) continue;
    for (let j = 0; j < b; j++) {
      if (j === i) continue;
      const a = (p.scales[i] * ((w[j] > 0 ? Math.exp(S[j] - lse) * w[j] : 0) - (isPos(j) ? 1 / p.positives[i] : 0))) /
        tau;
      if (a === 0) continue;
      for (let q = 0; q < d; q++) {
        g[i * d + q] += a * f[j * d + q];
        g[j * d + q] += a * f[i * d + q];
      }
    }
  }
  if (!p.grad) return { rows: [rows], grads: {} };
  const out = p.out?.data ?? new Float32Array(b * d);
  out.set(g);
  return { rows: [rows], grads: { f: out } };
}
