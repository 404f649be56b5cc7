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
 * The loss a call returns, from its options' type: a `Float32Array` of one value per row
 * for `reduction: "none"`, a number for any other reduction or none given, and
 * `number | Float32Array` when the reduction is only known at run time.
 */
export type LossOf<Op> = [Op] extends [undefined] ? number
  : Op extends { reduction: "none" } ? Float32Array
  // (`{ reduction?: ... }` is a weak type: options without a reduction do not match it.)
  : Op extends { reduction?: infer R } ? ("none" extends R ? LossValue : number)
  : number;

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
   * the input's shape (a list input takes a list of buffers). With the WebAssembly
   * backend, buffers from `alloc` are written in place (the zero-copy path). A key that
   * is not a gradient of the loss is refused with a `TypeError`, as is a buffer that
   * shares memory with an input, the upstream gradient or another `out` buffer (no loss
   * computes in place).
   */
  out?: Readonly<Record<string, Tensor | readonly Tensor[]>>;
}

/** Where one input lives, as far as its type tells: `"gpu"`, `"host"` or `"either"`. */
export type PlaceOf<T> = [T] extends [GpuMatrix | readonly GpuMatrix[]] ? "gpu"
  : [T] extends [Matrix | readonly Matrix[] | Labels | Float32Array | number | boolean | undefined | null] ? "host"
  : "either";

/**
 * The type of a gradient matrix for inputs of type `In`: with any GPU-resident input
 * every gradient stays on the GPU ({@linkcode GpuMatrix}), with host inputs only it is a
 * {@linkcode Matrix}, and {@linkcode Tensor} when the input types do not say.
 */
export type GradTensor<In> = "gpu" extends { [K in keyof In]-?: PlaceOf<In[K]> }[keyof In] ? GpuMatrix
  : "either" extends { [K in keyof In]-?: PlaceOf<In[K]> }[keyof In] ? Tensor
  : Matrix;

/**
 * The type of a vector gradient (declared `Float32Array`: linearCrossEntropy's `bias`) for inputs
 * of type `In`: placed as {@linkcode GradTensor} places matrices, a `Float32Array` on the host and
 * a {@linkcode GpuMatrix} (`[V, 1]` or `[1, V]`) with any GPU-resident input.
 */
export type GradVector<In> = "gpu" extends { [K in keyof In]-?: PlaceOf<In[K]> }[keyof In] ? GpuMatrix
  : "either" extends { [K in keyof In]-?: PlaceOf<In[K]> }[keyof In] ? Float32Array | GpuMatrix
  : Float32Array;

/**
 * A loss's gradients `G` (declared with {@linkcode Matrix}) placed where inputs of type `In`
 * put them; the gradient of a number input (CLIP's `scale`) is a number wherever it runs.
 */
export type GradsFor<G, In> = {
  [K in keyof G]: G[K] extends number ? number
    : NonNullable<G[K]> extends Float32Array ? GradVector<In>
    : G[K] extends readonly unknown[] ? GradTensor<In>[]
    : GradTensor<In>;
};

/**
 * What `forward` returns: the loss and, for composite losses, each of its named parts
 * (for example `kl` and `ce` of `distillation`), reduced as the loss is (not with
 * `reduction: "none"`).
 */
export type ForwardResult<Op = undefined, Parts = unknown> =
  & { loss: LossOf<Op> }
  & (Op extends { reduction: "none" } ? unknown : Parts);

/** What `valueAndGrad` returns: `forward`'s result and the gradients, keyed by input name. */
export type ValueAndGrad<Op, Parts, Grads> = ForwardResult<Op, Parts> & {
  /** Gradients of the loss, one per differentiable input, same shapes as the inputs. */
  grads: Grads;
};

/**
 * The three entry points every loss has. `I`, `O`, `G` are the loss's inputs, options
 * and gradients, `Parts` its named parts; each method's result type follows the
 * inputs and options of the call (see {@linkcode LossOf} and {@linkcode GradsFor}).
 */
export interface Loss<I, O, G, Parts = unknown> {
  /** Computes the loss (and its parts). */
  forward<In extends I, Op extends O | undefined = undefined>(inputs: In, options?: Op): ForwardResult<Op, Parts>;
  /** Computes the gradients of the loss, scaled by `upstream` (default 1). */
  backward<In extends I, Op extends O | undefined = undefined>(
    inputs: In,
    options?: Op,
    upstream?: Upstream,
  ): GradsFor<G, In>;
  /** Computes the loss and its gradients in one fused pass. */
  valueAndGrad<In extends I, Op extends O | undefined = undefined>(
    inputs: In,
    options?: Op,
  ): ValueAndGrad<Op, Parts, GradsFor<G, In>>;
}

