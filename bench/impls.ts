/**
 * What a user would write without softmargin, shared by the benchmarks: plain-TypeScript
 * loops (cross-entropy, ArcFace, a matrix product, physicsContrastive, physMoe) and the
 * same in TensorFlow.js ops; and the TF.js setup (both backends, in production mode).
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import * as tf from "@tensorflow/tfjs";
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
import { envNotes, errorText, meters } from "./engine.ts";
import type { MoeData } from "./moe_data.ts";

export { tf };

/** Why each TF.js backend is unavailable, or null when it works. */
export const tfStatus: Record<"cpu" | "wasm", string | null> = { cpu: null, wasm: null };

/**
 * Initialises TF.js's cpu and wasm backends (errors are recorded, not thrown), adds a line
 * to the header and meters the wasm backend's heap (it only grows; at most 4 GiB).
 */
export async function initTf(): Promise<void> {
  tf.enableProdMode();
  const warn = console.warn; // the cpu backend greets Node-like runtimes with a tfjs-node hint
  console.warn = (...a: unknown[]) => void (String(a[0]).includes("Hi, looks like") || warn(...a));
  try {
    if (!(await tf.setBackend("cpu"))) tfStatus.cpu = "tf.setBackend('cpu') returned false";
    else tf.dispose(tf.tensor1d([1]));
  } catch (e) {
    tfStatus.cpu = errorText(e);
  }
  console.warn = warn;
  try {
    // In Deno and Bun the Emscripten loader takes its Node path: a file-system prefix works.
    setWasmPaths(fileURLToPath(new URL("../node_modules/@tensorflow/tfjs-backend-wasm/dist/", import.meta.url)));
    if (!(await tf.setBackend("wasm"))) tfStatus.wasm = "tf.setBackend('wasm') returned false";
  } catch (e) {
    tfStatus.wasm = errorText(e);
  }
  const flag = (f: string) => (tf.env().getBool(`WASM_HAS_${f}_SUPPORT`) ? "yes" : "no");
  const wasm = tfStatus.wasm ?? `SIMD ${flag("SIMD")}, threads ${flag("MULTITHREAD")}`;
  envNotes.push(`TensorFlow.js ${tf.version.tfjs}: cpu ${tfStatus.cpu ?? "ok"}, wasm ${wasm}`);
  type Wasm = { wasm?: { HEAPU8?: Uint8Array } } | null;
  meters.push({
    name: "TF.js heap",
    read: () => (tf.findBackend("wasm") as unknown as Wasm)?.wasm?.HEAPU8?.byteLength ?? null,
  });
}

/** What a TF.js contender's `setup` returns when its backend is unavailable, else null. */
export const tfMissing = (b: "cpu" | "wasm"): string | null => tfStatus[b] && `TF.js ${b} unavailable: ${tfStatus[b]}`;

/** A contender's `enter`: selects the backend before each batch. */
export const tfUse = (backend: "cpu" | "wasm") => async (): Promise<void> => {
  if (tf.getBackend() !== backend) await tf.setBackend(backend);
};

/**
 * Runs `f` (TF.js calls); when the Emscripten module aborts (out of memory past its 4 GiB),
 * the wasm backend is dead for the rest of the process: recorded, so later contenders say so.
 */
