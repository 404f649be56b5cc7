/**
 * `physicsContrastive`: a supervised contrastive loss (Khosla et al. 2020) whose
 * positives also include pairs of classes a rule matrix calls similar, and whose
 * negatives are weighted by their dissimilarity.
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions, Labels, Matrix, Reduction, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { gradMatrix, outBuffer } from "../kernels/core.ts";

/** Inputs of `physicsContrastive`. */
export interface PhysicsContrastiveInputs {
  /** Embeddings `[B, D]`, normalised by the caller (used as given). */
  f: Tensor;
  /** One class index per row (in `[0, K)` when `rule` is given, else any integer >= 0). */
  labels: Labels;
  /** Optional rule similarity `[K, K]` of the classes, every value in [0, 1]; none means 0. */
  rule?: Tensor;
}

/** Options of `physicsContrastive`. */
export interface PhysicsContrastiveOptions extends CommonOptions {
  /** Temperature tau of the similarities `f f^T / tau`, finite, >= 1e-6 (float32). @default 0.07 */
  temperature?: number;
  /** A pair of different classes is a positive when its rule similarity is above this. @default 0.8 */
  threshold?: number;
  /** `"mean"` (over the anchors that have a positive), `"sum"` or `"none"` (0 for the others). @default "mean" */
  reduction?: Reduction;
}

/** Gradients of `physicsContrastive`. */
export interface PhysicsContrastiveGrads {
  /** Gradient w.r.t. the embeddings `[B, D]`. */
  f: Matrix;
}

/** Checks a rule matrix `[K, K]` with every value finite and in [0, 1]; returns K and its values. */
export function ruleMatrix(name: string, value: unknown, k?: number): [number, Float32Array] {
  const [rows, cols, data] = v.hostMatrix(name, value, k, k);
  if (rows !== cols) throw new RangeError(`Expected ${name} to be square [K, K], got [${rows}, ${cols}]`);
  if (rows === 0) throw new RangeError(`Expected ${name} to have at least one class, got 0`);
  for (let i = 0; i < data.length; i++) {
    if (!(data[i] >= 0 && data[i] <= 1)) {
      throw new RangeError(
        `Expected ${name}[${Math.floor(i / rows)}, ${i % rows}] to be a similarity in [0, 1], got ${data[i]}`,
      );
    }
  }
  return [rows, data];
}

/** The internal definition of `physicsContrastive` (physMoe prepares its term with it). */
export const physicsContrastiveLoss = lossDef<
  PhysicsContrastiveInputs,
  PhysicsContrastiveOptions,
  PhysicsContrastiveGrads,
  "contrastive"
>({
  name: "physicsContrastive",
  kernel: "contrastive",
  inputs: ["f", "labels", "rule"],
  options: ["temperature", "threshold", "reduction"],
  grads: ["f"],
  prepare(inputs, o, grad, upstream) {
    const [b, d] = v.batch("f", inputs.f);
    let rule: Float32Array | null = null, k = 2 ** 31 - 1;
    if (inputs.rule !== undefined) [k, rule] = ruleMatrix("rule", inputs.rule);
    const labels = v.integers("labels", inputs.labels, b, k);
    const f = v.values(inputs.f);
    if (o.checkFinite) v.finite("f", f, d);
    const temperature = v.temperature(o.temperature, 0.07);
    const threshold = v.number("options.threshold", o.threshold, 0.8);
    const reduction = v.reduction(o.reduction);
    // Positives and validity depend on the labels and the rule only (exp > 0), so the
    // mean's denominator is known before any kernel runs. Counted per class present in
    // the batch (O(B + P^2) for P classes present, in arrays indexed by the order in
    // which the classes first appear), not per pair of rows.
    const index = new Map<number, number>(), rowClass = new Int32Array(b), classes: number[] = [], rows: number[] = [];
    for (let i = 0; i < b; i++) {
      let c = index.get(labels[i]);
      if (c === undefined) {
        c = classes.push(labels[i]) - 1;
        index.set(labels[i], c);
        rows.push(0);
      }
      rows[c]++;
      rowClass[i] = c;
    }
    const n = classes.length, classPositives = new Int32Array(n), classValid = new Uint8Array(n);
    for (let c = 0; c < n; c++) {
      const y = classes[c], at = rule ? y * k : 0;
      // j of the same class: always a positive; in the denominator when rule[y, y] < 1.
      let pos = rows[c] - 1, weighted = rows[c] > 1 && (rule ? rule[at + y] : 0) < 1;
      for (let z = 0; z < n; z++) {
        if (z === c) continue;
        const r = rule ? rule[at + classes[z]] : 0;
        if (r > threshold) pos += rows[z];
        if (r < 1) weighted = true;
      }
      classPositives[c] = pos;
      classValid[c] = pos > 0 && weighted ? 1 : 0;
    }
    const positives = new Int32Array(b), valid = new Uint8Array(b);
    let count = 0;
    for (let i = 0; i < b; i++) {
      positives[i] = classPositives[rowClass[i]];
      count += valid[i] = classValid[rowClass[i]];
    }
    const scales = grad ? v.rowScales(reduction, upstream, b, count, (i) => !valid[i]) : new Float64Array(0);
    return {
      grad,
      b,
      d,
      f,
      labels,
      rule,
      k,
      temperature,
      threshold,
      valid,
      positives,
      scales,
      reduction,
      denominator: count,
      out: grad ? outBuffer(o, "f", b, d) : null,
    };
  },
  finish: (p, raw) => ({
    loss: v.reduce(raw.rows[0], p.reduction, p.denominator),
    grads: { f: gradMatrix(p.out, raw.grads.f, p.b, p.d) },
  }),
});

/**
 * A rule-aware supervised contrastive loss (Khosla et al. 2020, "Supervised Contrastive
 * Learning", extended with a class-similarity rule): `S = f f^T / tau`, `R_ij = rule[y_i, y_j]`
 * (0 without `rule`), positives `P_ij = (y_i = y_j or R_ij > threshold) and i != j`,
 * `loss_i = -sum_j P_ij (S_ij - log sum_{k != i} e^(S_ik) (1 - R_ik)) / sum_j P_ij`,
 * averaged over the anchors that have a positive and a non-zero weight `1 - R` (0 when
 * none). `temperature` 0.07, `threshold` 0.8; f `[B, D]` normalised by the caller, rule
 * `[K, K]` with values in [0, 1]. Gradient w.r.t. f.
 *
 * @example Two pairs
 * ```ts
 * import { js } from "@softmargin/softmargin/cpu";
 * const f = { data: new Float32Array([1, 0, 1, 0, 0, 1, 0, 1]), shape: [4, 2] as const };
 * console.log(js.physicsContrastive.forward({ f, labels: [0, 0, 1, 1] }, { temperature: 1 }).loss); // 0.5514 = log(1 + 2/e)
 * ```
 */
export const physicsContrastive: Definition<
  PhysicsContrastiveInputs,
  PhysicsContrastiveOptions,
  PhysicsContrastiveGrads
> = physicsContrastiveLoss;
