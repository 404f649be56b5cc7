// Loader for the PyTorch float64 reference fixtures written by tests/fixtures/generate.py
// (the format is described in that script's docstring; tests/fixtures/generate_moe.py adds list
// inputs and gradients, integer matrices, tensor parts and hnm.json's rounds, described in its
// docstring). Runs unchanged under Deno 2 and Bun:
// it uses only node:fs, node:url and web globals (atob, DataView).

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** A float32 matrix (or higher-rank tensor) as the library takes it. */
export interface Matrix32 {
  data: Float32Array;
  shape: number[];
}

/** A float64 tensor of a fixture input (not used by the current files; kept for completeness). */
export interface Matrix64 {
  data: Float64Array;
  shape: number[];
}

/** A float32 or float64 input as decoded: rank 1 becomes a bare typed array, rank >= 2 a matrix. */
export type FixtureInput = Float32Array | Float64Array | Matrix32 | Matrix64;

/** An integer matrix (INTMAT `{"shape", "int"}`): hnmContrastive's `hard [B, k]`, hnmHardNegatives' result. */
export interface Int32Matrix {
  data: Int32Array;
  shape: number[];
}

/** An expected float64 tensor stored in full. */
export interface DenseExpected {
  kind: "dense";
  shape: number[];
  data: Float64Array;
}

/**
 * An expected float64 tensor stored as a sample (cases with C >= 10000): `data[k]` is the value at
 * the flat row-major index `idx[k]`; `maxAbs` is the largest |value| over the whole tensor.
 */
export interface SampledExpected {
  kind: "sampled";
  shape: number[];
  idx: Int32Array;
  data: Float64Array;
  maxAbs: number;
}

export type ExpectedTensor = DenseExpected | SampledExpected;

export interface FixtureCase {
  name: string;
  /**
   * Keyed by the library's input names: labels and other integer vectors (fineToCoarse) are
   * Int32Array, matrices `{ data, shape }`, list inputs (expertLogits, features) arrays of matrices,
   * integer matrices (hard) Int32Matrix.
   */
  inputs: Record<string, number | Int32Array | FixtureInput | FixtureInput[] | Int32Matrix>;
  /** camelCase options; vector options (weight, alpha) are Float32Array. */
  options: Record<string, unknown>;
  /**
   * Upstream gradient: undefined means 1; a number for reduced losses; a Float32Array [N] for
   * reduction "none"; a Matrix32 [N, C] for softmax / logSoftmax.
   */
  upstream?: number | FixtureInput;
  expected: {
    /** A number, or a float64 tensor ([N] for "none", [N, C] output of softmax / logSoftmax). */
    loss: number | ExpectedTensor;
    /**
     * Named parts: numbers (distillation's reduced KL and CE before weighting, the §4–§6 parts),
     * or a float64 tensor (mixOutputs' meanLogits).
     */
    parts?: Record<string, number | ExpectedTensor>;
    /**
     * Keyed by input name; the vector-Jacobian product with `upstream` (a list input's gradient is
     * an array in the input's order). Empty for accuracy and the state functions.
     */
    grads: Record<string, ExpectedTensor | ExpectedTensor[]>;
    /** The gradients of number inputs (clip's scale, siglip's scale and bias), keyed by input name. */
    numbers?: Record<string, number>;
  };
  /** klDiv with logTarget false and zero target entries: torch's gradient there (e.g. "nan"). */
  torchTargetGradAtZero?: string;
}

export interface FixtureFile {
  generator: string;
  torch: string;
  cases: FixtureCase[];
}

// ------------------------------------------------------------------------------------- LCG

/**
 * The fixtures' LCG, bit-identical with lcg_f32 in generate.py: state = seed (uint32);
 * state = state * 1664525 + 1013904223 (mod 2^32); u = (state >>> 8) / 2^24;
 * value = fround((2u - 1) * scale).
 */
export function lcgFloat32(seed: number, n: number, scale: number): Float32Array {
  const out = new Float32Array(n);
  let state = seed >>> 0;
  for (let i = 0; i < n; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    const u = (state >>> 8) / 16777216;
    out[i] = Math.fround((2 * u - 1) * scale);
  }
  return out;
}

// ------------------------------------------------------------------------------------- decoding

function base64Bytes(b64: string): DataView {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new DataView(bytes.buffer);
}

