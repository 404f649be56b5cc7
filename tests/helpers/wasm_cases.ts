/**
 * Every loss of the WebAssembly backend on a tiny random problem, called on each of its
 * paths: inputs in ordinary Float32Arrays, in WebAssembly memory (`alloc`), or as plain
 * matrices whose `data` is a view into that memory; gradients fresh, into ordinary `out`
 * buffers, or into `alloc` ones. The float64 reference (`js`) on the same values is the
 * oracle. Shared by tests/wasm_growth_test.ts and tests/wasm_memory_test.ts.
 *
 * @module
 */
import { alloc, js, type SyncLosses } from "../../cpu.ts";
import { assertGradClose, assertLossClose } from "./assert.ts";
import { type Mat, randomMatrix, Rng, seedOf } from "./random.ts";
import { allSpecs, cosineMarginSpecs, headSpecs, type LossSpec } from "./specs.ts";
import { moeSpecs } from "./specs_moe.ts";
import { metricSpecs } from "./specs_metric.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/** One loss and its problem, in host arrays. */
export interface Case {
  readonly spec: LossSpec;
  readonly inputs: Readonly<Record<string, Any>>;
  /** The upstream of the softmax transforms (`[N, C]`). */
  readonly upstream?: Mat;
}

/** A metric (`accuracy`): no gradient and no `out`. */
export const isMetric = (cs: Case): boolean => cs.spec.grads.length === 0;

/**
 * What a call gave: the loss (or the transform's output, or the metric) and each gradient,
 * copied (a list gradient as one entry per matrix, `name.k`).
 */
export interface Result {
  value: number | Float32Array;
  grads: Record<string, Float32Array>;
}

/** Options for drawing a case's problem: physicsContrastive's random problems have a rule only with a threshold. */
const drawOptions: Record<string, Record<string, Any>> = { physicsContrastive: { threshold: 0.8 } };

/** Every loss (the 24 public members of `wasm`) on a random `[n, c]` problem (heads, §4–§6: D = 8). */
export function cases(n = 3, c = 5): Case[] {
  return [...allSpecs, ...cosineMarginSpecs, ...headSpecs, ...moeSpecs, ...metricSpecs].map((spec) => {
    const rng = new Rng(seedOf(`wasm cases ${spec.name}`));
    const inputs = spec.random(rng, n, c, 1, drawOptions[spec.name] ?? {});
    return spec.matrixOutput ? { spec, inputs, upstream: randomMatrix(rng, n, c, 1) } : { spec, inputs };
  });
}

/** Where a call's matrices are: ordinary arrays, `alloc`, or `{ data: view into WebAssembly memory, shape }`. */
export type Place = "host" | "alloc" | "view";

/** Matrices placed for a call, and how to free what was allocated. */
export interface Placed {
  inputs: Record<string, Any>;
  upstream?: Any;
  free(): void;
}

/** A float matrix (integer matrices such as hnmContrastive's `hard` stay on the host, as labels do). */
const isMat = (v: unknown): v is Mat =>
  typeof v === "object" && v !== null && "shape" in v && (v as Mat).data instanceof Float32Array;

/** A list of float matrices (expert logits, expert features). */
const isMatList = (v: unknown): v is Mat[] => Array.isArray(v) && v.length > 0 && v.every(isMat);

/** `m`'s values placed as `where` says; `taken` collects what must be freed. */
function placeMat(m: Mat, where: Place, taken: { free(): void }[]): Any {
  if (where === "host") return { data: m.data.slice(), shape: m.shape };
  const a = alloc(m.shape);
  a.data.set(m.data);
  taken.push(a);
  return where === "alloc" ? a : { data: a.data, shape: m.shape };
}

/** The case's inputs (and upstream) placed as `where` says. */
export function place(cs: Case, where: Place): Placed {
  const taken: { free(): void }[] = [];
  const inputs = Object.fromEntries(
    Object.entries(cs.inputs).map((
      [k, v],
    ) => [k, isMat(v) ? placeMat(v, where, taken) : isMatList(v) ? v.map((m) => placeMat(m, where, taken)) : v]),
  );
  const upstream = cs.upstream && placeMat(cs.upstream, where, taken);
  return { inputs, upstream, free: () => taken.forEach((t) => t.free()) };
}

