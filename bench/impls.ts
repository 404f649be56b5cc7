/**
 * What a user would write without softmargin, shared by the benchmarks: plain-TypeScript
 * loops (cross-entropy, ArcFace, a matrix product) and ArcFace in TensorFlow.js ops.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs";

/**
 * The cross-entropy a user would write by hand: three passes per row (max; exp stored in
 * the gradient while summing; scale), float64 arithmetic, fresh gradient. Returns the mean loss.
 *   loss_i = log(sum_j exp(z_ij - m_i)) + m_i - z_{i,y_i}
 *   dz_ij  = softmax(z_i)_j / N - [j == y_i] / N
 */
export function plainCrossEntropy(
  z: Float32Array,
  labels: Int32Array,
  n: number,
  c: number,
  grad: Float32Array | null,
): number {
  const invN = 1 / n;
  let total = 0;
  for (let i = 0; i < n; i++) {
    const off = i * c;
    const end = off + c;
    let m = -Infinity;
    for (let j = off; j < end; j++) {
      const v = z[j];
      if (v > m) m = v;
    }
    let s = 0;
    if (grad) {
      for (let j = off; j < end; j++) {
        const e = Math.exp(z[j] - m);
        grad[j] = e;
        s += e;
      }
      const k = invN / s;
      for (let j = off; j < end; j++) grad[j] *= k;
      grad[off + labels[i]] -= invN;
    } else {
      for (let j = off; j < end; j++) s += Math.exp(z[j] - m);
    }
    total += Math.log(s) + m - z[off + labels[i]];
  }
  return total * invN;
}

/**
 * ArcFace as a user would write it by hand, insightface-style: the margin is applied to
 * the label's cosine only, `phi = cos(theta + m)` where `cos > cos(pi - m)`, else
 * `cos - m sin(pi - m)`; the logits are `s cos` with the label's replaced by `s phi`, then
 * the three-pass softmax cross-entropy of `plainCrossEntropy` (float64 arithmetic, fresh
 * gradient, mean over rows). The gradient w.r.t. the cosines is `s p_j / N` off the label
 * and `s (p_y - 1) phi'(cos_y) / N` on it. Cosines are not clamped (the user's cosines are
 * in [-1, 1]). Returns the mean loss.
 */
export function plainArcface(
  cos: Float32Array,
  labels: Int32Array,
  n: number,
  c: number,
  s: number,
  margin: number,
  grad: Float32Array | null,
): number {
  const cm = Math.cos(margin), sm = Math.sin(margin);
  const th = Math.cos(Math.PI - margin), mm = Math.sin(Math.PI - margin) * margin;
  const invN = 1 / n;
  let total = 0;
  for (let i = 0; i < n; i++) {
    const off = i * c;
    const end = off + c;
    const y = off + labels[i];
    const cy = cos[y];
    const sin = Math.sqrt(Math.max(0, 1 - cy * cy));
    const far = cy > th;
    const ty = s * (far ? cy * cm - sin * sm : cy - mm);
    let m = -Infinity;
    for (let j = off; j < end; j++) {
      const z = j === y ? ty : s * cos[j];
      if (z > m) m = z;
    }
    let sum = 0;
    if (grad) {
      for (let j = off; j < end; j++) {
        const e = Math.exp((j === y ? ty : s * cos[j]) - m);
        grad[j] = e;
        sum += e;
      }
      const k = (s * invN) / sum;
      for (let j = off; j < end; j++) grad[j] *= k;
      grad[y] = (grad[y] - s * invN) * (far ? cm + (sm * cy) / sin : 1);
    } else {
      for (let j = off; j < end; j++) sum += Math.exp((j === y ? ty : s * cos[j]) - m);
    }
    total += Math.log(sum) + m - ty;
  }
  return total * invN;
}

/**
 * `out[i, j] = sum_k x[i, k] w[j, k]` (x [n, d], w [c, d], out [n, c]): the matrix
 * product of a linear head as a user would write it, a dot product per output, float64
 * accumulation.
 */