function decodeF32(b64: string): Float32Array {
  const view = base64Bytes(b64);
  const out = new Float32Array(view.byteLength / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
  return out;
}

function decodeF64(b64: string): Float64Array {
  const view = base64Bytes(b64);
  const out = new Float64Array(view.byteLength / 8);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat64(8 * i, true);
  return out;
}

// deno-lint-ignore no-explicit-any
type Json = any;

function isTensor(v: Json): boolean {
  return v !== null && typeof v === "object" && !Array.isArray(v) && Array.isArray(v.shape) &&
    ("f32" in v || "f64" in v || "lcg" in v || "sample" in v);
}

function count(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Decodes an INTMAT `{"shape": [rows, cols], "int": [flat ints]}`. */
function decodeIntMatrix(t: Json, where: string): Int32Matrix {
  const data = Int32Array.from(t.int as number[]);
  if (data.length !== count(t.shape)) {
    throw new RangeError(`${where}: shape [${t.shape}] needs ${count(t.shape)} integers, got ${data.length}`);
  }
  return { data, shape: [...t.shape] };
}

/** An input: integer vector (JSON array of numbers), list of TENSORs, INTMAT or TENSOR. */
function decodeAnyInput(v: Json, where: string): FixtureCase["inputs"][string] {
  if (typeof v === "number") return v; // a number input (clip's scale)
  if (Array.isArray(v)) {
    if (v.every((x) => typeof x === "number")) return Int32Array.from(v as number[]);
    return v.map((t, i) => decodeInput(t, `${where}[${i}]`));
  }
  if (Array.isArray(v?.int)) return decodeIntMatrix(v, where);
  return decodeInput(v, where);
}

/** Decodes a dense TENSOR (f32 / f64 / lcg) to its flat typed array, checking its length. */
export function decodeTensorData(t: Json, where = "tensor"): Float32Array | Float64Array {
  const n = count(t.shape);
  let data: Float32Array | Float64Array;
  if (typeof t.f32 === "string") data = decodeF32(t.f32);
  else if (typeof t.f64 === "string") data = decodeF64(t.f64);
  else if (t.lcg) data = lcgFloat32(t.lcg.seed, n, t.lcg.scale);
  else throw new TypeError(`${where}: not a dense tensor`);
  if (data.length !== n) {
    throw new RangeError(`${where}: shape [${t.shape}] needs ${n} values, got ${data.length}`);
  }
  return data;
}

/** An input / option / upstream tensor: rank 1 → bare typed array, otherwise `{ data, shape }`. */
function decodeInput(t: Json, where: string): FixtureInput {
  const data = decodeTensorData(t, where);
  if (t.shape.length === 1) return data;
  return { data, shape: [...t.shape] } as Matrix32 | Matrix64;
}

function decodeExpected(t: Json, where: string): ExpectedTensor {
  if (t.sample) {
    const idx = Int32Array.from(t.sample.idx as number[]);
    const data = decodeF64(t.sample.f64);
    if (idx.length !== data.length) throw new RangeError(`${where}: idx/value count mismatch`);
    return { kind: "sampled", shape: [...t.shape], idx, data, maxAbs: t.maxAbs };
  }
  const data = decodeTensorData(t, where);
  return { kind: "dense", shape: [...t.shape], data: Float64Array.from(data) };
}

function decodeCase(c: Json): FixtureCase {
  const where = (k: string) => `${c.name}: ${k}`;
  const inputs: FixtureCase["inputs"] = {};
  for (const [k, v] of Object.entries<Json>(c.inputs)) inputs[k] = decodeAnyInput(v, where(k));
  const options: Record<string, unknown> = {};
  for (const [k, v] of Object.entries<Json>(c.options ?? {})) {
    options[k] = isTensor(v) ? decodeInput(v, where(`options.${k}`)) : v;
  }
  const out: FixtureCase = {
    name: c.name,
    inputs,
    options,
    expected: {
      loss: typeof c.expected.loss === "number"
        ? c.expected.loss
        : decodeExpected(c.expected.loss, where("expected.loss")),
      grads: {},
    },
  };
  if (c.upstream !== undefined) {
    out.upstream = typeof c.upstream === "number" ? c.upstream : decodeInput(c.upstream, where("upstream"));
  }
  if (c.expected.parts) {
    const parts: Record<string, number | ExpectedTensor> = {};
    for (const [k, v] of Object.entries<Json>(c.expected.parts)) {
      parts[k] = typeof v === "number" ? v : decodeExpected(v, where(`expected.parts.${k}`));
    }
    out.expected.parts = parts;
  }
  for (const [k, v] of Object.entries<Json>(c.expected.grads ?? {})) {
    const w = where(`expected.grads.${k}`);
    if (typeof v === "number") {
      (out.expected.numbers ??= {})[k] = v;
      continue;
    }
    out.expected.grads[k] = Array.isArray(v)
      ? v.map((t: Json, i: number) => decodeExpected(t, `${w}[${i}]`))
      : decodeExpected(v, w);
  }
  if (c.torchTargetGradAtZero !== undefined) out.torchTargetGradAtZero = c.torchTargetGradAtZero;
  return out;
}

function resolvePath(file: string): string {
  if (file.startsWith("/") || /^[A-Za-z]:[\\/]/.test(file)) return file;
  if (file.startsWith("file:")) return fileURLToPath(file);
  // Bare names ("softmax.json") and paths are taken relative to tests/fixtures/.
  return fileURLToPath(new URL(`../fixtures/${file}`, import.meta.url));
}

/** The whole file, with its header (generator, torch version). */
export function loadFixtureFile(file: string): FixtureFile {
  const raw = JSON.parse(readFileSync(resolvePath(file), "utf8"));
  return {
    generator: raw.generator,
    torch: raw.torch,
    cases: (raw.cases as Json[]).map(decodeCase),
  };
}

/** Loads tests/fixtures/<file> (or an absolute path) and decodes every case. */
export function loadFixtures(file: string): FixtureCase[] {
  return loadFixtureFile(file).cases;
}

/** Expected value at a flat index, or undefined where a sampled tensor has no sample. */
export function expectedAt(t: ExpectedTensor, flatIndex: number): number | undefined {
  if (t.kind === "dense") return t.data[flatIndex];
  let lo = 0, hi = t.idx.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (t.idx[mid] === flatIndex) return t.data[mid];
    if (t.idx[mid] < flatIndex) lo = mid + 1;
    else hi = mid - 1;
  }
  return undefined;
}

/** The largest |value| of an expected tensor (over the full tensor, also when sampled). */
export function expectedMaxAbs(t: ExpectedTensor): number {
  if (t.kind === "sampled") return t.maxAbs;
  let m = 0;
  for (let i = 0; i < t.data.length; i++) m = Math.max(m, Math.abs(t.data[i]));
  return m;
}

// ------------------------------------------------------------------------------------- hnm rounds

/** A state of the hard-negative miner as hnm.json stores it: float64, dense. */
export interface HnmExpectedState {
  prototypes: DenseExpected;
  confusion: DenseExpected;
}

/** One step of a replayable hnm round (see the hnm.json layout in generate_moe.py's docstring). */
export type HnmStep =
  | { op: "hnmInit"; args: { C: number; D: number }; state: HnmExpectedState }
  | {
    op: "hnmUpdatePrototypes";
    args: { f: Matrix32; labels: Int32Array };
    options: Record<string, unknown>;
    state: HnmExpectedState;
  }
  | { op: "hnmUpdateConfusion"; args: { labels: Int32Array; predicted: Int32Array }; state: HnmExpectedState }
  | { op: "hnmDecay"; options: Record<string, unknown>; state: HnmExpectedState }
  | { op: "hnmHardNegatives"; args: { labels: Int32Array; k: number }; hard: Int32Matrix }
  | { op: "hnmContrastive"; case: FixtureCase };

/** A round: the steps in order; each state-taking step takes the previous step's state. */
export interface HnmRound {
  name: string;
  C: number;
  D: number;
  steps: HnmStep[];
}

function decodeState(s: Json, where: string): HnmExpectedState {
  return {
    prototypes: decodeExpected(s.prototypes, `${where}.prototypes`) as DenseExpected,
    confusion: decodeExpected(s.confusion, `${where}.confusion`) as DenseExpected,
  };
}

function decodeStep(s: Json, where: string, cases: FixtureCase[]): HnmStep {
  const options = { ...(s.options ?? {}) };
  const ints = (v: Json) => Int32Array.from(v as number[]);
  switch (s.op) {
    case "hnmInit":
      return { op: s.op, args: { C: s.args.C, D: s.args.D }, state: decodeState(s.state, where) };
    case "hnmUpdatePrototypes":
      return {
        op: s.op,
        args: { f: decodeInput(s.args.f, `${where}.f`) as Matrix32, labels: ints(s.args.labels) },
        options,
        state: decodeState(s.state, where),
      };
    case "hnmUpdateConfusion":
      return {
        op: s.op,
        args: { labels: ints(s.args.labels), predicted: ints(s.args.predicted) },
        state: decodeState(s.state, where),
      };
    case "hnmDecay":
      return { op: s.op, options, state: decodeState(s.state, where) };
    case "hnmHardNegatives":
      return {
        op: s.op,
        args: { labels: ints(s.args.labels), k: s.args.k },
        hard: decodeIntMatrix(s.hard, `${where}.hard`),
      };
    case "hnmContrastive": {
      const fc = cases.find((c) => c.name === s.case);
      if (!fc) throw new RangeError(`${where}: no case named ${s.case}`);
      return { op: s.op, case: fc };
    }
    default:
      throw new TypeError(`${where}: unknown op ${s.op}`);
  }
}

/** The replayable rounds of the hard-negative-mining state functions (hnm.json's "rounds"). */
export function loadHnmRounds(file = "hnm.json"): HnmRound[] {
  const raw = JSON.parse(readFileSync(resolvePath(file), "utf8"));
  const cases = (raw.cases as Json[]).map(decodeCase);
  return ((raw.rounds ?? []) as Json[]).map((r) => ({
    name: r.name,
    C: r.C,
    D: r.D,
    steps: (r.steps as Json[]).map((s, i) => decodeStep(s, `${r.name} step ${i} (${s.op})`, cases)),
  }));
}

/** An expected state rounded to float32: the state the next step of its round takes. */
export function roundedState(s: HnmExpectedState): { prototypes: Matrix32; confusion: Matrix32 } {
  const m = (t: DenseExpected): Matrix32 => ({ data: Float32Array.from(t.data), shape: [...t.shape] });
  return { prototypes: m(s.prototypes), confusion: m(s.confusion) };
}
