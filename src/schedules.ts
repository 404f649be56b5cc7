/**
 * Schedules: pure, synchronous functions of the training step (never hidden state),
 * exported by `mod.ts` and `cpu.ts` beside the losses, not members of `Losses`. The
 * annealing of SphereFace's `lambda` and L-Softmax's `beta`.
 *
 * @module
 */
import * as v from "./validate.ts";

/** Options of {@linkcode sphereFaceLambda}. */
export interface SphereFaceLambdaOptions {
  /** Lambda at step 0. @default 1000 */
  base?: number;
  /** Decay rate of `(1 + gamma * step)`. @default 0.12 */
  gamma?: number;
  /** Exponent of the decay. @default 1 */
  power?: number;
  /** Floor of lambda. @default 5 */
  min?: number;
}

/**
 * SphereFace's annealing schedule, a pure function of the training step:
 * `max(min, base * (1 + gamma * step)^-power)`.
 *
 * @param step The training step (>= 0).
 * @param options The schedule's constants.
 * @returns The `lambda` to pass to `sphereface` at that step.
 *
 * @example The first steps
 * ```ts
 * import { sphereFaceLambda } from "@softmargin/softmargin";
 * console.log(sphereFaceLambda(0), sphereFaceLambda(100), sphereFaceLambda(1e6)); // 1000 76.92... 5
 * ```
 */
export function sphereFaceLambda(step: number, options: SphereFaceLambdaOptions = {}): number {
  v.keys("options of sphereFaceLambda", v.options(options), ["base", "gamma", "power", "min"]);
  const s = v.number("step", v.required("step", step), 0, { min: 0 });
  const base = v.number("options.base", options.base, 1000);
  const gamma = v.number("options.gamma", options.gamma, 0.12, { min: 0 });
  const power = v.number("options.power", options.power, 1);
  const min = v.number("options.min", options.min, 5);
  return Math.max(min, base * (1 + gamma * s) ** -power);
}

/** Options of {@linkcode lSoftmaxBeta}. */
export interface LSoftmaxBetaOptions {
  /** Beta at step 0. @default 100 */
  start?: number;
  /** Factor per step. @default 0.99 */
  decay?: number;
  /** Floor of beta. @default 0 */
  min?: number;
}

/**
 * L-Softmax's annealing schedule, a pure function of the training step:
 * `max(min, start * decay^step)`.
 *
 * @param step The training step (>= 0).
 * @param options The schedule's constants.
 * @returns The `beta` to pass to `lsoftmax` at that step.
 *
 * @example The first steps
 * ```ts
 * import { lSoftmaxBeta } from "@softmargin/softmargin";
 * console.log(lSoftmaxBeta(0), lSoftmaxBeta(100)); // 100 36.60...
 * ```
 */
export function lSoftmaxBeta(step: number, options: LSoftmaxBetaOptions = {}): number {
  v.keys("options of lSoftmaxBeta", v.options(options), ["start", "decay", "min"]);
  const s = v.number("step", v.required("step", step), 0, { min: 0 });
  const start = v.number("options.start", options.start, 100);
  const decay = v.number("options.decay", options.decay, 0.99, { min: 0 });
  const min = v.number("options.min", options.min, 0);
  return Math.max(min, start * decay ** s);
}

/** Options of {@linkcode marginWarmup}. */
export interface MarginWarmupOptions {
  /** The step at which the margin starts to grow (required). */
  start: number;
  /** The step at which it reaches `to` (required; greater than `start`). */
  end: number;
  /** The margin before `start`. @default 0 */
  from?: number;
  /** The margin from `end` on. @default 0.2 */
  to?: number;
  /** How it grows between `start` and `end`: `"exp"` (fast first, then levelling off) or `"linear"`. @default "exp" */
  curve?: "exp" | "linear";
}

/**
 * A margin warm-up (wespeaker's `MarginScheduler`, the speaker-verification recipe's
 * AAM warm-up), a pure function of the training step: `from` before `start`, `to` from
 * `end` on, and between them, with `r = (step - start) / (end - start)`,
 * `"linear"`: `from + (to - from) r`; `"exp"`: `from + (to - from) (1 - exp(r ln 1e-3)) / (1 - 1e-3)`.
 *
 * Difference from wespeaker (deliberate): its exp ratio is `1 - exp(r ln(1e-3 / (1 + 1e-6)))`,
 * which reaches only 0.999 of the way at `end` and then jumps to `to`; this one is
 * normalised by `1 - 1e-3` so it reaches `to` at `end` exactly and never jumps.
 *
 * @param step The training step (a finite number >= 0; any unit, as `start` and `end`).
 * @param options `start` and `end` (required, `end > start`), `from` (0), `to` (0.2), `curve` ("exp").
 * @returns The margin to pass to `arcface`/`marginHead` (or any margin option) at that step.
 *
 * @example A 10-epoch warm-up of ArcFace's margin
 * ```ts
 * import { marginWarmup } from "@softmargin/softmargin";
 * const o = { start: 2, end: 12, to: 0.2 };
 * console.log(marginWarmup(0, o), marginWarmup(7, o).toFixed(4), marginWarmup(12, o)); // 0 0.1939 0.2
 * ```
 */
export function marginWarmup(step: number, options: MarginWarmupOptions): number {
  const o = v.options(v.required("options", options));
  v.keys("options of marginWarmup", o, ["start", "end", "from", "to", "curve"]);
  const s = v.number("step", v.required("step", step), 0, { min: 0 });
  const start = v.number("options.start", v.required("options.start", o.start), 0);
  const end = v.number("options.end", v.required("options.end", o.end), 0, { min: start, minExclusive: true });
  const from = v.number("options.from", o.from, 0);
  const to = v.number("options.to", o.to, 0.2);
  const curve = v.oneOf("options.curve", o.curve, ["exp", "linear"] as const, "exp");
  if (s <= start) return from;
  if (s >= end) return to;
  const r = (s - start) / (end - start);
  const ratio = curve === "linear" ? r : (1 - Math.exp(r * Math.log(1e-3))) / (1 - 1e-3);
  return from + (to - from) * ratio;
}
