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
import type { LinearShardProblem, ShardStats } from "../kernels/shards.ts";

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

/** Row i's logits z_j = cap(x_i . W_j + b_j) over the problem's classes and their slopes. */
function rowLogits(p: LinearCeProblem, i: number, z: Float64Array, dcap: Float64Array): void {
  const { d, c, x, W, bias, softcap } = p;
  for (let j = 0; j < c; j++) {
    let u = bias ? bias[j] : 0;
    for (let k = 0; k < d; k++) u += x[i * d + k] * W[j * d + k];
    [z[j], dcap[j]] = capped(u, softcap);
  }
}

/**
 * A shard of the vocabulary (labels local: -1 ignored, the shard's class, or `c` elsewhere): per
 * row the max over the shard's logits (the label's included), the sum of `e^(z - max)` over the
 * non-label ones, the label's logit where it holds it, and with smoothing `below` and `weightSum`.
 */
export function linearShardStats(q: LinearShardProblem): ShardStats {
  const { p } = q, { n, c, labels } = p;
  const max = new Float64Array(n), sum = new Float64Array(n), target = new Float64Array(n);
  const below = new Float64Array(n), z = new Float64Array(c), dcap = new Float64Array(c);
  const w = (j: number) => (p.weight ? p.weight[j] : 1);
  for (let i = 0; i < n; i++) {
    if (labels[i] < 0) continue;
    rowLogits(p, i, z, dcap);
    let m = -Infinity;
    for (let j = 0; j < c; j++) m = Math.max(m, z[j]);
    for (let j = 0; j < c; j++) {
      if (j !== labels[i]) sum[i] += Math.exp(z[j] - m);
      below[i] += w(j) * (m - z[j]);
    }
    max[i] = m;
    if (labels[i] < c) target[i] = z[labels[i]];
  }
  if (!p.smoothing) return { max, sum, target };
  let weightSum = 0;
  for (let j = 0; j < c; j++) weightSum += w(j);
  return { max, sum, target, below, weightSum };
}

/** A shard's gradients: `dz_j = cap'_j (A e^(z_j - max) - U w_j)` off the label, `cap'_y G` at it. */
export function linearShardGrads(q: LinearShardProblem): Record<string, Float32Array> {
  const { p } = q, { n, d, c, x, W, labels } = p, { A, U, G } = q.terms!, M = q.stats!.max;
  const dx = new Float64Array(n * d), dW = new Float64Array(c * d), db = new Float64Array(c);
  const z = new Float64Array(c), dcap = new Float64Array(c);
  for (let i = 0; i < n; i++) {
    if (labels[i] < 0) continue;
    rowLogits(p, i, z, dcap);
    for (let j = 0; j < c; j++) {
      const g = j === labels[i] ? G[i] : A[i] * Math.exp(z[j] - M[i]) - U[i] * (p.weight ? p.weight[j] : 1);
      const du = g * dcap[j];
      for (let k = 0; k < d; k++) {
        dx[i * d + k] += du * W[j * d + k];
        dW[j * d + k] += du * x[i * d + k];
      }
      db[j] += du;
    }
  }
  const out: Record<string, Float32Array> = { x: Float32Array.from(dx), W: Float32Array.from(dW) };
  if (p.bias) out.bias = Float32Array.from(db);
  return out;
}