export function plainMatMulT(
  x: Float32Array,
  w: Float32Array,
  out: Float32Array,
  n: number,
  d: number,
  c: number,
): void {
  for (let i = 0; i < n; i++) {
    const xo = i * d;
    for (let j = 0; j < c; j++) {
      const wo = j * d;
      let acc = 0;
      for (let k = 0; k < d; k++) acc += x[xo + k] * w[wo + k];
      out[i * c + j] = acc;
    }
  }
}

/**
 * ArcFace on a tensor of cosines `[N, C]` in TensorFlow.js ops, as a TF.js user would
 * write it: clamp to [-1, 1]; gather the label's cosine with a one-hot mask (multiply and
 * sum over the row); `phi` (with insightface's threshold branch, by `tf.where`); scatter
 * `phi - cos_y` back onto the label's column through the mask; scale; then
 * `tf.losses.softmaxCrossEntropy` (mean over rows). Differentiable with `tf.grad`.
 *
 * `onehot` is `tf.oneHot(labels, C)` in its default int32 dtype (TF.js 4.22's wasm kernel
 * gets a float32 one-hot wrong; see README), `mask` is the same cast to float32.
 */
export function tfArcfaceLoss(
  cos: tf.Tensor,
  onehot: tf.Tensor,
  mask: tf.Tensor,
  s: number,
  margin: number,
): tf.Scalar {
  const cm = Math.cos(margin), sm = Math.sin(margin);
  const th = Math.cos(Math.PI - margin), mm = Math.sin(Math.PI - margin) * margin;
  const c = tf.clipByValue(cos, -1, 1);
  const cy = tf.sum(tf.mul(c, mask), 1); // [N]
  const sin = tf.sqrt(tf.relu(tf.sub(1, tf.square(cy))));
  const phi = tf.sub(tf.mul(cy, cm), tf.mul(sin, sm));
  // greaterEqual, not greater: TF.js 4.22 registers no gradient for Greater, and tf.grad walks
  // through the condition of tf.where ("gradient function not found for Greater"). The two
  // differ only at cos_y = cos(pi - m) exactly.
  const target = tf.where(tf.greaterEqual(cy, th), phi, tf.sub(cy, mm));
  const logits = tf.mul(tf.add(c, tf.mul(mask, tf.expandDims(tf.sub(target, cy), 1))), s);
  return tf.losses.softmaxCrossEntropy(onehot, logits, undefined, 0, tf.Reduction.MEAN) as tf.Scalar;
}

/** Rows of `v [R, D]` divided by `max(||row||, 1e-12)` (as `F.normalize`), and the factors `[R, 1]`. */
export function tfNormalizeRows(v: tf.Tensor): { unit: tf.Tensor; inv: tf.Tensor } {
  const inv = tf.rsqrt(tf.maximum(tf.sum(tf.square(v), 1, true), 1e-24));
  return { unit: tf.mul(v, inv), inv };
}

// ---------------------------------------------------------------------------------------
// Metric learning and mixture of experts (SPEC §4–§5): physicsContrastive and physMoe

/**
 * physicsContrastive (SPEC §4) as a user would write it by hand: `S = f f^T` by
 * `plainMatMulT`, then per anchor i, with `w_ij = 1 - rule[y_i, y_j]` (0 for j = i) and
 * positives `P_ij = (y_i = y_j or rule[y_i, y_j] > threshold) and j != i`:
 * `loss_i = lse_i - sum_j P_ij S_ij / tau / |P_i|`, `lse_i = log sum_j w_ij e^(S_ij / tau)`
 * (shifted by the row's largest weighted term), and `dS_ij = w_ij e^(S_ij / tau - lse_i) -
 * P_ij / |P_i|`; finally `df = (dS + dS^T) f / (tau · anchors)`. The mean runs over the
 * anchors with a positive and a non-zero denominator (0 if none). float64 arithmetic,
 * float32 storage. `grad` ([b, d], fresh or reused) receives `scale · d loss / d f`; null:
 * the loss only. Returns the loss.
 */
