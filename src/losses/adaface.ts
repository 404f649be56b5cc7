/**
 * `adaface`: the quality-adaptive margin (AdaFace, Kim et al. 2022), and its state
 * (`adafaceInit`).
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { GpuMatrix, Matrix } from "../types.ts";
import * as v from "../validate.ts";
import { derivativeCos, type MarginOptions } from "./margin.ts";
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
  gpuNorms,
  nextState,
  type RowsIn,
  rowsIn,
  rowVector,
  stateField,
  stateInput,
} from "./face_margin.ts";
import { finishHardLabel } from "./cross_entropy.ts";

/** AdaFace's batch statistics of the feature norms: exponential moving averages. */
export interface AdafaceState {
  /** Moving mean of the clipped norms. */
  readonly mean: number;
  /** Moving (unbiased) standard deviation of the clipped norms, >= 0. */
  readonly std: number;
}

/**
 * AdaFace's initial state, as its reference code's buffers: `{ mean: 20, std: 100 }`.
 *
 * @returns A fresh state.
 *
 * @example The first step
 * ```ts
 * import { adafaceInit } from "@softmargin/softmargin/cpu";
 * console.log(adafaceInit()); // { mean: 20, std: 100 }
 * ```
 */
export function adafaceInit(): AdafaceState {
  return { mean: 20, std: 100 };
}

/**
 * AdaFace's rows (shared with `marginHead`'s kind): the state first, from the clipped norms
 * of the non-ignored rows, then each row's target and the clip of every cosine.
 */
export function adafaceRows(o: AdafaceOptions, r: RowsIn): FaceRows {
  const mean = stateField("state", r.state, "mean");
  const std = stateField("state", r.state, "std", 0);
  const { m, h, alpha, eps } = adafaceOptions(o);
  const clipped = r.norms!.map((x) => Math.min(100, Math.max(0.001, x)));
  const rows = [...r.labels.keys()].filter((i) => r.labels[i] >= 0);
  let mean2 = mean, std2 = std;
  if (rows.length > 0) {
    const mu = rows.reduce((t, i) => t + clipped[i], 0) / rows.length;
    mean2 = alpha * mu + (1 - alpha) * mean;
    if (rows.length > 1) {
      const sd = Math.sqrt(rows.reduce((t, i) => t + (clipped[i] - mu) ** 2, 0) / (rows.length - 1));
      std2 = alpha * sd + (1 - alpha) * std;
    }
  }
  const target = new Float64Array(2 * r.labels.length);
  for (const i of rows) {
    const g = Math.min(1, Math.max(-1, (h * (clipped[i] - mean2)) / (std2 + eps)));
    const [x, passes] = clampCos(r.cosY(i), -1 + eps, 1 - eps);
    // theta' = clip(acos(x) - m g, eps, pi - eps); logit s (cos theta' - m - m g),
    // d/dx = s sin(theta') / sqrt(1 - x^2) (d acos / dx = -1 / sqrt(1 - x^2)), 0 where a clip cut.
    const th = Math.acos(x) - m * g, tc = Math.min(Math.PI - eps, Math.max(eps, th));
    target[2 * i] = r.scale * (Math.cos(tc) - m - m * g);
    const xd = derivativeCos(x);
    const slope = r.constant ? 1 : tc === th ? Math.sin(tc) / Math.sqrt(1 - xd * xd) : 0;
    target[2 * i + 1] = passes ? r.scale * slope : 0;
  }
  const nonTarget = { lo: -1 + eps, hi: 1 - eps, cut: Infinity, a: 0, b: 0, g: 0, rows: null };
  return { target, nonTarget, parts: { state: { mean: mean2, std: std2 } } };
}

/** AdaFace's checked options. */
function adafaceOptions(o: AdafaceOptions) {
  return {
    m: v.cosineMargin("options.margin", o.margin, 0.4),
    h: v.weight("options.h", o.h, 0.333),
    alpha: v.number("options.alpha", o.alpha, 0.01, { min: 0, max: 1 }),
    eps: v.number("options.eps", o.eps, 1e-3, { min: 0, max: 0.5, minExclusive: true, maxExclusive: true }),
  };
}

/**
 * AdaFace on GPU-resident cosines: its rows as data (`FaceTarget`), computed by the WebGPU
 * kernel; the cosines' clip as the non-target transform.
 */
function adafaceOnGpu(b: FaceBase, o: AdafaceOptions, grad: boolean, upstream: unknown, inputs: AdafaceInputs) {
  const norms = gpuNorms("norms", inputs.norms, b.n);
  const state = stateInput(inputs.state, ["mean", "std"], [-Infinity, 0], true);
  const { nonTarget, ...face } = adafaceData(o);
  return faceOnGpu(b, o, grad, upstream, { ...face, norms, state }, nonTarget);
}

/** AdaFace's rows as data (shared with `marginHead`'s kind): its constants and the cosines' clip. */
export function adafaceData(o: AdafaceOptions): FaceData {
  const { m, h, alpha, eps } = adafaceOptions(o);
  return {
    kind: "adaface",
    params: { p_m: m, p_h: h, p_alpha: alpha, p_beta: 1 - alpha, p_eps: eps, p_lo: 0.001, p_hi: 100 },
    nonTarget: { lo: -1 + eps, hi: 1 - eps, cut: Infinity, a: 0, b: 0, g: 0, rows: null },
  };
}

/** The options of `adaface` beyond those every margin loss takes (also `marginHead`'s with `kind: "adaface"`). */
export const ADAFACE_KEYS = ["margin", "h", "alpha", "eps"] as const;

