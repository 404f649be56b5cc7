/**
 * Reference kernel of `klDiv`, in float64.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { KlProblem } from "../kernels/soft_target.ts";

/**
 * Row sums of `t (log t - x)` (0 where t = 0), or `e^t (t - x)` with `logTarget`;
 * d/dx = -t; d/dt = log t + 1 - x (0 where t = 0), or e^t (t - x + 1).
 */
export function klDiv(p: KlProblem): Raw {
  const { n, c, a: x, b: t, logTarget } = p;
  const rows = new Float64Array(n);
  const gx = p.grad ? (p.outA?.data ?? new Float32Array(n * c)) : null;
  const gt = p.grad ? (p.outB?.data ?? new Float32Array(n * c)) : null;
  for (let i = 0; i < n; i++) {
    const s = p.grad ? p.scales[i] : 0;
    let loss = 0;
    for (let j = i * c; j < (i + 1) * c; j++) {
      const prob = logTarget ? Math.exp(t[j]) : t[j];
      const logProb = logTarget ? t[j] : Math.log(t[j]);
      const live = logTarget || t[j] !== 0;
      if (live) loss += prob * (logProb - x[j]);
      if (gx && gt) {
        gx[j] = -s * prob;
        gt[j] = live ? s * (logTarget ? prob : 1) * (logProb - x[j] + 1) : 0;
      }
    }
    rows[i] = loss;
  }
  return { rows: [rows], grads: gx && gt ? { a: gx, b: gt } : {} };
}
