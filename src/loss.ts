/**
 * The contract every loss fits, and the machinery that binds it to a backend.
 *
 * **A loss is defined once** (a {@linkcode LossDef} in `src/losses/`): the keys it
 * accepts (inputs, options, gradients), the kernel family that computes it, how its
 * inputs are checked and turned into a problem (`prepare`) and how the kernel's raw
 * result becomes the public result (`finish`). A backend supplies one function per
 * kernel family ({@linkcode Kernels}), never per loss, so a loss that reuses a family
 * touches only its definition, its test and its documentation, and a loss with a new
 * family adds that family's kernel to each backend.
 *
 * **Inputs** are keyed by name. An input is a matrix (`{ data, shape }`, or on WebGPU
 * `{ buffer, shape }`), a list of matrices (expert logits, expert features: its gradient
 * is a list in the same order), integer labels or another integer vector/matrix, or
 * optional; `src/validate.ts` checks each kind with the same error style. Before
 * `prepare` runs, every input, option and `out` key is checked against the accepted
 * ones: an unknown key is a `TypeError` that names it and lists the accepted keys.
 *
 * **Results** are `{ loss, ...parts }` and, with gradients, `grads` keyed by input
 * name. A kernel returns per-row (or per-element) values, one array per part; `finish`
 * reduces each part with its own reduction and denominator (`reduce` in
 * `src/validate.ts`: rows that are not ignored, anchors that have a positive, pairs,
 * classes), and the gradient scales of `prepare` use the same denominators. A
 * composite loss ({@linkcode CompositeDef}, `physMoe`) is a weighted sum of other
 * losses' terms: it prepares its terms with those losses' own definitions, sharing what
 * they have in common (one gated ensemble), runs each term on its family's kernel, and
 * combines the results; a family's kernel shares intermediates within a term (one
 * softmax per expert serves its cross-entropy, its collaboration and its distillation).
 *
 * **The GPU path** (SPEC §10, {@linkcode bindGpuLoss}): on WebGPU, with GPU-resident
 * inputs, `readback: false` (the asynchronous methods), `encoder` and `Losses.sync` run
 * prepare, the kernel and `finish` synchronously inside one recording of the backend's
 * `GpuPath`; `finish` then reduces per-row values that stayed on the GPU (the helpers of
 * `src/kernels/deferred.ts`), and the backend computes the loss and parts there.
 *
 * **Other kinds of export**: metrics (`accuracy`) have only `compute` (no gradient, no
 * `out`); the softmax transforms have an output and a vector-Jacobian product;
 * schedules and state functions are plain synchronous functions exported by `mod.ts`
 * and `cpu.ts`, not members of the loss set.
 *
 * @module
 */
import type { GpuPath, Kernels } from "./kernels/mod.ts";
import type { Loss, Metric, Upstream } from "./types.ts";
import { checkOverlap } from "./overlap.ts";
import { keys, options as checkOptions, show } from "./validate.ts";
import type { KernelName, ProblemOf, Term } from "./kernels/mod.ts";
import { buffersIn, holdsDevice, type Raw, then } from "./kernels/core.ts";

/** The keys a loss or metric accepts. */
export interface Keys<O> {
  /** Input names (required and optional). */
  readonly inputs: readonly string[];
  /**
   * Option names besides `checkFinite` and `out`; a function when they depend on
   * another option (`marginHead`'s `kind`).
   */
  readonly options: readonly string[] | ((o: O) => readonly string[]);
}

/** What a definition becomes on a backend: a loss's methods, a metric's `compute`, or a transform's. */
export type MemberKind = "loss" | "metric" | "transform";

/**
 * A definition as the public API sees it: its name, its public types (a phantom field,
 * never set at run time: the members of `Losses`/`SyncLosses` and `losses.sharded` are
 * derived from it, so a loss's types are written once, in its module) and its
 * class-sharded form. The registry (`src/losses/registry.ts`) lists one per member; the
 * machinery behind it (the keys, the kernel family, `prepare`, `finish`) is internal.
 */
