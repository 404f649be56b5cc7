/**
 * `iclMoe`: independent and collaborative learning of a mixture of experts: a division
 * of labour (cross-entropy for head experts, focal loss for tail experts) and a
 * collaboration term pulling every expert towards the gated ensemble.
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { type ExpertGrads, expertGrads, type ExpertInputs, expertInputs, expertOuts, means } from "./experts.ts";
import type { ExpertsProblem } from "../kernels/experts.ts";
import { lin } from "../kernels/deferred.ts";

/** Inputs of `iclMoe`. */
export interface IclMoeInputs extends ExpertInputs {
  /** Gating weights `[B, E]`: the ensemble is `sum_e gating[:, e] z_e`. */
  gating: Tensor;
}

/** Options of `iclMoe`. */
export interface IclMoeOptions extends CommonOptions {
  /** Indices of the tail experts (focal loss); the others use cross-entropy. @default [] */
  tailExperts?: readonly number[] | Int32Array;
  /** Focal exponent of the tail experts, in [0, 100]. @default 2 */
  gamma?: number;
}

/** The parts of `iclMoe`. */
export interface IclMoeParts {
  /** `L_dol = sum_e (focal if e is a tail expert else CE)`, each a mean over B. */
  dol: number;
  /** `L_col = sum_e KL_batchmean(softmax(ensemble) || softmax(z_e))`. */
  col: number;
}

/** Checks `tailExperts`: distinct integers in `[0, E)`; returns a focal exponent per expert. */
export function tailGammas(value: unknown, e: number, gamma: number): Float64Array {
  const out = new Float64Array(e);
  if (value === undefined) return out;
  if (!Array.isArray(value) && !(value instanceof Int32Array)) {
    throw new TypeError(`Expected options.tailExperts to be an array of expert indices, got ${v.show(value)}`);
  }
  const tail = v.integers("options.tailExperts", value, (value as ArrayLike<number>).length, e);
  const seen = new Set<number>();
  for (const t of tail) {
    if (seen.has(t)) throw new RangeError(`Expected options.tailExperts to be distinct, got ${t} twice`);
    seen.add(t);
    out[t] = gamma;
  }
  return out;
}

/** Checks `gating [B, E]` (host or GPU-resident) and returns its values. */
export function gatingInput(value: unknown, b: number, e: number, checkFinite?: boolean): Float32Array {
  v.matrix("gating", value, b, e);
  const g = v.values(value as Tensor);
  if (checkFinite) v.finite("gating", g, e);
  return g;
}

/** The internal definition of `iclMoe` (physMoe prepares its term with it). */
export const iclMoeLoss = lossDef<IclMoeInputs, IclMoeOptions, ExpertGrads, "experts", IclMoeParts>({
  name: "iclMoe",
  kernel: "experts",
  inputs: ["expertLogits", "gating", "labels"],
  options: ["tailExperts", "gamma"],
  grads: ["expertLogits"],
  prepare(inputs, o, grad, upstream): ExpertsProblem {
    const { e, b, c, logits, labels } = expertInputs(inputs, o);
    const gating = gatingInput(inputs.gating, b, e, o.checkFinite);
    const gamma = v.exponent("options.gamma", o.gamma, 2);
    const up = grad ? v.upstream(upstream) : 1;
    return {
      grad,
      e,
      b,
      c,
      logits,
      labels,
      gamma: tailGammas(o.tailExperts, e, gamma),
      shift: null,
      // The ensemble is a constant target: no gradient flows into it (or into the gating).
      gating,
      mean: false,
      pairs: false,
      weights: { ce: up, parallel: 0, eps: 0, col: up, pairs: 0 },
      outs: expertOuts(o, grad, e, b, c),
    };
  },
  finish(p, raw) {
    const sum = (xs: number[]) => lin(0, ...xs.map((x) => [x, 1] as const));
    const dol = sum(means(raw.rows, 0, p.e, p.b)), col = sum(means(raw.rows, p.e, p.e, p.b));
    return { loss: lin(0, [dol, 1], [col, 1]), dol, col, grads: { expertLogits: expertGrads(p, raw.grads) } };
  },
});

/**
 * Independent and collaborative learning of experts: `L_dol = sum_e` (focal with `gamma`
 * for the `tailExperts`, cross-entropy for the others; means over B) and, for the gated
 * ensemble `sum_e gating[:, e] z_e` (a constant target), `L_col = sum_e KL_batchmean(softmax(ensemble) || softmax(z_e))`.
 * Value `L_dol + L_col`, parts `dol` and `col`; gradients w.r.t. the expert logits.
 *
 * @example Two agreeing experts
 * ```ts
 * import { js } from "@softmargin/softmargin/cpu";
 * const z = { data: new Float32Array([0, 0]), shape: [1, 2] as const };
 * const gating = { data: new Float32Array([0.5, 0.5]), shape: [1, 2] as const };
 * console.log(js.iclMoe.forward({ expertLogits: [z, z], gating, labels: [1] }).col); // 0
 * ```
 */
export const iclMoe: Definition<IclMoeInputs, IclMoeOptions, ExpertGrads, IclMoeParts> = iclMoeLoss;
