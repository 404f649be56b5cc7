/**
 * `softmax` and `logSoftmax`: row-wise transforms with a vector-Jacobian product.
 *
 * @module
 */
import type { CommonOptions, GradTensor, Matrix, Tensor, Upstream } from "../types.ts";
import * as v from "../validate.ts";
import { outBuffer } from "./cross_entropy.ts";
import { checkCall, result, then } from "../loss.ts";

/** Inputs of `softmax` and `logSoftmax`. */
export interface SoftmaxInputs {
  /** Scores `[N, C]`, transformed row by row. */
  x: Tensor;
}

/** Options of `softmax` and `logSoftmax` (`out.output` for the output, `out.x` for the gradient). */
export type SoftmaxOptions = CommonOptions;

/** The prepared problem of a softmax transform: its output, or its VJP with `up`. */
export interface SoftmaxProblem {
  readonly n: number;
  readonly c: number;
  readonly x: Float32Array;
  readonly log: boolean;
  /** Upstream rows `[N, C]` for the vector-Jacobian product; null for the output itself. */
  readonly up: Float32Array | null;
  readonly out: Matrix | null;
}

/** A transform's kernel: the output (or VJP) as a fresh array or in `out`. */
export type SoftmaxKernel = (p: SoftmaxProblem) => Float32Array | Promise<Float32Array>;

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