/**
 * The options of a WebGPU call inside someone else's training step (SPEC §10; see
 * docs/BACKENDS.md): with GPU-resident inputs, `readback: false` leaves the loss and its
 * parts on the GPU (`[1, 1]` GPU matrices, `[N, 1]` with `reduction: "none"`), computed
 * there, and maps no buffer; `encoder` records the call's passes into the caller's
 * command encoder, which the caller submits (needs `readback: false`).
 */
export interface GpuCallOptions {
  /** `false`: results stay on the GPU (needs a GPU-resident input). @default true */
  readback?: boolean;
  /** The command encoder to record into (the caller submits it); needs `readback: false`. */
  encoder?: GPUCommandEncoder;
}

/** Every part of a result as a GPU matrix (`readback: false`). */
export type GpuParts<Parts> = { [K in keyof Parts]: GpuMatrix };

/** What `forward` returns with `readback: false`: the loss and its parts as GPU matrices. */
export type GpuForward<Op = undefined, Parts = unknown> =
  & { loss: GpuMatrix }
  & (Op extends { reduction: "none" } ? unknown : GpuParts<Parts>);

/** Every gradient as a GPU matrix (a list input's as a list). */
export type GpuGrads<G> = { [K in keyof G]: G[K] extends readonly unknown[] ? GpuMatrix[] : GpuMatrix };

/** The result of `forward` of an asynchronous loss: on the GPU with `readback: false`. */
export type ForwardOf<Op, Parts> = Op extends { readback: false } ? GpuForward<Op, Parts> : ForwardResult<Op, Parts>;

/** The result of `valueAndGrad` of an asynchronous loss: on the GPU with `readback: false`. */
export type ValueAndGradOf<Op, Parts, G, In> = Op extends { readback: false }
  ? GpuForward<Op, Parts> & { grads: GpuGrads<G> }
  : ValueAndGrad<Op, Parts, GradsFor<G, In>>;

/** The same loss with every method returning a Promise (the `Losses` object of `init`). */
export interface AsyncLoss<I, O, G, Parts = unknown> {
  /** Computes the loss (and its parts). */
  forward<In extends I, Op extends (O & GpuCallOptions) | undefined = undefined>(
    inputs: In,
    options?: Op,
  ): Promise<ForwardOf<Op, Parts>>;
  /** Computes the gradients of the loss, scaled by `upstream` (default 1). */
  backward<In extends I, Op extends (O & GpuCallOptions) | undefined = undefined>(
    inputs: In,
    options?: Op,
    upstream?: Upstream,
  ): Promise<Op extends { readback: false } ? GpuGrads<G> : GradsFor<G, In>>;
  /** Computes the loss and its gradients in one fused pass. */
  valueAndGrad<In extends I, Op extends (O & GpuCallOptions) | undefined = undefined>(
    inputs: In,
    options?: Op,
  ): Promise<ValueAndGradOf<Op, Parts, G, In>>;
}

/**
 * A loss's synchronous GPU form (`Losses.sync`, SPEC §10): GPU-resident inputs, results
 * on the GPU as the methods return (`readback: false` implied; `encoder` optional), nothing
 * awaited, nothing read back: for synchronous callbacks such as `tf.customGrad`'s. Device
 * errors are reported by a later call or by `dispose()`.
 */
export interface GpuSyncLoss<I, O, G, Parts = unknown> {
  /** Computes the loss (and its parts). */
  forward<In extends I, Op extends (O & GpuCallOptions) | undefined = undefined>(
    inputs: In,
    options?: Op,
  ): GpuForward<Op, Parts>;
  /** Computes the gradients of the loss, scaled by `upstream` (default 1). */
  backward<In extends I, Op extends (O & GpuCallOptions) | undefined = undefined>(
    inputs: In,
    options?: Op,
    upstream?: Upstream,
  ): GpuGrads<G>;
  /** Computes the loss and its gradients in one fused pass. */
  valueAndGrad<In extends I, Op extends (O & GpuCallOptions) | undefined = undefined>(
    inputs: In,
    options?: Op,
  ): GpuForward<Op, Parts> & { grads: GpuGrads<G> };
}

/**
 * A metric (such as `accuracy`): a value computed from inputs, with no gradient and no
 * `out` buffers. Its one method, `compute`, returns the value.
 */
export interface Metric<I, O> {
  /** Computes the metric. */
  compute(inputs: I, options?: O): number;
}

/** A metric whose `compute` returns a Promise (the `Losses` object of `init`). */
export interface AsyncMetric<I, O> {
  /** Computes the metric. */
  compute(inputs: I, options?: O): Promise<number>;
}

/** The name of a backend. */
export type BackendName = "webgpu" | "wasm" | "js";
