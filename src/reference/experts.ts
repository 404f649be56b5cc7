/**
 * Reference kernel of the `experts` family (`mixOutputs`, `iclMoe`, `physMoe`), in
 * float64: each expert's log-softmax once per row serves its CE/focal term, its
 * collaboration term and the pairwise distillation.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import { ceWeights, ensemble, expertOutputs, type ExpertsProblem } from "../kernels/experts.ts";
import { focalOf } from "./cross_entropy.ts";
import { logSoftmaxRow } from "./softmax.ts";

/** Rows: E arrays of CE/focal terms, E of collaboration terms, one of pair terms; gradients per expert. */
export function experts(p: ExpertsProblem): Raw {
  const { e, b, c, logits, labels, gamma, shift } = p;
  const target = p.gating ? ensemble(p.gating, logits, b, c) : null;
  const outputs = expertOutputs(p, target);
  const ce = logits.map(() => new Float64Array(b)), col = logits.map(() => new Float64Array(b));
  const pairs = new Float64Array(b);
  // Every expert's log-probabilities (unshifted) and CE log-probabilities (shifted), [E][B * C].
  const logq = logits.map(() => new Float64Array(b * c));
  const logpShift = shift ? logits.map(() => new Float64Array(b * c)) : logq;
  const logt = new Float64Array(target ? b * c : 0);
  const row = new Float64Array(c), dnll = logits.map(() => new Float64Array(b));
  for (let i = 0; i < b; i++) {
    if (target) {
      logSoftmaxRow(target, i * c, c, row);
      logt.set(row, i * c);
    }
    for (let k = 0; k < e; k++) {
      logSoftmaxRow(logits[k], i * c, c, row);
      logq[k].set(row, i * c);
      if (shift) {
        const z = Float64Array.from({ length: c }, (_, j) => logits[k][i * c + j] + shift[j]);
        logSoftmaxRow(z, 0, c, row);
        logpShift[k].set(row, i * c);
      }
      const [value, slope] = focalOf(-logpShift[k][i * c + labels[i]], gamma[k]);
      ce[k][i] = value;
      dnll[k][i] = slope;
      if (target) {
        let kl = 0;
        for (let j = 0; j < c; j++) kl += Math.exp(logt[i * c + j]) * (logt[i * c + j] - logq[k][i * c + j]);
        col[k][i] = kl;
      }
    }
    if (p.pairs) {
      // sum_{j != e} KL(q_j || q_e) = sum_j sum_c q_j (E log q_j - sum_k log q_k)
      for (let j = 0; j < c; j++) {
        let sumLog = 0;
        for (let k = 0; k < e; k++) sumLog += logq[k][i * c + j];
        for (let k = 0; k < e; k++) {
          pairs[i] += Math.exp(logq[k][i * c + j]) * (e * logq[k][i * c + j] - sumLog);
        }
      }
    }
  }
  const rows = [...ce, ...col, pairs];
  if (!p.grad) return { rows, grads: {}, outputs };
  const meanCe = ce.map((r) => r.reduce((a, x) => a + x, 0) / b);
  const w = { ...p.weights, ce: ceWeights(p.weights, Float64Array.from(meanCe)) };
  const grads: Record<string, Float32Array> = {};
  for (let k = 0; k < e; k++) {
    const out = p.outs[k]?.data ?? new Float32Array(b * c);
    for (let i = 0; i < b; i++) {
      const y = labels[i];
      let dot = 0;
      const dPairs = new Float64Array(c);
      if (p.pairs && w.pairs !== 0) {
        // Input side E q_e - sum_k q_k, target side q_e (D_e - <q_e, D_e>), D_e = E log q_e - sum_k log q_k.
        for (let j = 0; j < c; j++) {
          let sumLog = 0, sumQ = 0;
          for (let m = 0; m < e; m++) sumLog += logq[m][i * c + j], sumQ += Math.exp(logq[m][i * c + j]);
          const qe = Math.exp(logq[k][i * c + j]), D = e * logq[k][i * c + j] - sumLog;
          dPairs[j] = e * qe - sumQ + qe * D;
          dot += qe * D;
        }
        for (let j = 0; j < c; j++) dPairs[j] -= Math.exp(logq[k][i * c + j]) * dot;
      }
      for (let j = 0; j < c; j++) {
        const pce = Math.exp(logpShift[k][i * c + j]) - (j === y ? 1 : 0);
        let gj = w.ce[k] * dnll[k][i] * pce;
        if (target) gj += w.col * (Math.exp(logq[k][i * c + j]) - Math.exp(logt[i * c + j]));
        gj += w.pairs * dPairs[j];
        out[i * c + j] = gj / b;
      }
    }
    grads[`expertLogits.${k}`] = out;
  }
  return { rows, grads, outputs };
}
