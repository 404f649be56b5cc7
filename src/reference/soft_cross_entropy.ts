/**
 * Reference kernel of `softCrossEntropy`, in float64.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { PairProblem } from "../kernels/soft_target.ts";
import { logSoftmaxRow } from "./softmax.ts";

/** loss_i = -sum_c t_c log p_c; d/dz = (sum t) p - t; d/dt = -log p. */
export function softTarget(p: PairProblem): Raw {
  const { n, c, a: z, b: t } = p;
  const rows = new Float64Array(n);
  const gz = p.grad ? (p.outA?.data ?? new Float32Array(n * c)) : null;
  const gt = p.grad ? (p.outB?.data ?? new Float32Array(n * c)) : null;
  const logp = new Float64Array(c);
  for (let i = 0; i < n; i++) {
    logSoftmaxRow(z, i * c, c, logp);
    let loss = 0, total = 0;
    for (let j = 0; j < c; j++) {
      loss -= t[i * c + j] * logp[j];
      total += t[i * c + j];
    }
    rows[i] = loss;
    if (!gz || !gt) continue;
    const s = p.scales[i];
    for (let j = 0; j < c; j++) {
      gz[i * c + j] = s * (total * Math.exp(logp[j]) - t[i * c + j]);
      gt[i * c + j] = -s * logp[j];
    }
  }
  return { rows: [rows], grads: gz && gt ? { a: gz, b: gt } : {} };
}
