/**
 * Reference kernel of `hierarchical`, in float64.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { HierarchicalProblem } from "../kernels/hierarchical.ts";
import { logSoftmaxRow } from "./softmax.ts";

/**
 * Per row: the coarse cross-entropy, and the cross-entropy of a log-softmax over only
 * the children of the true coarse class (the other fine classes are not read; their
 * gradient is exactly 0).
 */
export function hierarchical(p: HierarchicalProblem): Raw {
  const { b, k, c, coarse, fine, labels, coarseLabels, children, start } = p;
  const coarseRows = new Float64Array(b), fineRows = new Float64Array(b);
  const gc = p.grad ? (p.outCoarse?.data ?? new Float32Array(b * k)) : null;
  const gf = p.grad ? (p.outFine?.data ?? new Float32Array(b * c)) : null;
  const lc = new Float64Array(k), lf = new Float64Array(c), sub = new Float64Array(c);
  for (let i = 0; i < b; i++) {
    const g = coarseLabels[i];
    logSoftmaxRow(coarse, i * k, k, lc);
    coarseRows[i] = -lc[g];
    const n = start[g + 1] - start[g];
    let at = 0;
    for (let t = 0; t < n; t++) {
      const j = children[start[g] + t];
      sub[t] = fine[i * c + j];
      if (j === labels[i]) at = t;
    }
    logSoftmaxRow(sub, 0, n, lf);
    fineRows[i] = -lf[at];
    if (!gc || !gf) continue;
    const s = p.scales[i];
    for (let j = 0; j < k; j++) gc[i * k + j] = s * (Math.exp(lc[j]) - (j === g ? 1 : 0));
    gf.fill(0, i * c, (i + 1) * c);
    for (let t = 0; t < n; t++) gf[i * c + children[start[g] + t]] = s * (Math.exp(lf[t]) - (t === at ? 1 : 0));
  }
  return { rows: [coarseRows, fineRows], grads: gc && gf ? { coarse: gc, fine: gf } : {} };
}
