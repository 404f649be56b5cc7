/**
 * `clip`: the symmetric cross-entropy of CLIP (Radford et al. 2021), as open_clip's
 * `ClipLoss`, over blocks of the N x N similarities (family `paired`). Also the shared
 * preparation of the family (`pairedProblem`, used by `siglip`).
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions, Matrix, Tensor, Upstream } from "../types.ts";
import * as v from "../validate.ts";
import { gradMatrix, outBuffer, type Raw } from "../kernels/core.ts";
import { first } from "../kernels/deferred.ts";
import type { PairedKind, PairedProblem } from "../kernels/paired.ts";

/** Inputs of `clip`. */
export interface ClipInputs {
  /** Embeddings of the first modality `[N, D]` (images), L2-normalised by the caller. */
  a: Tensor;
  /** Embeddings of the second modality `[N, D]` (texts), row i paired with `a`'s row i, normalised by the caller. */
  b: Tensor;
  /** The logit scale (open_clip's `logit_scale.exp()`), a number in (0, 1e6]; it has a number gradient. */
  scale: number;
}

/** Options of `clip` (only the common ones). */
export type ClipOptions = CommonOptions;

/** Gradients of `clip`. */
export interface ClipGrads {
  /** Gradient w.r.t. `a` `[N, D]`. */
  a: Matrix;
  /** Gradient w.r.t. `b` `[N, D]`. */
  b: Matrix;
  /** Gradient w.r.t. `scale` (a number; chain it through `exp` for a learnable `logit_scale`). */
  scale: number;
}

/** The checked `a`, `b`, scale and bias of a `paired` loss, and its gradient buffers. */
export function pairedProblem(
  kind: PairedKind,
  inputs: { a: Tensor; b: Tensor; scale: number; bias?: number },
  o: CommonOptions,
  grad: boolean,
  upstream: Upstream | undefined,
): PairedProblem {
  const [n, d] = v.batch("a", inputs.a);
  v.matrix("b", inputs.b, n, d);
  const scale = v.numberInput("scale", inputs.scale, { min: 0, minExclusive: true, max: v.MAX_SCALE });
  const bias = kind === "siglip" ? v.numberInput("bias", inputs.bias, { min: -v.MAX_WEIGHT, max: v.MAX_WEIGHT }) : 0;
  const a = v.values(inputs.a), b = v.values(inputs.b);
  if (o.checkFinite) {
    v.finite("a", a, d);
    v.finite("b", b, d);
  }
  return {
    grad,
    kind,
    n,
    c: n,
    d,
    a,
    b,
    scale,
    bias,
    upstream: grad ? v.upstream(upstream) : 0,
    outA: grad ? outBuffer(o, "a", n, d) : null,
    outB: grad ? outBuffer(o, "b", n, d) : null,
  };
}

/** The public result of a `paired` loss from its kernel's raw result (number gradients from `raw.numbers`). */
export function pairedResult(p: PairedProblem, raw: Raw) {
  const numbers = raw.numbers ?? {};
  return {
    loss: first(raw.rows[0]),
    grads: {
      a: gradMatrix(p.outA, raw.grads.a, p.n, p.d),
      b: gradMatrix(p.outB, raw.grads.b, p.n, p.d),
      scale: numbers.scale ?? 0,
      ...(p.kind === "siglip" ? { bias: numbers.bias ?? 0 } : {}),
    },
  };
}

const clipLoss = lossDef<ClipInputs, ClipOptions, ClipGrads, "paired">({
  name: "clip",
  kernel: "paired",
  inputs: ["a", "b", "scale"],
  options: [],
  grads: ["a", "b"],
  numbers: ["scale"],
  prepare: (inputs, o, grad, upstream) => pairedProblem("clip", inputs, o, grad, upstream),
  finish: (p, raw) => pairedResult(p, raw) as { loss: number; grads: ClipGrads },
});

/**
 * CLIP's contrastive loss (Radford et al. 2021, "Learning Transferable Visual Models From
 * Natural Language Supervision"), as open_clip's `ClipLoss`: with logits `L = scale a b^T`
 * `[N, N]` and row i's label i,
 * `L = (CE(L, i) + CE(L^T, i)) / 2 = (1/2N) sum_i (lse_j L_ij - L_ii) + (1/2N) sum_j (lse_i L_ij - L_jj)`.
 * a, b `[N, D]` normalised by the caller; `scale` a number > 0 (open_clip's
 * `logit_scale.exp()`, 1/0.07 at initialisation, at most 100 there). Gradients w.r.t. a, b
 * and `scale` (a number): `dL/dL_ij = (softmax_row(L)_ij + softmax_col(L)_ij - 2[i = j]) / 2N`.
 * No N x N matrix is formed: the kernels take the row and column log-sum-exps block by block
 * (blocks of 256 x 256 similarities), then the gradients in a second pass over the blocks.
 *
 * @example Two pairs
 * ```ts
 * import { js } from "@softmargin/softmargin/cpu";
 * const a = { data: new Float32Array([1, 0, 0, 1]), shape: [2, 2] as const };
 * const r = js.clip.valueAndGrad({ a, b: a, scale: 1 });
 * console.log(r.loss, r.grads.scale); // 0.3133 = log(1 + 1/e), -0.2689 = -1/(1 + e)
 * ```
 */
export const clip: Definition<ClipInputs, ClipOptions, ClipGrads> = clipLoss;
