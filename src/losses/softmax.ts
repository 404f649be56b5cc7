/**
 * `softmax` and `logSoftmax`: row-wise transforms with a vector-Jacobian product.
 *
 * @module
 */
import type { CommonOptions, GradTensor, Matrix, Tensor, Upstream } from "../types.ts";
import * as v from "../validate.ts";
import { outBuffer } from "../kernels/core.ts";
import { checkCall, type Definition } from "../loss.ts";
import { result, then } from "../kernels/core.ts";
import type { SoftmaxKernel, SoftmaxProblem } from "../kernels/softmax.ts";

/** Inputs of `softmax` and `logSoftmax`. */
export interface SoftmaxInputs {
  /** Scores `[N, C]`, transformed row by row. */
  x: Tensor;
}

/** Options of `softmax` and `logSoftmax` (`out.output` for the output, `out.x` for the gradient). */
export type SoftmaxOptions = CommonOptions;

/** What a softmax transform's methods return. */
export interface SoftmaxOutput {
  /** The transformed rows `[N, C]`. */
  output: Matrix;
}

/** The gradient of a softmax transform. */
export interface SoftmaxGrads {
  /** The vector-Jacobian product w.r.t. `x` `[N, C]`. */
  x: Matrix;
}

/** The keys a transform's method accepts: `out.output` is the output's buffer, `out.x` the gradient's. */
function transformKeys(log: boolean, out: readonly string[]) {
  return { name: log ? "logSoftmax" : "softmax", inputs: ["x"], options: [], grads: out };
}

/** Checks the inputs of a softmax transform; `up` is the upstream matrix of a VJP. */
export function prepareSoftmax(
  inputs: SoftmaxInputs,
  options: SoftmaxOptions | undefined,
  log: boolean,
  upstream?: Upstream,
): SoftmaxProblem {
  const o = checkCall(transformKeys(log, [upstream === undefined ? "output" : "x"]), inputs, options, upstream);
  const [n, c] = v.batch("x", inputs.x);
  const x = v.values(inputs.x);
  if (o.checkFinite) v.finite("x", x, c);
  let up: Float32Array | null = null;
  if (upstream !== undefined) {
    v.matrix("upstream", upstream, n, c);
    up = v.values(upstream as Matrix);
  }
  return { n, c, x, log, up, out: outBuffer(o, up ? "x" : "output", n, c) };
}

/** A transform's three methods; they return Promises on the `"async"` side (`init`). */
export interface SoftmaxMethods<W extends "sync" | "async"> {
  /** The transformed rows `{ output }` (on the GPU for a GPU-resident `x`). */
  forward<In extends SoftmaxInputs>(inputs: In, options?: SoftmaxOptions): SoftmaxResult<W, { output: GradTensor<In> }>;
  /** The vector-Jacobian product with `upstream [N, C]`, as `{ x }`. */
  backward<In extends SoftmaxInputs>(
    inputs: In,
    options: SoftmaxOptions | undefined,
    upstream: Upstream,
  ): SoftmaxResult<W, { x: GradTensor<In> }>;
  /** Both: `{ output, grads: { x } }`. */
  valueAndGrad<In extends SoftmaxInputs>(
    inputs: In,
    options: SoftmaxOptions | undefined,
    upstream: Upstream,
  ): SoftmaxResult<W, { output: GradTensor<In>; grads: { x: GradTensor<In> } }>;
}

/** A transform method's result: `T` on a synchronous backend, a Promise of it on an asynchronous one. */
export type SoftmaxResult<W extends "sync" | "async", T> = W extends "sync" ? T : Promise<T>;

/** Binds a transform to a kernel. */
export function bindSoftmax<W extends "sync" | "async">(
  kernel: SoftmaxKernel,
  log: boolean,
  async: boolean,
): SoftmaxMethods<W> {
  const run = (inputs: SoftmaxInputs, options: SoftmaxOptions | undefined, upstream?: Upstream) => {
    const p = prepareSoftmax(inputs, options, log, upstream);
    return then(kernel(p), (data): Matrix => p.out ?? result(data, p.n, p.c));
  };
  const need = (upstream: Upstream | undefined) => {
    if (upstream === undefined) {
      throw new TypeError(
        "Expected upstream to be a matrix [N, C] (softmax transforms have no default upstream), got undefined",
      );
    }
    return upstream;
  };
  // Errors of the async side reject the Promise rather than throw.
  const wrap = <T>(f: () => T) => (async ? (async () => await f())() : f());
  const methods = {
    forward: (inputs: SoftmaxInputs, options?: SoftmaxOptions) =>
      wrap(() => then(run(inputs, options), (output) => ({ output }))),
    backward: (inputs: SoftmaxInputs, options: SoftmaxOptions | undefined, upstream: Upstream) =>
      wrap(() => then(run(inputs, options, need(upstream)), (x) => ({ x }))),
    valueAndGrad: (inputs: SoftmaxInputs, options: SoftmaxOptions | undefined, upstream: Upstream) =>
      wrap(() => {
        const { out, ...rest } = checkCall(transformKeys(log, ["output", "x"]), inputs, options, upstream);
        const gradOptions = out?.x ? { ...rest, out: { x: out.x } } : rest;
        const outputOptions = out?.output ? { ...rest, out: { output: out.output } } : rest;
        return then(
          run(inputs, gradOptions, need(upstream)),
          (x) => then(run(inputs, outputOptions), (output) => ({ output, grads: { x } })),
        );
      }),
  };
  return methods as unknown as SoftmaxMethods<W>;
}

/** A transform's definition, checked against its type. */
const transformDef = (def: TransformDef): TransformDef => def;

/** A softmax transform's definition: its name and whether it is the log form. */
export interface TransformDef extends Definition<SoftmaxInputs, SoftmaxOptions, SoftmaxGrads, unknown, "transform"> {
  readonly transform: "softmax";
  readonly log: boolean;
}

/**
 * Row-wise softmax `y_ij = e^(x_ij - m_i) / sum_k e^(x_ik - m_i)` (`m_i` the row max).
 * `forward({ x })` gives `{ output }`; `backward({ x }, options, upstream)` the
 * vector-Jacobian product `y * (g - sum_k g_k y_k)` as `{ x }`.
 *
 * @example Softmax of one row
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const { output } = wasm.softmax.forward({ x: { data: new Float32Array([0, Math.log(3)]), shape: [1, 2] } });
 * console.log(output.data); // [0.25, 0.75]
 * ```
 */
export const softmax: Definition<SoftmaxInputs, SoftmaxOptions, SoftmaxGrads, unknown, "transform"> = transformDef({
  name: "softmax",
  transform: "softmax",
  log: false,
});

/**
 * Row-wise log-softmax `x_ij - m_i - log sum_k e^(x_ik - m_i)`; its vector-Jacobian
 * product is `g - softmax(x) * sum_k g_k`.
 *
 * @example Log-probabilities
 * ```ts
 * import { wasm } from "@softmargin/softmargin/cpu";
 * const { output } = wasm.logSoftmax.forward({ x: { data: new Float32Array([1, 1]), shape: [1, 2] } });
 * console.log(output.data); // [-0.6931, -0.6931] (log 1/2)
 * ```
 */
export const logSoftmax: Definition<SoftmaxInputs, SoftmaxOptions, SoftmaxGrads, unknown, "transform"> = transformDef({
  name: "logSoftmax",
  transform: "softmax",
  log: true,
});