export function tfRun<T>(f: () => T): T {
  let out!: T; // not returned through tf.tidy, which walks every element of what it returns
  try {
    tf.tidy(() => void (out = f()));
    return out;
  } catch (e) {
    if (/Aborted\(/.test(String(e))) tfStatus.wasm = `aborted earlier: ${errorText(e)}`;
    throw e;
  }
}

/**
 * The mean cross-entropy a user would write by hand: three passes per row (max; exp stored
 * in the gradient while summing; scale), float64 arithmetic; `grad` null: the loss only.
 */
export function plainCrossEntropy(z: Float32Array, y: Int32Array, n: number, c: number, grad: Float32Array | null) {
  const invN = 1 / n;
  let total = 0;
  for (let i = 0; i < n; i++) {
    const off = i * c, end = off + c;
    let m = -Infinity, s = 0;
    for (let j = off; j < end; j++) if (z[j] > m) m = z[j];
    if (grad) {
      for (let j = off; j < end; j++) {
        const e = Math.exp(z[j] - m);
        grad[j] = e;
        s += e;
      }
      const k = invN / s;
      for (let j = off; j < end; j++) grad[j] *= k;
      grad[off + y[i]] -= invN;
    } else {
      for (let j = off; j < end; j++) s += Math.exp(z[j] - m);
    }
    total += Math.log(s) + m - z[off + y[i]];
  }
  return total * invN;
}

/**
 * ArcFace by hand, insightface-style: `phi = cos(theta + m)` for the label's cosine where
 * `cos > cos(pi - m)`, else `cos - m sin(pi - m)`; the logits `s cos` with the label's
 * `s phi`; then the three passes of `plainCrossEntropy`. Cosines are not clamped.
 */
export function plainArcface(cos: Float32Array, l: Int32Array, [n, c, s, mg]: number[], g: Float32Array | null) {
  const cm = Math.cos(mg), sm = Math.sin(mg), th = Math.cos(Math.PI - mg), mm = Math.sin(Math.PI - mg) * mg;
  const invN = 1 / n;
  let total = 0;
  for (let i = 0; i < n; i++) {
    const off = i * c, end = off + c, y = off + l[i], cy = cos[y];
    const sin = Math.sqrt(Math.max(0, 1 - cy * cy)), far = cy > th, ty = s * (far ? cy * cm - sin * sm : cy - mm);
    let m = -Infinity;
    for (let j = off; j < end; j++) {
      const z = j === y ? ty : s * cos[j];
      if (z > m) m = z;
    }
    let sum = 0;
    if (g) {
      for (let j = off; j < end; j++) {
        const e = Math.exp((j === y ? ty : s * cos[j]) - m);
        g[j] = e;
        sum += e;
      }
      const k = (s * invN) / sum;
      for (let j = off; j < end; j++) g[j] *= k;
      g[y] = (g[y] - s * invN) * (far ? cm + (sm * cy) / sin : 1);
    } else {
      for (let j = off; j < end; j++) sum += Math.exp((j === y ? ty : s * cos[j]) - m);
    }
    total += Math.log(sum) + m - ty;
  }
  return total * invN;
}

/** `out = x w^T` (x [n, d], w [c, d]) as a user writes it: a dot product per output, float64 sums. */
export function plainMatMulT(x: Float32Array, w: Float32Array, out: Float32Array, n: number, d: number, c: number) {
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < c; j++) {
      let acc = 0;
      for (let k = 0; k < d; k++) acc += x[i * d + k] * w[j * d + k];
      out[i * c + j] = acc;
    }
  }
}

/**
 * ArcFace on cosines [N, C] in TF.js ops, as its user writes it: clamp; the label's cosine
 * by a one-hot mask (multiply, sum); `phi` by `tf.where`; `phi - cos_y` scattered back
 * through the mask; scale; `tf.losses.softmaxCrossEntropy`. `onehot`: `tf.oneHot` in its
 * default int32 (TF.js 4.22's wasm OneHot gets float32 wrong), `mask` the same as float32.
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
 * physicsContrastive (SPEC §4) by hand: `S = f f^T` by `plainMatMulT`; per anchor i, with
 * `w_ij = 1 - rule[y_i, y_j]` (0 for j = i) and positives `P_ij = (y_i = y_j or rule > threshold)
 * and j != i`: `loss_i = lse_i - sum_j P_ij S_ij / tau / |P_i|`, `lse_i = log sum_j w_ij e^(S_ij / tau)`,
 * `dS_ij = w_ij e^(S_ij / tau - lse_i) - P_ij / |P_i|`; `df = (dS + dS^T) f / (tau anchors)`, the
 * mean over anchors with a positive and a denominator; float64 sums. `grad` gets `scale d loss / d f`.
 */
