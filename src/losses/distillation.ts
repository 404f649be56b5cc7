/**
 * `distillation`: knowledge distillation (Hinton et al. 2015), a temperature-softened
 * KL divergence to the teacher plus cross-entropy on the hard labels.
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions, Labels, Matrix, Reduction, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { gradMatrix, outBuffer } from "../kernels/core.ts";
import { lin } from "../kernels/deferred.ts";
import { pairInputs } from "./soft_cross_entropy.ts";

/** Inputs of `distillation`. */
export interface DistillationInputs {
  /** Student logits `[N, C]`. */
  student: Tensor;
  /** Teacher logits `[N, C]` (a constant: no gradient). */
  teacher: Tensor;
  /** Hard labels `[N]`. */
  labels: Labels;
}

/** Options of `distillation`. */
export interface DistillationOptions extends CommonOptions {
  /** Softening temperature T, finite, >= 1e-6 (float32 logits `z / T`). @default 4 */
  temperature?: number;
  /** Weight of the KL term, in [0, 1]; the cross-entropy gets 1 - alpha. @default 0.9 */
  alpha?: number;
  /** Rows with this label get no cross-entropy term (their KL term stays). @default -100 */
  ignoreIndex?: number;
  /**
   * `"mean"`: KL averaged over all N rows (batchmean), cross-entropy over the non-ignored
   * rows; `"sum"`; `"none"`: one value per row. @default "mean"
   */
  reduction?: Reduction;
}

/** Gradients of `distillation` (the teacher gets none). */
export interface DistillationGrads {
  /** Gradient w.r.t. the student logits `[N, C]`. */
  student: Matrix;
}

/** The parts of `distillation`, reduced as the loss is (absent with `reduction: "none"`). */
export interface DistillationParts {
  /** The KL term before weighting (batchmean with `"mean"`). */
  kl: number;
  /** The cross-entropy term before weighting (mean over the non-ignored rows with `"mean"`). */
  ce: number;
}

/**
 * Knowledge distillation (Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a
 * Neural Network"): `alpha T^2 KL(softmax(teacher/T) || softmax(student/T)) + (1-alpha) CE(student, labels)`,
 * temperature `T` (default 4), `alpha` (default 0.9). With `"mean"` the KL is averaged
 * over all N rows (batchmean) and the cross-entropy over the non-ignored rows; the result
 * also holds the reduced parts `kl` and `ce` before weighting (not with `"none"`). Shapes: student, teacher `[N, C]`,
 * labels `[N]`; gradient w.r.t. the student only: `alpha T (Q - P) + (1-alpha)(p - onehot)`.
 *
 * @example Distil a teacher
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const student = { data: new Float32Array([1, 0, 0, 1]), shape: [2, 2] as const };
 * const teacher = { data: new Float32Array([3, 0, 0, 3]), shape: [2, 2] as const };
 * const { loss, kl, ce } = wasm.distillation.forward({ student, teacher, labels: [0, 1] }, { temperature: 2 });
 * console.log(loss, kl, ce); // 0.3562 0.0902 0.3133
 * ```
 */
export const distillation: Definition<DistillationInputs, DistillationOptions, DistillationGrads, DistillationParts> =
  lossDef<DistillationInputs, DistillationOptions, DistillationGrads, "distill", DistillationParts>({
    name: "distillation",
    kernel: "distill",
    inputs: ["student", "teacher", "labels"],
    options: ["temperature", "alpha", "ignoreIndex", "reduction"],
    grads: ["student"],
    prepare(inputs, options, grad, upstream) {
      const o = v.options(options);
      const [n, c, student, teacher] = pairInputs(inputs, "student", "teacher", o);
      const ignoreIndex = v.integer("options.ignoreIndex", o.ignoreIndex, -100);
      const labels = v.labels("labels", inputs.labels, n, c, ignoreIndex);
      const temperature = v.temperature(o.temperature, 4);
      const alpha = v.number("options.alpha", o.alpha, 0.9, { min: 0, max: 1 });
      const reduction = v.reduction(o.reduction);
      let count = 0;
      for (let i = 0; i < n; i++) if (labels[i] >= 0) count++;
      let ka = new Float64Array(0), ca = ka;
      if (grad) {
        // d(alpha T^2 KL)/ds = alpha T (Q - P); d((1 - alpha) CE)/ds = (1 - alpha)(p - onehot)
        ka = v.rowScales(reduction, upstream, n, n).map((s) => alpha * temperature * s);
        ca = v.rowScales(reduction, upstream, n, count, (i) => labels[i] < 0).map((s) => (1 - alpha) * s);
      }
      return {
        grad,
        n,
        c,
        student,
        teacher,
        labels,
        temperature,
        alpha,
        reduction,
        count,
        ka,
        ca,
        out: grad ? outBuffer(o, "student", n, c) : null,
      };
    },
    finish(p, raw) {
      const [klRows, ceRows] = raw.rows;
      const w = p.alpha * p.temperature * p.temperature;
      const grads = { student: gradMatrix(p.out, raw.grads.student, p.n, p.c) };
      if (p.reduction === "none") {
        return { loss: lin(0, [klRows, w], [ceRows, 1 - p.alpha]), grads };
      }
      const kl = v.reduce(klRows, p.reduction, p.n) as number;
      const ce = v.reduce(ceRows, p.reduction, p.count) as number;
      return { loss: lin(0, [kl, w], [ce, 1 - p.alpha]), kl, ce, grads };
    },
  });
