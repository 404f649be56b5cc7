/**
 * `physMoe`: the full objective of a physics-constrained mixture of experts for a
 * long-tailed, hierarchical label space: a rule-aware contrastive term on the features,
 * iclMoe's division of labour and collaboration over the experts, a hierarchical
 * cross-entropy on the gated ensemble, and a centre regularisation, in one call.
 *
 * A composite: its terms are the problems of `physicsContrastive`, `iclMoe`,
 * `hierarchical` and `centerRegularization`, prepared by those definitions and sharing
 * one gated ensemble `fine = sum_e gating[:, e] z_e` (iclMoe's constant collaboration
 * target and hierarchical's differentiable fine logits); each expert's softmax is taken
 * once, for its CE/focal and its collaboration term.
 *
 * @module
 */
import type { CompositeDef, Raw } from "../loss.ts";
import type { CommonOptions, Labels, Matrix, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { type CenterRegProblem, centerRegularization } from "./center_regularization.ts";
import { gradMatrix, outBuffer, outList } from "./cross_entropy.ts";
import { ensemble, expertInputs, type ExpertsProblem } from "./experts.ts";
import { scalarUpstream } from "./feature_diversity.ts";
import { hierarchical, type HierarchicalProblem } from "./hierarchical.ts";
import { gatingInput, iclMoe } from "./icl_moe.ts";
import { type ContrastiveProblem, physicsContrastive, ruleMatrix } from "./physics_contrastive.ts";

/** Inputs of `physMoe`. */
export interface PhysMoeInputs {
  /** Features `[B, D]`, normalised by the caller. */
  features: Tensor;
  /** Coarse logits `[B, K]`. */
  coarse: Tensor;
  /** One fine-logit matrix `[B, C]` per expert. */
  expertLogits: readonly Tensor[];
  /** Gating weights `[B, E]`. */
  gating: Tensor;
  /** Fine class of each row, in `[0, C)`. */
  labels: Labels;
  /** Rule similarity of the fine classes `[C, C]`, values in [0, 1]. */
  rule: Tensor;
  /** The coarse class of each fine class `[C]`, in `[0, K)`. */
  fineToCoarse: Int32Array | readonly number[];
  /** Class centres `[C, D]`. */
  centers: Tensor;
}

/** Options of `physMoe`. */
export interface PhysMoeOptions extends CommonOptions {
  /** Indices of the tail experts (focal loss). @default [] */
  tailExperts?: readonly number[] | Int32Array;
  /** Weight of the contrastive term. @default 0.1 */
  lambdaScl?: number;
  /** Weight of the hierarchical term. @default 1 */
  lambdaHier?: number;
  /** Weight of the centre regularisation. @default 0.001 */
  lambdaReg?: number;
  /** Whether the contrastive term is included. @default true */
  contrast?: boolean;
  /** The contrastive term's temperature. @default 0.07 */
  temperature?: number;
  /** The contrastive term's rule threshold. @default 0.8 */
  threshold?: number;
  /** The tail experts' focal exponent. @default 2 */
  gamma?: number;
  /** The centre regularisation's prototype weight. @default 0.5 */
  prototypeWeight?: number;
}

/** Gradients of `physMoe`. */
export interface PhysMoeGrads {
  /** Gradient w.r.t. `features`. */
  features: Matrix;
  /** Gradient w.r.t. `coarse`. */
  coarse: Matrix;
  /** Gradients w.r.t. each of `expertLogits`. */
  expertLogits: Matrix[];
  /** Gradient w.r.t. `gating`. */
  gating: Matrix;
  /** Gradient w.r.t. `centers`. */
  centers: Matrix;
}

/** The parts of `physMoe` (unweighted). */
export interface PhysMoeParts {
  /** `physicsContrastive(features, labels, rule)` (0 without `contrast`). */
  scl: number;
  /** iclMoe's division of labour. */
  dol: number;
  /** iclMoe's collaboration. */
  col: number;
  /** `hierarchical(coarse, fine, labels, fineToCoarse)`. */
  hier: number;
  /** `centerRegularization(features, centers, labels, rule)`. */
  reg: number;
}

/** The prepared `physMoe` problem: its terms' problems and what combines them. */
export interface PhysMoeProblem {
  readonly grad: boolean;
  readonly b: number;
  readonly c: number;
  readonly d: number;
  readonly e: number;
  readonly k: number;
  /**
   * Copies of the gating and the expert logits for the host-side combination of the
   * gradients (a view into WebAssembly memory would be detached if a term grows it).
   */
  readonly gating: Float32Array;
  readonly logits: Float32Array[];
  readonly scl: ContrastiveProblem | null;
  readonly experts: ExpertsProblem;
  readonly hier: HierarchicalProblem;
  readonly reg: CenterRegProblem;
  readonly weights: { scl: number; hier: number; reg: number };
  readonly out: {
    features: Matrix | null;
    coarse: Matrix | null;
    gating: Matrix | null;
    centers: Matrix | null;
    expertLogits: (Matrix | null)[];
  };
}

/** The definition of `physMoe`. */
export const physMoe: CompositeDef<PhysMoeInputs, PhysMoeOptions, PhysMoeGrads, PhysMoeProblem> = {
  name: "physMoe",
  inputs: ["features", "coarse", "expertLogits", "gating", "labels", "rule", "fineToCoarse", "centers"],
  options: [
    "tailExperts",
    "lambdaScl",
    "lambdaHier",
    "lambdaReg",
    "contrast",
    "temperature",
    "threshold",
    "gamma",
    "prototypeWeight",
  ],
  grads: ["features", "coarse", "expertLogits", "gating", "centers"],
  prepare(inputs, o, grad, upstream) {
    // The terms' gradients are combined on the host (finish), so every input is a host matrix.
    for (const key of ["features", "coarse", "gating", "rule", "centers", "expertLogits"] as const) {
      const value = inputs?.[key];
      const list = Array.isArray(value) ? value : [value];
      const at = list.findIndex((m) => v.isGpuMatrix(m));
      if (at >= 0) {
        const name = Array.isArray(value) ? `${key}[${at}]` : key;
        throw new TypeError(
          `Expected ${name} to be a host matrix { data: Float32Array, shape } (physMoe combines its terms' gradients on the host), got a GPUBuffer`,
        );
      }
    }
    // physMoe's own names first (the terms' definitions check again under theirs).
    const [b, d] = v.batch("features", inputs.features);
    const [, k] = v.matrix("coarse", inputs.coarse, b);
    if (k === 0) throw new RangeError("Expected coarse to have at least one column (one per coarse class), got 0");
    const { e, b: rows, c } = expertInputs(inputs, o);
    if (rows !== b) {
      throw new RangeError(`Expected expertLogits[0].shape[0] to be ${b} (one row per feature), got ${rows}`);
    }
    const gating = gatingInput(inputs.gating, b, e, o.checkFinite);
    ruleMatrix("rule", inputs.rule, c);
    v.integers("fineToCoarse", inputs.fineToCoarse, c, k);
    v.matrix("centers", inputs.centers, c, d);
    if (o.checkFinite) {
      v.finite("features", v.values(inputs.features), d);
      v.finite("coarse", v.values(inputs.coarse), k);
      v.finite("centers", v.values(inputs.centers), d);
    }
    const lambdaScl = v.number("options.lambdaScl", o.lambdaScl, 0.1);
    const lambdaHier = v.number("options.lambdaHier", o.lambdaHier, 1);
    const lambdaReg = v.number("options.lambdaReg", o.lambdaReg, 0.001);
    const contrast = v.boolean("options.contrast", o.contrast, true);
    // The contrastive options are checked even when the term is left out.
    v.number("options.temperature", o.temperature, 0.07, { min: 0, minExclusive: true });
    v.number("options.threshold", o.threshold, 0.8);
    const up = grad ? scalarUpstream(upstream) : 1;
    // Checked above under physMoe's names.
    const check = { checkFinite: false };
    const f = { f: inputs.features, labels: inputs.labels, rule: inputs.rule };
    const experts = iclMoe.prepare(
      { expertLogits: inputs.expertLogits, gating: inputs.gating, labels: inputs.labels },
      { ...check, tailExperts: o.tailExperts, gamma: o.gamma },
      grad,
      up,
    );
    // The gated ensemble, once: iclMoe's constant target and hierarchical's fine logits.
    const fine = { data: ensemble(gating, experts.logits, b, c), shape: [b, c] as const };
    return {
      grad,
      b,
      c,
      d,
      e,
      k,
      gating: grad ? gating.slice() : gating,
      logits: grad ? experts.logits.map((z) => z.slice()) : [],
      scl: contrast
        ? physicsContrastive.prepare(
          f,
          { ...check, temperature: o.temperature, threshold: o.threshold },
          grad,
          up * lambdaScl,
        )
        : null,
      experts,
      // The coarse and centre gradients are the terms' own: their out buffers go to them.
      hier: hierarchical.prepare(
        { coarse: inputs.coarse, fine, labels: inputs.labels, fineToCoarse: inputs.fineToCoarse },
        { ...check, out: o.out?.coarse ? { coarse: o.out.coarse } : undefined },
        grad,
        up * lambdaHier,
      ),
      reg: centerRegularization.prepare(
        { ...f, centers: inputs.centers },
        { ...check, prototypeWeight: o.prototypeWeight, out: o.out?.centers ? { centers: o.out.centers } : undefined },
        grad,
        up * lambdaReg,
      ),
      weights: { scl: contrast ? lambdaScl : 0, hier: lambdaHier, reg: lambdaReg },
      out: {
        features: grad ? outBuffer(o, "features", b, d) : null,
        coarse: grad ? outBuffer(o, "coarse", b, k) : null,
        gating: grad ? outBuffer(o, "gating", b, e) : null,
        centers: grad ? outBuffer(o, "centers", c, d) : null,
        expertLogits: grad ? outList(o, "expertLogits", e, b, c) : [],
      },
    };
  },
  terms: (p) => [
    ...(p.scl ? [{ kernel: "contrastive" as const, problem: p.scl }] : []),
    { kernel: "experts", problem: p.experts },
    { kernel: "hierarchical", problem: p.hier },
    { kernel: "centerReg", problem: p.reg },
  ],
  finish(p, raws) {
    const [scl, experts, hier, reg] = p.scl ? raws : [null, ...raws] as (Raw | null)[] as Raw[];
    const { dol, col } = iclMoe.finish(p.experts, experts) as unknown as { dol: number; col: number };
    const parts = {
      scl: scl ? physicsContrastive.finish(p.scl!, scl).loss as number : 0,
      dol,
      col,
      hier: hierarchical.finish(p.hier, hier).loss as number,
      reg: centerRegularization.finish(p.reg, reg).loss as number,
    };
    const loss = p.weights.scl * parts.scl + parts.dol + parts.col + p.weights.hier * parts.hier +
      p.weights.reg * parts.reg;
    const { b, c, d, e } = p;
    // features: the contrastive and the regularisation terms; expert logits: their own
    // terms plus gating * d(hier)/d(fine); gating: sum_c z_e * d(hier)/d(fine).
    const features = p.out.features?.data ?? new Float32Array(p.grad ? b * d : 0);
    const gating = p.out.gating?.data ?? new Float32Array(p.grad ? b * e : 0);
    const expertLogits: Matrix[] = [];
    if (p.grad) {
      const fs = scl?.grads.f, fr = reg.grads.f;
      for (let i = 0; i < b * d; i++) features[i] = (fs ? fs[i] : 0) + fr[i];
      const dFine = hier.grads.fine;
      for (let k = 0; k < e; k++) {
        const g = experts.grads[`expertLogits.${k}`], z = p.logits[k];
        const into = p.out.expertLogits[k]?.data ?? g;
        for (let i = 0; i < b; i++) {
          const w = p.gating[i * e + k];
          let dot = 0;
          for (let j = 0; j < c; j++) {
            const t = dFine[i * c + j];
            dot += z[i * c + j] * t;
            into[i * c + j] = g[i * c + j] + w * t;
          }
          gating[i * e + k] = dot;
        }
        expertLogits.push(p.out.expertLogits[k] ?? { data: into, shape: [b, c] });
      }
    }
    return {
      loss,
      scl: parts.scl,
      dol: parts.dol,
      col: parts.col,
      hier: parts.hier,
      reg: parts.reg,
      grads: {
        features: p.out.features ?? { data: features, shape: [b, d] },
        coarse: gradMatrix(p.out.coarse, hier.grads.coarse, b, p.k),
        expertLogits,
        gating: p.out.gating ?? { data: gating, shape: [b, e] },
        centers: gradMatrix(p.out.centers, reg.grads.centers, c, d),
      },
    };
  },
};