export interface Definition<
  I,
  O,
  G = unknown,
  Parts = unknown,
  Kind extends MemberKind = "loss",
  Shard extends ShardForm | undefined = undefined,
> {
  /** The public name (the member of `Losses`). */
  readonly name: string;
  /** Its public types (phantom). */
  readonly types?: {
    readonly inputs: I;
    readonly options: O;
    readonly grads: G;
    readonly parts: Parts;
    readonly kind: Kind;
  };
  /** Its class-sharded form, if it has one. */
  readonly shard?: Shard;
}

/**
 * The class-sharded form a loss has (`losses.sharded`, `src/losses/sharded.ts`): `"logits"`
 * for a fused softmax over shards of the logits or cosines, `"head"` for a head over
 * shards of W, `"linear"` for `linearCrossEntropy` over shards of its vocabulary (rows of W).
 */
export type ShardForm = "logits" | "head" | "linear";

/** A loss, defined once for every backend. */
export interface LossDef<I, O, G, K extends KernelName, Parts = unknown>
  extends Keys<O>, Definition<I, O, G, Parts, "loss", ShardForm | undefined> {
  /** The kernel family every backend runs for it. */
  readonly kernel: K;
  /** The differentiable matrix inputs: the keys of `grads` and of `options.out`. */
  readonly grads: readonly string[];
  /**
   * The differentiable number inputs (CLIP's `scale`, SigLIP's `scale` and `bias`): keys of
   * the result's `grads`, each gradient a number (`Raw.numbers` of the kernel), never keys of
   * `options.out`. An input of this list is checked with `numberInput` (src/validate.ts);
   * the TensorFlow.js adapter takes it as a scalar tensor and returns its gradient as one.
   */
  readonly numbers?: readonly string[];
  prepare(inputs: I, options: O, grad: boolean, upstream: Upstream | undefined): ProblemOf<K>;
  finish(problem: ProblemOf<K>, raw: Raw): { loss: number | Float32Array; grads: G } & Record<string, unknown>;
}

/**
 * A composite loss: a weighted sum of other losses' terms. `prepare` builds the terms'
 * problems with the parts' own definitions, `terms` lists them in order (a `combine`
 * term last: the combination of their gradients, linked to them), the backend runs them
 * (`Kernels.composite`: in order on the CPU; on WebGPU, for GPU-resident inputs, all in one
 * submission with one readback), and `finish` reads the parts and gradients off the terms'
 * raw results.
 */
export interface CompositeDef<I, O, G, P, Parts = unknown> extends Keys<O>, Definition<I, O, G, Parts> {
  readonly grads: readonly string[];
  prepare(inputs: I, options: O, grad: boolean, upstream: Upstream | undefined): P;
  terms(problem: P): readonly Term[];
  finish(problem: P, raws: Raw[]): { loss: number | Float32Array; grads: G } & Record<string, unknown>;
}

/** A metric: a value without a gradient, defined once for every backend. */
export interface MetricDef<I, O, K extends KernelName> extends Keys<O>, Definition<I, O, unknown, unknown, "metric"> {
  readonly kernel: K;
  prepare(inputs: I, options: O): ProblemOf<K>;
  finish(problem: ProblemOf<K>, raw: Raw): number;
}

/**
 * Checks the keys of a call against a definition, and that no `out` buffer shares memory
 * with an input, the upstream gradient or another `out` buffer; returns the options
 * object ({} when absent).
 */