export function plainPhysicsContrastive(
  f: Float32Array,
  labels: Int32Array,
  rule: Float32Array | null,
  k: number,
  b: number,
  d: number,
  tau: number,
  threshold: number,
  grad: Float32Array | null,
  scale = 1,
): number {
  const S = new Float32Array(b * b);
  plainMatMulT(f, f, S, b, d, b);
  const dS = grad ? new Float64Array(b * b) : null;
  const w = new Float64Array(b), pos = new Uint8Array(b);
  let total = 0, anchors = 0;
  for (let i = 0; i < b; i++) {
    const yi = labels[i], row = i * b;
    let m = -Infinity, npos = 0, sumPos = 0;
    for (let j = 0; j < b; j++) {
      const r = rule ? rule[yi * k + labels[j]] : 0;
      const s = S[row + j] / tau;
      w[j] = j === i ? 0 : 1 - r;
      pos[j] = j !== i && (labels[j] === yi || r > threshold) ? 1 : 0;
      if (w[j] > 0 && s > m) m = s;
      if (pos[j]) npos++, sumPos += s;
    }
    if (npos === 0 || m === -Infinity) continue; // no positive, or no term in the denominator
    let den = 0;
    for (let j = 0; j < b; j++) if (w[j] > 0) den += w[j] * Math.exp(S[row + j] / tau - m);
    const lse = m + Math.log(den);
    total += lse - sumPos / npos;
    anchors++;
    if (!dS) continue;
    for (let j = 0; j < b; j++) {
      dS[row + j] = (w[j] > 0 ? w[j] * Math.exp(S[row + j] / tau - lse) : 0) - (pos[j] ? 1 / npos : 0);
    }
  }
  if (grad) {
    // df_i = a sum_j (dS_ij + dS_ji) f_j: one row of float64 sums at a time.
    const a = anchors ? scale / (tau * anchors) : 0, acc = new Float64Array(d);
    for (let i = 0; i < b; i++) {
      acc.fill(0);
      for (let j = 0; j < b; j++) {
        const g = dS![i * b + j] + dS![j * b + i];
        if (g === 0) continue;
        for (let q = 0, o = j * d; q < d; q++) acc[q] += g * f[o + q];
      }
      for (let q = 0; q < d; q++) grad[i * d + q] = a * acc[q];
    }
  }
  return anchors ? total / anchors : 0;
}

/** The inputs of `plainPhysMoe`: the arrays of `physMoe`'s inputs and their sizes. */
export interface PlainMoeInputs {
  b: number;
  d: number;
  c: number;
  k: number;
  /** Features [b, d] (normalised), coarse logits [b, k], expert logits E x [b, c], gating [b, E]. */
  features: Float32Array;
  coarse: Float32Array;
  expertLogits: Float32Array[];
  gating: Float32Array;
  labels: Int32Array;
  /** Rule [c, c], fine-to-coarse map [c], centres [c, d]. */
  rule: Float32Array;
  fineToCoarse: Int32Array;
  centers: Float32Array;
}

/** The options of `plainPhysMoe` (every one given: SPEC's defaults are the caller's business). */
export interface PlainMoeOptions {
  tailExperts: readonly number[];
  gamma: number;
  lambdaScl: number;
  lambdaHier: number;
  lambdaReg: number;
  temperature: number;
  threshold: number;
  prototypeWeight: number;
}

/** What `plainPhysMoe` returns: the total, the unweighted parts, and the gradients (when asked). */
export interface PlainMoeResult {
  loss: number;
  parts: { scl: number; dol: number; col: number; hier: number; reg: number };
  grads: {
    features: Float32Array;
    coarse: Float32Array;
    expertLogits: Float32Array[];
    gating: Float32Array;
    centers: Float32Array;
  } | null;
}

/** log-softmax of `z[off .. off + n)` into `out[0 .. n)` (max-subtracted, float64). */
function plainLogSoftmax(z: ArrayLike<number>, off: number, n: number, out: Float64Array): void {
  let m = -Infinity;
  for (let j = 0; j < n; j++) if (z[off + j] > m) m = z[off + j];
  let s = 0;
  for (let j = 0; j < n; j++) s += Math.exp(z[off + j] - m);
  const lse = m + Math.log(s);
  for (let j = 0; j < n; j++) out[j] = z[off + j] - lse;
}