export function plainPhysicsContrastive(
  [f, labels, rule]: [Float32Array, Int32Array, Float32Array],
  [k, b, d, tau, threshold]: number[],
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
      const r = rule[yi * k + labels[j]];
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

/** physMoe's options, every one given. */
const MOE = ["gamma", "lambdaScl", "lambdaHier", "lambdaReg", "temperature", "threshold", "prototypeWeight"] as const;
export type PlainMoeOptions = Record<(typeof MOE)[number], number> & { tailExperts: readonly number[] };

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
 * physMoe (SPEC §5) composed by hand from its parts, forward and backward (float64 sums,
 * fresh gradients): `scl` by `plainPhysicsContrastive`; per row the gated ensemble `fine`
 * and its softmax `t` (iclMoe's constant target), per expert one log-softmax for its CE
 * (focal for a tail expert: `dol`) and `KL(t || softmax(z_e))` (`col`); `hier`: the coarse
 * CE and the CE of `fine` over the true group's classes; `reg`: centres normalised,
 * `A` = the rule without its diagonal, rows divided by their sums, `mean_i (1 - f_i . c^_y)
 * + prototypeWeight mean_c (1 - c^_c . (A c^)_c)`. Returns the total and the gradients of
 * features, coarse, each expert's logits, gating and centres, in that order.
 */
export function plainPhysMoe(p: MoeData, o: PlainMoeOptions): { loss: number; grads: Float32Array[] } {
  const { b, d, c, k, labels, f: features } = p, e = p.expertLogits.length, invB = 1 / b;
  const gFeatures = new Float32Array(b * d);
  const scl = o.lambdaScl === 0 ? 0 : plainPhysicsContrastive(
    [features, labels, p.rule],
    [c, b, d, o.temperature, o.threshold],
    gFeatures,
    o.lambdaScl,
  );

  // Experts and the hierarchical term, row by row.
  const gExperts = p.expertLogits.map(() => new Float32Array(b * c));
  const gCoarse = new Float32Array(b * k), gGating = new Float32Array(b * e);
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
    const a = o.lambdaHier * invB;
    for (let j = 0; j < k; j++) gCoarse[i * k + j] = a * (Math.exp(lc[j]) - (j === group ? 1 : 0));
    for (let j = 0; j < c; j++) {
      dFine[j] = p.fineToCoarse[j] === group ? a * (Math.exp(fine[j] - lse) - (j === y ? 1 : 0)) : 0;
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
      const gz = gExperts[x], w = p.gating[i * e + x];
      let dot = 0;
      for (let j = 0; j < c; j++) {
        const q = Math.exp(lq[j]);
        gz[row + j] = (slope * (q - (j === y ? 1 : 0)) + q - Math.exp(lt[j])) * invB + w * dFine[j];
        dot += z[row + j] * dFine[j];
      }
      gGating[i * e + x] = dot;
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
    for (let q = 0; q < d; q++) dot += features[i * d + q] * ch[labels[i] * d + q];
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
  const u = o.lambdaReg, dch = new Float64Array(c * d), gCenters = new Float32Array(c * d);
  for (let i = 0; i < b; i++) {
    for (let q = 0, y = labels[i]; q < d; q++) {
      gFeatures[i * d + q] -= u * invB * ch[y * d + q];
      dch[y * d + q] -= u * invB * features[i * d + q];
    }
  }
  for (let x = 0; x < c * d; x++) dch[x] -= ((u * o.prototypeWeight) / c) * (Ac[x] + ATc[x]);
  // Through c^ = c / max(||c||, 1e-12): dc = (dc^ - c^ (c^ . dc^)) / max(||c||, 1e-12).
  for (let j = 0; j < c; j++) {
    let dot = 0;
    for (let q = 0; q < d; q++) dot += ch[j * d + q] * dch[j * d + q];
    for (let q = 0; q < d; q++) gCenters[j * d + q] = (dch[j * d + q] - ch[j * d + q] * dot) / norms[j];
  }
  const loss = o.lambdaScl * scl + dol + col + o.lambdaHier * hier + o.lambdaReg * reg;
  return { loss, grads: [gFeatures, gCoarse, ...gExperts, gGating, gCenters] };
}

/** physicsContrastive's masks: positives [B, B], denominator weights `(1 - R)(1 - I)`, valid anchors [B, 1]. */
export type TfContrastiveMasks = Record<"pos" | "weight" | "valid", tf.Tensor>;

/** The masks in TF.js ops, each step, as its user builds them: `R = rule[labels][:, labels]` by two gathers. */
export function tfContrastiveMasks(labels: tf.Tensor1D, rule: tf.Tensor, threshold: number): TfContrastiveMasks {
  const b = labels.shape[0], notSelf = tf.sub(1, tf.eye(b));
  const same = tf.equal(tf.expandDims(labels, 1), tf.expandDims(labels, 0));
  const R = tf.gather(tf.gather(rule, labels), labels, 1);
  const pos = tf.mul(tf.cast(tf.logicalOr(same, tf.greater(R, threshold)), "float32"), notSelf);
  const weight = tf.mul(tf.sub(1, R), notSelf);
  const some = (m: tf.Tensor) => tf.greater(tf.sum(m, 1, true), 0);
  const valid = tf.cast(tf.logicalAnd(some(pos), some(weight)), "float32");
  return { pos, weight, valid };
}

/**
 * physicsContrastive in TF.js ops, SupCon's recipe: `S = matMul(f, transpose(f)) / tau` (an
 * explicit transpose: TF.js wasm's transposed matMul is 10-40x slower), minus its row max,
 * `log_prob = S - log sum(weight e^S)`, its mean over positives, the mean over valid anchors.
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

/**
 * The constants of `tfPhysMoeLoss` in TF.js ops: the masks; one-hot fine labels (int32) and
 * as float32; one-hot coarse labels; `outside` (0 on the true group's classes, -1e9
 * elsewhere); `A` (the rule without its diagonal, rows divided by their sums).
 */
export type TfMoeConsts = Record<"onehot" | "mask" | "coarseOnehot" | "outside" | "A", tf.Tensor> & {
  masks: TfContrastiveMasks;
};

export function tfMoeConsts(
  labels: tf.Tensor1D,
  rule: tf.Tensor,
  map: tf.Tensor1D,
  [c, k, thr]: number[],
): TfMoeConsts {
  const coarseLabels = tf.gather(map, labels),
    inGroup = tf.equal(tf.expandDims(coarseLabels, 1), tf.expandDims(map, 0));
  const offDiag = tf.mul(rule, tf.sub(1, tf.eye(c)));
  const sums = tf.sum(offDiag, 1, true);
  const onehot = tf.oneHot(labels, c);
  return {
    masks: tfContrastiveMasks(labels, rule, thr),
    onehot,
    mask: tf.cast(onehot, "float32"),
    coarseOnehot: tf.oneHot(coarseLabels, k),
    outside: tf.mul(tf.sub(1, tf.cast(inGroup, "float32")), -1e9),
    A: tf.div(offDiag, tf.where(tf.greater(sums, 0), sums, tf.onesLike(sums))),
  };
}

/**
 * physMoe's objective in TF.js ops, for `tf.valueAndGrads` w.r.t. features, coarse, expert
 * logits, gating and centres. `target`: the ensemble's softmax and log-softmax, made by the
 * caller outside the gradient (TF.js has no stopGradient). Per expert `tf.logSoftmax`, its
 * CE (focal for a tail expert) and KL; the hierarchical CEs on the coarse logits and on
 * the ensemble plus `outside`; each row's centre by `matMul(one-hot, c^)` (TF.js wasm has
 * no UnsortedSegmentSum, the gradient of `tf.gather`).
 */
export function tfPhysMoeLoss(
  x: { features: tf.Tensor; coarse: tf.Tensor; expertLogits: tf.Tensor[]; gating: tf.Tensor; centers: tf.Tensor },
  labels: tf.Tensor1D,
  consts: TfMoeConsts,
  target: { t: tf.Tensor; logT: tf.Tensor },
  o: PlainMoeOptions,
): tf.Scalar {
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
  const center = tf.mean(tf.sub(1, tf.sum(tf.mul(x.features, tf.matMul(consts.mask, cn)), 1)));
  const proto = tf.mean(tf.sub(1, tf.sum(tf.mul(cn, tf.matMul(consts.A, cn)), 1)));
  const reg = tf.add(center, tf.mul(proto, o.prototypeWeight));
  const weighted = [tf.mul(scl, o.lambdaScl), dol, col, tf.mul(hier, o.lambdaHier), tf.mul(reg, o.lambdaReg)];
  return tf.addN(weighted) as tf.Scalar;
}