/** Inputs of `adaface`. */
export interface AdafaceInputs extends FaceInputs {
  /** Feature norms `||x_i||` `[N]` (no gradient); with a GPU-resident `cos` also a GPU matrix `[N, 1]`. */
  norms: Float32Array | readonly number[] | GpuMatrix;
  /**
   * The batch statistics so far (`adafaceInit()` at the first step); with a GPU-resident
   * `cos` also a GPU matrix `[1, 2]` (mean, std), as `readback: false` returns it.
   */
  state: AdafaceState | GpuMatrix;
}

/** Options of `adaface`. */
export interface AdafaceOptions extends MarginOptions {
  /** Logit scale s, finite, in (0, 1e6]. @default 64 */
  scale?: number;
  /** Margin m, finite, in [-2, 2]. @default 0.4 */
  margin?: number;
  /** Concentration h of the norm's z-score, finite, in [-1e6, 1e6]. @default 0.333 */
  h?: number;
  /** Momentum t_alpha of the moving statistics, in [0, 1]. @default 0.01 */
  alpha?: number;
  /** Clip of the cosines to `[-1 + eps, 1 - eps]` and of the angle to `[eps, pi - eps]`, in (0, 0.5). @default 0.001 */
  eps?: number;
}

/** Gradients of `adaface`. */
export interface AdafaceGrads {
  /** Gradient w.r.t. the cosines `[N, C]` (0 where a cosine was outside `[-1 + eps, 1 - eps]`). */
  cos: Matrix;
}

/** The parts of `adaface`. */
export interface AdafaceParts {
  /** The next state (the one this call used): pass it to the next step. */
  state: AdafaceState;
}

/**
 * AdaFace (Kim et al. 2022, "AdaFace: Quality Adaptive Margin for Face Recognition"): the
 * feature norm, a proxy of image quality, sets each row's margin. With `n = clip(norms,
 * 0.001, 100)` over the non-ignored rows, the state is updated first: `mean' = alpha mean(n)
 * + (1 - alpha) mean`, `std' = alpha std(n) + (1 - alpha) std` (unbiased; one row keeps
 * `std`, none keeps both); `g_i = clip(h (n_i - mean') / (std' + eps), -1, 1)`; every cosine
 * is clipped to `[-1 + eps, 1 - eps]` (gradient 0 outside); the label's logit is
 * `s (cos(theta') - m - m g_i)` with `theta' = clip(acos(cos_y) - m g_i, eps, pi - eps)`, the
 * others `s cos_j`; then cross-entropy (`reduction`, `ignoreIndex` as `crossEntropy`).
 * Defaults `scale` 64, `margin` 0.4, `h` 0.333, `alpha` 0.01, `eps` 0.001. Shapes: cos
 * `[N, C]`, norms `[N]`, labels `[N]`; gradient `grads.cos` `[N, C]` (through `acos`; 0
 * where a clip cut; `marginGrad: "constant"`: `s` at the label). Returns the next state as
 * `state`; nothing is kept between calls. With `h = 0` it is CosFace with margin m on the
 * clipped cosines. On WebGPU `cos` may be GPU-resident: the statistics, the next state and
 * the targets are then computed on the GPU, `norms` may be a GPU matrix `[N, 1]` and `state` a
 * GPU matrix `[1, 2]` (mean, std), which `readback: false` returns (SPEC §10).
 *
 * @example Two steps
 * ```ts
 * import { adafaceInit, wasm } from "@softmargin/softmargin/cpu";
 * const cos = { data: new Float32Array([0.8, 0.1, -0.2, 0.3, 0.6, 0.1]), shape: [2, 3] as const };
 * const first = wasm.adaface.forward({ cos, norms: [20, 30], labels: [0, 1], state: adafaceInit() }, { scale: 30 });
 * const second = wasm.adaface.forward({ cos, norms: [20, 30], labels: [0, 1], state: first.state }, { scale: 30 });
 * console.log(first.loss.toFixed(4), second.state.mean.toFixed(4)); // 1.5646 20.0995 (PyTorch: 1.5646138)
 * ```
 */
export const adaface: Definition<AdafaceInputs, AdafaceOptions, AdafaceGrads, AdafaceParts> = lossDef<
  AdafaceInputs,
  AdafaceOptions,
  AdafaceGrads,
  "hardLabel",
  AdafaceParts
>({
  name: "adaface",
  kernel: "hardLabel",
  inputs: ["cos", "norms", "labels", "state"],
  options: [...FACE_KEYS, ...ADAFACE_KEYS],
  grads: ["cos"],
  prepare(inputs, options, grad, upstream) {
    const o = v.options(options);
    const b = faceBase(inputs, o, 64);
    if (v.onDevice(b.cos)) return adafaceOnGpu(b, o, grad, upstream, inputs);
    stateInput(inputs.state, ["mean", "std"], [-Infinity, 0], false);
    const r = adafaceRows(o, rowsIn(b, rowVector("norms", inputs.norms, b.n), inputs.state));
    return Object.assign(faceProblem(b, o, grad, upstream, r.target, r.nonTarget), r.parts);
  },
  finish(p, raw) {
    const r = finishHardLabel(p, raw.rows[0], raw.grads.logits);
    const state = nextState(raw, ["mean", "std"], (p as unknown as AdafaceParts).state);
    return { loss: r.loss, state, grads: { cos: r.grads.logits } };
  },
});
