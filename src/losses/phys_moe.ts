/**
 * `physMoe`: the full objective of a physics-constrained mixture of experts for a
 * long-tailed, hierarchical label space: a rule-aware contrastive term on the features,
 * iclMoe's division of labour and collaboration over the experts, a hierarchical
 * cross-entropy on the gated ensemble, and a centre regularisation, in one call.
 *
 * A composite: its terms are the problems of `physicsContrastive`, `iclMoe`,
 * `hierarchical` and `centerRegularization`, prepared by those definitions, then a
 * `combine` term (src/losses/combine.ts) that adds their gradients together. They share
 * one gated ensemble `fine = sum_e gating[:, e] z_e`, formed by the experts term (iclMoe's
 * constant collaboration target) and linked as hierarchical's differentiable fine logits;
 * each expert's softmax is taken once, for its CE/focal and its collaboration term. Every
 * backend runs the same terms: on WebGPU with GPU-resident inputs all of them in one
 * submission, the gradients combined there and only the parts read back.
 *
 * @module
 */
import { compositeDef, type Definition } from "../loss.ts";
import type { Ref } from "../kernels/mod.ts";
import { lin } from "../kernels/deferred.ts";
import type { CommonOptions, Labels, Matrix, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import type { CenterRegProblem } from "../kernels/center_reg.ts";
import { centerRegularizationLoss } from "./center_regularization.ts";
import { type CombineProblem, LINKED } from "../kernels/combine.ts";
import { gradMatrix, outBuffer } from "../kernels/core.ts";
import { expertInputs } from "./experts.ts";
import type { ExpertsProblem } from "../kernels/experts.ts";
import { hierarchicalLoss } from "./hierarchical.ts";
import type { HierarchicalProblem } from "../kernels/hierarchical.ts";
import { gatingInput, iclMoeLoss } from "./icl_moe.ts";
import type { ContrastiveProblem } from "../kernels/contrastive.ts";
import { physicsContrastiveLoss, ruleMatrix } from "./physics_contrastive.ts";

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
  /** Weight of the contrastive term, finite, in [-1e6, 1e6]. @default 0.1 */
  lambdaScl?: number;
  /** Weight of the hierarchical term, finite, in [-1e6, 1e6]. @default 1 */
  lambdaHier?: number;
  /** Weight of the centre regularisation, finite, in [-1e6, 1e6]. @default 0.001 */
  lambdaReg?: number;
  /** Whether the contrastive term is included. @default true */
  contrast?: boolean;
  /** The contrastive term's temperature, finite, >= 1e-6. @default 0.07 */
  temperature?: number;
  /** The contrastive term's rule threshold. @default 0.8 */
  threshold?: number;
  /** The tail experts' focal exponent, in [0, 100]. @default 2 */
  gamma?: number;
  /** The centre regularisation's prototype weight, in [-1e6, 1e6]. @default 0.5 */
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

/** The prepared `physMoe` problem: its terms' problems and what combines their gradients. */
export interface PhysMoeProblem {
  readonly grad: boolean;
  readonly b: number;
  readonly c: number;
  readonly d: number;
  readonly e: number;
  readonly k: number;
  readonly scl: ContrastiveProblem | null;
  readonly experts: ExpertsProblem;
  /** The hierarchical term; its fine logits are the experts term's gated ensemble (a link). */
  readonly hier: HierarchicalProblem;
  readonly reg: CenterRegProblem;
  /** The combination of the terms' gradients (null without gradients). */
  readonly combine: CombineProblem | null;
  readonly weights: { scl: number; hier: number; reg: number };
}

/** Where a term stands in `physMoe`'s list: the contrastive term only with `contrast`. */
const at = (p: PhysMoeProblem) => {
  const o = p.scl ? 1 : 0;
  return { scl: 0, experts: o, hier: o + 1, reg: o + 2, combine: o + 3 };
};

/**
 * The physics-constrained mixture-of-experts objective, in one call:
 * `lambdaScl physicsContrastive(features, labels, rule) + L_dol + L_col + lambdaHier hierarchical(coarse, fine)
 * + lambdaReg centerRegularization(features, centers, labels, rule)` with iclMoe's
 * `L_dol`, `L_col` and the gated ensemble `fine = sum_e gating[:, e] z_e` (differentiable
 * here, a constant target in `L_col`); `contrast: false` leaves the first term out.
 * Defaults `lambdaScl` 0.1, `lambdaHier` 1, `lambdaReg` 0.001, and the parts' own
 * (`temperature`, `threshold`, `gamma`, `prototypeWeight`, `tailExperts`). Returns the
 * total, the unweighted parts `scl`, `dol`, `col`, `hier`, `reg`, and gradients w.r.t.
 * features, coarse, expertLogits, gating and centers. On WebGPU, GPU-resident inputs
 * (`{ buffer, shape }`, the `rule` excepted) run every term and the combination of their
 * gradients in one submission that reads back only the parts; the gradients stay on the GPU.
 *
 * @example A tiny batch
 * ```ts
 * import { js } from "@softmargin/softmargin/cpu";
 * const m = (rows: number, cols: number, values: number[]) => ({ data: new Float32Array(values), shape: [rows, cols] as const });
 * const r = js.physMoe.valueAndGrad({
 *   features: m(2, 2, [1, 0, 0, 1]),
 *   coarse: m(2, 1, [0, 0]),
 *   expertLogits: [m(2, 2, [1, 0, 0, 1]), m(2, 2, [2, 0, 0, 2])],
 *   gating: m(2, 2, [0.5, 0.5, 0.5, 0.5]),
 *   labels: [0, 1],
 *   rule: m(2, 2, [1, 0, 0, 1]),
 *   fineToCoarse: [0, 0],
 *   centers: m(2, 2, [1, 0, 0, 1]),
 * }, { tailExperts: [1] });
 * console.log(r.loss, r.scl, r.hier, r.grads.gating.shape); // the total, two of its parts, [2, 2]
 * ```
 */
export const physMoe: Definition<PhysMoeInputs, PhysMoeOptions, PhysMoeGrads, PhysMoeParts> = compositeDef<
  PhysMoeInputs,
  PhysMoeOptions,
  PhysMoeGrads,
  PhysMoeProblem,
  PhysMoeParts
>({
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
  prepare(given, o, grad, upstream) {
    // A GPU-resident input becomes its stand-in once, shared by every term, so that
    // `checkFinite` marks it under physMoe's name and the terms read it back once.
    const standIn = (m: Tensor) => (v.isGpuMatrix(m) ? v.values(m) as unknown as Tensor : m);
    const inputs = {
      ...given,
      features: standIn(given.features),
      coarse: standIn(given.coarse),
      expertLogits: Array.isArray(given.expertLogits) ? given.expertLogits.map(standIn) : given.expertLogits,
      gating: standIn(given.gating),
      centers: standIn(given.centers),
    };
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
    const lambdaScl = v.weight("options.lambdaScl", o.lambdaScl, 0.1);
    const lambdaHier = v.weight("options.lambdaHier", o.lambdaHier, 1);
    const lambdaReg = v.weight("options.lambdaReg", o.lambdaReg, 0.001);
    const contrast = v.boolean("options.contrast", o.contrast, true);
    // The contrastive options are checked even when the term is left out.
    v.temperature(o.temperature, 0.07);
    v.number("options.threshold", o.threshold, 0.8);
    const up = grad ? v.upstream(upstream) : 1;
    // Checked above under physMoe's names.
    const check = { checkFinite: false };
    const out = o.out ?? {};
    // The gradients stay where the inputs are: on the GPU when any of them is there.
    const resident = inputs.expertLogits.some(v.isGpuMatrix) ||
      [inputs.features, inputs.coarse, inputs.gating, inputs.centers].some(v.isGpuMatrix);
    for (const [key, m] of Object.entries(out)) {
      if (m === undefined) continue;
      const list = Array.isArray(m) ? m : [m];
      const at = list.findIndex((x) => v.isGpuMatrix(x) !== resident);
      if (at < 0) continue;
      const name = Array.isArray(m) ? `options.out.${key}[${at}]` : `options.out.${key}`;
      throw new TypeError(
        `Expected ${name} to be ${
          resident ? "a GPU matrix { buffer, shape } (an input is on the GPU)" : "{ data: Float32Array, shape }"
        }, got ${resident ? "a Float32Array" : "a GPUBuffer"}`,
      );
    }
    const f = { f: inputs.features, labels: inputs.labels, rule: inputs.rule };
    // The expert and centre gradients are the terms' own, and the features' gradient is the
    // centre term's with the contrastive term's added: the caller's buffers go to those terms.
    const experts = iclMoeLoss.prepare(
      { expertLogits: inputs.expertLogits, gating: inputs.gating, labels: inputs.labels },
      { ...check, tailExperts: o.tailExperts, gamma: o.gamma, out: grad ? pick(out, "expertLogits") : undefined },
      grad,
      up,
    );
    const gatingOut = grad ? outBuffer(o, "gating", b, e) : null;
    // A stand-in of the fine logits' shape (the first expert's logits, never read): the
    // term's link binds the experts' gated ensemble before it runs.
    const fine = inputs.expertLogits[0];
    return {
      grad,
      b,
      c,
      d,
      e,
      k,
      scl: contrast
        ? physicsContrastiveLoss.prepare(
          f,
          { ...check, temperature: o.temperature, threshold: o.threshold },
          grad,
          up * lambdaScl,
        )
        : null,
      experts,
      hier: hierarchicalLoss.prepare(
        { coarse: inputs.coarse, fine, labels: inputs.labels, fineToCoarse: inputs.fineToCoarse },
        { ...check, out: pick(out, "coarse") },
        grad,
        up * lambdaHier,
      ),
      reg: centerRegularizationLoss.prepare(
        { ...f, centers: inputs.centers },
        {
          ...check,
          prototypeWeight: o.prototypeWeight,
          out: { ...(out.features ? { f: out.features } : {}), ...pick(out, "centers") },
        },
        grad,
        up * lambdaReg,
      ),
      // features: the contrastive and the regularisation terms; expert logits: their own
      // terms plus gating * d(hier)/d(fine); gating: sum_c z_e * d(hier)/d(fine).
      combine: grad
        ? {
          grad,
          sums: contrast ? [[LINKED, LINKED]] : [],
          // Copies of host values (a view into WebAssembly memory would be detached if a term grows it).
          gated: {
            b,
            c,
            e,
            logits: experts.logits.map((z) => (v.onDevice(z) ? z : z.slice())),
            gating: v.onDevice(gating) ? gating : gating.slice(),
            dFine: LINKED,
            into: experts.logits.map(() => LINKED),
            out: gatingOut,
          },
        }
        : null,
      weights: { scl: contrast ? lambdaScl : 0, hier: lambdaHier, reg: lambdaReg },
    };
  },
  terms: (p) => {
    const t = at(p);
    const links: Record<string, Ref> = { "gated.dFine": [t.hier, "fine"] };
    for (let q = 0; q < p.e; q++) links[`gated.into.${q}`] = [t.experts, `expertLogits.${q}`];
    if (p.scl) Object.assign(links, { "sums.0.0": [t.reg, "f"], "sums.0.1": [t.scl, "f"] });
    return [
      ...(p.scl ? [{ kernel: "contrastive" as const, problem: p.scl }] : []),
      { kernel: "experts", problem: p.experts },
      { kernel: "hierarchical", problem: p.hier, links: { fine: [t.experts, "ensemble"] } },
      { kernel: "centerReg", problem: p.reg },
      ...(p.combine ? [{ kernel: "combine" as const, problem: p.combine, links }] : []),
    ];
  },
  finish(p, raws) {
    const t = at(p);
    const experts = iclMoeLoss.finish(p.experts, raws[t.experts]) as unknown as { dol: number; col: number } & {
      grads: { expertLogits: Matrix[] };
    };
    const hier = hierarchicalLoss.finish(p.hier, raws[t.hier]);
    const reg = centerRegularizationLoss.finish(p.reg, raws[t.reg]);
    const parts = {
      scl: p.scl ? physicsContrastiveLoss.finish(p.scl, raws[t.scl]).loss as number : 0,
      dol: experts.dol,
      col: experts.col,
      hier: hier.loss as number,
      reg: reg.loss as number,
    };
    const loss = lin(
      0,
      [parts.scl, p.weights.scl],
      [parts.dol, 1],
      [parts.col, 1],
      [parts.hier, p.weights.hier],
      [parts.reg, p.weights.reg],
    );
    const { b, e } = p;
    const gating = p.combine ? raws[t.combine].grads.gating : undefined;
    return {
      loss,
      ...parts,
      grads: {
        features: reg.grads.f,
        coarse: hier.grads.coarse,
        expertLogits: experts.grads.expertLogits,
        gating: gradMatrix(p.combine?.gated?.out ?? null, gating, b, e),
        centers: reg.grads.centers,
      },
    };
  },
});

/** `{ [key]: out[key] }` when the caller gave that buffer, else undefined. */
function pick(out: Record<string, unknown>, key: string): Record<string, never> | undefined {
  return out[key] === undefined ? undefined : { [key]: out[key] } as Record<string, never>;
}
