/**
 * Reference kernel of the `paired` family (`clip`, `siglip`) in float64: one row of the
 * N x N similarities at a time (memory O(N + N D)), the chain rule written out.
 *
 * @module
 */
import type { Raw } from "../kernels/core.ts";
import { type PairedProblem, sigmoid, softplus } from "../kernels/paired.ts";

/** Row i of `S = a b^T` into `row` (float64 dot products). */
function dots(p: PairedProblem, i: number, row: Float64Array): void {
  const { n, d, a, b } = p;
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += a[i * d + k] * b[j * d + k];
    row[j] = s;
  }
}

/** `ga[i] += c b_j`, `gb[j] += c a_i` (the gradient of `c S_ij` w.r.t. a and b). */
function spread(p: PairedProblem, i: number, j: number, c: number, ga: Float64Array, gb: Float64Array): void {
  const { d, a, b } = p;
  for (let k = 0; k < d; k++) {
    ga[i * d + k] += c * b[j * d + k];
    gb[j * d + k] += c * a[i * d + k];
  }
}

/** `clip` or `siglip` (see src/losses/clip.ts, siglip.ts). */
export function paired(p: PairedProblem): Raw {
  const { n, d } = p;
  const ga = new Float64Array(p.grad ? n * d : 0), gb = new Float64Array(p.grad ? n * d : 0);
  const S = new Float64Array(n);
  let loss = 0, dScale = 0, dBias = 0;
  if (p.kind === "siglip") {
    // -log sigmoid(z x) = softplus(-z x); d/dx = -z sigmoid(-z x) = sigmoid(x) - [z = 1].
    const t = p.scale, c = p.upstream / n;
    for (let i = 0; i < n; i++) {
      dots(p, i, S);
      for (let j = 0; j < n; j++) {
        const z = i === j ? 1 : -1, x = t * S[j] + p.bias;
        loss += softplus(-z * x);
        if (!p.grad) continue;
        const g = -z * sigmoid(-z * x) * c;
        dScale += g * S[j];
        dBias += g;
        spread(p, i, j, g * t, ga, gb);
      }
    }
    loss /= n;
  } else {
    // Row i's log-sum-exp lr_i; column j's lc_j, online (running maximum and sum).
    const s = p.scale, lr = new Float64Array(n), cm = new Float64Array(n).fill(-Infinity), cs = new Float64Array(n);
    const diag = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      dots(p, i, S);
      let m = -Infinity;
      for (let j = 0; j < n; j++) m = Math.max(m, s * S[j]);
      let sum = 0;
      for (let j = 0; j < n; j++) {
        const x = s * S[j];
        sum += Math.exp(x - m);
        if (x > cm[j]) {
          cs[j] = cs[j] * Math.exp(cm[j] - x) + 1;
          cm[j] = x;
        } else cs[j] += Math.exp(x - cm[j]);
      }
      lr[i] = m + Math.log(sum);
      diag[i] = s * S[i];
      // Row i's cross-entropy, (m - L_ii) + log(sum): 0 plus a small log where the row is one-hot.
      loss += (m - diag[i]) + Math.log(sum);
    }
    for (let j = 0; j < n; j++) loss += (cm[j] - diag[j]) + Math.log(cs[j]);
    const lc = cm.map((m, j) => m + Math.log(cs[j]));
    // dL/dL_ij = (e^(L_ij - lr_i) + e^(L_ij - lc_j) - 2[i = j]) / 2N
    const c = p.upstream / (2 * n);
    for (let i = 0; p.grad && i < n; i++) {
      dots(p, i, S);
      for (let j = 0; j < n; j++) {
        const x = s * S[j];
        const g = (Math.exp(x - lr[i]) + Math.exp(x - lc[j]) - (i === j ? 2 : 0)) * c;
        dScale += g * S[j];
        spread(p, i, j, g * s, ga, gb);
      }
    }
    loss /= 2 * n;
  }
  const raw: Raw = { rows: [Float64Array.of(loss)], grads: {} };
  if (p.grad) {
    // Into the caller's out buffers when given (finish returns them as they are).
    const into = (out: Float32Array | undefined, g: Float64Array) => (out ? (out.set(g), out) : Float32Array.from(g));
    raw.grads = { a: into(p.outA?.data, ga), b: into(p.outB?.data, gb) };
    raw.numbers = p.kind === "siglip" ? { scale: dScale, bias: dBias } : { scale: dScale };
  }
  return raw;
}
