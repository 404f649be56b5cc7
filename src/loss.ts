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
 * **Other kinds of export**: metrics (`accuracy`) have only `compute` (no gradient, no
 * `out`); the softmax transforms have an output and a vector-Jacobian product;
 * schedules and state functions are plain synchronous functions exported by `mod.ts`
 * and `cpu.ts`, not members of the loss set.
 *
 * @module
 */
import type { Kernels } from "./kernels.ts";
import type { Loss, Matrix, Metric, Upstream } from "./types.ts";
import { checkOverlap } from "./overlap.ts";
import { isGpuMatrix, keys, onDevice, options as checkOptions, show } from "./validate.ts";

/**
 * What a kernel returns: per-row values (one array per part), gradients by input name,
 * and values it formed that a later term of a composite may take as an input
 * (`outputs`: the experts' gated ensemble).
 */
export interface Raw {
  rows: Float64Array[];
  grads: Record<string, Float32Array>;
  outputs?: Record<string, Float32Array>;
}

/** A prepared problem: checked inputs, resolved options, per-row gradient scales. */
export interface Prepared {
  /** Whether gradients are wanted (`backward`, `valueAndGrad`). */
  readonly grad: boolean;
}

/** The name of a kernel family (a key of {@linkcode Kernels}). */
export type KernelName = Exclude<keyof Kernels, "softmax" | "composite">;

/** The problem a kernel family solves. */
export type ProblemOf<K extends KernelName> = Parameters<Kernels[K]>[0];

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

/** A loss, defined once for every backend. */
export interface LossDef<I, O, G, K extends KernelName> extends Keys<O> {
  readonly name: string;
  /** The kernel family every backend runs for it. */
  readonly kernel: K;
  /** The differentiable inputs: the keys of `grads` and of `options.out`. */
  readonly grads: readonly string[];
  prepare(inputs: I, options: O, grad: boolean, upstream: Upstream | undefined): ProblemOf<K>;
  finish(problem: ProblemOf<K>, raw: Raw): { loss: number | Float32Array; grads: G } & Record<string, unknown>;
}

/** A value of an earlier term of a composite: its index and a key of its gradients or outputs. */
export type Ref = readonly [term: number, key: string];

/**
 * One term of a composite loss: a problem, the kernel family that solves it, and its
 * links: fields of the problem (dotted paths: `"gated.into.0"`) that are an earlier
 * term's gradient or output, bound when the earlier term has run (on the backend where
 * it ran: a GPU buffer on WebGPU), so that one term can take another's result (the
 * experts' gated ensemble as the hierarchical term's fine logits) and the `combine`
 * family can add the terms' gradients together.
 */
export interface Term {
  readonly kernel: KernelName;
  readonly problem: unknown;
  readonly links?: Readonly<Record<string, Ref>>;
}

/**
 * A composite loss: a weighted sum of other losses' terms. `prepare` builds the terms'
 * problems with the parts' own definitions, `terms` lists them in order (a `combine`
 * term last: the combination of their gradients, linked to them), the backend runs them
 * (`Kernels.composite`: in order on the CPU; on WebGPU, for GPU-resident inputs, all in one
 * submission with one readback), and `finish` reads the parts and gradients off the terms'
 * raw results.
 */
export interface CompositeDef<I, O, G, P> extends Keys<O> {
  readonly name: string;
  readonly grads: readonly string[];
  prepare(inputs: I, options: O, grad: boolean, upstream: Upstream | undefined): P;
  terms(problem: P): readonly Term[];
  finish(problem: P, raws: Raw[]): { loss: number | Float32Array; grads: G } & Record<string, unknown>;
}

/**
 * The problem of `Kernels.composite`: the terms, and the size by which the `auto`
 * backend routes the whole composite (its largest term's rows `n` and columns `c`).
 */
export interface CompositeProblem {
  readonly terms: readonly Term[];
  readonly n: number;
  readonly c: number;
}

/** A metric: a value without a gradient, defined once for every backend. */
export interface MetricDef<I, O, K extends KernelName> extends Keys<O> {
  readonly name: string;
  readonly kernel: K;
  prepare(inputs: I, options: O): ProblemOf<K>;
  finish(problem: ProblemOf<K>, raw: Raw): number;
}

/** A backend's kernel for one family. CPU kernels return synchronously, GPU ones a Promise. */
export type Kernel<P> = (problem: P) => Raw | Promise<Raw>;

/**
 * A matrix result `{ data, shape }`, or `{ buffer, shape }` when a WebGPU kernel left
 * it on the GPU (its values are then a `DeviceValues`).
 */
export function result(data: Float32Array, rows: number, cols: number): Matrix {
  if (onDevice(data)) return { buffer: data.buffer, shape: [rows, cols] } as unknown as Matrix;
  return { data, shape: [rows, cols] };
}

/** Whether a value holds GPU-resident data at any depth (problem fields, lists, nested objects). */
export function holdsDevice(value: unknown): boolean {
  return devicePath(value) !== null;
}

/**
 * Calls `visit` with the path (`"f"`, `"logits.1"`, `"terms.0.problem.f"` in a
 * composite's problem; `""` for the value itself) and the buffer of every GPU-resident
 * value in `value` (fields, lists, nested objects), depth first, until it returns true.
 * Returns whether it did.
 */
