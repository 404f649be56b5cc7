/**
 * `klDiv`: the Kullback-Leibler divergence of `torch.nn.functional.kl_div`.
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions, Matrix, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { gradMatrix, outBuffer } from "../kernels/core.ts";
import { pairInputs } from "./soft_cross_entropy.ts";

/** Inputs of `klDiv`. */
export interface KlDivInputs {
  /** Log-probabilities of the approximating distribution `[N, C]` (no softmax is applied). */
  logInput: Tensor;
  /** Target distribution `[N, C]`: probabilities, or log-probabilities with `logTarget`. */
  target: Tensor;
}

/** How `klDiv` reduces: `"batchmean"` divides the sum by N, `"mean"` by N*C. */
export type KlReduction = "batchmean" | "sum" | "mean" | "none";

/** Options of `klDiv`. */
export interface KlDivOptions extends CommonOptions {
  /** `"batchmean"`, `"sum"`, `"mean"` (over all N*C elements, as PyTorch) or `"none"` (one value per row). @default "batchmean" */
  reduction?: KlReduction;
  /** Whether `target` holds log-probabilities. @default false */
  logTarget?: boolean;
}

/** Gradients of `klDiv`. */
export interface KlDivGrads {
  /** Gradient w.r.t. `logInput`: `-target` times the row's upstream. */
  logInput: Matrix;
  /** Gradient w.r.t. `target`: `log t + 1 - x` (0 where t = 0), or `e^t (t - x + 1)` with `logTarget`. */
  target: Matrix;
}

/**
 * Kullback-Leibler divergence as `torch.nn.functional.kl_div(logInput, target)`:
 * `sum t (log t - logInput)` (terms with `t = 0` are 0), or with `logTarget`
 * `sum e^t (t - logInput)`. No softmax is applied: `logInput` holds log-probabilities.
 * `reduction`: `"batchmean"` (default, sum / N), `"sum"`, `"mean"` (sum / (N*C)) or
 * `"none"` (one value per row, unlike PyTorch's element-wise output). Gradients:
 * `logInput` `-t`, `target` `log t + 1 - logInput` (0 where `t = 0`, where PyTorch gives
 * NaN) or `e^t (t - logInput + 1)`.
 *
 * @example KL between two distributions
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const logInput = { data: new Float32Array([Math.log(0.5), Math.log(0.5)]), shape: [1, 2] as const };
 * const target = { data: new Float32Array([0.9, 0.1]), shape: [1, 2] as const };
 * console.log(wasm.klDiv.forward({ logInput, target }).loss); // 0.3681 (PyTorch: 0.3680642072)
 * ```
 */
export const klDiv: Definition<KlDivInputs, KlDivOptions, KlDivGrads> = lossDef<
  KlDivInputs,
  KlDivOptions,
  KlDivGrads,
  "klDiv"
>({
  name: "klDiv",
  kernel: "klDiv",
  inputs: ["logInput", "target"],
  options: ["reduction", "logTarget"],
  grads: ["logInput", "target"],
  prepare(inputs, options, grad, upstream) {
    const o = v.options(options);
    const [n, c, a, b] = pairInputs(inputs, "logInput", "target", o);
    const reduction = v.oneOf(
      "options.reduction",
      o.reduction,
      ["batchmean", "sum", "mean", "none"] as const,
      "batchmean",
    );
    const logTarget = v.boolean("options.logTarget", o.logTarget, false);
    const denominator = reduction === "mean" ? n * c : n;
    const r = reduction === "none" ? "none" : reduction === "sum" ? "sum" : "mean";
    const scales = grad ? v.rowScales(r, upstream, n, denominator) : new Float64Array(0);
    return {
      grad,
      n,
      c,
      a,
      b,
      scales,
      logTarget,
      reduction: r,
      denominator,
      outA: grad ? outBuffer(o, "logInput", n, c) : null,
      outB: grad ? outBuffer(o, "target", n, c) : null,
    };
  },
  finish: (p, raw) => ({
    loss: v.reduce(raw.rows[0], p.reduction as "mean" | "sum" | "none", p.denominator),
    grads: {
      logInput: gradMatrix(p.outA, raw.grads.a, p.n, p.c),
      target: gradMatrix(p.outB, raw.grads.b, p.n, p.c),
    },
  }),
});
