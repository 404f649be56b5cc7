/**
 * Reference kernel of the embedding heads (`marginHead`, `sphereface`, `lsoftmax`),
 * in float64: the whole logits matrix, then the chain rule written out.
 *
 * @module
 */
import type { Raw } from "../loss.ts";
import { type HeadProblem, norm } from "../losses/margin_head.ts";
import { logSoftmaxRow } from "./softmax.ts";

/** Row losses and gradients w.r.t. x and W of an embedding head. */
export function head(p: HeadProblem): Raw {
  const { n, c, d, x, W, labels, scale: s, clamp, target } = p;
  const eps = 1e-12;
  const rows = new Float64Array(n);
  const a = Float64Array.from({ length: n }, (_, i) => (p.normX ? 1 / Math.max(p.nx[i], eps) : 1));
  const nwAll = Float64Array.from({ length: c }, (_, j) => norm(W, j * d, d));
  const b = Float64Array.from(nwAll, (nw) => (p.normW ? 1 / Math.max(nw, eps) : 1));
  const dx = new Float64Array(n * d), dW = new Float64Array(c * d), colAcc = new Float64Array(c);
  const u = new Float64Array(c), z = new Float64Array(c), logp = new Float64Array(c);
  for (let i = 0; i < n; i++) {
    const y = labels[i];
    if (y < 0) continue;
    for (let j = 0; j < c; j++) {
      let dot = 0;
      for (let k = 0; k < d; k++) dot += x[i * d + k] * W[j * d + k];
      u[j] = dot * a[i] * b[j];
      z[j] = s * (clamp ? Math.min(1, Math.max(-1, u[j])) : u[j]);
    }
    z[y] = target[4 * i];
    logSoftmaxRow(z, 0, c, logp);
    rows[i] = -logp[y];
    if (!p.grad) continue;
    const si = p.scales[i];
    const dzy = si * (Math.exp(logp[y]) - 1);
    let rowAcc = 0;
    for (let j = 0; j < c; j++) {
      // dL/du_ij: through s * clamp(u) (the clamp passes nothing outside [-1, 1]), or the target.
      const inside = !clamp || Math.abs(u[j]) <= 1;
      const du = j === y ? dzy * target[4 * i + 1] : inside ? si * Math.exp(logp[j]) * s : 0;
      // u = (x . W_j) a b: du/dx = a b W_j - [normX] u a^2 x; du/dW_j = a b x - [normW] u b^2 W_j
      for (let k = 0; k < d; k++) {
        dx[i * d + k] += du * a[i] * b[j] * W[j * d + k];
        dW[j * d + k] += du * a[i] * b[j] * x[i * d + k];
      }
      rowAcc += du * u[j];
      colAcc[j] += du * u[j];
    }
    const nx = p.nx[i], nw = p.nw[i];
    for (let k = 0; k < d; k++) {
      if (p.normX && nx > eps) dx[i * d + k] -= rowAcc * a[i] * a[i] * x[i * d + k];
      // The target's own dependence on ||x|| and ||W_y||.
      if (nx > 0) dx[i * d + k] += (dzy * target[4 * i + 2] * x[i * d + k]) / nx;
      if (nw > 0) dW[y * d + k] += (dzy * target[4 * i + 3] * W[y * d + k]) / nw;
    }
  }
  if (p.grad && p.normW) {
    for (let j = 0; j < c; j++) {
      if (nwAll[j] <= eps) continue;
      for (let k = 0; k < d; k++) dW[j * d + k] -= colAcc[j] * b[j] * b[j] * W[j * d + k];
    }
  }
  if (!p.grad) return { rows: [rows], grads: {} };
  const gx = p.outX?.data ?? new Float32Array(n * d), gW = p.outW?.data ?? new Float32Array(c * d);
  gx.set(dx);
  gW.set(dW);
  return { rows: [rows], grads: { x: gx, W: gW } };
}
