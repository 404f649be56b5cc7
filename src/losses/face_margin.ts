/**
 * What the margin losses of current face recognition share (`adaface`, `curricularFace`,
 * `magface`, SPEC §7): the inputs and options of the margin losses on cosines, a label
 * target computed per row on the host (from the row's cosine, its norm and the batch
 * state) and the non-target transform (`NonTarget`), run by the one fused softmax
 * cross-entropy kernel (`hardLabel`), as `src/losses/margin.ts`'s losses are.
 *
 * @module
 */
import type { Labels, Reduction, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { outBuffer } from "../kernels/core.ts";
import type { FaceTarget, HardLabelProblem, NonTarget } from "../kernels/hard_label.ts";
import { classCos, type MarginOptions, subcentersOf } from "./margin.ts";

/** Inputs every face margin loss takes (each adds its own: `norms`, `state`). */
export interface FaceInputs {
  /**
   * Cosine between each embedding and each class centre `[N, C]` (`[N, C K]` with `subcenters` K); on
   * the WebGPU backend a GPU-resident matrix too (its batch statistics and targets are then computed on the GPU).
   */
  cos: Tensor;
  /** One class index per row, in `[0, C)` or `ignoreIndex`. */
  labels: Labels;
}

/** The checked inputs and common options of a face margin loss. */
export interface FaceBase {
  readonly n: number;
  /** Classes C (`cos` has C K columns). */
  readonly c: number;
  /** Sub-centres K per class. */
  readonly sub: number;
  readonly cos: Float32Array;
  /** Labels with ignored rows -1. */
  readonly labels: Int32Array;
  readonly scale: number;
  /** `marginGrad: "constant"`. */
  readonly constant: boolean;
  readonly reduction: Reduction;
  /** The number of non-ignored rows. */
  readonly count: number;
}

/** Checks `cos`, `labels` and the options every margin loss on cosines takes. */
export function faceBase(inputs: FaceInputs, o: MarginOptions, defaultScale: number): FaceBase {
  v.inputs(inputs);
  const [n, cols] = v.batch("cos", inputs.cos);
  const [sub, c] = subcentersOf(o, "cos", cols);
  const ignoreIndex = v.integer("options.ignoreIndex", o.ignoreIndex, -100);
  const labels = v.labels("labels", inputs.labels, n, c, ignoreIndex);
  const cos = v.values(inputs.cos);
  if (o.checkFinite) v.finite("cos", cos, cols);
  const scale = v.scale(o.scale, defaultScale);
  const constant = v.oneOf("options.marginGrad", o.marginGrad, ["exact", "constant"] as const, "exact") === "constant";
  const reduction = v.reduction(o.reduction);
  let count = 0;
  for (let i = 0; i < n; i++) if (labels[i] >= 0) count++;
  return { n, c, sub, cos, labels, scale, constant, reduction, count };
}

/** The options every face margin loss takes besides its own. */
export const FACE_KEYS = ["scale", "ignoreIndex", "reduction", "marginGrad", "subcenters"] as const;

/**
 * The hard-label problem of a face margin loss: the label targets `target` (`[N, 2]`: the
 * label's logit and its derivative w.r.t. `cos_y`, ignored rows 0) and the non-target
 * transform, mean over the non-ignored rows.
 */
export function faceProblem(
  b: FaceBase,
  o: MarginOptions,
  grad: boolean,
  upstream: unknown,
  target: Float64Array | null,
  nonTarget: NonTarget | undefined,
): HardLabelProblem {
  const { n, c, labels, reduction, count } = b;
  const scales = grad
    ? v.rowScales(reduction, upstream as number | undefined, n, count, (i) => labels[i] < 0)
    : new Float64Array(0);
  return {
    grad,
    n,
    c,
    logits: b.cos,
    labels,
    weight: null,
    smoothing: 0,
    gamma: 0,
    scale: b.scale,
    clamp: true,
    target,
    scales,
    out: grad ? outBuffer(o, "cos", n, c * b.sub) : null,
    reduction,
    denominator: count,
    nonTarget,
    ...(b.sub > 1 ? { subcenters: b.sub } : {}),
  };
}

/**
 * Checks a per-row vector input (`norms`): a `Float32Array`, `Float64Array` or array of `n`
 * numbers (non-finite values propagate, as in every other input); returns a float64 copy.
 */
export function rowVector(name: string, value: unknown, n: number): Float64Array {
  if (!(value instanceof Float32Array) && !(value instanceof Float64Array) && !Array.isArray(value)) {
    throw new TypeError(`Expected ${name} to be a Float32Array or an array of ${n} numbers, got ${v.show(value)}`);
  }
  const src = value as ArrayLike<unknown>;
  if (src.length !== n) throw new RangeError(`Expected ${name} to have ${n} values (one per row), got ${src.length}`);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const x = src[i];
    if (typeof x !== "number") throw new TypeError(`Expected ${name}[${i}] to be a number, got ${v.show(x)}`);
    out[i] = x;
  }
  return out;
}

/**
 * A face margin loss on GPU-resident cosines (`b.cos` on the device): its rows as data for
 * the WebGPU kernel (src/kernels/hard_label.ts's `FaceTarget`), no host target.
 */
export function faceOnGpu(
  b: FaceBase,
  o: MarginOptions,
  grad: boolean,
  upstream: unknown,
  face: Omit<FaceTarget, "constant">,
  nonTarget: NonTarget | undefined,
): HardLabelProblem {
  return { ...faceProblem(b, o, grad, upstream, null, nonTarget), face: { ...face, constant: b.constant } };
}

/** A face margin kind's rows as data from its options (`FaceTarget` but the inputs), and its non-target transform. */
export type FaceData = Omit<FaceTarget, "norms" | "state" | "constant"> & { readonly nonTarget?: NonTarget };

