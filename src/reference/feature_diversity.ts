/**
 * Reference kernel of `featureDiversity`, in float64.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { DiversityProblem } from "../kernels/diversity.ts";

/**
 * Per sample b, the sum over ordered pairs `e != e'` of `||f_e[b] - f_e'[b]||`; the
 * gradient w.r.t. `f_e[b]` is `2 scale sum_{e' != e} (f_e - f_e') / ||f_e - f_e'||` (0 where
 * a distance is 0).
 */
export function diversity(p: DiversityProblem): Raw {
  const { e, b, d, features: F } = p;
  const rows = new Float64Array(b);
  const g = p.grad ? F.map(() => new Float64Array(b * d)) : [];
  for (let i = 0; i < b; i++) {
    for (let s = 0; s < e; s++) {
      for (let t = s + 1; t < e; t++) {
        let sq = 0;
        for (let q = 0; q < d; q++) sq += (F[s][i * d + q] - F[t][i * d + q]) ** 2;
        const dist = Math.sqrt(sq);
        rows[i] += 2 * dist;
        if (!p.grad || dist === 0) continue;
        for (let q = 0; q < d; q++) {
          const u = (2 * p.scale * (F[s][i * d + q] - F[t][i * d + q])) / dist;
          g[s][i * d + q] += u;
          g[t][i * d + q] -= u;
        }
      }
    }
  }
  const grads: Record<string, Float32Array> = {};
  g.forEach((gk, k) => {
    const out = p.outs[k]?.data ?? new Float32Array(b * d);
    out.set(gk);
    grads[`features.${k}`] = out;
  });
  return { rows: [rows], grads };
}
