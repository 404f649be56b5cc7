/**
 * Reference kernel of the hard-label losses (`crossEntropy`, `focal`, the margin
 * losses on cosines), in float64.
 *
 * @module
 */
import { type HardLabelProblem, hardLogit, isHard, subcenter } from "../kernels/hard_label.ts";
import type { Raw } from "../kernels/core.ts";
import { logSoftmaxRow } from "./softmax.ts";

/**
 * Focal row loss `f(nll) = (1 - p_t)^gamma nll`, `p_t = e^-nll`, and its derivative
 * `f'(nll) = (1 - p_t)^gamma + gamma (1 - p_t)^(gamma - 1) p_t nll`, whose second term is 0 at
 * `p_t = 1` (gamma 0: `nll`, 1).
 */
export function focalOf(nll: number, gamma: number): [number, number] {
  if (gamma === 0) return [nll, 1];
  const oneMinusPt = -Math.expm1(-nll);
  const tail = oneMinusPt === 0 ? 0 : gamma * oneMinusPt ** (gamma - 1) * Math.exp(-nll) * nll;
  return [oneMinusPt ** gamma * nll, oneMinusPt ** gamma + tail];
}

/** Row losses and gradient of a hard-label problem, computed the obvious way. */
export function hardLabel(p: HardLabelProblem): Raw {
  const { n, c, logits, labels, weight, smoothing: eps, gamma, scale, clamp, target, nonTarget: nt } = p;
  const lo = nt ? nt.lo : -1, hi = nt ? nt.hi : 1;
  const cap = p.softcap ?? 0, zLoss = p.zLoss ?? 0;
  const rows = new Float64Array(n), zRows = zLoss ? new Float64Array(n) : null;
  // Sub-centres: each row's class cosines (the winning column's value) and winning columns.
  const sub = p.subcenters ?? 1, xs = new Float64Array(c), win = new Int32Array(c);
  const grad = p.grad ? (p.out?.data ?? new Float32Array(n * c * sub)) : null;
  const z = new Float64Array(c), logp = new Float64Array(c), dzdx = new Float64Array(c);
  const w = (k: number) => (weight ? weight[k] : 1);
  for (let i = 0; i < n; i++) {
    const y = labels[i];
    if (y < 0) {
      grad?.fill(0, i * c * sub, (i + 1) * c * sub);
      continue;
    }
    for (let j = 0; j < c; j++) {
      win[j] = j * sub + subcenter(logits, (i * c + j) * sub, sub);
      xs[j] = logits[i * c * sub + win[j]];
    }
    // The logits and their derivative w.r.t. the inputs.
    for (let j = 0; j < c; j++) {
      const x = xs[j];
      const xc = clamp ? Math.min(hi, Math.max(lo, x)) : x;
      z[j] = scale * xc;
      dzdx[j] = xc === x ? scale : 0;
      let v = xc;
      if (nt && j !== y && xc > nt.cut) {
        // filtered: 0, gradient 0
        v = z[j] = dzdx[j] = 0;
      }
      if (nt?.rows && j !== y && isHard(v, j, nt.rows[2 * i], nt.rows[2 * i + 1])) {
        // a hard non-target: s f(x), derivative s f'(x) (0 where the clamp or the filter cut x)
        const [value, slope] = hardLogit(nt, v);
        z[j] = scale * value;
        dzdx[j] = dzdx[j] === 0 ? 0 : scale * slope;
      }
      if (cap) {
        // softcap: c tanh(z / c), derivative 1 - tanh^2
        const t = Math.tanh(z[j] / cap);
        z[j] = cap * t;
        dzdx[j] *= 1 - t * t;
      }
    }
    if (target) {
      z[y] = target[2 * i];
      dzdx[y] = target[2 * i + 1];
    }
    const lse = logSoftmaxRow(z, 0, c, logp);
    // dL/dz, then dL/dx = dL/dz * dz/dx.
    const dz = new Float64Array(c);
    if (gamma === 0) {
      // The target distribution: q = (1-eps) w_y onehot(y) + (eps/C) w; loss = -sum q log p.
      const q = new Float64Array(c);
      for (let j = 0; j < c; j++) q[j] = (eps / c) * w(j);
      q[y] += (1 - eps) * w(y);
      let loss = 0, total = 0;
      for (let j = 0; j < c; j++) {
        if (q[j] !== 0) loss -= q[j] * logp[j];
        total += q[j];
      }
      rows[i] = loss;
      // d loss / d z_j = (sum q) p_j - q_j
      for (let j = 0; j < c; j++) dz[j] = total * Math.exp(logp[j]) - q[j];
    } else {
      const [value, slope] = focalOf(-logp[y], gamma);
      rows[i] = w(y) * value;
      const d = w(y) * slope;
      for (let j = 0; j < c; j++) dz[j] = d * (Math.exp(logp[j]) - (j === y ? 1 : 0));
    }
    // z-loss: k lse^2; its gradient 2 k lse p_j, at its own scale.
    let zs = 0;
    if (zRows) {
      zRows[i] = zLoss * lse * lse;
      zs = p.grad ? p.zScales![i] * 2 * zLoss * lse : 0;
    }
    if (grad) {
      // (each class's gradient at its winning column, the other sub-centres 0)
      grad.fill(0, i * c * sub, (i + 1) * c * sub);
      for (let j = 0; j < c; j++) {
        grad[i * c * sub + win[j]] = (p.scales[i] * dz[j] + zs * Math.exp(logp[j])) * dzdx[j];
      }
    }
  }
  return { rows: zRows ? [rows, zRows] : [rows], grads: grad ? { logits: grad } : {} };
}