/** The state fields of the stateful face kinds and their least values. */
export const STATE_FIELDS: Record<FaceTarget["kind"], readonly [string, number][]> = {
  adaface: [["mean", -Infinity], ["std", 0]],
  curricularFace: [["t", -Infinity]],
  magface: [],
};

/**
 * The norms of a face margin loss on GPU-resident cosines: host values (as float32) or a
 * GPU-resident matrix of `n` values (`[N, 1]` or `[1, N]`).
 */
export function gpuNorms(name: string, value: unknown, n: number): Float32Array {
  if (!v.isGpuMatrix(value)) return Float32Array.from(rowVector(name, value, n));
  if (value.shape[0] * value.shape[1] !== n || Math.min(...value.shape) !== 1) {
    throw new RangeError(`Expected ${name} to be a GPU matrix of shape [${n}, 1] or [1, ${n}], got [${value.shape}]`);
  }
  return v.values(value);
}

/**
 * A state input of a face margin loss: its number fields (checked as {@linkcode stateField}
 * with `mins`), or, with GPU-resident cosines (`gpu`), a GPU matrix `[1, k]` of the fields
 * in order.
 */
export function stateInput(state: unknown, fields: readonly string[], mins: readonly number[], gpu: boolean) {
  if (!v.isGpuMatrix(state)) return fields.map((f, k) => stateField("state", state, f, mins[k]));
  if (!gpu) {
    throw new TypeError(
      `Expected state to be an object of numbers { ${fields.join(", ")} } with host inputs, got a GPU matrix`,
    );
  }
  const k = fields.length;
  if (state.shape[0] !== 1 || state.shape[1] !== k) {
    throw new RangeError(`Expected state to be a GPU matrix [1, ${k}] (${fields.join(", ")}), got [${state.shape}]`);
  }
  return v.values(state);
}

/**
 * The next state of a stateful face margin loss: the kernel's (the WebGPU kernel on
 * GPU-resident cosines: a GPU matrix `[1, k]`, or its values read back), else `host`'s.
 */
export function nextState<S>(raw: { outputs?: Record<string, Float32Array> }, fields: readonly string[], host: S): S {
  const s = raw.outputs?.state;
  if (s === undefined) return host;
  if (v.onDevice(s)) return s as unknown as S;
  return Object.fromEntries(fields.map((f, k) => [f, s[k]])) as S;
}

/** Checks a state object's finite number field `name` (`>= min`). */
export function stateField(name: string, state: unknown, field: string, min = -Infinity): number {
  if (typeof state !== "object" || state === null || Array.isArray(state)) {
    throw new TypeError(`Expected ${name} to be an object with a number ${field}, got ${v.show(state)}`);
  }
  const x = (state as Record<string, unknown>)[field];
  if (typeof x !== "number") throw new TypeError(`Expected ${name}.${field} to be a number, got ${v.show(x)}`);
  if (!Number.isFinite(x) || x < min) {
    throw new RangeError(
      `Expected ${name}.${field} to be a finite number${min > -Infinity ? ` >= ${min}` : ""}, got ${x}`,
    );
  }
  return x;
}

/** A cosine clamped to `[lo, hi]`, and whether the clamp passes its gradient. */
export function clampCos(raw: number, lo = -1, hi = 1): [number, boolean] {
  const x = Math.min(hi, Math.max(lo, raw));
  return [x, x === raw || Number.isNaN(raw)];
}

/**
 * What a face margin loss's per-row work takes, from the losses on cosines and from
 * `marginHead` alike: the labels (ignored rows -1), each labelled row's label cosine (before
 * any clamp), the norms (`||x_i||` for the head), the state input, the scale and
 * `marginGrad: "constant"`.
 */
export interface RowsIn {
  readonly labels: Int32Array;
  readonly cosY: (row: number) => number;
  readonly norms: Float64Array | null;
  readonly state: unknown;
  readonly scale: number;
  readonly constant: boolean;
}

/**
 * What it gives: per row the label's logit and its derivative w.r.t. its cosine (`[N, 2]`,
 * ignored rows 0), the non-target transform, the parts the loss returns besides its value
 * (the next state), and magface's norm terms.
 */
export interface FaceRows {
  readonly target: Float64Array;
  readonly nonTarget?: NonTarget;
  readonly parts: Record<string, unknown>;
  readonly norm?: NormTerms;
}

/** MagFace's terms per row: `g_i`, `d g_i / d norm_i` and `d z_y / d norm_i` (0 where the clamp cuts), and lambda. */
export interface NormTerms {
  readonly lambda: number;
  readonly g: Float64Array;
  readonly dg: Float64Array;
  readonly dzy: Float64Array;
}

/** The rows of a loss on cosines. */
export function rowsIn(b: FaceBase, norms: Float64Array | null, state: unknown): RowsIn {
  return {
    labels: b.labels,
    cosY: (i) => classCos(b.cos, i, b.labels[i], b.c, b.sub),
    norms,
    state,
    scale: b.scale,
    constant: b.constant,
  };
}

/**
 * The norms' gradient of MagFace per row (`loss_i = ce_i + lambda g_i`, `scales` the row
 * gradient scales, `ce` the row losses): `s_i ((p_y - 1) d z_y / d norm + lambda d g / d norm)`,
 * `1 - p_y = -expm1(-ce_i)`.
 */
export function normGrads(t: NormTerms, scales: Float64Array, ce: Float64Array): Float32Array {
  return Float32Array.from(
    { length: ce.length },
    (_, i) => scales[i] * (Math.expm1(-ce[i]) * t.dzy[i] + t.lambda * t.dg[i]),
  );
}
