/**
 * `curricularFace`: the adaptive curriculum of hard negatives (CurricularFace, Huang et al. 2020).
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import * as v from "../validate.ts";
import type { GpuMatrix } from "../types.ts";
import type { MarginGrads, MarginOptions } from "./margin.ts";
import { arcfacePhi } from "./arcface.ts";
import {
  clampCos,
  FACE_KEYS,
  type FaceBase,
  faceBase,
  type FaceData,
  type FaceInputs,
  faceOnGpu,
  faceProblem,
  type FaceRows,
  nextState,
  type RowsIn,
  rowsIn,
  stateField,
  stateInput,
} from "./face_margin.ts";
import { finishHardLabel } from "./cross_entropy.ts";

/** CurricularFace's state: the moving mean `t` of the label cosines (initially `{ t: 0 }`). */
export interface CurricularFaceState {
  /** The moving mean of the label cosines, `momentum * mean_i(c_y) + (1 - momentum) * t`. */
  readonly t: number;
}

/**
 * CurricularFace's rows (shared with `marginHead`'s kind): `t'` first, then each row's
 * ArcFace target and the threshold of its hard negatives, `cos(theta_y + m)` (before
 * ArcFace's threshold branch, as the reference code's mask).
 */
export function curricularRows(o: CurricularFaceOptions, r: RowsIn): FaceRows {
  const t = stateField("state", r.state, "t");
  const { m, momentum } = curricularOptions(o);
  const phi = arcfacePhi(m, false);
  const rows = [...r.labels.keys()].filter((i) => r.labels[i] >= 0);
  const t2 = rows.length === 0
    ? t
    : momentum * rows.reduce((sum, i) => sum + clampCos(r.cosY(i))[0], 0) / rows.length + (1 - momentum) * t;
  const n = r.labels.length, target = new Float64Array(2 * n), hard = new Float64Array(2 * n);
  for (const i of rows) {
    const [x, passes] = clampCos(r.cosY(i));
    const [value, slope] = phi(x);
    target[2 * i] = r.scale * value;
    target[2 * i + 1] = passes ? r.scale * (r.constant ? 1 : slope) : 0;
    hard[2 * i] = x * Math.cos(m) - Math.sqrt(Math.max(0, 1 - x * x)) * Math.sin(m);
    hard[2 * i + 1] = -1;
  }
  const nonTarget = { lo: -1, hi: 1, cut: Infinity, a: t2, b: 1, g: 0, rows: hard };
  return { target, nonTarget, parts: { state: { t: t2 } } };
}

/** CurricularFace's checked options. */
function curricularOptions(o: CurricularFaceOptions) {
  return {
    m: v.number("options.margin", o.margin, 0.5, { min: 0, max: Math.PI, maxExclusive: true }),
    momentum: v.number("options.momentum", o.momentum, 0.01, { min: 0, max: 1 }),
  };
}

/**
 * CurricularFace on GPU-resident cosines: its rows as data (`FaceTarget`); the kernel writes
 * each row's threshold and `t'` into the non-target transform.
 */
function curricularOnGpu(b: FaceBase, o: CurricularFaceOptions, grad: boolean, upstream: unknown, state: unknown) {
  const s = stateInput(state, ["t"], [-Infinity], true);
  const { nonTarget, ...face } = curricularData(o);
  return faceOnGpu(b, o, grad, upstream, { ...face, norms: null, state: s }, nonTarget);
}

/**
 * CurricularFace's rows as data (shared with `marginHead`'s kind): its momentum, ArcFace's
 * target and the hard negatives' transform (each row's threshold and `t'` filled in by the kernel).
 */
export function curricularData(o: CurricularFaceOptions): FaceData {
  const { m, momentum } = curricularOptions(o);
  return {
    kind: "curricularFace",
    params: { p_alpha: momentum, p_beta: 1 - momentum },
    phi: arcfacePhi(m, false).spec,
    nonTarget: { lo: -1, hi: 1, cut: Infinity, a: 0, b: 1, g: 0, rows: null },
  };
}

/** The options of `curricularFace` beyond those every margin loss takes (also `marginHead`'s kind's). */
export const CURRICULAR_FACE_KEYS = ["margin", "momentum"] as const;