export function checkCall<O>(
  def: Keys<O> & { readonly name: string; readonly grads?: readonly string[] },
  inputs: unknown,
  options: O | undefined,
  upstream?: unknown,
): O {
  if (typeof inputs !== "object" || inputs === null || Array.isArray(inputs)) {
    throw new TypeError(`Expected inputs to be an object, got ${show(inputs)}`);
  }
  keys(`inputs of ${def.name}`, inputs, def.inputs);
  const o = checkOptions(options as object | undefined) as O & { out?: unknown };
  const named = typeof def.options === "function" ? def.options(o) : def.options;
  const common = def.grads === undefined ? ["checkFinite"] : ["checkFinite", "out"];
  keys(`options of ${def.name}`, o, [...named, ...common]);
  if (o.out !== undefined && def.grads !== undefined) {
    if (typeof o.out !== "object" || o.out === null || Array.isArray(o.out)) {
      throw new TypeError(`Expected options.out to be an object of gradient buffers, got ${show(o.out)}`);
    }
    keys(`options.out of ${def.name}`, o.out, def.grads);
    checkOverlap(inputs, o.out, upstream);
  }
  return o;
}

type AnyKernel = (p: unknown) => Raw | Promise<Raw>;

function split(r: Record<string, unknown>): Record<string, unknown> {
  const { grads: _, ...value } = r;
  return value;
}

/**
 * Inside a call recorded for the GPU path, how a buffer the result does not keep is
 * released (with the recording: the caller's encoder may still use it); else null and
 * it is destroyed at once.
 */
let dropping: ((b: GPUBuffer) => void) | null = null;

/** Releases a GPU buffer a result does not keep (see {@linkcode dropping}). */
const release = (b: GPUBuffer) => (dropping ? dropping(b) : b.destroy());

/**
 * `backward`'s result: the gradients; GPU buffers that the dropped parts hold (mixOutputs'
 * mean logits of GPU-resident inputs) are released.
 */
function gradsOnly(r: Record<string, unknown>): unknown {
  const kept = buffersIn(r.grads);
  for (const b of buffersIn(split(r))) if (!kept.has(b)) release(b);
  return r.grads;
}

/**
 * The options of SPEC §10 (`readback`, `encoder`), checked and taken off a call's options
 * (`readback` is false unless given: the call is on the GPU path).
 */
function gpuOptions(options: unknown): { rest: unknown; readback?: boolean; encoder?: GPUCommandEncoder } {
  if (typeof options !== "object" || options === null || !("readback" in options || "encoder" in options)) {
    return { rest: options };
  }
  const { readback, encoder, ...rest } = options as { readback?: unknown; encoder?: unknown };
  if (readback !== undefined && typeof readback !== "boolean") {
    throw new TypeError(`Expected options.readback to be a boolean, got ${show(readback)}`);
  }
  if (
    encoder !== undefined &&
    (typeof encoder !== "object" || encoder === null || typeof (encoder as { finish?: unknown }).finish !== "function")
  ) {
    throw new TypeError(`Expected options.encoder to be a GPUCommandEncoder, got ${show(encoder)}`);
  }
  if (readback === true) {
    throw new TypeError(
      `Expected options.readback to be false or absent (results left on the GPU${
        encoder === undefined ? "" : ", recorded into options.encoder"
      }), got true`,
    );
  }
  return { rest, readback, encoder: encoder as GPUCommandEncoder | undefined };
}

/** A loss's methods on the GPU path (SPEC §10): synchronous, results on the GPU (`Losses.sync`). */
export interface GpuMember {
  forward(inputs: unknown, options?: unknown): Record<string, unknown>;
  backward(inputs: unknown, options?: unknown, upstream?: Upstream): unknown;
  valueAndGrad(inputs: unknown, options?: unknown): Record<string, unknown>;
  /** Resolves once the device reported the errors of the calls recorded so far, rejecting with them if any. */
  settled(): Promise<void>;
}

/**
 * Binds a loss definition (or a composite's) to a backend's GPU path: each method checks
 * the call, then prepares, runs the kernel and finishes inside one recording (into
 * `options.encoder`, or submitted at its end), the loss and parts computed on the GPU;
 * nothing awaits and nothing is read back. Without a GPU path (`gpu` undefined: a CPU
 * backend) every method throws a `TypeError`.
 */
