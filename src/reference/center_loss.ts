/**
 * Reference kernel of `centerLoss`, in float64.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import type { CenterProblem } from "../kernels/center.ts";

/** Per row `||x_i - c_{y_i}||^2`; d/dx_i = 2 s_i (x_i - c_y), d/dc_y = -sum of those. */
export function center(p: CenterProblem): Raw {
  const { n, c, d, x, centers, labels } = p;
  const rows = new Float64Array(n);
  const gx = p.grad ? (p.outX?.data ?? new Float32Array(n * d)) : null;
  const gc = new Float64Array(p.grad ? c * d : 0);
  for (let i = 0; i < n; i++) {
    const y = labels[i];
    let s = 0;
    for (let k = 0; k < d; k++) {
      const diff = x[i * d + k] - centers[y * d + k];
      s += diff * diff;
      if (gx) {
        gx[i * d + k] = 2 * p.scales[i] * diff;
        gc[y * d + k] -= 2 * p.scales[i] * diff;
      }
    }
    rows[i] = s;
  }
  if (!gx) return { rows: [rows], grads: {} };
  const centersGrad = p.outCenters?.data ?? new Float32Array(c * d);
  centersGrad.set(gc);
  return { rows: [rows], grads: { x: gx, centers: centersGrad } };
}
