/**
 * `siglip`: the pairwise sigmoid loss of SigLIP (Zhai et al. 2023), as open_clip's
 * `SigLipLoss`, over blocks of the N x N similarities (family `paired`).
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions, Matrix, Tensor } from "../types.ts";
import { pairedProblem, pairedResult } from "./clip.ts";

/** Inputs of `siglip`. */
export interface SiglipInputs {
  /** Embeddings of the first modality `[N, D]` (images), L2-normalised by the caller. */
  a: Tensor;
  /** Embeddings of the second modality `[N, D]`, row i paired with `a`'s row i, normalised by the caller. */
  b: Tensor;
  /** The logit scale t (open_clip's `logit_scale.exp()`, 10 at initialisation), in (0, 1e6]; number gradient. */
  scale: number;
  /** The logit bias (open_clip's `logit_bias`, -10 at initialisation), in [-1e6, 1e6]; number gradient. */
  bias: number;
}

/** Options of `siglip` (only the common ones). */
export type SiglipOptions = CommonOptions;

/** Gradients of `siglip`. */
export interface SiglipGrads {
  /** Gradient w.r.t. `a` `[N, D]`. */
  a: Matrix;
  /** Gradient w.r.t. `b` `[N, D]`. */
  b: Matrix;
  /** Gradient w.r.t. `scale` (a number). */
  scale: number;
  /** Gradient w.r.t. `bias` (a number): `(1/N) sum_ij (sigmoid(x_ij) - [i = j])`. */
  bias: number;
}

const siglipLoss = lossDef<SiglipInputs, SiglipOptions, SiglipGrads, "paired">({
  name: "siglip",
  kernel: "paired",
  inputs: ["a", "b", "scale", "bias"],
  options: [],
  grads: ["a", "b"],
  numbers: ["scale", "bias"],
  prepare: (inputs, o, grad, upstream) => pairedProblem("siglip", inputs, o, grad, upstream),
  finish: (p, raw) => pairedResult(p, raw) as { loss: number; grads: SiglipGrads },
});

/**
 * SigLIP's pairwise sigmoid loss (Zhai et al. 2023, "Sigmoid Loss for Language Image
 * Pre-Training"), as open_clip's `SigLipLoss` (one device, no negatives from other ranks):
 * with `x_ij = t a_i . b_j + bias` and `z_ii = 1`, `z_ij = -1` for `i != j`,
 * `L = -(1/N) sum_ij log sigmoid(z_ij x_ij)`, each term a stable `log(1 + e^(-z x))`.
 * a, b `[N, D]` normalised by the caller; `scale` t > 0 and `bias` numbers (open_clip
 * initialises them to 10 and -10). Gradients w.r.t. a, b, `scale` and `bias` (numbers):
 * `dL/dx_ij = (sigmoid(x_ij) - [i = j]) / N`, so `dL/dbias` is their sum. No N x N matrix
 * is formed: the kernels work on blocks of 256 x 256 similarities in one pass.
 *
 * @example Two pairs
 * ```ts
 * import { js } from "@softmargin/softmargin/cpu";
 * const a = { data: new Float32Array([1, 0, 0, 1]), shape: [2, 2] as const };
 * const r = js.siglip.valueAndGrad({ a, b: a, scale: 1, bias: 0 });
 * console.log(r.loss, r.grads.bias); // 1.0064 = log(1 + 1/e) + log 2, 0.2311 = 1/2 - 1/(1 + e)
 * ```
 */
export const siglip: Definition<SiglipInputs, SiglipOptions, SiglipGrads> = siglipLoss;