function eachDevice(value: unknown, visit: (path: string, b: GPUBuffer) => boolean, path = "", depth = 0): boolean {
  if (onDevice(value) || isGpuMatrix(value)) return visit(path, value.buffer);
  if (typeof value !== "object" || value === null || ArrayBuffer.isView(value) || depth > 5) return false;
  return Object.entries(value).some(([k, item]) => eachDevice(item, visit, path ? `${path}.${k}` : k, depth + 1));
}

/** Where a value holds GPU-resident data first (see {@linkcode eachDevice}), or null. */
function devicePath(value: unknown): string | null {
  let at: string | null = null;
  eachDevice(value, (path) => (at = path, true));
  return at;
}

/** The GPU buffers of values held anywhere in `value`. */
function buffersIn(value: unknown): Set<GPUBuffer> {
  const out = new Set<GPUBuffer>();
  eachDevice(value, (_, b) => (out.add(b), false));
  return out;
}

/**
 * Guards a CPU kernel: a problem holding GPU-resident values anywhere (a field, a list
 * of matrices, a nested object) is refused with a `TypeError` before any work.
 */
export function hostOnly<P extends object, R>(kernel: (p: P) => R, backend: string): (p: P) => R {
  return (p) => {
    const at = devicePath(p);
    if (at !== null) {
      throw new TypeError(
        `Expected every input to be a matrix { data: Float32Array, shape } on the ${backend} backend, got a GPUBuffer (${at}); GPU-resident inputs need init({ backend: "webgpu" })`,
      );
    }
    return kernel(p);
  };
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
 * `backward`'s result: the gradients; GPU buffers that the dropped parts hold (mixOutputs'
 * mean logits of GPU-resident inputs) are destroyed.
 */
function gradsOnly(r: Record<string, unknown>): unknown {
  const kept = buffersIn(r.grads);
  for (const b of buffersIn(split(r))) if (!kept.has(b)) b.destroy();
  return r.grads;
}

/** `f(r)`, or `r.then(f)` when `r` is a Promise: one code path for synchronous and asynchronous kernels. */
export const then = <T, U>(
  r: T | Promise<T>,
  f: (t: T) => U,
): U | Promise<U> => (r instanceof Promise ? r.then(f) : f(r));

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
): Loss<unknown, unknown, unknown> {
  const run = (inputs: unknown, options: unknown, grad: boolean, upstream?: Upstream) => {
    const o = checkCall(def, inputs, options, upstream);
    const p = def.prepare(inputs, o, grad, upstream);
    return then(solve(p), (raw) => def.finish(p, raw));
  };
  const wrap = <T>(f: () => T | Promise<T>) => (async ? (async () => await f())() : f());
  return {
    forward: (inputs, options) => wrap(() => then(run(inputs, options, false), split)),
    backward: (inputs, options, upstream) => wrap(() => then(run(inputs, options, true, upstream), gradsOnly)),
    valueAndGrad: (inputs, options) => wrap(() => run(inputs, options, true)),
  } as Loss<unknown, unknown, unknown>;
}

/** `value` with the field at a dotted `path` replaced by `x` (copies along the path; the rest shared). */
function setPath(value: unknown, path: readonly string[], x: unknown): unknown {
  if (path.length === 0) return x;
  const [head, ...rest] = path;
  const copy = (Array.isArray(value) ? [...value] : { ...(value as object) }) as Record<string, unknown>;
  copy[head] = setPath(copy[head], rest, x);
  return copy;
}

/**
 * A term's problem with its links bound: `lookup` gives an earlier term's value (its
 * gradient or output `key`). A missing value is an `Error` (a composite's own bug).
 */
export function linked(term: Term, lookup: (ref: Ref) => Float32Array | undefined): unknown {
  let p = term.problem;
  for (const [path, ref] of Object.entries(term.links ?? {})) {
    const value = lookup(ref);
    if (value === undefined) throw new Error(`Term ${term.kernel}: no ${ref[1]} from term ${ref[0]} for ${path}`);
    p = setPath(p, path.split("."), value);
  }
  return p;
}

/** A raw result's gradient or output by key. */
export const valueOf = (raw: Raw, key: string): Float32Array | undefined => raw.grads[key] ?? raw.outputs?.[key];

/**
 * `Kernels.composite` of a CPU backend (and of WebGPU for host inputs): every term on its
 * family's kernel, in order, each with its links bound to the earlier terms' results.
 */
export function sequential(kernels: Omit<Kernels, "composite">): (p: CompositeProblem) => Raw[] | Promise<Raw[]> {
  return (p) => {
    let raws: Raw[] | Promise<Raw[]> = [];
    for (const t of p.terms) {
      raws = then(raws, (done) => {
        const kernel = kernels[t.kernel] as (q: unknown) => Raw | Promise<Raw>;
        return then(kernel(linked(t, ([k, key]) => valueOf(done[k], key))), (r) => [...done, r]);
      }) as Raw[] | Promise<Raw[]>;
    }
    return raws;
  };
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
 * Binds a composite definition to a backend (as {@linkcode bindLoss}): the terms' GPU
 * gradient buffers that the result does not hold are destroyed once it is finished.
 */
export function bindComposite<P>(
  def: CompositeDef<unknown, unknown, unknown, P>,
  kernels: Kernels,
  async: boolean,
): Loss<unknown, unknown, unknown> {
  const finish = (p: unknown, raws: Raw[]) => {
    const r = def.finish(p as P, raws);
    const kept = buffersIn(r.grads);
    for (const b of buffersIn(raws.map((x) => x.grads))) if (!kept.has(b)) b.destroy();
    return r;
  };
  return bindLoss({ ...def, finish } as never, composite(def, kernels) as never, async);
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
