/**
 * The machinery every loss shares: a loss is defined once by how its inputs are
 * checked and prepared (`prepare`) and how a kernel's raw result becomes the public
 * result (`finish`); each backend only supplies the kernel.
 *
 * @module
 */
import type { ForwardResult, Loss, Matrix, Upstream, ValueAndGrad } from "./types.ts";
import { isGpuMatrix, onDevice } from "./validate.ts";

/** What a kernel returns: per-row values (one array per part) and gradients by input name. */
export interface Raw {
  rows: Float64Array[];
  grads: Record<string, Float32Array>;
}

/** A prepared problem: checked inputs, resolved options, per-row gradient scales. */
export interface Prepared {
  /** Whether gradients are wanted (`backward`, `valueAndGrad`). */
  readonly grad: boolean;
}

/** A loss, defined once for every backend. */
export interface LossDef<I, O, G, P extends Prepared> {
  readonly name: string;
  prepare(inputs: I, options: O | undefined, grad: boolean, upstream: Upstream | undefined): P;
  finish(problem: P, raw: Raw): ForwardResult & { grads: G };
}

/** A backend's kernel for one loss. CPU kernels return synchronously, GPU ones a Promise. */
export type Kernel<P> = (problem: P) => Raw | Promise<Raw>;

/**
 * A matrix result `{ data, shape }`, or `{ buffer, shape }` when a WebGPU kernel left
 * it on the GPU (its values are then a `DeviceValues`).
 */
export function result(data: Float32Array, rows: number, cols: number): Matrix {
  if (onDevice(data)) return { buffer: data.buffer, shape: [rows, cols] } as unknown as Matrix;
  return { data, shape: [rows, cols] };
}

/**
 * Guards a CPU kernel: a problem holding GPU-resident values is refused with a
 * `TypeError` before any work.
 */
export function hostOnly<P extends object, R>(kernel: (p: P) => R, backend: string): (p: P) => R {
  return (p) => {
    for (const [k, value] of Object.entries(p)) {
      if (onDevice(value) || isGpuMatrix(value)) {
        throw new TypeError(
          `Expected every input to be a matrix { data: Float32Array, shape } on the ${backend} backend, got a GPUBuffer (${k}); GPU-resident inputs need init({ backend: "webgpu" })`,
        );
      }
    }
    return kernel(p);
  };
}

function split<G>(r: ForwardResult & { grads: G }): ForwardResult {
  return r.parts === undefined ? { loss: r.loss } : { loss: r.loss, parts: r.parts };
}

/** Binds a loss definition to a synchronous kernel. */
export function bindSync<I, O, G, P extends Prepared>(def: LossDef<I, O, G, P>, kernel: Kernel<P>): Loss<I, O, G> {
  const run = (inputs: I, options: O | undefined, grad: boolean, upstream?: Upstream) => {
    const p = def.prepare(inputs, options, grad, upstream);
    return def.finish(p, kernel(p) as Raw);
  };
  return {
    forward: (inputs, options) => split(run(inputs, options, false)),
    backward: (inputs, options, upstream) => run(inputs, options, true, upstream).grads,
    valueAndGrad: (inputs, options) => run(inputs, options, true) as ValueAndGrad<G>,
  };
}

/** Binds a loss definition to a kernel that may be asynchronous; every method returns a Promise. */
export function bindAsync<I, O, G, P extends Prepared>(def: LossDef<I, O, G, P>, kernel: Kernel<P>) {
  const run = async (inputs: I, options: O | undefined, grad: boolean, upstream?: Upstream) => {
    const p = def.prepare(inputs, options, grad, upstream);
    return def.finish(p, await kernel(p));
  };
  return {
    forward: async (inputs: I, options?: O) => split(await run(inputs, options, false)),
    backward: async (inputs: I, options?: O, upstream?: Upstream) => (await run(inputs, options, true, upstream)).grads,
    valueAndGrad: (inputs: I, options?: O) => run(inputs, options, true) as Promise<ValueAndGrad<G>>,
  };
}