/**
 * physMoe (SPEC §5) as a user would compose it by hand from its parts, forward and
 * backward, in plain loops (float64 arithmetic, float32 inputs and gradients, fresh
 * gradient arrays):
 *
 * - `scl`: `plainPhysicsContrastive(features, labels, rule)`;
 * - per row, the gated ensemble `fine = sum_e gating[:, e] z_e` and its softmax `t` (iclMoe's
 *   constant target), then per expert its log-softmax once, for its CE (focal
 *   `(1 - p_y)^gamma nll` for a tail expert: `dol`) and `KL(t || softmax(z_e))` (`col`);
 * - `hier`: the coarse CE on `coarse` and the CE of `fine` over the classes of the true
 *   coarse group (a loop over all C classes that skips the others), differentiable w.r.t.
 *   the expert logits (`gating · dfine`) and the gating (`z_e · dfine`);
 * - `reg`: centres normalised, `A` = rule without its diagonal, rows divided by their sums;
 *   `mean_i (1 - f_i . c^_{y_i}) + prototypeWeight · mean_c (1 - c^_c . (A c^)_c)`, with `A c^`
 *   and `A^T c^` in one pass over A, then the normalisation's backward.
 *
 * Every CE, focal and KL term is a mean over the b rows; the total is
 * `lambdaScl scl + dol + col + lambdaHier hier + lambdaReg reg`.
 */
