/**
 * Reference kernel of `centerRegularization`, in float64.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { CenterRegProblem } from "../kernels/center_reg.ts";
import { normalizeBackward, normalizeRows } from "./normalize.ts";

/**
 * `L_center = mean_i (1 - f_i . c^_{y_i})`, `L_proto = mean_c (1 - c^_c . (A c^)_c)`;
 * d/df_i = -u/B c^_{y_i}; d/dc^_c = -u/B sum_{i: y_i = c} f_i - u w/C ((A c^)_c + (A^T c^)_c),
 * then through the normalisation.
 */
export function centerReg(p: CenterRegProblem): Raw {
  const { b, c, d, f, centers, labels, A, prototypeWeight: w, upstream: u } = p;
  const [ch, norms] = normalizeRows(centers, c, d);
  let center = 0;
  for (let i = 0; i < b; i++) {
    let dot = 0;
    for (let q = 0; q < d; q++) dot += f[i * d + q] * ch[labels[i] * d + q];
    center += 1 - dot;
  }
  const Ach = new Float64Array(c * d), ATch = new Float64Array(c * d);
  for (let i = 0; i < c; i++) {
    for (let j = 0; j < c; j++) {
      const a = A[i * c + j];
      if (a === 0) continue;
      for (let q = 0; q < d; q++) {
        Ach[i * d + q] += a * ch[j * d + q];
        ATch[j * d + q] += a * ch[i * d + q];
      }
    }
  }
  let proto = 0;
  for (let i = 0; i < c; i++) {
    let dot = 0;
    for (let q = 0; q < d; q++) dot += ch[i * d + q] * Ach[i * d + q];
    proto += 1 - dot;
  }
  const rows = [Float64Array.of(center / b), Float64Array.of(proto / c)];
  if (!p.grad) return { rows, grads: {} };
  const gf = p.outF?.data ?? new Float32Array(b * d);
  const gch = new Float64Array(c * d);
  for (let i = 0; i < b; i++) {
    const y = labels[i];
    for (let q = 0; q < d; q++) {
      gf[i * d + q] = (-u / b) * ch[y * d + q];
      gch[y * d + q] -= (u / b) * f[i * d + q];
    }
  }
  for (let k = 0; k < c * d; k++) gch[k] -= ((u * w) / c) * (Ach[k] + ATch[k]);
  const gc = p.outCenters?.data ?? new Float32Array(c * d);
  gc.set(normalizeBackward(gch, ch, norms, c, d));
  return { rows, grads: { f: gf, centers: gc } };
}
