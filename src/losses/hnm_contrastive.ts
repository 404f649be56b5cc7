/**
 * `hnmContrastive`: a contrastive loss of each embedding against its class prototype
 * and the prototypes of its mined hard-negative classes (the hard-negative-mining state
 * functions are `src/state.ts`).
 *
 * @module
 */
import { type Definition, lossDef } from "../loss.ts";
import type { CommonOptions, Labels, Matrix, Reduction, Tensor } from "../types.ts";
import * as v from "../validate.ts";
import { classInputs } from "./center_loss.ts";
import { gradMatrix, outBuffer } from "../kernels/core.ts";

/** An integer matrix `{ data: Int32Array, shape: [rows, cols] }` (`hard [B, k]`). */
export interface IntMatrix {
  /** The values, row-major. */
  readonly data: Int32Array;
  /** `[rows, cols]`. */
  readonly shape: readonly [number, number];
}

/** Inputs of `hnmContrastive`. */
export interface HnmContrastiveInputs {
  /** Embeddings `[B, D]` (normalised inside). */
  f: Tensor;
  /** Class prototypes `[C, D]` (normalised inside; a constant: no gradient). */
  prototypes: Tensor;
  /** One class index per row, in `[0, C)`. */
  labels: Labels;
  /** The hard-negative classes of each row `[B, k]` (`hnmHardNegatives`), in `[0, C)`. */
  hard: IntMatrix;
}

/** Options of `hnmContrastive`. */
export interface HnmContrastiveOptions extends CommonOptions {
  /** Temperature t, finite, >= 1e-6 (float32 similarities over t). @default 0.07 */
  temperature?: number;
  /** `"mean"` (over the B rows), `"sum"` or `"none"`. @default "mean" */
  reduction?: Reduction;
}

/** Gradients of `hnmContrastive`. */
export interface HnmContrastiveGrads {
  /** Gradient w.r.t. the embeddings `[B, D]` (through their normalisation). */
  f: Matrix;
}

/** Checks an integer matrix `{ data: Int32Array | number[], shape: [rows, cols] }` with values in `[0, bound)`. */
export function intMatrix(name: string, value: unknown, rows: number, bound: number): [number, Int32Array] {
  if (typeof value !== "object" || value === null) {
    throw new TypeError(
      `Expected ${name} to be an integer matrix { data: Int32Array, shape: [rows, cols] }, got ${v.show(value)}`,
    );
  }
  const { data, shape } = value as { data?: unknown; shape?: unknown };
  if (!Array.isArray(shape) || shape.length !== 2) {
    throw new TypeError(`Expected ${name}.shape to be [rows, cols], got ${v.show(shape)}`);
  }
  const r = v.size(`${name}.shape[0]`, shape[0]), cols = v.size(`${name}.shape[1]`, shape[1]);
  if (r !== rows) throw new RangeError(`Expected ${name}.shape[0] to be ${rows}, got ${r}`);
  return [cols, v.integers(`${name}.data`, data, r * cols, bound)];
}

/**
 * Hard-negative contrastive loss against class prototypes: with f and the prototypes
 * normalised, `pos = cos(f, p_y) / t`, `neg_j = cos(f, p_{hard_j}) / t` (`temperature` t
 * 0.07), `loss = -log(e^pos / (e^pos + mean_j e^neg_j))`, computed as a log-sum-exp;
 * `reduction` `"mean"` over B. `hard [B, k]` comes from `hnmHardNegatives`. Gradient
 * w.r.t. f only.
 *
 * @example
 * ```ts
 * import { js } from "@softmargin/softmargin/cpu";
 * const f = { data: new Float32Array([1, 0]), shape: [1, 2] as const };
 * const prototypes = { data: new Float32Array([1, 0, 1, 0]), shape: [2, 2] as const };
 * const hard = { data: Int32Array.of(1), shape: [1, 1] as const };
 * console.log(js.hnmContrastive.forward({ f, prototypes, labels: [0], hard }).loss); // 0.6931 (log 2: the negative equals the positive)
 * ```
 */
export const hnmContrastive: Definition<HnmContrastiveInputs, HnmContrastiveOptions, HnmContrastiveGrads> = lossDef<
  HnmContrastiveInputs,
  HnmContrastiveOptions,
  HnmContrastiveGrads,
  "hnm"
>({
  name: "hnmContrastive",
  kernel: "hnm",
  inputs: ["f", "prototypes", "labels", "hard"],
  options: ["temperature", "reduction"],
  grads: ["f"],
  prepare(inputs, o, grad, upstream) {
    const { n: b, c, d, x: f, classes: prototypes, labels } = classInputs(
      inputs as unknown as Record<string, unknown>,
      "f",
      "prototypes",
      o.checkFinite,
    );
    const [k, hard] = intMatrix("hard", inputs.hard, b, c);
    if (k === 0) throw new RangeError("Expected hard to have at least one column (one negative per row), got 0");
    const temperature = v.temperature(o.temperature, 0.07);
    const reduction = v.reduction(o.reduction);
    return {
      grad,
      b,
      c,
      d,
      k,
      f,
      prototypes,
      labels,
      hard,
      temperature,
      scales: grad ? v.rowScales(reduction, upstream, b, b) : new Float64Array(0),
      reduction,
      out: grad ? outBuffer(o, "f", b, d) : null,
    };
  },
  finish: (p, raw) => ({
    loss: v.reduce(raw.rows[0], p.reduction, p.b),
    grads: { f: gradMatrix(p.out, raw.grads.f, p.b, p.d) },
  }),
});