export function plainPhysMoe(p: PlainMoeInputs, o: PlainMoeOptions, withGrads: boolean): PlainMoeResult {
  const { b, d, c, k, labels } = p;
  const e = p.expertLogits.length, invB = 1 / b;
  const gFeatures = withGrads ? new Float32Array(b * d) : null;
  const scl = o.lambdaScl === 0 ? 0 : plainPhysicsContrastive(
    p.features,
    labels,
    p.rule,
    c,
    b,
    d,
    o.temperature,
    o.threshold,
    gFeatures,
    o.lambdaScl,
  );

  // Experts and the hierarchical term, row by row.
  const gExperts = withGrads ? p.expertLogits.map(() => new Float32Array(b * c)) : [];
  const gCoarse = withGrads ? new Float32Array(b * k) : null;
  const gGating = withGrads ? new Float32Array(b * e) : null;
  const tail = new Set(o.tailExperts);
  const fine = new Float64Array(c), lt = new Float64Array(c), lq = new Float64Array(c);
  const lc = new Float64Array(k), dFine = new Float64Array(c);
  let dol = 0, col = 0, hier = 0;
  for (let i = 0; i < b; i++) {
    const y = labels[i], group = p.fineToCoarse[y], row = i * c;
    fine.fill(0);
    for (let x = 0; x < e; x++) {
      const g = p.gating[i * e + x], z = p.expertLogits[x];
      for (let j = 0; j < c; j++) fine[j] += g * z[row + j];
    }
    plainLogSoftmax(fine, 0, c, lt);
    // hierarchical: coarse CE, then the fine CE over the true group's classes only.
    plainLogSoftmax(p.coarse, i * k, k, lc);
    let m = -Infinity;
    for (let j = 0; j < c; j++) if (p.fineToCoarse[j] === group && fine[j] > m) m = fine[j];
    let s = 0;
    for (let j = 0; j < c; j++) if (p.fineToCoarse[j] === group) s += Math.exp(fine[j] - m);
    const lse = m + Math.log(s);
    hier += (-lc[group] + lse - fine[y]) * invB;
    if (withGrads) {
      const a = o.lambdaHier * invB;
      for (let j = 0; j < k; j++) gCoarse![i * k + j] = a * (Math.exp(lc[j]) - (j === group ? 1 : 0));
      for (let j = 0; j < c; j++) {
        dFine[j] = p.fineToCoarse[j] === group ? a * (Math.exp(fine[j] - lse) - (j === y ? 1 : 0)) : 0;
      }
    }
    for (let x = 0; x < e; x++) {
      const z = p.expertLogits[x];
      plainLogSoftmax(z, row, c, lq);
      const nll = -lq[y];
      // Focal: (1 - p_y)^gamma nll, slope (1 - p_y)^gamma + gamma (1 - p_y)^(gamma - 1) p_y nll.
      let slope = 1;
      if (tail.has(x)) {
        const py = Math.exp(-nll), q = 1 - py;
        dol += q ** o.gamma * nll * invB;
        slope = q ** o.gamma + (q > 0 ? o.gamma * q ** (o.gamma - 1) * py * nll : 0);
      } else dol += nll * invB;
      let kl = 0;
      for (let j = 0; j < c; j++) kl += Math.exp(lt[j]) * (lt[j] - lq[j]);
      col += kl * invB;
      if (!withGrads) continue;
      const gz = gExperts[x], w = p.gating[i * e + x];
      let dot = 0;
      for (let j = 0; j < c; j++) {
        const q = Math.exp(lq[j]);
        gz[row + j] = (slope * (q - (j === y ? 1 : 0)) + q - Math.exp(lt[j])) * invB + w * dFine[j];
        dot += z[row + j] * dFine[j];
      }
      gGating![i * e + x] = dot;
    }
  }

  // Centre regularisation.
  const ch = new Float64Array(c * d), norms = new Float64Array(c);
  for (let j = 0; j < c; j++) {
    let s = 0;
    for (let q = 0; q < d; q++) s += p.centers[j * d + q] ** 2;
    norms[j] = Math.max(Math.sqrt(s), 1e-12);
    for (let q = 0; q < d; q++) ch[j * d + q] = p.centers[j * d + q] / norms[j];
  }
  let center = 0;
  for (let i = 0; i < b; i++) {
    let dot = 0;
    for (let q = 0; q < d; q++) dot += p.features[i * d + q] * ch[labels[i] * d + q];
    center += (1 - dot) * invB;
  }
  const Ac = new Float64Array(c * d), ATc = new Float64Array(c * d);
  for (let i = 0; i < c; i++) {
    let s = 0;
    for (let j = 0; j < c; j++) if (j !== i) s += p.rule[i * c + j];
    if (s === 0) continue; // a zero row of A stays zero
    for (let j = 0; j < c; j++) {
      if (j === i || p.rule[i * c + j] === 0) continue;
      const a = p.rule[i * c + j] / s;
      for (let q = 0; q < d; q++) {
        Ac[i * d + q] += a * ch[j * d + q];
        ATc[j * d + q] += a * ch[i * d + q];
      }
    }
  }
  let proto = 0;
  for (let j = 0; j < c; j++) {
    let dot = 0;
    for (let q = 0; q < d; q++) dot += ch[j * d + q] * Ac[j * d + q];
    proto += (1 - dot) / c;
  }
  const reg = center + o.prototypeWeight * proto;
  let gCenters: Float32Array | null = null;
  if (withGrads) {
    const u = o.lambdaReg, dch = new Float64Array(c * d);
    for (let i = 0; i < b; i++) {
      const y = labels[i];
      for (let q = 0; q < d; q++) {
        gFeatures![i * d + q] -= u * invB * ch[y * d + q];
        dch[y * d + q] -= u * invB * p.features[i * d + q];
      }
    }
    const a = (u * o.prototypeWeight) / c;
    for (let x = 0; x < c * d; x++) dch[x] -= a * (Ac[x] + ATc[x]);
    // Through c^ = c / max(||c||, 1e-12): dc = (dc^ - c^ (c^ . dc^)) / max(||c||, 1e-12).
    gCenters = new Float32Array(c * d);
    for (let j = 0; j < c; j++) {
      let dot = 0;
      for (let q = 0; q < d; q++) dot += ch[j * d + q] * dch[j * d + q];
      for (let q = 0; q < d; q++) gCenters[j * d + q] = (dch[j * d + q] - ch[j * d + q] * dot) / norms[j];
    }
  }
  const loss = o.lambdaScl * scl + dol + col + o.lambdaHier * hier + o.lambdaReg * reg;
  return {
    loss,
    parts: { scl, dol, col, hier, reg },
    grads: withGrads
      ? { features: gFeatures!, coarse: gCoarse!, expertLogits: gExperts, gating: gGating!, centers: gCenters! }
      : null,
  };
}

/** The masks of physicsContrastive in TF.js, from the labels and the rule (no gradient flows through them). */
export interface TfContrastiveMasks {
  /** Positives `P` [B, B] (float32 0/1). */
  pos: tf.Tensor;
  /** Denominator weights `(1 - R) (1 - I)` [B, B]. */
  weight: tf.Tensor;
  /** 1 for the anchors with a positive and a non-zero denominator weight [B, 1]. */
  valid: tf.Tensor;
}