export function bindGpuLoss<R>(
  def: Keys<unknown> & {
    readonly name: string;
    readonly grads: readonly string[];
    prepare(inputs: unknown, options: unknown, grad: boolean, upstream: Upstream | undefined): unknown;
    finish(problem: unknown, raw: R): Record<string, unknown>;
  },
  gpu: { path: GpuPath; solve: (p: unknown) => R | Promise<R> } | undefined,
): GpuMember {
  const run = (inputs: unknown, options: unknown, kind: "forward" | "backward" | "both", upstream?: Upstream) => {
    const { rest, encoder } = gpuOptions(options);
    if (!gpu) {
      throw new TypeError(
        `Expected the webgpu backend (init({ backend: "webgpu" })) for results left on the GPU (${def.name}), got a CPU backend`,
      );
    }
    const o = checkCall(def, inputs, rest, upstream);
    if (!holdsDevice(inputs)) {
      throw new TypeError(
        `Expected a GPU-resident input { buffer, shape } of ${def.name} with options.readback false (results on the GPU), got host matrices only`,
      );
    }
    return gpu.path.record(encoder, () => {
      dropping = gpu.path.drop;
      try {
        const p = def.prepare(inputs, o, kind !== "forward", upstream);
        const raw = gpu.solve(p);
        if (raw instanceof Promise) throw new Error(`${def.name}: its WebGPU kernel did not record synchronously`);
        const r = def.finish(p, raw);
        if (kind === "backward") return (gpu.path.materialize({ grads: gradsOnly(r) }) as { grads: unknown }).grads;
        return gpu.path.materialize(kind === "forward" ? split(r) : r);
      } finally {
        dropping = null;
      }
    });
  };
  return {
    forward: (inputs, options) => run(inputs, options, "forward") as Record<string, unknown>,
    backward: (inputs, options, upstream) => run(inputs, options, "backward", upstream),
    valueAndGrad: (inputs, options) => run(inputs, options, "both") as Record<string, unknown>,
    settled: () => gpu ? gpu.path.settled() : Promise.resolve(),
  };
}

/**
 * Binds a loss definition (or a composite's) to what solves its problem on a backend:
 * a kernel, or a composite's terms. With a synchronous solver (the CPU backends) the
 * methods return values; with `async` every method returns a Promise.
 */
export function bindLoss<R>(
  def: Keys<unknown> & {
    readonly name: string;
    readonly grads: readonly string[];
    prepare(inputs: unknown, options: unknown, grad: boolean, upstream: Upstream | undefined): unknown;
    finish(problem: unknown, raw: R): Record<string, unknown>;
  },
  solve: (p: unknown) => R | Promise<R>,
  async: boolean,
  gpu?: GpuMember,
): Loss<unknown, unknown, unknown> {
  const run = (inputs: unknown, options: unknown, grad: boolean, upstream?: Upstream) => {
    const o = checkCall(def, inputs, options, upstream);
    const p = def.prepare(inputs, o, grad, upstream);
    return then(solve(p), (raw) => def.finish(p, raw));
  };
  const wrap = <T>(f: () => T | Promise<T>) => (async ? (async () => await f())() : f());
  /**
   * `options.readback` false (or an `encoder`) goes to the GPU path, which awaits only the
   * device's report of errors (nothing is read back); `readback: true` is the usual call.
   */
  const route = <T>(options: unknown, usual: (o: unknown) => T | Promise<T>, onGpu: (g: GpuMember) => T) => {
    if (!async || typeof options !== "object" || options === null) return usual(options);
    const { readback, encoder, ...rest } = options as { readback?: unknown; encoder?: unknown };
    if (readback === undefined && encoder === undefined) return usual(options);
    if (readback === true && encoder === undefined) return usual(rest);
    return wrap(async () => {
      if (readback !== false) {
        throw new TypeError(
          `Expected options.readback to be false with options.encoder (a recorded call leaves its results on the GPU), got ${
            show(readback)
          }`,
        );
      }
      const g = gpu ?? bindGpuLoss(def, undefined);
      const r = onGpu(g);
      await g.settled();
      return r;
    });
  };
  return {
    forward: (inputs, options) =>
      route(options, (o) => wrap(() => then(run(inputs, o, false), split)), (g) => g.forward(inputs, options)),
    backward: (inputs, options, upstream) =>
      route(
        options,
        (o) => wrap(() => then(run(inputs, o, true, upstream), gradsOnly)),
        (g) => g.backward(inputs, options, upstream),
      ),
    valueAndGrad: (inputs, options) =>
      route(options, (o) => wrap(() => run(inputs, o, true)), (g) => g.valueAndGrad(inputs, options)),
  } as Loss<unknown, unknown, unknown>;
}

