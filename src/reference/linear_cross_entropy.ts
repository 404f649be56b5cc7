/**
 * Reference kernel of `linearCrossEntropy`, in float64: per row every logit
 * `z_j = cap(x_i . W_j + b_j)`, the log-sum-exp, PyTorch's weighted and smoothed
 * cross-entropy and the z-loss, then the chain rule written out (one row's logits at a
 * time; the gradients summed in float64).
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import { capped, type LinearCeProblem } from "../kernels/linear_ce.ts";

/** Row losses, z-loss rows, correct rows and the gradients w.r.t. x, W and bias. */
export function linearCe(p: LinearCeProblem): Raw {
  const { n, d, c, x, W, bias, labels, weight, smoothing: eps, softcap, zLoss } = p;
  const w = (j: number) => (weight ? weight[j] : 1);
  let wAll = 0;
  for (let j = 0; j < c; j++) wAll += w(j);
  const rows = new Float64Array(n), zRows = new Float64Array(n), correct = new Float64Array(n);
  const dx = new Float64Array(p.grad ? n * d : 0), dW = new Float64Array(p.grad ? c * d : 0);
  const db = new Float64Array(p.grad ? c : 0);
  const z = new Float64Array(c), dcap = new Float64Array(c);
  for (let i = 0; i < n; i++) {
    const y = labels[i];
    if (y < 0) continue;
    let m = -Infinity;
    for (let j = 0; j < c; j++) {
      let u = bias ? bias[j] : 0;
      for (let k = 0; k < d; k++) u += x[i * d + k] * W[j * d + k];
      [z[j], dcap[j]] = capped(u, softcap);
      m = Math.max(m, z[j]);
    }
    let s = 0, top = -Infinity;
    for (let j = 0; j < c; j++) {
      s += Math.exp(z[j] - m);
      if (j !== y) top = Math.max(top, z[j]);
    }
    const lse = m + Math.log(s);
    // loss_i = -(1-eps) w_y log p_y - (eps/C) sum_j w_j log p_j
    let smooth = 0;
    for (let j = 0; j < c; j++) smooth += w(j) * (lse - z[j]);
    rows[i] = (1 - eps) * w(y) * (lse - z[y]) + (eps / c) * smooth;
    zRows[i] = zLoss * lse * lse;
    correct[i] = top <= z[y] ? 1 : 0;
    if (!p.grad) continue;
    // dz_j = s_i (q_sum p_j - q_j) + zs_i 2 k lse p_j, q_j = (1-eps) w_y [j = y] + (eps/C) w_j
    const si = p.scales[i], zs = zLoss ? p.zScales[i] : 0;
    const qSum = (1 - eps) * w(y) + (eps / c) * wAll;
    for (let j = 0; j < c; j++) {
      const pj = Math.exp(z[j] - lse);
      const q = (j === y ? (1 - eps) * w(y) : 0) + (eps / c) * w(j);
      const du = (si * (qSum * pj - q) + zs * 2 * zLoss * lse * pj) * dcap[j];
      if (du === 0) continue;
      for (let k = 0; k < d; k++) {
        dx[i * d + k] += du * W[j * d + k];
        dW[j * d + k] += du * x[i * d + k];
      }
      db[j] += du;
    }
  }
  if (!p.grad) return { rows: [rows, zRows, correct], grads: {} };
  const gx = p.outX?.data ?? new Float32Array(n * d), gW = p.outW?.data ?? new Float32Array(c * d);
  gx.set(dx);
  gW.set(dW);
  const grads: Record<string, Float32Array> = { x: gx, W: gW };
  if (bias) {
    const gb = p.outBias ?? new Float32Array(c);
    gb.set(db);
    grads.bias = gb;
  }
  return { rows: [rows, zRows, correct], grads };
}
