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
