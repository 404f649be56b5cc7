/**
 * Shared types of the public API and of the backend interface.
 *
 * @module
 */

/** A row-major float32 matrix with an explicit `[rows, cols]` shape. */
export interface Matrix {
  /** Row-major values, `shape[0] * shape[1]` of them. */
  readonly data: Float32Array;
  /** `[rows, cols]`. */
  readonly shape: readonly [number, number];
}

/**
 * A row-major float32 matrix that lives on the GPU: the WebGPU backend takes it
 * wherever a {@linkcode Matrix} goes and returns gradients of GPU-resident inputs this
 * way, so data already on the GPU never makes a round trip. The buffer needs usage
 * `STORAGE` (and `COPY_SRC` to be read back); its first `shape[0] * shape[1] * 4` bytes
 * are the values.
 */
export interface GpuMatrix {
  /** The values, row-major float32, from byte 0. */
  readonly buffer: GPUBuffer;
  /** `[rows, cols]`. */
  readonly shape: readonly [number, number];
}

/** A matrix input: on the host, or (WebGPU backend) on the GPU. */
export type Tensor = Matrix | GpuMatrix;

/** Class labels, one per row: an `Int32Array` or a plain array of integers. */
export type Labels = Int32Array | readonly number[];

/** How per-row losses are combined, as in PyTorch. */
export type Reduction = "mean" | "sum" | "none";

/** A reduced loss is a number; `reduction: "none"` gives one value per row. */
export type LossValue = number | Float32Array;

/**
 * The upstream gradient of `backward`: a number for a reduced loss (default 1),
 * one value per row for `reduction: "none"`, a matrix for `softmax`/`logSoftmax`.
 */
export type Upstream = number | Float32Array | readonly number[] | Tensor;

/** Options every loss accepts. */
export interface CommonOptions {
  /**
   * Scan every input for NaN and infinity first and throw a `RangeError` naming
   * the first bad index.
   * @default false
   */
  checkFinite?: boolean;
  /**
   * Caller-provided output buffers for the gradients, keyed by input name, each of
   * the input's shape. With the WebAssembly backend, buffers from `alloc` are written
   * in place (the zero-copy path).
   */
  out?: Record<string, Tensor>;
}

/** What `forward` returns: the loss and, for composite losses, its parts. */
export interface ForwardResult {
  /** The (reduced) loss; a `Float32Array` of one value per row for `reduction: "none"`. */
  loss: LossValue;
  /** Named parts of a composite loss (for example `kl` and `ce` of `distillation`). */
  parts?: Record<string, number>;
}

/** What `valueAndGrad` returns: `forward`'s result and the gradients, keyed by input name. */
export interface ValueAndGrad<G> extends ForwardResult {
  /** Gradients of the loss, one per differentiable input, same shapes as the inputs. */
  grads: G;
}

/** The three entry points every loss has. */
export interface Loss<I, O, G> {
  /** Computes the loss. */
  forward(inputs: I, options?: O): ForwardResult;
  /** Computes the gradients of the loss, scaled by `upstream` (default 1). */
  backward(inputs: I, options?: O, upstream?: Upstream): G;
  /** Computes the loss and its gradients in one fused pass. */
  valueAndGrad(inputs: I, options?: O): ValueAndGrad<G>;
}

/** The same loss with every method returning a Promise (the `Losses` object of `init`). */
export interface AsyncLoss<I, O, G> {
  /** Computes the loss. */
  forward(inputs: I, options?: O): Promise<ForwardResult>;
  /** Computes the gradients of the loss, scaled by `upstream` (default 1). */
  backward(inputs: I, options?: O, upstream?: Upstream): Promise<G>;
  /** Computes the loss and its gradients in one fused pass. */
  valueAndGrad(inputs: I, options?: O): Promise<ValueAndGrad<G>>;
}

/** The name of a backend. */
export type BackendName = "webgpu" | "wasm" | "js";
