/**
 * `mixOutputs`: the mixture-of-experts loss of a multi-expert long-tail classifier: each
 * expert's cross-entropy (optionally logit-adjusted by a class prior), a pairwise
 * distillation between experts, and a "parallel" term, the harmonic mean of the
 * experts' cross-entropies times E.
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import { result } from "../kernels/core.ts";
import type { CommonOptions, Matrix } from "../types.ts";
import * as v from "../validate.ts";
import { type ExpertGrads, expertGrads, type ExpertInputs, expertInputs, expertOuts, means } from "./experts.ts";
import { type ExpertsProblem, parallelOf } from "../kernels/experts.ts";
import { lin } from "../kernels/deferred.ts";

/** Options of `mixOutputs`. */
export interface MixOutputsOptions extends CommonOptions {
  /** Class prior `[C]`, every value > 0: the CE terms use `z + log prior` (logit adjustment). */
  prior?: Float32Array | Float64Array | readonly number[];
  /** Weight of the pairwise distillation term, finite, in [-1e6, 1e6]. @default 0 */
  distillWeight?: number;
  /** Weight of the parallel term, finite, in [-1e6, 1e6]. @default 0 */
  parallelWeight?: number;
  /** Added to each CE before its reciprocal in the parallel term. @default 1e-6 */
  eps?: number;
}

/** The parts of `mixOutputs` (unweighted), and the experts' mean logits. */
export interface MixOutputsParts {
  /** `sum_e ce_e`. */
  ce: number;
  /** `sum_{i != j} KL_batchmean(softmax(z_j) || softmax(z_i))`. */
  distill: number;
  /** `E / sum_e 1 / (ce_e + eps)`. */
  parallel: number;
  /** `(1/E) sum_e z_e`, `[B, C]` (not differentiated; on the GPU when the logits are). */
  meanLogits: Matrix;
}

/** The prepared `mixOutputs` problem: the experts problem and the weights of the parts. */
export interface MixProblem extends ExpertsProblem {
  readonly distillWeight: number;
  readonly parallelWeight: number;
  readonly eps: number;
}

/**
 * Mixture-of-experts loss with distillation and a parallel term: `ce_e = CE(z_e + log prior, y)`
 * (`prior [C]` optional: logit adjustment, Menon et al. 2021), `distill = sum_{i != j} KL_batchmean(softmax(z_j) || softmax(z_i))`,
 * `parallel = E / sum_e 1/(ce_e + eps)`; value `sum_e ce_e + distillWeight distill + parallelWeight parallel`
 * (weights 0, `eps` 1e-6). Parts `ce`, `distill`, `parallel` and `meanLogits` (`[B, C]`).
 * Gradients w.r.t. every expert's logits (the distillation through both softmaxes).
 *
 * @example One expert is plain cross-entropy
 * ```ts
 * import { js } from "@softmargin/softmargin/cpu";
 * const z = { data: new Float32Array([0, 0]), shape: [1, 2] as const };
 * console.log(js.mixOutputs.forward({ expertLogits: [z], labels: [0] }).loss); // 0.6931 = log 2
 * ```
 */
export const mixOutputs: Definition<ExpertInputs, MixOutputsOptions, ExpertGrads, MixOutputsParts> = lossDef<
  ExpertInputs,
  MixOutputsOptions,
  ExpertGrads,
  "experts",
  MixOutputsParts
>({
  name: "mixOutputs",
  kernel: "experts",
  inputs: ["expertLogits", "labels"],
  options: ["prior", "distillWeight", "parallelWeight", "eps"],
  grads: ["expertLogits"],
  prepare(inputs, o, grad, upstream) {
    const { e, b, c, logits, labels } = expertInputs(inputs, o);
    const prior = v.vector("options.prior", o.prior, c, 0);
    if (prior?.some((x) => x === 0)) {
      throw new RangeError(`Expected options.prior to be > 0 everywhere, got 0 at [${prior.indexOf(0)}]`);
    }
    const distillWeight = v.weight("options.distillWeight", o.distillWeight, 0);
    const parallelWeight = v.weight("options.parallelWeight", o.parallelWeight, 0);
    const eps = v.number("options.eps", o.eps, 1e-6, { min: 0, minExclusive: true });
    const up = grad ? v.upstream(upstream) : 1;
    const problem: MixProblem = {
      grad,
      e,
      b,
      c,
      logits,
      labels,
      gamma: new Float64Array(e),
      shift: prior ? Float64Array.from(prior, Math.log) : null,
      gating: null,
      mean: true,
      pairs: true,
      weights: { ce: up, parallel: parallelWeight, eps, col: 0, pairs: up * distillWeight },
      outs: expertOuts(o, grad, e, b, c),
      distillWeight,
      parallelWeight,
      eps,
    };
    return problem;
  },
  finish(problem, raw) {
    const p = problem as MixProblem;
    const ce = means(raw.rows, 0, p.e, p.b);
    const ceSum = lin(0, ...ce.map((x) => [x, 1] as const));
    const distill = means(raw.rows, 2 * p.e, 1, p.b)[0];
    const parallel = parallelOf(ce, p.eps);
    return {
      loss: lin(0, [ceSum, 1], [distill, p.distillWeight], [parallel, p.parallelWeight]),
      ce: ceSum,
      distill,
      parallel,
      meanLogits: result(raw.outputs!.meanLogits, p.b, p.c),
      grads: { expertLogits: expertGrads(p, raw.grads) },
    };
  },
});