/** Inputs of `curricularFace`. */
export interface CurricularFaceInputs extends FaceInputs {
  /**
   * The state so far (`{ t: 0 }` at the first step); with a GPU-resident `cos` also a GPU
   * matrix `[1, 1]`, as `readback: false` returns it.
   */
  state: CurricularFaceState | GpuMatrix;
}

/** Options of `curricularFace`. */
export interface CurricularFaceOptions extends MarginOptions {
  /** Logit scale s, finite, in (0, 1e6]. @default 64 */
  scale?: number;
  /** Angular margin m in radians, in [0, pi). @default 0.5 */
  margin?: number;
  /** Momentum of `t`, in [0, 1]. @default 0.01 */
  momentum?: number;
}

/** The parts of `curricularFace`. */
export interface CurricularFaceParts {
  /** The next state (the one this call used): pass it to the next step. */
  state: CurricularFaceState;
}

/**
 * CurricularFace (Huang et al. 2020, "CurricularFace: Adaptive Curriculum Learning Loss
 * for Deep Face Recognition"): cosines clamped to [-1, 1]; the label's logit is ArcFace's,
 * `s phi` with `phi = cos(theta_y + m)` where `cos_y > cos(pi - m)`, else
 * `s (cos_y - m sin(pi - m))`; `t' = momentum mean_i(cos_y) + (1 - momentum) t` over the
 * non-ignored rows (updated before use, no gradient; none keeps `t`); a non-target with
 * `cos_j > phi_i` (hard) has the logit `s cos_j (t' + cos_j)` (gradient `s (t' + 2 cos_j)`),
 * the others `s cos_j`; then cross-entropy (`reduction`, `ignoreIndex` as `crossEntropy`).
 * Defaults `scale` 64, `margin` 0.5, `momentum` 0.01. Shapes: cos `[N, C]`, labels `[N]`;
 * gradient `grads.cos` `[N, C]` (the label's `phi'` at the cosine clamped to
 * `[-1 + 1e-6, 1 - 1e-6]`; `marginGrad: "constant"`: `s`). Returns the next state as `state`.
 * On WebGPU `cos` may be GPU-resident: `t'` and the targets are then computed on the GPU and
 * `state` may be a GPU matrix `[1, 1]`, which `readback: false` returns (SPEC §10).
 *
 * @example Two steps
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const cos = { data: new Float32Array([0.8, 0.1, 0.7, 0.3, 0.6, 0.1]), shape: [2, 3] as const };
 * const first = wasm.curricularFace.forward({ cos, labels: [0, 1], state: { t: 0 } }, { scale: 30 });
 * const second = wasm.curricularFace.forward({ cos, labels: [0, 1], state: first.state }, { scale: 30 });
 * console.log(first.loss.toFixed(4), second.state.t.toFixed(4)); // 1.4503 0.0139 (PyTorch: 1.4503204)
 * ```
 */
export const curricularFace: Definition<
  CurricularFaceInputs,
  CurricularFaceOptions,
  MarginGrads,
  CurricularFaceParts
> = lossDef<CurricularFaceInputs, CurricularFaceOptions, MarginGrads, "hardLabel", CurricularFaceParts>({
  name: "curricularFace",
  kernel: "hardLabel",
  inputs: ["cos", "labels", "state"],
  options: [...FACE_KEYS, ...CURRICULAR_FACE_KEYS],
  grads: ["cos"],
  prepare(inputs, options, grad, upstream) {
    const o = v.options(options);
    const b = faceBase(inputs, o, 64);
    if (v.onDevice(b.cos)) return curricularOnGpu(b, o, grad, upstream, inputs.state);
    stateInput(inputs.state, ["t"], [-Infinity], false);
    const r = curricularRows(o, rowsIn(b, null, inputs.state));
    return Object.assign(faceProblem(b, o, grad, upstream, r.target, r.nonTarget), r.parts);
  },
  finish(p, raw) {
    const r = finishHardLabel(p, raw.rows[0], raw.grads.logits);
    const state = nextState(raw, ["t"], (p as unknown as CurricularFaceParts).state);
    return { loss: r.loss, state, grads: { cos: r.grads.logits } };
  },
});