/**
 * physicsContrastive's masks in TF.js ops, as a TF.js user would build them each step:
 * `R = rule[labels][:, labels]` by two `tf.gather`s (zeros without a rule), same-class
 * pairs by `tf.equal`, positives `(same or R > threshold) and not self`, weights
 * `(1 - R)(1 - I)`, valid anchors.
 */
export function tfContrastiveMasks(labels: tf.Tensor1D, rule: tf.Tensor | null, threshold: number): TfContrastiveMasks {
  const b = labels.shape[0];
  const notSelf = tf.sub(1, tf.eye(b));
  const same = tf.equal(tf.expandDims(labels, 1), tf.expandDims(labels, 0));
  const R = rule ? tf.gather(tf.gather(rule, labels), labels, 1) : tf.zeros([b, b]);
  const pos = tf.mul(tf.cast(tf.logicalOr(same, tf.greater(R, threshold)), "float32"), notSelf);
  const weight = tf.mul(tf.sub(1, R), notSelf);
  const valid = tf.cast(
    tf.logicalAnd(tf.greater(tf.sum(pos, 1, true), 0), tf.greater(tf.sum(weight, 1, true), 0)),
    "float32",
  );
  return { pos, weight, valid };
}

/**
 * physicsContrastive in TF.js ops (differentiable w.r.t. `f` with `tf.grad`), the SupCon
 * recipe: `S = matMul(f, transpose(f)) / tau` (an explicit transpose: TF.js wasm's
 * transposed matMul is 10–40x slower, see README), minus its row max (TF.js has no
 * stopGradient; the loss does not depend on the shift, so the max's gradient sums to 0),
 * `log_prob = S - log sum(weight e^S)`, the mean of `log_prob` over each anchor's
 * positives, the mean over valid anchors (0 if none). Invalid anchors get 1 added to their
 * denominator so that their masked-out terms stay finite.
 */
export function tfPhysicsContrastiveLoss(f: tf.Tensor, masks: TfContrastiveMasks, tau: number): tf.Scalar {
  const S = tf.div(tf.matMul(f, tf.transpose(f)), tau);
  const logits = tf.sub(S, tf.max(S, 1, true));
  const den = tf.add(tf.sum(tf.mul(tf.exp(logits), masks.weight), 1, true), tf.sub(1, masks.valid));
  const logProb = tf.sub(logits, tf.log(den));
  const npos = tf.maximum(tf.sum(masks.pos, 1, true), 1);
  const rows = tf.div(tf.sum(tf.mul(masks.pos, logProb), 1, true), npos);
  return tf.div(tf.neg(tf.sum(tf.mul(rows, masks.valid))), tf.maximum(tf.sum(masks.valid), 1)) as tf.Scalar;
}

/** The constant inputs of `tfPhysMoeLoss`, made from the labels, the rule and the map in TF.js ops. */
export interface TfMoeConsts {
  masks: TfContrastiveMasks;
  /** One-hot fine labels [B, C] (int32: TF.js 4.22's wasm OneHot gets float32 wrong) and as float32. */
  onehot: tf.Tensor;
  mask: tf.Tensor;
  /** One-hot coarse labels [B, K] (int32). */
  coarseOnehot: tf.Tensor;
  /** 0 on the classes of each row's true coarse group, -1e9 elsewhere [B, C]. */
  outside: tf.Tensor;
  /** The rule without its diagonal, rows divided by their sums [C, C]. */
  A: tf.Tensor;
}

/** `TfMoeConsts` from int32 labels [B], the rule [C, C] and the fine-to-coarse map [C] (int32). */
export function tfMoeConsts(
  labels: tf.Tensor1D,
  rule: tf.Tensor,
  fineToCoarse: tf.Tensor1D,
  c: number,
  k: number,
  threshold: number,
): TfMoeConsts {
  const coarseLabels = tf.gather(fineToCoarse, labels);
  const inGroup = tf.equal(tf.expandDims(coarseLabels, 1), tf.expandDims(fineToCoarse, 0));
  const offDiag = tf.mul(rule, tf.sub(1, tf.eye(c)));
  const sums = tf.sum(offDiag, 1, true);
  const onehot = tf.oneHot(labels, c);
  return {
    masks: tfContrastiveMasks(labels, rule, threshold),
    onehot,
    mask: tf.cast(onehot, "float32"),
    coarseOnehot: tf.oneHot(coarseLabels, k),
    outside: tf.mul(tf.sub(1, tf.cast(inGroup, "float32")), -1e9),
    A: tf.div(offDiag, tf.where(tf.greater(sums, 0), sums, tf.onesLike(sums))),
  };
}