/** Where gradients go: fresh arrays, ordinary `out` buffers, or `alloc` ones. */
export type OutPlace = "fresh" | "host" | "alloc";

/** `out` buffers (NaN-filled, so unwritten elements show) for the case's gradients; none for a metric. */
export function outs(cs: Case, where: OutPlace): { out?: Record<string, Any>; free(): void } {
  if (where === "fresh" || isMetric(cs)) return { free: () => {} };
  const taken: { free(): void }[] = [];
  const buffer = (shape: readonly [number, number]) => {
    const m = where === "alloc" ? alloc(shape) : { data: new Float32Array(shape[0] * shape[1]), shape };
    if (where === "alloc") taken.push(m as { free(): void });
    m.data.fill(NaN);
    return m;
  };
  const out: Record<string, Any> = {};
  for (const k of cs.spec.grads) {
    const input = cs.inputs[k];
    out[k] = isMatList(input) ? input.map((m) => buffer(m.shape)) : buffer((input as Mat).shape);
  }
  // The transforms' forward writes `out.output`, their VJP `out.x`.
  if (cs.spec.matrixOutput) {
    const shape = (cs.inputs.x as Mat).shape;
    const m = where === "alloc" ? alloc(shape) : { data: new Float32Array(shape[0] * shape[1]), shape };
    if (where === "alloc") taken.push(m as { free(): void });
    out.output = m;
  }
  return { out, free: () => taken.forEach((t) => t.free()) };
}

/** `valueAndGrad` (or a metric's value), or `forward` (no gradients). */
export type Method = "valueAndGrad" | "forward";

/**
 * Calls the case's loss on `losses` (`wasm` or `js`) with `placed` inputs and `out`
 * buffers, and copies what it gave at once (a view into WebAssembly memory would be
 * detached by a later growth).
 */
export function call(
  losses: SyncLosses,
  cs: Case,
  placed: Placed,
  out: Record<string, Any> | undefined,
  method: Method = "valueAndGrad",
  options: Record<string, Any> = {},
): Result {
  const l = (losses as Any)[cs.spec.name];
  const o = out ? { ...options, out } : options;
  if (isMetric(cs)) {
    const value = typeof l.compute === "function" ? l.compute(placed.inputs, o) : l.forward(placed.inputs, o).loss;
    return { value, grads: {} };
  }
  const copy = (v: Any) => (typeof v === "number" ? v : (v.data ?? v).slice());
  if (cs.spec.matrixOutput) {
    if (method === "forward") return { value: copy(l.forward(placed.inputs, o).output), grads: {} };
    const r = l.valueAndGrad(placed.inputs, o, placed.upstream);
    return { value: copy(r.output), grads: { x: copy(r.grads.x) } };
  }
  if (method === "forward") return { value: copy(l.forward(placed.inputs, o).loss), grads: {} };
  const r = l.valueAndGrad(placed.inputs, o);
  const grads = cs.spec.grads.flatMap((k): [string, Float32Array][] =>
    Array.isArray(r.grads[k]) ? r.grads[k].map((g: Any, i: number) => [`${k}.${i}`, copy(g)]) : [[k, copy(r.grads[k])]]
  );
  return { value: copy(r.loss), grads: Object.fromEntries(grads) };
}

/** The float64 reference's result of the case. */
export function reference(cs: Case, method: Method = "valueAndGrad"): Result {
  return call(js, cs, place(cs, "host"), undefined, method);
}

/** Asserts `got` is the reference's `want` within SPEC's bounds. */
export function assertMatches(got: Result, want: Result, label: string): void {
  assertLossClose(got.value, want.value, `${label}: loss`);
  for (const [k, g] of Object.entries(want.grads)) assertGradClose(got.grads[k], g, `${label}: gradient ${k}`);
  for (const k of Object.keys(got.grads)) if (!(k in want.grads)) throw new Error(`${label}: gradient ${k} unexpected`);
}
