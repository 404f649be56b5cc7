/**
 * What the margin losses on cosines share (`arcface`, `cosface`, `normface`,
 * `combinedMargin`): the cosines are clamped to [-1, 1], every logit is `s * cos`
 * except the label's, which becomes `s * phi(cos_y)`, then mean cross-entropy. The
 * kernel is the one fused softmax cross-entropy kernel: the host computes `phi` and
 * its derivative for each row's label (N scalars) and the kernel does the rest.
 *
 * @module
 */
import type { LossDef } from "../loss.ts";
import type { CommonOptions, Labels, Matrix, Reduction, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { finishHardLabel } from "./cross_entropy.ts";
import { outBuffer } from "../kernels/core.ts";
import { type MarginSpec, type NonTarget, subcenter } from "../kernels/hard_label.ts";

/** Inputs of the margin losses on cosines. */
export interface MarginInputs {
  /**
   * Cosine between each embedding and each class centre `[N, C]` (clamped to [-1, 1]); with
   * `subcenters` K, `[N, C K]`, columns `j K .. j K + K - 1` class j's sub-centres.
   */
  cos: Tensor;
  /** One class index per row, in `[0, C)` or `ignoreIndex`. */
  labels: Labels;
}

/** Gradients of the margin losses on cosines. */
export interface MarginGrads {
  /** Gradient w.r.t. the cosines `[N, C K]` (0 where a cosine was outside [-1, 1], and at the K - 1 losing sub-centres). */
  cos: Matrix;
}

/** Options every margin loss on cosines takes. */
export interface MarginOptions extends CommonOptions {
  /** Logit scale s, finite, in (0, 1e6] (float32 logits `s cos`). */
  scale?: number;
  /** Rows with this label are ignored. @default -100 */
  ignoreIndex?: number;
  /** `"mean"`, `"sum"` or `"none"`. @default "mean" */
  reduction?: Reduction;
  /**
   * `"exact"`: the gradient of the target logit is `s * phi'(cos_y)`; `"constant"`:
   * the margin is treated as a constant, `s * (p - onehot)` as insightface's kernels do.
   * @default "exact"
   */
  marginGrad?: "exact" | "constant";
  /**
   * K >= 1 sub-centres per class (sub-center ArcFace, Deng et al. 2020; PML's
   * `SubCenterArcFaceLoss`): `cos` is `[N, C K]`, columns `j K .. j K + K - 1` are class j's;
   * the class cosine is their maximum after the clamp (ties to the smaller column) and its
   * gradient goes to that column alone. Labels are classes in `[0, C)`; every other rule acts
   * on the class cosines. An integer >= 1. @default 1
   */
  subcenters?: number;
}

/**
 * Checks `subcenters` K against the `count` columns of `name` (`C K`, a multiple of K; the head's W:
 * its rows, `what` "rows"): `[K, C]`.
 */
export function subcentersOf(
  o: { subcenters?: unknown },
  name: string,
  count: number,
  what: "columns" | "rows" = "columns",
): [number, number] {
  const k = v.integer("options.subcenters", o.subcenters, 1);
  if (k < 1) throw new RangeError(`Expected options.subcenters to be an integer >= 1, got ${k}`);
  if (count % k !== 0) {
    throw new RangeError(
      `Expected ${name} to have a multiple of options.subcenters = ${k} ${what} (C classes of ${k} sub-centres), got ${count}`,
    );
  }
  return [k, count / k];
}

/** Class j's cosine in row i of `cos` `[N, c K]` (its winning sub-centre's value, before the clamp). */
export function classCos(cos: Float32Array, i: number, j: number, c: number, k: number): number {
  const at = (i * c + j) * k;
  return k === 1 ? cos[at] : cos[at + subcenter(cos, at, k)];
}

/**
 * The cosine used in derivatives that divide by `sqrt(1 - cos^2)` (unbounded at
 * +-1): clamped to `[-1 + 1e-6, 1 - 1e-6]`, so the gradient stays finite (at most
 * about 707 times the margin's sine) at cosines of exactly +-1.
 */
export function derivativeCos(x: number): number {
  return Math.min(1 - 1e-6, Math.max(-1 + 1e-6, x));
}

/** A target function: `phi(cos)` and `d phi / d cos`, for a cosine in [-1, 1], and `spec`, the same as data. */
export interface Phi {
  (x: number): [number, number];
  readonly spec: MarginSpec;
}

/** The target function `fn`, described by `spec`. */
export function makePhi(spec: MarginSpec, fn: (x: number) => [number, number]): Phi {
  return Object.assign(fn, { spec });
}

/**
 * Per row: the label's logit `s * phi(cos_y)` and its derivative w.r.t. `cos_y` (0 when
 * `cos_y` was outside [-1, 1]: the clamp passes no gradient), `[N, 2]` float64; rows
 * with a negative label (ignored, or a label another shard holds) are left 0.
 */
export function labelTargets(
  labels: Int32Array,
  phi: Phi | ((row: number) => Phi),
  scale: number,
  constant: boolean,
  labelCos: (row: number) => number,
): Float64Array {
  const n = labels.length, target = new Float64Array(2 * n);
  // (a function of the row without `spec`: a per-row margin)
  const phiOf = "spec" in phi ? () => phi : phi as (row: number) => Phi;
  for (let i = 0; i < n; i++) {
    if (labels[i] < 0) continue;
    const raw = labelCos(i);
    const x = Math.min(1, Math.max(-1, raw));
    const [value, slope] = phiOf(i)(x);
    target[2 * i] = scale * value;
    target[2 * i + 1] = x === raw || Number.isNaN(raw) ? scale * (constant ? 1 : slope) : 0;
  }
  return target;
}

/** A margin loss's checked options: the scale, the target function and `marginGrad: "constant"`. */
export interface MarginParsed {
  readonly scale: number;
  readonly phi: Phi;
  readonly constant: boolean;
  /** A per-row margin (ElasticFace; `parse` given N): row i's target function, else absent. */
  readonly phis?: readonly Phi[];
  /** The per-row margin arrays as checked (what a shard's record fingerprints); empty without. */
  readonly arrays?: readonly Float32Array[];
}

/** A margin loss's definition, with how it reads its options (for its class-sharded form). */
export type MarginDef<O> = LossDef<MarginInputs, O, MarginGrads, "hardLabel"> & {
  /** Checks the options; with `n` (the batch's rows) also a per-row margin's arrays. */
  readonly parse: (o: O, n?: number) => MarginParsed;
  readonly shard: "logits";
};

/** The inter-class options (SPEC §7) of `arcface` (all three), `cosface` and `combinedMargin` (the threshold). */
export interface InterClassOptions {
  /**
   * insightface's `interclass_filtering_threshold`: when > 0, every non-target cosine above
   * it is replaced by 0 (gradient 0) before the logits. In [0, 1]. @default 0
   */
  interclassFilteringThreshold?: number;
}

/** The margin options that may be a `Float32Array [N]`, one value per row (ElasticFace). */
export const ROW_MARGIN_KEYS = ["margin", "m2", "m3"] as const;

/** Whether an option value is a per-row array (validated by `v.vector`). */
export const isRowArray = (x: unknown) => x instanceof Float32Array || x instanceof Float64Array || Array.isArray(x);

/** The inter-class option keys a margin loss may take (`losses.sharded`'s too: `interTopK` with the step `topK`). */
export const INTER_KEYS = ["interclassFilteringThreshold", "interTopK", "interTopKMargin"] as const;

/**
 * The non-target transform of the inter-class options (src/kernels/hard_label.ts's
 * `NonTarget`): `interclassFilteringThreshold` T > 0 filters (`cut = T`); `interTopK` k > 0
 * makes the k largest (filtered) non-target class cosines of each row hard, with the logit
 * `s cos(theta_j - m') = s (x cos m' + sqrt(1 - x^2) sin m')` (ties to the smaller class; every
 * non-target when k >= C - 1). Undefined when both are off.
 */
export function interClass(
  o: InterClassOptions & { interTopK?: number; interTopKMargin?: number },
  keys: readonly string[],
  labels: Int32Array,
  cos: Float32Array,
  c: number,
  sub = 1,
): NonTarget | undefined {
  const inter = interTransform(o, keys);
  if (inter === undefined) return undefined;
  const { nonTarget, k } = inter;
  if (k === 0) return nonTarget;
  const { cut } = nonTarget;
  // (GPU-resident cosines: the WebGPU kernel finds the rows, `interTopK` of the problem; k >= C - 1 needs no cosine)
  if (v.onDevice(cos) && k < c - 1) return nonTarget;
  // Per row: thr = the k-th largest filtered non-target cosine, tie = the last column taken at thr.
  const n = labels.length, rows = new Float64Array(2 * n), row = new Float64Array(c - 1);
  // (the class cosines: with sub-centres each class's maximum)
  const value = (i: number, j: number) => {
    const v = Math.min(1, Math.max(-1, classCos(cos, i, j, c, sub)));
    return v > cut ? 0 : v;
  };
  for (let i = 0; i < n; i++) {
    const y = labels[i];
    rows[2 * i] = -Infinity;
    rows[2 * i + 1] = -1;
    if (y < 0 || k >= c - 1) continue;
    for (let j = 0, q = 0; j < c; j++) if (j !== y) row[q++] = value(i, j);
    row.sort();
    const thr = row[c - 1 - k];
    let need = k;
    for (let j = 0; j < c; j++) if (j !== y && value(i, j) > thr) need--;
    let tie = -1;
    for (let j = 0; j < c && need > 0; j++) {
      if (j !== y && value(i, j) === thr) [tie, need] = [j, need - 1];
    }
    rows[2 * i] = thr;
    rows[2 * i + 1] = tie;
  }
  return { ...nonTarget, rows };
}

/**
 * The inter-class options' non-target transform without its rows (`rows: null`), and `k`, interTopK
 * (k > 0: each row's threshold and tie are still to be found from its class cosines, as
 * {@linkcode interClass} does on the host and `marginHead`'s kernels do in a first pass). Undefined
 * when both are off.
 */
export function interTransform(
  o: InterClassOptions & { interTopK?: number; interTopKMargin?: number },
  keys: readonly string[],
): { nonTarget: NonTarget; k: number } | undefined {
  const threshold = keys.includes("interclassFilteringThreshold")
    ? v.number("options.interclassFilteringThreshold", o.interclassFilteringThreshold, 0, { min: 0, max: 1 })
    : 0;
  const k = keys.includes("interTopK") ? v.integer("options.interTopK", o.interTopK, 0) : 0;
  if (k < 0) throw new RangeError(`Expected options.interTopK to be an integer >= 0, got ${k}`);
  const m = keys.includes("interTopKMargin")
    ? v.number("options.interTopKMargin", o.interTopKMargin, 0.06, { min: 0, max: Math.PI, maxExclusive: true })
    : 0;
  if (threshold === 0 && k === 0) return undefined;
  const cut = threshold > 0 ? threshold : Infinity;
  if (k === 0) return { nonTarget: { lo: -1, hi: 1, cut, a: 0, b: 0, g: 0, rows: null }, k };
  return { nonTarget: { lo: -1, hi: 1, cut, a: Math.cos(m), b: 0, g: Math.sin(m), rows: null }, k };
}

/**
 * Defines a margin loss from how its options give the scale and the target function
 * (`inter`: the inter-class options it takes, of {@linkcode INTER_KEYS}).
 */
export function marginLoss<O extends MarginOptions>(
  name: string,
  defaultScale: number,
  targetFunction: (o: O) => Phi,
  keys: readonly string[],
  inter: readonly (typeof INTER_KEYS)[number][] = [],
): MarginDef<O> {
  const parse = (o: O, n?: number): MarginParsed => {
    // A per-row margin (ElasticFace): row i's target function from its own value of each array option.
    const given = o as Record<string, unknown>;
    const rowKeys = n === undefined ? [] : ROW_MARGIN_KEYS.filter((k) => keys.includes(k) && isRowArray(given[k]));
    const arrays = rowKeys.map((k) => v.vector(`options.${k}`, given[k], n!)!);
    const at = (i: number) => Object.fromEntries(rowKeys.map((k, q) => [k, i < 0 ? undefined : arrays[q][i]]));
    const parsed = {
      scale: v.scale(o.scale, defaultScale),
      constant: v.oneOf("options.marginGrad", o.marginGrad, ["exact", "constant"] as const, "exact") === "constant",
      phi: targetFunction({ ...o, ...at(-1) }),
    };
    if (rowKeys.length === 0) return parsed;
    return { ...parsed, arrays, phis: Array.from({ length: n! }, (_, i) => targetFunction({ ...o, ...at(i) })) };
  };
  return {
    name,
    parse,
    shard: "logits",
    kernel: "hardLabel",
    inputs: ["cos", "labels"],
    options: ["scale", ...keys, ...inter, "ignoreIndex", "reduction", "marginGrad", "subcenters"],
    grads: ["cos"],
    prepare(inputs, options, grad, upstream) {
      const o = v.options(options);
      v.inputs(inputs);
      const [n, cols] = v.batch("cos", inputs.cos);
      const [sub, c] = subcentersOf(o, "cos", cols);
      const ignoreIndex = v.integer("options.ignoreIndex", o.ignoreIndex, -100);
      const labels = v.labels("labels", inputs.labels, n, c, ignoreIndex);
      const cos = v.values(inputs.cos);
      if (o.checkFinite) v.finite("cos", cos, cols);
      const { scale, constant, phi, phis } = parse(o, n);
      const nonTarget = interClass(o, inter, labels, cos, c, sub);
      const topK = v.onDevice(cos) && nonTarget?.rows === null ? interTransform(o, inter)?.k ?? 0 : 0;
      const reduction = v.reduction(o.reduction);
      let count = 0;
      for (let i = 0; i < n; i++) if (labels[i] >= 0) count++;
      // (the WebGPU kernel evaluates `margin` itself: a GPU-resident `cos` is not read here)
      const target = v.onDevice(cos) ? null : labelTargets(
        labels,
        phis ? (i) => phis[i] : phi,
        scale,
        constant,
        (i) => classCos(cos, i, labels[i], c, sub),
      );
      const scales = grad ? v.rowScales(reduction, upstream, n, count, (i) => labels[i] < 0) : new Float64Array(0);
      return {
        grad,
        n,
        c,
        logits: cos,
        labels,
        weight: null,
        smoothing: 0,
        gamma: 0,
        scale,
        clamp: true,
        target,
        // (with a per-row margin on host cosines no target as data: every backend takes the host's `target`;
        // on GPU-resident ones the WebGPU kernel evaluates each row's own, m1 and the branch `phi`'s)
        margin: phis && !v.onDevice(cos) ? undefined : { kind: "margin", phi: phi.spec, constant },
        ...(phis && v.onDevice(cos) ? { rowMargins: phis.map((f) => f.spec) } : {}),
        ...(topK > 0 ? { interTopK: topK } : {}),
        nonTarget,
        scales,
        out: grad ? outBuffer(o, "cos", n, cols) : null,
        reduction,
        denominator: count,
        ...(sub > 1 ? { subcenters: sub } : {}),
      };
    },
    finish(p, raw) {
      const r = finishHardLabel(p, raw.rows[0], raw.grads.logits);
      return { loss: r.loss, grads: { cos: r.grads.logits } };
    },
  };
}