/**
 * physMoe's objective in TF.js ops, differentiable with `tf.valueAndGrads` w.r.t. the
 * features, coarse logits, expert logits, gating and centres. `target` and `logTarget`
 * are the softmax and log-softmax of the gated ensemble, computed by the caller outside
 * the gradient (iclMoe's collaboration target is a constant, and TF.js has no
 * stopGradient); the hierarchical term gets the ensemble again, differentiable.
 * Per expert: `tf.logSoftmax`, the CE `-sum(mask log q) ` (focal `(1 - e^-nll)^gamma nll` for
 * a tail expert) and `KL = sum t (log t - log q)`, means over B; hierarchical by
 * `tf.losses.softmaxCrossEntropy` on the coarse logits and on the ensemble plus `outside`;
 * the centre regularisation with `tfNormalizeRows`, each row's centre by `matMul(one-hot, c^)`, and `matMul(A, c^)`.
 */
export function tfPhysMoeLoss(
  x: { features: tf.Tensor; coarse: tf.Tensor; expertLogits: tf.Tensor[]; gating: tf.Tensor; centers: tf.Tensor },
  labels: tf.Tensor1D,
  consts: TfMoeConsts,
  target: { t: tf.Tensor; logT: tf.Tensor },
  o: PlainMoeOptions,
): { loss: tf.Scalar; parts: Record<"scl" | "dol" | "col" | "hier" | "reg", tf.Scalar> } {
  const e = x.expertLogits.length, b = labels.shape[0];
  const scl = o.lambdaScl === 0 ? tf.scalar(0) : tfPhysicsContrastiveLoss(x.features, consts.masks, o.temperature);
  const gates = tf.split(x.gating, e, 1);
  let fine: tf.Tensor = tf.mul(gates[0], x.expertLogits[0]);
  for (let i = 1; i < e; i++) fine = tf.add(fine, tf.mul(gates[i], x.expertLogits[i]));
  const tail = new Set(o.tailExperts);
  let dol: tf.Tensor = tf.scalar(0), col: tf.Tensor = tf.scalar(0);
  for (let i = 0; i < e; i++) {
    const logq = tf.logSoftmax(x.expertLogits[i]);
    const nll = tf.neg(tf.sum(tf.mul(consts.mask, logq), 1));
    const term = tail.has(i) ? tf.mul(tf.pow(tf.sub(1, tf.exp(tf.neg(nll))), o.gamma), nll) : nll;
    dol = tf.add(dol, tf.mean(term));
    col = tf.add(col, tf.div(tf.sum(tf.mul(target.t, tf.sub(target.logT, logq))), b));
  }
  const hier = tf.add(
    tf.losses.softmaxCrossEntropy(consts.coarseOnehot, x.coarse, undefined, 0, tf.Reduction.MEAN),
    tf.losses.softmaxCrossEntropy(consts.onehot, tf.add(fine, consts.outside), undefined, 0, tf.Reduction.MEAN),
  );
  const cn = tfNormalizeRows(x.centers).unit;
  // c^_{y_i} by a one-hot product: TF.js 4.22's wasm backend has no UnsortedSegmentSum, the gradient of tf.gather.
  const center = tf.mean(tf.sub(1, tf.sum(tf.mul(x.features, tf.matMul(consts.mask, cn)), 1)));
  const proto = tf.mean(tf.sub(1, tf.sum(tf.mul(cn, tf.matMul(consts.A, cn)), 1)));
  const reg = tf.add(center, tf.mul(proto, o.prototypeWeight));
  const loss = tf.addN([
    tf.mul(scl, o.lambdaScl),
    dol,
    col,
    tf.mul(hier, o.lambdaHier),
    tf.mul(reg, o.lambdaReg),
  ]) as tf.Scalar;
  return { loss, parts: { scl, dol, col, hier, reg } as Record<"scl" | "dol" | "col" | "hier" | "reg", tf.Scalar> };
}