/**
 * A composite loss's solver on a backend: its terms as one `Kernels.composite` problem.
 * GPU buffers that the terms made and the result does not hold (a gradient already added
 * into another) are destroyed after `finish` (see {@linkcode bindComposite}).
 */
export function composite<P>(
  def: CompositeDef<unknown, unknown, unknown, P>,
  kernels: Kernels,
): (p: P) => Raw[] | Promise<Raw[]> {
  return (p) => {
    const terms = def.terms(p);
    let n = 0, c = 0;
    for (const t of terms) {
      const q = t.problem as { n?: number; b?: number; c?: number };
      n = Math.max(n, q.n ?? q.b ?? 0);
      c = Math.max(c, q.c ?? 0);
    }
    return kernels.composite({ terms, n, c });
  };
}

/**
 * A composite definition whose `finish` releases the terms' GPU gradient buffers that
 * the result does not hold (a gradient already added into another).
 */
export function releasingTerms<P>(
  def: CompositeDef<unknown, unknown, unknown, P>,
): CompositeDef<unknown, unknown, unknown, P> {
  const finish = (p: P, raws: Raw[]) => {
    const r = def.finish(p, raws);
    const kept = buffersIn(r.grads);
    for (const b of buffersIn(raws.map((x) => x.grads))) if (!kept.has(b)) release(b);
    return r;
  };
  return { ...def, finish };
}

/**
 * Binds a composite definition to a backend (as {@linkcode bindLoss}): the terms' GPU
 * gradient buffers that the result does not hold are released once it is finished.
 */
export function bindComposite<P>(
  def: CompositeDef<unknown, unknown, unknown, P>,
  kernels: Kernels,
  async: boolean,
  gpu?: GpuMember,
): Loss<unknown, unknown, unknown> {
  return bindLoss(releasingTerms(def) as never, composite(def, kernels) as never, async, gpu);
}

/** Binds a metric definition to its kernel (`compute` returns a Promise with `async`). */
export function bindMetric(
  def: MetricDef<unknown, unknown, KernelName>,
  kernel: AnyKernel,
  async: boolean,
): Metric<unknown, unknown> {
  const run = (inputs: unknown, options: unknown) => {
    const o = checkCall(def, inputs, options);
    const p = def.prepare(inputs, o);
    return then(kernel(p), (raw) => def.finish(p, raw));
  };
  return {
    compute: (inputs, options) => (async ? (async () => await run(inputs, options))() : run(inputs, options)),
  } as Metric<unknown, unknown>;
}

/** A loss's definition, checked against the contract (its type arguments give the literal's parameters their types). */
export const lossDef = <I, O, G, K extends KernelName, Parts = unknown, S extends ShardForm | undefined = undefined>(
  def: LossDef<I, O, G, K, Parts> & { readonly shard?: S },
): LossDef<I, O, G, K, Parts> & { readonly shard?: S } => def;

/** A metric's definition, checked against the contract. */
export const metricDef = <I, O, K extends KernelName>(def: MetricDef<I, O, K>): MetricDef<I, O, K> => def;

/** A composite's definition, checked against the contract. */
export const compositeDef = <I, O, G, P, Parts = unknown>(
  def: CompositeDef<I, O, G, P, Parts>,
): CompositeDef<I, O, G, P, Parts> => def;
