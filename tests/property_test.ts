// Property-based tests (fast-check) of every loss, metric and transform, on the js
// reference and the wasm backend, over the arbitraries of tests/helpers/arbitraries.ts:
//
// (a) finite inputs give a finite loss, parts, output and gradients (logits to |1e4|,
//     cosines of exactly +-1, zero rows for the heads), of the documented shapes, written
//     into the caller's `out` buffers when given; ignored rows contribute nothing;
// (b) no input, option or upstream is ever changed;
// (c) a valid call never throws, and an invalid one (one thing broken) throws only a
//     TypeError or RangeError whose message starts with "Expected" and names the argument;
// (d) wasm agrees with the float64 reference within SPEC's bound.
//
// The second table (metric learning, mixture of experts, hard-negative mining) checks (a),
// (b) and (d) on random problems pushed to their edges, then what the math guarantees
// (invariances, exact zeros), and the state functions against their definitions.
//
// The seed is fixed (printed below) so CI is reproducible; SOFTMARGIN_PROPERTY_SEED
// changes it and SOFTMARGIN_PROPERTY_RUNS sets the cases per property (deno task
// test:long runs 100000), SOFTMARGIN_PROPERTY_ONLY picks members by name. A failure prints fast-check's counterexample, seed and path.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  centerUpdate,
  hnmDecay,
  hnmHardNegatives,
  hnmInit,
  hnmUpdateConfusion,
  hnmUpdatePrototypes,
  js,
  wasm,
} from "../cpu.ts";
import { init } from "../mod.ts";
import {
  type BadCase,
  call,
  type Case,
  type Mat,
  type Method,
  methodsOf,
  optionsFor,
  type Outcome,
  outcome,
  PROBLEM_LOSSES,
  type ProblemCase,
  type ProblemLoss,
  PROPERTY_LOSSES,
  type PropertyLoss,
  rowNorm,
  SHARDED_LOSSES,
  type ShardedCase,
  type ShardedLoss,
  show,
  uniform,
} from "./helpers/arbitraries.ts";
import { assertFinite, assertLossClose, assertUnchanged, snapshot, SPEC_TOL } from "./helpers/assert.ts";
import { word } from "./helpers/errors.ts";
import { seedOf } from "./helpers/random.ts";
import { runSharded, shardsOf } from "./helpers/sharded.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const env = (name: string) =>
  (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env[name];

/** Cases per property in CI: the whole file runs in about 25 s under Deno or Bun (2 vCPUs). */
const CI_RUNS = 1500;
const RUNS = Number(env("SOFTMARGIN_PROPERTY_RUNS") ?? CI_RUNS);
const SEED = Number(env("SOFTMARGIN_PROPERTY_SEED") ?? 20261122);
/** A comma-separated list of names runs only those members (SOFTMARGIN_PROPERTY_ONLY=crossEntropy,focal). */
const ONLY = env("SOFTMARGIN_PROPERTY_ONLY")?.split(",").filter(Boolean);
console.log(
  `property tests: seed ${SEED} (SOFTMARGIN_PROPERTY_SEED), ${RUNS} cases per property (SOFTMARGIN_PROPERTY_RUNS)`,
);

const BACKENDS = [{ name: "js", losses: js }, { name: "wasm", losses: wasm }] as const;

/** Bun stops a test after 5 s unless told otherwise (Deno has no such limit). */
const TIMEOUT = { timeout: Math.max(120_000, RUNS * 50) };

/** Each property's own seed, so that adding a loss leaves the others' cases as they were. */
const seedFor = (entry: PropertyLoss, property: string) => (SEED ^ seedOf(`${entry.name} ${property}`)) | 0;

function effectiveIgnore(k: Case): number {
  return (k.options?.ignoreIndex ?? -100) as number;
}

/** (a) for one result: documented shapes, finite values, out buffers used, ignored rows 0. */
function checkResult(entry: PropertyLoss, k: Case, options: Any, r: Outcome, label: string): void {
  const batch = k.inputs[entry.batch] as Mat;
  const n = batch.shape[0];
  const labels = k.inputs.labels as ArrayLike<number> | undefined;
  const ignored = (i: number) => labels !== undefined && labels[i] === effectiveIgnore(k);
  const allIgnored = labels !== undefined && Array.from({ length: n }, (_, i) => ignored(i)).every(Boolean);
  if (entry.kind === "metric") {
    assert.equal(typeof r.value, "number", `${label}: the metric is not a number`);
    const v = r.value as number;
    assert.ok(v >= 0 && v <= 1, `${label}: ${v} is not a share in [0, 1]`);
    if (allIgnored) assert.equal(v, 0, `${label}: every row ignored, got ${v}`);
    return;
  }
  if (r.value !== undefined) {
    if (entry.kind === "transform") {
      assert.deepEqual([...r.output!.shape], [...batch.shape], `${label}: output shape`);
      assertFinite(r.value as Float32Array, `${label} output`, batch.shape);
      if (options?.out?.output) assert.equal(r.output, options.out.output, `${label}: output is not out.output`);
    } else if (options?.reduction === "none") {
      assert.ok(r.value instanceof Float32Array && r.value.length === n, `${label}: expected ${n} row losses`);
      assertFinite(r.value, `${label} loss`);
      if (entry.ignoredRowsVanish) {
        for (let i = 0; i < n; i++) {
          if (ignored(i)) assert.ok(r.value[i] === 0, `${label}: ignored row ${i} has loss ${r.value[i]}`);
        }
      }
    } else {
      assert.equal(typeof r.value, "number", `${label}: a reduced loss is a number`);
      assertFinite(r.value as number, `${label} loss`);
      if (allIgnored && entry.ignoredRowsVanish) assert.equal(r.value, 0, `${label}: every row ignored`);
    }
    for (const [key, v] of Object.entries(r.parts)) assertFinite(v, `${label} ${key}`);
  }
  if (r.grads === undefined) return;
  assert.deepEqual(Object.keys(r.grads).sort(), [...entry.grads].sort(), `${label}: gradient names`);
  for (const key of entry.grads) {
    const g: Mat = r.grads[key];
    const vector = k.inputs[key] instanceof Float32Array; // (magface's norms: a [N, 1] gradient)
    const input = (vector ? { shape: [k.inputs[key].length, 1] } : k.inputs[key]) as Mat;
    assert.ok(g.data instanceof Float32Array, `${label}: grads.${key}.data is not a Float32Array`);
    assert.deepEqual([...g.shape], [...input.shape], `${label}: grads.${key}.shape`);
    assertFinite(g.data, `${label} grads.${key}`, g.shape);
    if (options?.out?.[key]) assert.equal(g, options.out[key], `${label}: grads.${key} is not out.${key}`);
    const vanish = entry.ignoredRowsVanish && (allIgnored || key === entry.batch);
    if (!vanish) continue;
    const cols = g.shape[1];
    for (let i = 0; i < g.shape[0]; i++) {
      if (!allIgnored && !ignored(i)) continue;
      for (let j = 0; j < cols; j++) {
        const v = g.data[i * cols + j];
        if (v !== 0) {
          assert.fail(`${label}: grads.${key}[${i}, ${j}] is ${v}, expected 0 (row ${allIgnored ? "" : i} ignored)`);
        }
      }
    }
  }
}

/** The largest |value| of an upstream gradient (a number, a vector or a matrix), 1 when absent. */
function upstreamSize(upstream: Any): number {
  if (upstream === undefined) return 1;
  if (typeof upstream === "number") return Math.abs(upstream);
  let m = 0;
  for (const v of (upstream.data ?? upstream) as Iterable<number>) m = Math.max(m, Math.abs(v));
  return m;
}

/**
 * Which rows of the gradient `key` take part in the agreement check. Left out, and still
 * checked to be finite and of the right shape:
 *
 * - A row of an input the head L2-normalises whose norm is at most 1e-12 (a zero
 *   embedding or class row): `F.normalize`'s gradient there is divided by 1e-12, so every
 *   rounding error of either backend is multiplied by 1e12 (the float64 reference's own
 *   `p_y - 1` loses the label's term once `1 - p_y < 1e-16`, which wasm keeps: there the
 *   reference is the less accurate of the two). Neither is an oracle for such rows.
 * - A pair (i, j) whose cosine is within 1e-6 of +-1 (an embedding parallel to a class
 *   row), in grads.x row i and grads.W row j, where the cosine is clamped (marginHead: every
 *   one; SphereFace, L-Softmax: the label's): the clamp to [-1, 1] passes no gradient
 *   outside it and the full one inside, and the last bit of rounding of the cosine (float32
 *   in wasm, float64 in the reference) decides which: the gradient is discontinuous there.
 */
function comparedRows(entry: PropertyLoss, k: Case, key: string): (row: number) => boolean {
  const input = k.inputs[key] as Mat;
  const normalised = entry.normalised.includes(key);
  const zero = (i: number) => normalised && rowNorm(input, i) <= 1e-12;
  if (entry.batch !== "x" || !k.inputs.W) return (i) => !zero(i);
  // The heads: rows of x and rows of W left out for a pair (i, j) of theirs (see above).
  const x = k.inputs.x as Mat, W = k.inputs.W as Mat, labels = k.inputs.labels as ArrayLike<number>;
  const ignore = effectiveIgnore(k), d = x.shape[1];
  const xRows = new Set<number>(), wRows = new Set<number>();
  // marginHead clamps every cosine; SphereFace and L-Softmax only the label's.
  const everyCosine = entry.normalised.includes("x");
  for (let i = 0; i < x.shape[0]; i++) {
    if (labels[i] === ignore) continue;
    const nx = rowNorm(x, i);
    for (let j = 0; j < W.shape[0]; j++) {
      if (!everyCosine && j !== labels[i]) continue;
      const nw = rowNorm(W, j);
      let dot = 0;
      for (let q = 0; q < d; q++) dot += x.data[i * d + q] * W.data[j * d + q];
      if (nx > 1e-12 && nw > 1e-12 && Math.abs(dot / (nx * nw)) >= 1 - 1e-6) {
        xRows.add(i);
        wRows.add(j);
      }
    }
  }
  const left = key === "x" ? xRows : wRows;
  return (i) => !zero(i) && !left.has(i);
}

/**
 * Row i's gradient scale `r_i` (SPEC's reductions): `upstream / count` for "mean" (count:
 * the non-ignored rows), `upstream` for "sum", `upstream[i]` for "none"; 0 if ignored.
 */
function rowScale(k: Case, upstream: Any): (i: number) => number {
  const labels = k.inputs.labels as ArrayLike<number>, ignore = effectiveIgnore(k);
  const reduction = k.options?.reduction ?? "mean";
  const count = Array.from(labels).filter((y) => y !== ignore).length;
  return (i) => {
    if (labels[i] === ignore) return 0;
    if (reduction === "none") return upstream === undefined ? 1 : upstream[i];
    const u = upstream ?? 1;
    return reduction === "mean" ? u / count : u;
  };
}

/**
 * What float32 can resolve where a gradient element is a small difference of larger terms
 * (not a defect: the result is below the rounding of its own terms): 16 ulps (2^-20) of
 * the size of the terms each row's gradient is summed from.
 *
 * - softCrossEntropy: `grads.logits_i = r_i ((sum_c t_ic) p_i - t_i)`, terms of size
 *   `|r_i| sum_c |t_ic|` (targets near `(sum t) p`: 1.2e-5 relative with t = [1, 0.99]).
 * - klDiv: `grads.target = r_i (log t + 1 - x)` (`e^t (t - x + 1)` with logTarget), terms of
 *   size `|log t| + 1 + |x|` (t = 0.231, x = -0.456: -0.0095 from terms of 1.46).
 * - logSoftmax's vector-Jacobian product: `dx_j = g_j - p_j sum_k g_k`, terms of size
 *   `p_j |sum_k g_k|` where p_j is float32 (an upstream nearly proportional to p: g = [1, 1]
 *   on a tie, [0, 0]). Except at the argmax, written as `g_r (1 - p_r) - p_r sum_{k != r} g_k`
 *   with `1 - p_r` the others' share; so the size is `(1 - max_j p_j) |sum_k g_k|`.
 * - The heads: `grads.x_i` sums `G_ij W^_j / ||x_i||` over the classes and `grads.W_j` sums
 *   `G_ij x^_i / ||W_j||` over the rows, with `sum_j |G_ij| <= 2 s |r_i|` (s the scale;
 *   SphereFace and L-Softmax: 1 + m^2 bounds the label's factor, and `||x_i||`, `||W_j||`
 *   stand for the unnormalised side). Mirrored or nearly parallel rows cancel them; so do
 *   two classes at nearly the same cosine once the label's class row is zero (its term
 *   drops out), where wasm's float32 cosines decide the result (1.2e-4 relative at s = 85,
 *   the reference matching finite differences); at D = 1 a normalised input's gradient is
 *   exactly 0 (a one-dimensional unit vector cannot turn) and both backends return noise,
 *   and SphereFace's and L-Softmax's sums over the classes cancel (every cosine is +-1).
 */
function termSlack(entry: PropertyLoss, k: Case, key: string, upstream: Any): ((row: number) => number) | null {
  const ulps = 2 ** -20;
  if (entry.name === "logSoftmax") {
    if (upstream === undefined) return null;
    const x = k.inputs.x as Mat, g = (upstream as Mat).data, c = x.shape[1];
    return (i) => {
      let sum = 0, m = -Infinity, s = 0;
      for (let j = 0; j < c; j++) {
        sum += g[i * c + j];
        m = Math.max(m, x.data[i * c + j]);
      }
      for (let j = 0; j < c; j++) s += Math.exp(x.data[i * c + j] - m);
      return ulps * (1 - 1 / s) * Math.abs(sum);
    };
  }
  if (entry.name === "softCrossEntropy" && key === "logits") {
    const t = k.inputs.target as Mat, [n, c] = t.shape;
    const reduction = k.options?.reduction ?? "mean";
    return (i) => {
      let mass = 0;
      for (let j = 0; j < c; j++) mass += Math.abs(t.data[i * c + j]);
      const u = reduction === "none" ? (upstream === undefined ? 1 : upstream[i]) : (upstream ?? 1);
      return ulps * mass * Math.abs(reduction === "mean" ? u / n : u);
    };
  }
  if (entry.name === "klDiv" && key === "target") {
    const t = k.inputs.target as Mat, x = k.inputs.logInput as Mat, [n, c] = t.shape;
    const reduction = k.options?.reduction ?? "batchmean";
    const logTarget = k.options?.logTarget === true;
    return (i) => {
      let size = 0;
      for (let j = 0; j < c; j++) {
        const tv = t.data[i * c + j], xv = Math.abs(x.data[i * c + j]);
        if (logTarget) size = Math.max(size, Math.exp(tv) * (Math.abs(tv) + xv + 1));
        else if (tv > 0) size = Math.max(size, Math.abs(Math.log(tv)) + xv + 1);
      }
      const u = reduction === "none" ? (upstream === undefined ? 1 : upstream[i]) : (upstream ?? 1);
      const r = reduction === "mean" ? u / (n * c) : reduction === "sum" ? u : reduction === "none" ? u : u / n;
      return ulps * size * Math.abs(r);
    };
  }
  if (entry.batch !== "x" || !k.inputs.W) return null;
  const x = k.inputs.x as Mat, W = k.inputs.W as Mat, r = rowScale(k, upstream);
  const o = k.options ?? {};
  const m = (o.m ?? 4) as number;
  const factor = entry.name === "marginHead" ? 2 * (o.scale ?? (o.kind === "normface" ? 16 : 64)) : 2 * (1 + m * m);
  const scaled = (
    v: Mat,
    i: number,
  ) => (entry.normalised.includes(v === x ? "x" : "W") ? 1 / Math.max(rowNorm(v, i), 1e-12) : rowNorm(v, i));
  if (key === "x") {
    let wMax = 0;
    for (let j = 0; j < W.shape[0]; j++) wMax = Math.max(wMax, entry.normalised.includes("W") ? 1 : rowNorm(W, j));
    return (i) => ulps * factor * Math.abs(r(i)) * (entry.normalised.includes("x") ? scaled(x, i) : wMax);
  }
  let rows = 0;
  for (let i = 0; i < x.shape[0]; i++) rows += Math.abs(r(i)) * (entry.normalised.includes("x") ? 1 : rowNorm(x, i));
  return (j) => ulps * factor * rows * (entry.normalised.includes("W") ? scaled(W, j) : 1);
}

/**
 * SPEC's gradient bound, `1e-5 * max(1e-3, max|ref grad|)`, over the compared rows. The
 * floor 1e-3 is for a unit upstream: with an upstream U every gradient and every rounding
 * error scales by |U|, so the floor does too (`1e-3 * max(1, max|U|)`).
 */
function assertGradAgrees(
  got: Mat,
  ref: Mat,
  rows: (row: number) => boolean,
  floor: number,
  tol: number,
  slack: ((row: number) => number) | null,
  label: string,
): void {
  const cols = ref.shape[1];
  let max = 0;
  for (let i = 0; i < ref.shape[0]; i++) {
    if (rows(i)) { for (let j = 0; j < cols; j++) max = Math.max(max, Math.abs(ref.data[i * cols + j])); }
  }
  const bound = tol * Math.max(floor, max);
  // The worst element relative to what it is allowed (the bound, plus the row's slack).
  let worst = -1, worstRatio = 0, worstAllowed = bound;
  for (let i = 0; i < ref.shape[0]; i++) {
    if (!rows(i)) continue;
    const allowed = bound + (slack?.(i) ?? 0);
    for (let j = 0; j < cols; j++) {
      const ratio = Math.abs(got.data[i * cols + j] - ref.data[i * cols + j]) / allowed;
      if (!(ratio <= worstRatio)) {
        [worst, worstRatio, worstAllowed] = [i * cols + j, Number.isNaN(ratio) ? Infinity : ratio, allowed];
      }
    }
  }
  if (worst >= 0 && !(worstRatio <= 1)) {
    const error = Math.abs(got.data[worst] - ref.data[worst]);
    assert.fail(
      `${label}: worst element [${Math.floor(worst / cols)}, ${worst % cols}] is ${got.data[worst]}, reference ${
        ref.data[worst]
      } (error ${error.toExponential(3)} > ${worstAllowed.toExponential(3)}; bound: ${tol} * max(${floor}, max|ref| ${
        max.toExponential(3)
      }))`,
    );
  }
}

/** (d): wasm against the reference, for one method's results. */
function checkAgreement(entry: PropertyLoss, method: Method, k: Case, got: Outcome, ref: Outcome, label: string): void {
  if (entry.kind === "metric") {
    // Comparisons only: exact.
    assert.equal(got.value, ref.value, `${label}: accuracy ${got.value}, reference ${ref.value}`);
    return;
  }
  const upstream = method === "backward" || entry.kind === "transform" ? k.upstream : undefined;
  if (ref.value !== undefined) {
    assertLossClose(got.value as Any, ref.value as Any, `${label} ${entry.kind === "transform" ? "output" : "loss"}`);
    assert.deepEqual(Object.keys(got.parts).sort(), Object.keys(ref.parts).sort(), `${label}: part names`);
    for (const [key, v] of Object.entries(ref.parts)) assertLossClose(got.parts[key], v, `${label} ${key}`);
  }
  if (!ref.grads) return;
  const floor = 1e-3 * Math.max(1, upstreamSize(upstream));
  for (const key of entry.grads) {
    const rows = comparedRows(entry, k, key);
    const slack = termSlack(entry, k, key, upstream);
    assertGradAgrees(got.grads![key], ref.grads[key], rows, floor, SPEC_TOL, slack, `${label} grads.${key}`);
  }
}

/** (a), (b), (c) and (d) for one valid case. */
function checkValid(entry: PropertyLoss, k: Case): void {
  const results = new Map<string, Outcome>();
  for (const { name, losses } of BACKENDS) {
    const member = (losses as Any)[entry.name];
    for (const method of methodsOf(entry.kind)) {
      const label = `${name} ${entry.name}.${method}`;
      const options = optionsFor(entry, method, k.options, true);
      const passed = { inputs: k.inputs, options, upstream: k.upstream };
      const snap = snapshot(passed);
      let r: Any;
      try {
        r = call(member, entry, method, k, options);
      } catch (e) {
        assert.fail(`${label} threw on a valid call: ${(e as Error)?.name}: ${(e as Error)?.message}`);
      }
      assertUnchanged(snap, passed, `${label}: `);
      const o = outcome(entry, method, r);
      checkResult(entry, k, options, o, label);
      results.set(`${name} ${method}`, o);
    }
  }
  for (const method of methodsOf(entry.kind)) {
    checkAgreement(
      entry,
      method,
      k,
      results.get(`wasm ${method}`)!,
      results.get(`js ${method}`)!,
      `wasm ${entry.name}.${method}`,
    );
  }
}

/** (b) and (c) for one invalid case. */
function checkInvalid(entry: Pick<PropertyLoss, "name" | "kind" | "grads">, bad: BadCase): void {
  for (const { name, losses } of BACKENDS) {
    const member = (losses as Any)[entry.name];
    for (const method of methodsOf(entry.kind)) {
      const label = `${name} ${entry.name}.${method} with ${bad.what}`;
      const options = optionsFor(entry, method, bad.options, false);
      const passed = { inputs: bad.inputs, options, upstream: bad.upstream };
      const snap = snapshot(passed);
      let error: unknown = undefined;
      try {
        call(member, entry, method, bad, options);
      } catch (e) {
        error = e ?? new Error(`threw ${show(e)}`);
      }
      assertUnchanged(snap, passed, `${label}: `);
      if (error === undefined) {
        if (bad.mustThrow.includes(method)) assert.fail(`${label}: nothing was thrown`);
        continue;
      }
      const e = error as Error;
      assert.ok(
        e instanceof TypeError || e instanceof RangeError,
        `${label}: expected a TypeError or RangeError, got ${e?.constructor?.name}: ${e?.message}`,
      );
      assert.ok(e.message.startsWith("Expected"), `${label}: the message does not start with "Expected": ${e.message}`);
      assert.match(e.message, bad.mentions, `${label}: the message does not name the argument`);
    }
  }
}

describe(`property-based tests (fast-check, seed ${SEED}, ${RUNS} cases per property)`, () => {
  for (const entry of PROPERTY_LOSSES.filter((e) => !ONLY?.length || ONLY.includes(e.name))) {
    describe(entry.name, () => {
      it(
        `valid calls: finite, documented shapes, inputs unchanged, wasm agrees with js (${RUNS} cases)`,
        TIMEOUT,
        () => {
          fc.assert(fc.property(entry.valid, (k) => checkValid(entry, k)), {
            seed: seedFor(entry, "valid"),
            numRuns: RUNS,
          });
        },
      );
      it(
        `invalid calls: only a TypeError or RangeError "Expected ..." naming the argument (${RUNS} cases)`,
        TIMEOUT,
        () => {
          fc.assert(fc.property(entry.invalid, (bad) => checkInvalid(entry, bad)), {
            seed: seedFor(entry, "invalid"),
            numRuns: RUNS,
          });
        },
      );
    });
  }
});

// ------------------------------------------------------------------------------------------------
// Every member of the loss sets has an entry: a loss, metric or transform in the first or the
// second table, each sharded form in the sharded table. A member added without one fails here.

describe("every member of the loss sets has a property entry", () => {
  const tables = new Set([...PROPERTY_LOSSES, ...PROBLEM_LOSSES].map((e) => e.name));
  const shardedTable = new Set(SHARDED_LOSSES.map((e) => e.name));
  /** The members of a loss set (init's also has backend, note, threads and dispose: not objects). */
  const members = (set: object) =>
    Object.entries(set).filter(([, m]) => typeof m === "object" && m !== null) as [string, Any][];

  for (const [name, set] of [["js", js], ["wasm", wasm]] as const) {
    it(`cpu.ts's ${name}: each loss, metric and transform in a table, each sharded form in the sharded one`, () => {
      const missingEntries: string[] = [];
      for (const [key, m] of members(set)) {
        if (typeof m.forward === "function" || typeof m.compute === "function") {
          if (!tables.has(key)) missingEntries.push(key);
        } else if (
          Object.values(m).every((f: Any) => typeof f?.stats === "function" && typeof f.finish === "function")
        ) {
          for (const form of Object.keys(m)) if (!shardedTable.has(form)) missingEntries.push(`${key}.${form}`);
        } else assert.fail(`${name}.${key} is neither a loss, a metric, a transform nor a set of sharded forms`);
      }
      assert.deepEqual(missingEntries, [], `members of ${name} without a property entry`);
      // And no entry for a member that does not exist.
      const sharded = members(set).find(([, m]) => m.crossEntropy?.stats) ?? ["", {}];
      const names = new Set(members(set).map(([k]) => k));
      assert.deepEqual([...tables].filter((t) => !names.has(t)), [], "table entries without a member");
      assert.deepEqual(
        [...shardedTable].filter((t) => !(t in sharded[1])),
        [],
        "sharded entries without a member",
      );
    });
  }

  it("init's loss sets have the members of cpu.ts's", async () => {
    for (const backend of ["js", "wasm"] as const) {
      const set = await init({ backend });
      try {
        assert.deepEqual(members(set).map(([k]) => k).sort(), members(js).map(([k]) => k).sort(), backend);
        for (const [key, m] of members(set)) {
          assert.deepEqual(Object.keys(m).sort(), Object.keys((js as Any)[key]).sort(), `${backend}.${key}`);
        }
      } finally {
        set.dispose();
      }
    }
  });
});

// ------------------------------------------------------------------------------------------------
// The sharded forms: a valid call of the unsharded loss, its classes cut into shards at random
// (stats on each shard, mergeShardStats, finish on each; tests/helpers/sharded.ts assembles
// them): the shares sum to the unsharded loss and the gradients assemble into its gradients
// (SPEC's bound against the js reference, as (d)), finite, of the documented shapes, ignored
// rows 0, inputs unchanged, on js and wasm; and a shard's offset or class count out of place
// throws only a TypeError or RangeError "Expected ..." naming it.

/** Cases per property of the sharded forms (each runs up to 8 shards twice on two backends). */
const SHARDED_RUNS = Number(env("SOFTMARGIN_PROPERTY_RUNS") ?? 300);
const SHARDED = SHARDED_LOSSES.filter((e) => !ONLY?.length || ONLY.includes(e.name));
const shardedRun = (entry: ShardedLoss, property: string) => ({
  seed: (SEED ^ seedOf(`sharded.${entry.name} ${property}`)) | 0,
  numRuns: SHARDED_RUNS,
});

async function checkSharded(entry: ShardedLoss, k: ShardedCase): Promise<void> {
  const { loss } = entry;
  const member = (js as Any)[entry.name];
  // The unsharded js reference: its loss, and its gradients for the case's upstream.
  const ref: Outcome = {
    value: member.forward(k.inputs, k.options).loss,
    parts: {},
    grads: member.backward(k.inputs, k.options, k.upstream),
  };
  for (const b of BACKENDS) {
    const label = `${b.name} sharded.${entry.name} over shards [${k.sizes}]`;
    const passed = { inputs: k.inputs, options: k.options, upstream: k.upstream };
    const snap = snapshot(passed);
    let got;
    try {
      got = await runSharded(b, entry.name, k.inputs, k.options, k.sizes, k.upstream);
    } catch (e) {
      assert.fail(`${label} threw on a valid call: ${(e as Error)?.name}: ${(e as Error)?.message}`);
    }
    assertUnchanged(snap, passed, `${label}: `);
    const value = typeof got.loss === "number" ? got.loss : Float32Array.from(got.loss);
    const o: Outcome = { value, parts: {}, grads: got.grads };
    checkResult(loss, k, k.options, o, label);
    checkAgreement(loss, "backward", k, o, ref, label);
  }
}

/** A shard's offset and class count out of place, each with the argument it must name. */
function badShardOptions(c: number, cs: number): [string, Record<string, unknown>, string][] {
  return [
    ["no offset", { classes: c }, "options.offset"],
    ["offset -1", { offset: -1, classes: c }, "options.offset"],
    ["offset 0.5", { offset: 0.5, classes: c }, "options.offset"],
    ['offset "0"', { offset: "0", classes: c }, "options.offset"],
    ["offset NaN", { offset: NaN, classes: c }, "options.offset"],
    [`offset ${c - cs + 1} (past the last class)`, { offset: c - cs + 1, classes: c }, "options.offset"],
    ["no classes", { offset: 0 }, "options.classes"],
    ["classes 0", { offset: 0, classes: 0 }, "options.classes"],
    ["classes 1.5", { offset: 0, classes: 1.5 }, "options.classes"],
    [`classes "${c}"`, { offset: 0, classes: String(c) }, "options.classes"],
    [`classes ${cs - 1} (fewer than the shard's ${cs})`, { offset: 0, classes: cs - 1 }, "options.classes"],
  ];
}

function checkShardedInvalid(entry: ShardedLoss, k: ShardedCase): void {
  const { c, shards } = shardsOf(entry.name, k.inputs, k.sizes);
  const shard = shards[0], cs = k.sizes[0];
  for (const { name, losses } of BACKENDS) {
    const form = (losses as Any).sharded[entry.name];
    const stats = form.stats(shard, { ...k.options, offset: 0, classes: c });
    for (const [what, place, argument] of badShardOptions(c, cs)) {
      const options = { ...k.options, ...place };
      const calls = {
        stats: () => form.stats(shard, options),
        finish: () => form.finish(shard, stats, options, k.upstream),
      };
      for (const [method, call] of Object.entries(calls)) {
        const label = `${name} sharded.${entry.name}.${method} with ${what}`;
        const snap = snapshot({ shard, options });
        let error: unknown = undefined;
        try {
          call();
        } catch (e) {
          error = e;
        }
        assertUnchanged(snap, { shard, options }, `${label}: `);
        const e = error as Error;
        assert.ok(
          e instanceof TypeError || e instanceof RangeError,
          `${label}: expected a TypeError or RangeError, got ${
            e === undefined ? "nothing" : `${e?.constructor?.name}: ${e?.message}`
          }`,
        );
        assert.ok(
          e.message.startsWith("Expected"),
          `${label}: the message does not start with "Expected": ${e.message}`,
        );
        assert.match(e.message, word(argument), `${label}: the message does not name ${argument}`);
      }
    }
  }
}

describe(`property-based tests of the sharded forms (fast-check, ${SHARDED_RUNS} cases per property)`, () => {
  for (const entry of SHARDED) {
    describe(`sharded.${entry.name}`, () => {
      it(
        `any split of the classes gives ${entry.name}'s loss and gradients: finite, inputs unchanged, js and wasm agree with the js reference`,
        TIMEOUT,
        async () => {
          await fc.assert(fc.asyncProperty(entry.valid, (k) => checkSharded(entry, k)), shardedRun(entry, "valid"));
        },
      );
      it(
        'a shard\'s offset or class count out of place: a TypeError or RangeError "Expected ..." naming it',
        TIMEOUT,
        () => {
          fc.assert(fc.property(entry.valid, (k) => checkShardedInvalid(entry, k)), shardedRun(entry, "invalid"));
        },
      );
    });
  }
});

// ------------------------------------------------------------------------------------------------
// Regression tests: wasm accuracy bugs the property tests found (fixed), each as its
// smallest reproduction, against values from float64 formulas written here (and the js
// reference, which agrees with them).

/** Row-wise log-softmax in float64. */
function logSoftmax64(z: readonly number[]): number[] {
  const m = Math.max(...z);
  const lse = m + Math.log(z.reduce((a, v) => a + Math.exp(v - m), 0));
  return z.map((v) => v - lse);
}

/** KL(softmax(t / T) || softmax(s / T)) of one row, in float64. */
function kl64(student: readonly number[], teacher: readonly number[], T: number): number {
  const lp = logSoftmax64(teacher.map((v) => v / T)), lq = logSoftmax64(student.map((v) => v / T));
  return lp.reduce((a, v, c) => a + Math.exp(v) * (v - lq[c]), 0);
}

const row = (values: readonly number[]) => ({
  data: new Float32Array(values),
  shape: [1, values.length] as [number, number],
});

describe("bugs found by the property tests (regressions)", () => {
  // wasm distillation's KL at extreme temperatures, tiny temperature: the teacher's row is
  // [0.4, 0] after dividing by T; the student's is constant at -8000, whose float32
  // (t - s) / T lost the teacher's 4e-5 against 8000 (kl 0.180 for 0.0196). The kernel now
  // takes the difference of each row's offsets from its own maximum.
  it("distillation: the kl part at T = 1e-4 with the student's row at -8000", () => {
    const student = [-8000, -8000], teacher = [Math.fround(4e-5), 0];
    const inputs = { student: row(student), teacher: row(teacher), labels: [0] };
    const expected = kl64(student, teacher, 1e-4); // 0.0196...
    assertLossClose(js.distillation.forward(inputs, { temperature: 1e-4 }).kl, expected, "js kl");
    assertLossClose(wasm.distillation.forward(inputs, { temperature: 1e-4 }).kl, expected, "wasm kl");
  });

  // The same, large temperature: at T = 100 the two softened distributions are close and the
  // KL (5e-5) was a difference of log-ratios of 1e-2; with T^2 = 1e4 the loss was off by 6e-4
  // relative. The kernel now sums the non-negative terms Q (1 + (x - 1) e^x), x = log(P / Q).
  it("distillation: the loss at T = 100", () => {
    const student = [2, -2.5, 2.5, 2.25], teacher = [0.25, -3, 0.25, 2.5];
    const inputs = { student: row(student), teacher: row(teacher), labels: [0] };
    const o = { temperature: 100, alpha: 1 };
    const expected = 100 * 100 * kl64(student, teacher, 100); // 0.4948...
    assertLossClose(js.distillation.forward(inputs, o).loss, expected, "js loss");
    assertLossClose(wasm.distillation.forward(inputs, o).loss, expected, "wasm loss");
  });

  // wasm logSoftmax's VJP at the argmax: x = [0, 30], upstream g = [1e-6, -64]; the gradient
  // is [g_0 p_1 - g_1 p_0, g_1 p_0 - g_0 p_1] = [1e-6, -1e-6] (p_0 = e^-30), and wasm returned
  // 0 for the argmax's (-64 - 1 * (-64 + 1e-6) rounds to 0 in float32). It is now written as
  // g_r (1 - p_r) - p_r sum_{k != r} g_k in float64, 1 - p_r the other entries' share.
  it("logSoftmax: the vector-Jacobian product at the argmax with a dominant upstream", () => {
    const x = row([0, 30]), upstream = row([1e-6, -64]);
    const [p0, p1] = logSoftmax64([0, 30]).map(Math.exp);
    const [g0, g1] = [Math.fround(1e-6), -64];
    const expected = [g0 * p1 - g1 * p0, g1 * p0 - g0 * p1];
    for (const [name, losses] of [["js", js], ["wasm", wasm]] as const) {
      const got = losses.logSoftmax.backward({ x }, undefined, upstream).x;
      assertGradAgrees(
        got,
        { data: Float32Array.from(expected), shape: [1, 2] },
        () => true,
        1e-3,
        SPEC_TOL,
        null,
        `${name} grads.x`,
      );
    }
  });

  // wasm crossEntropy's label smoothing sum: a constant row has p uniform, so the smoothed
  // loss is log C whatever eps; wasm's float32 sum of 32 logits of 1527.3 was off (2e-5
  // relative). It now sums max - z_c (>= 0, exact near the maximum).
  it("crossEntropy: label smoothing over a constant row of large logits", () => {
    const logits = { data: new Float32Array(32).fill(1527.303466796875), shape: [1, 32] as [number, number] };
    const o = { labelSmoothing: 0.55 };
    assertLossClose(js.crossEntropy.forward({ logits, labels: [0] }, o).loss, Math.log(32), "js loss");
    assertLossClose(wasm.crossEntropy.forward({ logits, labels: [0] }, o).loss, Math.log(32), "wasm loss");
  });

  // The same bug's gradient: with a smoothed target the gradient at the argmax r != y is
  // a p_r - u w_r (a = (1 - eps) w_y + (eps / C) sum_c w_c, u = eps / C); with the label's
  // weight 0 and p_r -> 1 that is a difference of two numbers of size a for a result
  // a (1 - p_r) (here a e^-12), which float32 lost (error 183 times the bound). The
  // argmax is now kept out of the float32 sum and its gradient written in float64.
  it("crossEntropy: the smoothed gradient at an argmax holding the target's mass", () => {
    const z = [0, Math.fround(12)], w = [0, 100], eps = 0.9;
    const logits = row(z), o = { labelSmoothing: eps, weight: new Float32Array(w), reduction: "sum" as const };
    const p = logSoftmax64(z).map(Math.exp), a = (1 - eps) * w[0] + (eps / 2) * (w[0] + w[1]);
    const expected = [a * p[0] - (eps / 2) * w[0] - (1 - eps) * w[0], a * p[1] - (eps / 2) * w[1]];
    for (const [name, losses] of [["js", js], ["wasm", wasm]] as const) {
      const got = losses.crossEntropy.valueAndGrad({ logits, labels: [0] }, o).grads.logits;
      assertGradAgrees(
        got,
        { data: Float32Array.from(expected), shape: [1, 2] },
        () => true,
        1e-3,
        SPEC_TOL,
        null,
        `${name} grads.logits`,
      );
    }
  });
});

/**
 * physicsContrastive's row losses in float64, from docs/LOSSES.md: `den_i = sum_{j != i}
 * e^(S_ij) (1 - R_ij)`, `loss_i = -(1 / |P_i|) sum_j P_ij (S_ij - log den_i)` (0 for an
 * anchor that is not valid), with the exponentials shifted by the row's largest term.
 */
function contrastiveRows64(f: Mat, labels: number[], rule: Mat, tau: number, threshold: number): number[] {
  const d = f.shape[1], k = rule.shape[0];
  const S = (i: number, j: number) => {
    let s = 0;
    for (let q = 0; q < d; q++) s += f.data[i * d + q] * f.data[j * d + q];
    return s / tau;
  };
  return labels.map((yi, i) => {
    const others = labels.map((_, j) => j).filter((j) => j !== i);
    const w = (j: number) => 1 - rule.data[yi * k + labels[j]];
    const pos = others.filter((j) => labels[j] === yi || rule.data[yi * k + labels[j]] > threshold);
    if (!pos.length || !others.some((j) => w(j) > 0)) return 0;
    const terms = others.filter((j) => w(j) > 0), m = Math.max(...terms.map((j) => S(i, j)));
    const lse = m + Math.log(terms.reduce((a, j) => a + w(j) * Math.exp(S(i, j) - m), 0));
    return -pos.reduce((a, j) => a + S(i, j) - lse, 0) / pos.length;
  });
}

describe("bugs the second table's property tests found (regressions)", () => {
  // wasm physicsContrastive at tau = 1e-4 with a rule of 1 on the diagonal: same-class
  // pairs are positives outside the denominator, so their logits f . f / tau (to 1e4) lie
  // far above the denominator's maximum, and their float32 values relative to it (good to
  // 5e-4 at 8000) moved a row's loss by 1.7e-5 relative (-8.28943 for -8.28929). The
  // positives' terms of precise logits are now taken in float64.
  it("physicsContrastive: positives outside the denominator at tau = 1e-4", () => {
    const f = {
      data: Float32Array.from([
        -0.19855307042598724,
        -0.09887643158435822,
        0.6415839791297913,
        0.24596838653087616,
        -0.06322503089904785,
        -0.25438570976257324,
        -0.34455275535583496,
        -0.539669930934906,
        -0.5758640170097351,
        0.07830134779214859,
        -0.061325617134571075,
        -0.41096189618110657,
        0.15739984810352325,
        -0.5246089100837708,
        -0.42361971735954285,
        0.10077755898237228,
        0.40974897146224976,
        0.17670588195323944,
        -0.38355228304862976,
        -0.09006145596504211,
        -0.47301560640335083,
        -0.3124811053276062,
        0.561029851436615,
        0.09754318743944168,
        0.5489716529846191,
        0.0005181686719879508,
        -0.31676819920539856,
        0.40619710087776184,
        -0.5782713294029236,
        -0.001158459926955402,
        -0.1342392861843109,
        -0.2843807637691498,
      ]),
      shape: [4, 8] as [number, number],
    };
    const r = 0.34110191464424133, q = 0.8240248560905457, t = 0.21461638808250427;
    const rule = { data: Float32Array.from([1, r, q, r, 1, t, q, t, 1]), shape: [3, 3] as [number, number] };
    const labels = [1, 1, 2, 1], o = { temperature: 1e-4, threshold: 0.21461641788482666, reduction: "none" as const };
    const expected = contrastiveRows64(f, labels, rule, o.temperature, o.threshold);
    for (const [name, losses] of [["js", js], ["wasm", wasm]] as const) {
      assertLossClose(losses.physicsContrastive.forward({ f, labels, rule }, o).loss, expected, `${name} loss`);
    }
  });

  // wasm physicsContrastive on 33 equal rows of one class: every a_ij is 0, so the gradient
  // is exactly 0; the GEMM's column tail summed without the tiles' fused multiply-add (the
  // relaxed build), so the 33rd column's logits differed from the others' by an ulp and the
  // gradient was 2.6e-7 (26 times SPEC's floor of 1e-8). Every entry now has the same arithmetic.
  it("physicsContrastive: equal rows of one class have a zero gradient", () => {
    const row = [0.36077318, -0.10058826, -0.68293011, 0.29299039, -0.20915022, -0.18305312, 0.4217726, 0.22878686];
    const f = { data: Float32Array.from({ length: 33 * 8 }, (_, q) => row[q % 8]), shape: [33, 8] as [number, number] };
    const labels = new Array(33).fill(0), zero = { data: new Float32Array(33 * 8), shape: [33, 8] as [number, number] };
    for (const [name, losses] of [["js", js], ["wasm", wasm]] as const) {
      const g = losses.physicsContrastive.valueAndGrad({ f, labels }).grads.f;
      assertGradAgrees(g as Any, zero, () => true, 1e-3, SPEC_TOL, null, `${name} grads.f`);
    }
  });
});

// ------------------------------------------------------------------------------------------------
// The second table: docs/LOSSES.md sections 4-6 (metric learning, mixture of experts,
// hard-negative mining), and the state functions of section 8.

/**
 * Cases per property of the second table: its calls are heavier (B x B similarities, E
 * experts, a [C, C] rule), so CI runs fewer; SOFTMARGIN_PROPERTY_RUNS sets both tables.
 */
const PROBLEM_RUNS = Number(env("SOFTMARGIN_PROPERTY_RUNS") ?? 300);
const PROBLEMS = PROBLEM_LOSSES.filter((e) => !ONLY?.length || ONLY.includes(e.name));
const problemSeed = (name: string, property: string) => (SEED ^ seedOf(`${name} ${property}`)) | 0;
const problemRun = (name: string, property: string) => ({ seed: problemSeed(name, property), numRuns: PROBLEM_RUNS });

/** A gradient as one matrix: a list's matrices stacked by rows. */
function stacked(g: Mat | Mat[]): Mat {
  if (!Array.isArray(g)) return g;
  const data = new Float32Array(g.reduce((a, m) => a + m.data.length, 0));
  g.reduce((o, m) => (data.set(m.data, o), o + m.data.length), 0);
  return { data, shape: [g.length * g[0].shape[0], g[0].shape[1]] };
}

/** The batch size of a case of the second table (featureDiversity has no labels: its experts' rows; clip, siglip: a's). */
const batchSize = (k: Case) => k.inputs.labels?.length ?? (k.inputs.features?.[0] ?? k.inputs.a).shape[0];

/** The rows of input `key` (stacked as `stacked` does) whose norm is at most 1e-12, where the loss normalises it. */
function zeroRows(entry: ProblemLoss, k: Case, key: string): (row: number) => boolean {
  const m = stacked(k.inputs[key]);
  return (i) => !entry.normalised.includes(key) || rowNorm(m, i) > 1e-12;
}

/** (a) for one result of the second table: finite values, documented shapes, out buffers used. */
function checkProblemResult(entry: ProblemLoss, k: Case, options: Any, r: Outcome, label: string): void {
  const n = batchSize(k);
  if (r.value !== undefined) {
    if (options?.reduction === "none") {
      assert.ok(r.value instanceof Float32Array && r.value.length === n, `${label}: expected ${n} row losses`);
    } else assert.equal(typeof r.value, "number", `${label}: the loss is a number`);
    assertFinite(r.value, `${label} loss`);
    for (const [key, v] of Object.entries(r.parts)) {
      assertFinite(typeof v === "number" ? v : (v as Mat).data, `${label} ${key}`);
    }
  }
  if (r.grads === undefined) return;
  assert.deepEqual(Object.keys(r.grads).sort(), [...entry.grads, ...entry.numbers].sort(), `${label}: gradient names`);
  for (const key of entry.numbers) assertFinite(r.grads[key] as Any, `${label} grads.${key} (a number)`);
  for (const key of entry.grads) {
    const g = r.grads[key] as Mat | Mat[], input = k.inputs[key] as Mat | Mat[];
    const pairs: [Mat, Mat][] = Array.isArray(input)
      ? (assert.ok(
        Array.isArray(g) && g.length === input.length,
        `${label}: grads.${key} is a list of ${input.length}`,
      ),
        input.map((m, e) => [(g as Mat[])[e], m]))
      : [[g as Mat, input]];
    for (const [got, m] of pairs) {
      assert.ok(got.data instanceof Float32Array, `${label}: grads.${key} data is not a Float32Array`);
      assert.deepEqual([...got.shape], [...m.shape], `${label}: grads.${key}.shape`);
      assertFinite(got.data, `${label} grads.${key}`, got.shape);
    }
    if (options?.out?.[key]) assert.equal(g, options.out[key], `${label}: grads.${key} is not out.${key}`);
  }
}

/**
 * physicsContrastive's `grads.f_i = (1 / tau) sum_j (a_ij + a_ji) f_j` cancels where the
 * f_j are alike (coincident rows: exactly 0, from terms of size |r_i| / tau); float32
 * resolves it to 16 ulps (2^-20, as `termSlack`) of the size of its terms,
 * `(1 / tau) sum_j |a_ij + a_ji| max_k |f_jk|`, with a_ij in float64 from docs/LOSSES.md.
 * `weight` scales it (physMoe's lambdaScl); `u` is the upstream.
 */
function contrastiveSlack(k: Case, f: Mat, u: Any, weight: number): (row: number) => number {
  const o = k.options ?? {}, labels = k.inputs.labels as ArrayLike<number>, rule = k.inputs.rule as Mat | undefined;
  const tau = o.temperature ?? 0.07, threshold = o.threshold ?? 0.8, [b, d] = f.shape;
  const R = (i: number, j: number) => (rule ? rule.data[labels[i] * rule.shape[1] + labels[j]] : 0);
  const S = (i: number, j: number) => {
    let s = 0;
    for (let q = 0; q < d; q++) s += f.data[i * d + q] * f.data[j * d + q];
    return s / tau;
  };
  const a = Array.from({ length: b }, () => new Float64Array(b));
  const valid: boolean[] = [];
  for (let i = 0; i < b; i++) {
    const P = Array.from({ length: b }, (_, j) => j !== i && (labels[j] === labels[i] || R(i, j) > threshold));
    const w = Array.from({ length: b }, (_, j) => (j === i ? 0 : 1 - R(i, j)));
    const np = P.filter(Boolean).length;
    valid[i] = np > 0 && w.some((x) => x > 0);
    if (!valid[i]) continue;
    const s = Array.from({ length: b }, (_, j) => S(i, j));
    const m = Math.max(...s.filter((_, j) => w[j] > 0));
    const e = s.map((x, j) => (w[j] > 0 ? w[j] * Math.exp(x - m) : 0)), den = e.reduce((x, y) => x + y, 0);
    for (let j = 0; j < b; j++) a[i][j] = e[j] / den - (P[j] ? 1 / np : 0);
  }
  const count = valid.filter(Boolean).length, reduction = o.reduction ?? "mean";
  const r = (i: number) =>
    reduction === "none" ? (u === undefined ? 1 : u[i]) : (u ?? 1) / (reduction === "mean" ? Math.max(count, 1) : 1);
  const fmax = Array.from(
    { length: b },
    (_, j) => Math.max(...Array.from(f.data.subarray(j * d, (j + 1) * d), Math.abs)),
  );
  return (i) => {
    let t = 0;
    for (let j = 0; j < b; j++) t += Math.abs(r(i) * a[i][j] + r(j) * a[j][i]) * fmax[j];
    return 2 ** -20 * Math.abs(weight) * t / tau;
  };
}

/**
 * SPEC §8's losses: `grads.f_i = P_i sum_j (A_ij + A_ji) h_j / ||f_i||` (proxyAnchor:
 * `sum_k A_ik p_k`, and `sum_i A_ik h_i / ||p_k||` for the proxies) cancels where the rows are
 * alike (coincident rows: exactly 0); float32 resolves it to 16 ulps of the size of its
 * terms, bounded from the losses' coefficients (docs/LOSSES.md): ntXent `sum_j |A_ij| <=
 * 2 n_i / (t pairs)`, `sum_j |A_ji| <= 1 / t` (n_i the positives of i); multiSimilarity
 * `2 / B` and 1; proxyAnchor `alpha (1 + 1 / |P+|)` per row, `alpha (1 / |P+| + 1 / C)` per
 * proxy; each times the upstream u. tripletMargin's near pairs are taken in float64: none.
 */
function metricSlack(entry: ProblemLoss, k: Case, key: string, u: Any): ((row: number) => number) | null {
  const o = k.options ?? {}, labels = Array.from(k.inputs.labels as ArrayLike<number>), m = k.inputs[key] as Mat;
  const up = Math.abs(u ?? 1), b = labels.length;
  const count = (y: number) => labels.filter((z) => z === y).length;
  const present = new Set(labels).size;
  let terms: (i: number) => number;
  if (entry.name === "ntXent") {
    const pairs = labels.reduce((s, y) => s + count(y) - 1, 0), t = o.temperature ?? 0.07;
    if (pairs === 0) return null;
    terms = (i) => (2 * (count(labels[i]) - 1) / pairs + 1) / t;
  } else if (entry.name === "multiSimilarity") terms = () => 1 + 2 / b;
  else if (entry.name === "proxyAnchor") {
    const alpha = o.alpha ?? 32;
    terms = key === "f" ? () => alpha * (1 + 1 / present) : () => alpha * (1 / present + 1 / m.shape[0]);
  } else return null;
  return (i) => 2 ** -20 * up * terms(i) / Math.max(rowNorm(m, i), 1e-12);
}

/** The slack of a gradient of the second table (`termSlack`'s): physicsContrastive's and physMoe's features, §8's. */
function problemSlack(entry: ProblemLoss, k: Case, key: string, u: Any): ((row: number) => number) | null {
  if (entry.name === "physicsContrastive") return contrastiveSlack(k, k.inputs.f, u, 1);
  // clip / siglip: a gradient row is a sum over j of scale |dL/dL_ij| |b_j| <= 2 scale |u| (unit rows), cancelling
  // exactly where rows coincide; float32 resolves it to 2^-20 of that.
  if (entry.name === "clip" || entry.name === "siglip") return () => 2 ** -20 * 2 * k.inputs.scale * Math.abs(u ?? 1);
  if (["ntXent", "multiSimilarity", "proxyAnchor", "tripletMargin"].includes(entry.name)) {
    return metricSlack(entry, k, key, u);
  }
  if (entry.name === "physMoe" && key === "features" && k.options?.contrast !== false) {
    // physMoe's contrastive term is a "mean" with upstream u.
    const o = { ...k.options, reduction: "mean" };
    return contrastiveSlack({ ...k, options: o }, k.inputs.features, u, k.options?.lambdaScl ?? 0.1);
  }
  return null;
}

/**
 * The size of a composite loss's terms, `max(1, sum_k |weight_k part_k|)`: with a negative
 * weight the loss can be a small difference of large parts (mixOutputs at logits of 1e4
 * with distillWeight -0.7: -23.36 from parts of 1e4), which each part's own bound does not
 * cover; the loss is then held to SPEC's bound relative to its terms. 1 + |loss| elsewhere.
 */
function termsOf(entry: ProblemLoss, k: Case, ref: Outcome): number {
  const o = k.options ?? {},
    p = ref.parts as Record<string, number>,
    w = (v: unknown, d: number) => Math.abs((v ?? d) as number);
  const terms = entry.name === "mixOutputs"
    ? p.ce + w(o.distillWeight, 0) * p.distill + w(o.parallelWeight, 0) * p.parallel
    : entry.name === "physMoe"
    ? w(o.lambdaScl, 0.1) * Math.abs(p.scl) + p.dol + p.col + w(o.lambdaHier, 1) * p.hier +
      w(o.lambdaReg, 0.001) * Math.abs(p.reg)
    : entry.name === "centerRegularization"
    ? Math.abs(p.center) + w(o.prototypeWeight, 0.5) * Math.abs(p.proto)
    : Math.abs(ref.value as number);
  return Math.max(1, terms, Math.abs(ref.value as number));
}

/** (d) for the second table: loss, parts and gradients within SPEC's bound of the reference. */
function checkProblemAgreement(entry: ProblemLoss, k: Case, method: Method, got: Outcome, ref: Outcome, label: string) {
  // tripletMargin with a zero row: every distance to it is ||h_j|| = 1 up to the last bit of
  // rounding (float32 rows in wasm, float64 in the reference), so which triplets are mined
  // (d_an <= d_ap) and which have l > 0 is decided by that bit: neither is an oracle (the
  // results are still checked to be finite).
  if (entry.name === "tripletMargin" && norms(k.inputs.f).some((v) => v <= 1e-12)) return;
  if (ref.value !== undefined) {
    const tol = typeof ref.value === "number"
      ? SPEC_TOL * termsOf(entry, k, ref) / Math.max(1, Math.abs(ref.value))
      : SPEC_TOL;
    assertLossClose(got.value as Any, ref.value as Any, `${label} loss`, tol);
    assert.deepEqual(Object.keys(got.parts).sort(), Object.keys(ref.parts).sort(), `${label}: part names`);
    for (const [key, v] of Object.entries(ref.parts)) {
      const g = got.parts[key] as Any;
      assertLossClose(
        typeof v === "number" ? g : g.data,
        typeof v === "number" ? v : (v as Mat).data,
        `${label} ${key}`,
      );
    }
  }
  if (!ref.grads) return;
  const upstream = method === "backward" ? k.upstream : undefined;
  const floor = 1e-3 * Math.max(1, upstreamSize(upstream));
  for (const key of entry.numbers) {
    assertLossClose(
      got.grads![key] as Any,
      ref.grads[key] as Any,
      `${label} grads.${key}`,
      SPEC_TOL * Math.max(1, upstreamSize(upstream)),
    );
  }
  for (const key of entry.grads) {
    const g = stacked(got.grads![key] as Any), r = stacked(ref.grads[key] as Any);
    const slack = problemSlack(entry, k, key, upstream);
    assertGradAgrees(g, r, zeroRows(entry, k, key), floor, SPEC_TOL, slack, `${label} grads.${key}`);
  }
}

/** (a), (b) and (d) for one valid case of the second table. */
function checkProblem(entry: ProblemLoss, k: ProblemCase): void {
  const results = new Map<string, Outcome>();
  for (const { name, losses } of BACKENDS) {
    const member = (losses as Any)[entry.name];
    for (const method of methodsOf("loss")) {
      const label = `${name} ${entry.name}.${method} (${k.extreme})`;
      const options = optionsFor({ kind: "loss", grads: entry.grads }, method, k.options, true);
      const passed = { inputs: k.inputs, options, upstream: k.upstream };
      const snap = snapshot(passed);
      let r: Any;
      try {
        r = call(member, { kind: "loss" }, method, k, options);
      } catch (e) {
        assert.fail(`${label} threw on a valid call: ${(e as Error)?.name}: ${(e as Error)?.message}`);
      }
      assertUnchanged(snap, passed, `${label}: `);
      const o = outcome({ kind: "loss" }, method, r);
      checkProblemResult(entry, k, options, o, label);
      results.set(`${name} ${method}`, o);
    }
  }
  for (const method of methodsOf("loss")) {
    const label = `wasm ${entry.name}.${method} (${k.extreme})`;
    checkProblemAgreement(entry, k, method, results.get(`wasm ${method}`)!, results.get(`js ${method}`)!, label);
  }
}

/** The inputs of each member that are indexed by the batch (a list: each expert's rows). */
const BATCH_INPUTS: Record<string, readonly string[]> = {
  centerLoss: ["x", "labels"],
  physicsContrastive: ["f", "labels"],
  featureDiversity: ["features"],
  centerRegularization: ["f", "labels"],
  mixOutputs: ["expertLogits", "labels"],
  iclMoe: ["expertLogits", "gating", "labels"],
  hierarchical: ["coarse", "fine", "labels"],
  physMoe: ["features", "coarse", "expertLogits", "gating", "labels"],
  hnmContrastive: ["f", "labels", "hard"],
  clip: ["a", "b"],
  siglip: ["a", "b"],
  ntXent: ["f", "labels"],
  tripletMargin: ["f", "labels"],
  multiSimilarity: ["f", "labels"],
  proxyAnchor: ["f", "labels"],
  // (SPEC §7's sub-centres)
  arcface: ["cos", "labels"],
  cosface: ["cos", "labels"],
};

/** Rows `perm` of a batch input: a matrix, an integer matrix, a list of matrices or labels. */
function permuted(v: Any, perm: readonly number[]): Any {
  if (Array.isArray(v) && typeof v[0] === "object") return v.map((m) => permuted(m, perm));
  if (Array.isArray(v)) return Int32Array.from(perm, (i) => v[i]);
  if (ArrayBuffer.isView(v)) return (v.constructor as Int32ArrayConstructor).from(perm, (i) => (v as Int32Array)[i]);
  const cols = v.shape[1], data = new (v.data.constructor as Float32ArrayConstructor)(v.data.length);
  perm.forEach((i, p) => data.set(v.data.subarray(i * cols, (i + 1) * cols), p * cols));
  return { data, shape: v.shape };
}

/** valueAndGrad without out buffers or checkFinite (the invariances compare two calls). */
const plain = (entry: ProblemLoss, losses: Any, inputs: Any, options: Any) => {
  const { out: _, ...rest } = options ?? {};
  return outcome({ kind: "loss" }, "valueAndGrad", losses[entry.name].valueAndGrad(inputs, rest));
};

/** A random permutation of n (Fisher-Yates from fast-check's draws). */
const permutation = (n: number) =>
  fc.array(fc.nat(), { minLength: n, maxLength: n }).map((r) => {
    const p = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = r[i] % (i + 1);
      [p[i], p[j]] = [p[j], p[i]];
    }
    return p;
  });

const byName = (name: string) => PROBLEMS.find((e) => e.name === name);

describe(`property-based tests, metric learning and mixture of experts (${PROBLEM_RUNS} cases per property)`, () => {
  for (const entry of PROBLEMS) {
    describe(entry.name, () => {
      it(
        `valid calls: finite, documented shapes, inputs unchanged, wasm agrees with js (${PROBLEM_RUNS} cases)`,
        TIMEOUT,
        () => {
          fc.assert(fc.property(entry.valid, (k) => checkProblem(entry, k)), problemRun(entry.name, "valid"));
        },
      );
      it(
        `invalid calls: only a TypeError or RangeError "Expected ..." naming the argument (${PROBLEM_RUNS} cases)`,
        TIMEOUT,
        () => {
          const member = { name: entry.name, kind: "loss", grads: entry.grads } as const;
          fc.assert(fc.property(entry.invalid, (bad) => checkInvalid(member, bad)), problemRun(entry.name, "invalid"));
        },
      );
      it("permuting the batch permutes the row losses and gradients, and keeps the loss", TIMEOUT, () => {
        const cases = entry.valid.chain((k) => fc.tuple(fc.constant(k), permutation(batchSize(k))));
        fc.assert(
          fc.property(cases, ([k, perm]) => {
            const inputs = { ...k.inputs };
            for (const key of BATCH_INPUTS[entry.name]) inputs[key] = permuted(k.inputs[key], perm);
            for (const { name, losses } of BACKENDS) {
              const a = plain(entry, losses, k.inputs, k.options), b = plain(entry, losses, inputs, k.options);
              const label = `${name} ${entry.name} (${k.extreme}), permutation ${perm}`;
              const none = k.options?.reduction === "none";
              assertLossClose(b.value as Any, none ? permuted(a.value, perm) : a.value, `${label} loss`);
              for (const key of entry.grads) {
                const moved = BATCH_INPUTS[entry.name].includes(key) ? permuted(a.grads![key], perm) : a.grads![key];
                const moved_ = { ...k, inputs }, rows = zeroRows(entry, moved_, key);
                const slack = problemSlack(entry, moved_, key, undefined);
                assertGradAgrees(
                  stacked(b.grads![key] as Any),
                  stacked(moved),
                  rows,
                  1e-3,
                  SPEC_TOL,
                  slack,
                  `${label} grads.${key}`,
                );
              }
            }
          }),
          problemRun(entry.name, "permutation"),
        );
      });
    });
  }
});

/** A valid case of `name` from the second table (its options without `out`), changed by `f`. */
const caseOf = (name: string) => PROBLEM_LOSSES.find((e) => e.name === name)!;

/** Powers of two: scaling by them is exact in float32, so a normalised row does not move at all. */
const powerOfTwo = fc.constantFrom(0.25, 0.5, 2, 4);

/** Every element of every gradient of `r` exactly 0. */
function assertZeroGrads(r: Outcome, label: string): void {
  for (const [key, g] of Object.entries(r.grads!)) {
    const m = stacked(g as Any), i = m.data.findIndex((v) => v !== 0);
    if (i >= 0) assert.fail(`${label}: grads.${key} element ${i} is ${m.data[i]}, expected exactly 0`);
  }
}

/** `r`'s gradient `key` with row i scaled by `factor(i)` (stacked). */
function scaledRows(r: Outcome, key: string, factor: (row: number) => number): Mat {
  const m = stacked(r.grads![key] as Any), d = m.shape[1];
  return { data: m.data.map((v, q) => v * factor(Math.floor(q / d))), shape: m.shape };
}

/** The invariances: `check` gets each backend's call on `k` and on its changed copy. */
function invariance(
  name: string,
  property: string,
  cases: fc.Arbitrary<[ProblemCase, Record<string, Any>, Any]>,
  check: (a: Outcome, b: Outcome, k: ProblemCase, extra: Any, label: string) => void,
): void {
  if (!byName(name)) return;
  it(`${name}: ${property}`, TIMEOUT, () => {
    fc.assert(
      fc.property(cases, ([k, changed, extra]) => {
        for (const { name: backend, losses } of BACKENDS) {
          const entry = caseOf(name);
          const a = plain(entry, losses, k.inputs, k.options);
          const b = plain(entry, losses, changed.inputs ?? k.inputs, changed.options ?? k.options);
          check(a, b, k, extra, `${backend} ${name} (${k.extreme})`);
        }
      }),
      problemRun(name, property),
    );
  });
}

/** Row norms of a matrix. */
const norms = (m: Mat) => Array.from({ length: m.shape[0] }, (_, i) => rowNorm(m, i));

describe(`what the math guarantees, metric learning and mixture of experts (${PROBLEM_RUNS} cases per property)`, () => {
  const powers = (n: number) => fc.array(powerOfTwo, { minLength: n, maxLength: n });

  invariance(
    "centerLoss",
    "embeddings at their class centres give a loss and gradients of exactly 0",
    caseOf("centerLoss").valid.map((k) => {
      const x = k.inputs.x as Mat, c = k.inputs.centers as Mat, d = x.shape[1];
      const data = x.data.map((_, q) => c.data[k.inputs.labels[Math.floor(q / d)] * d + (q % d)]);
      return [k, { inputs: { ...k.inputs, x: { data, shape: x.shape } } }, null];
    }),
    (_, b, _k, _e, label) => {
      const v = b.value as Any;
      assert.ok(typeof v === "number" ? v === 0 : v.every((x: number) => x === 0), `${label}: loss ${v}`);
      assertZeroGrads(b, label);
    },
  );

  invariance(
    "featureDiversity",
    "identical experts give a loss and gradients of exactly 0",
    caseOf("featureDiversity").valid.map((k) => {
      const first = k.inputs.features[0] as Mat;
      const features = k.inputs.features.map(() => ({ data: first.data.slice(), shape: first.shape }));
      return [k, { inputs: { features } }, null];
    }),
    (_, b, _k, _e, label) => {
      assert.ok(Object.is(Math.abs(b.value as number), 0), `${label}: loss ${b.value}`);
      assertZeroGrads(b, label);
    },
  );

  invariance(
    "physicsContrastive",
    "f -> s f with tau -> s^2 tau keeps the loss and divides the gradient by s",
    caseOf("physicsContrastive").valid.chain((k) =>
      powerOfTwo.map((s): [ProblemCase, Record<string, Any>, Any] => {
        const f = k.inputs.f as Mat, tau = k.options?.temperature ?? 0.07;
        return [k, {
          inputs: { ...k.inputs, f: { data: f.data.map((v) => v * s), shape: f.shape } },
          options: { ...k.options, temperature: tau * s * s },
        }, s];
      })
    ),
    (a, b, k, s, label) => {
      assertLossClose(b.value as Any, a.value as Any, `${label}, s = ${s}: loss`);
      const slack = contrastiveSlack(k, k.inputs.f, undefined, 1);
      assertGradAgrees(scaledRows(b, "f", () => s), a.grads!.f, () => true, 1e-3, SPEC_TOL, slack, `${label}: grads.f`);
    },
  );

  /** Scaling each row of `key` by a power of two a_i (the loss normalises it): the loss as it was, grads[key] row i divided by a_i, the others as they were. */
  const rowScaling = (name: string, key: string) =>
    invariance(
      name,
      `scaling a row of ${key} by a > 0 keeps the loss and divides its gradient by a (the loss normalises ${key})`,
      caseOf(name).valid.chain((k) =>
        powers((k.inputs[key] as Mat).shape[0]).map((a): [ProblemCase, Record<string, Any>, Any] => {
          const m = k.inputs[key] as Mat, d = m.shape[1];
          return [k, {
            inputs: { ...k.inputs, [key]: { data: m.data.map((v, q) => v * a[Math.floor(q / d)]), shape: m.shape } },
          }, a];
        })
      ),
      (x, y, k, a, label) => {
        assertLossClose(y.value as Any, x.value as Any, `${label}: loss`);
        const live = norms(k.inputs[key]).map((v) => v > 1e-10);
        for (const g of caseOf(name).grads) {
          const got = g === key ? scaledRows(y, g, (i) => a[i]) : y.grads![g] as Mat;
          assertGradAgrees(
            got,
            x.grads![g] as Mat,
            (i) => g !== key || live[i],
            1e-3,
            SPEC_TOL,
            null,
            `${label}: grads.${g}`,
          );
        }
      },
    );
  rowScaling("hnmContrastive", "f");
  rowScaling("centerRegularization", "centers");

  invariance(
    "hierarchical",
    "fine logits outside a row's coarse class are never read (NaN changes nothing) and get exactly 0",
    caseOf("hierarchical").valid.map((k) => {
      const fine = k.inputs.fine as Mat, c = fine.shape[1], g = k.inputs.fineToCoarse, y = k.inputs.labels;
      const outside = (q: number) => g[q % c] !== g[y[Math.floor(q / c)]];
      const data = fine.data.map((v, q) => (outside(q) ? NaN : v));
      const { checkFinite: _, ...options } = k.options ?? {};
      return [{ ...k, options }, { inputs: { ...k.inputs, fine: { data, shape: fine.shape } } }, outside];
    }),
    (a, b, _k, outside, label) => {
      assertLossClose(b.value as Any, a.value as Any, `${label}: loss`);
      const g = b.grads!.fine as Mat;
      g.data.forEach((v, q) => outside(q) && assert.ok(v === 0, `${label}: grads.fine element ${q} is ${v}`));
      assertGradAgrees(g, a.grads!.fine as Mat, () => true, 1e-3, SPEC_TOL, null, `${label}: grads.fine`);
    },
  );

  invariance(
    "iclMoe",
    "gamma = 0 makes the tail experts plain cross-entropy",
    caseOf("iclMoe").valid.map((k) => {
      const options = { ...k.options, gamma: 0, tailExperts: [0, 1, 2] };
      return [{ ...k, options: { ...k.options, gamma: 0, tailExperts: [] } }, { options }, null];
    }),
    (a, b, _k, _e, label) => {
      assertLossClose(b.value as Any, a.value as Any, `${label}: loss`);
      const g = stacked(b.grads!.expertLogits as Any), r = stacked(a.grads!.expertLogits as Any);
      assertGradAgrees(g, r, () => true, 1e-3, SPEC_TOL, null, `${label}: grads.expertLogits`);
    },
  );

  invariance(
    "physMoe",
    "the loss is the weighted sum of its parts",
    caseOf("physMoe").valid.map((k) => [k, {}, null]),
    (a, _b, k, _e, label) => {
      const o = k.options ?? {}, p = a.parts;
      const sum = (o.lambdaScl ?? 0.1) * p.scl + p.dol + p.col + (o.lambdaHier ?? 1) * p.hier +
        (o.lambdaReg ?? 0.001) * p.reg;
      assertLossClose(a.value as number, sum, `${label}: loss against its parts`);
    },
  );
});

// The state functions (docs/LOSSES.md section 8): pure (arguments unchanged, fresh arrays,
// the same result twice), and their definitions in float64, rounded once to float32.

/** A state problem: C classes, width D, a batch of B labels, values uniform in [-10, 10]. */
const stateProblem = fc.record({
  c: fc.integer({ min: 1, max: 12 }),
  d: fc.integer({ min: 1, max: 9 }),
  b: fc.integer({ min: 0, max: 20 }),
})
  .chain(({ c, d, b }) =>
    fc.record({
      centers: fc.array(uniform(10), { minLength: c * d, maxLength: c * d }).map((a) => ({
        data: Float32Array.from(a),
        shape: [c, d] as [number, number],
      })),
      x: fc.array(uniform(10), { minLength: b * d, maxLength: b * d }).map((a) => ({
        data: Float32Array.from(a),
        shape: [b, d] as [number, number],
      })),
      // Few distinct counts, so that ties are common.
      confusion: fc.array(fc.constantFrom(0, 0, 1, 2, 0.5), { minLength: c * c, maxLength: c * c }).map((a) => ({
        data: Float32Array.from(a),
        shape: [c, c] as [number, number],
      })),
      labels: fc.array(fc.integer({ min: 0, max: c - 1 }), { minLength: b, maxLength: b }),
      predicted: fc.array(fc.integer({ min: 0, max: c - 1 }), { minLength: b, maxLength: b }),
      rate: fc.oneof(fc.constantFrom(0, 1, 0.5, 0.9), fc.double({ min: 0, max: 1, noNaN: true })),
      k: fc.integer({ min: 1, max: Math.max(1, c - 1) }),
    }).map((p) => ({ ...p, c, d, b }))
  );

/** Calls `f` twice on the same arguments: both results equal, the arguments unchanged, no array of theirs returned. */
function pure<T>(args: unknown[], f: () => T, label: string): T {
  const snap = snapshot(args, []);
  const r = f(), again = f();
  assert.deepEqual(again, r, `${label}: a second call differs`);
  assertUnchanged(snap, args, `${label}: `);
  const theirs = new Set<unknown>();
  const visit = (v: unknown) => {
    if (ArrayBuffer.isView(v)) theirs.add((v as Float32Array).buffer);
    else if (v && typeof v === "object") Object.values(v).forEach(visit);
  };
  args.forEach(visit);
  const check = (v: unknown): void => {
    if (ArrayBuffer.isView(v)) {
      assert.ok(!theirs.has((v as Float32Array).buffer), `${label}: returns an argument's array`);
    } else if (v && typeof v === "object") Object.values(v).forEach(check);
  };
  check(r);
  return r;
}

/** float32 values against float64 expectations, rounded once: within 1 ulp of float32. */
function assertRounded(got: Float32Array, expected: ArrayLike<number>, label: string): void {
  for (let i = 0; i < got.length; i++) {
    const e = expected[i];
    if (!(Math.abs(got[i] - e) <= 2 ** -23 * Math.max(Math.abs(e), 2 ** -126))) {
      assert.fail(`${label}: element ${i} is ${got[i]}, expected ${e}`);
    }
  }
}

/** Per class: its rows' count and sum of x (float64). */
function classSums(x: Mat, labels: readonly number[], c: number): [Int32Array, Float64Array] {
  const d = x.shape[1], count = new Int32Array(c), sum = new Float64Array(c * d);
  labels.forEach((y, i) => {
    count[y]++;
    for (let q = 0; q < d; q++) sum[y * d + q] += x.data[i * d + q];
  });
  return [count, sum];
}

describe(`state functions (${PROBLEM_RUNS} cases per property)`, () => {
  const run = (property: string) => problemRun("state", property);
  it(
    "centerUpdate: pure; a class in the batch moves by alpha sum (c - x_i) / (1 + n), any other keeps its centre",
    TIMEOUT,
    () => {
      fc.assert(
        fc.property(stateProblem, ({ centers, x, labels, rate, c, d }) => {
          const r = pure(
            [centers, x, labels, { alpha: rate }],
            () => centerUpdate(centers, x, labels, { alpha: rate }),
            "centerUpdate",
          );
          assert.deepEqual([...r.shape], [c, d]);
          const [count, sum] = classSums(x, labels, c);
          const expected = Array.from(centers.data, (v, q) => {
            const j = Math.floor(q / d), n = count[j];
            return n === 0 ? v : v - (rate * (n * v - sum[q])) / (1 + n);
          });
          assertRounded(r.data as Float32Array, expected, "centerUpdate");
        }),
        run("centerUpdate"),
      );
    },
  );
  it(
    "hnmUpdatePrototypes: pure; a class in the batch moves to momentum p + (1 - momentum) mean, any other keeps its prototype",
    TIMEOUT,
    () => {
      fc.assert(
        fc.property(stateProblem, ({ centers, confusion, x, labels, rate, c, d }) => {
          const s = { prototypes: centers, confusion };
          const r = pure(
            [s, x, labels, { momentum: rate }],
            () => hnmUpdatePrototypes(s, x, labels, { momentum: rate }),
            "hnmUpdatePrototypes",
          );
          const [count, sum] = classSums(x, labels, c);
          const expected = Array.from(centers.data, (v, q) => {
            const n = count[Math.floor(q / d)];
            return n === 0 ? v : rate * v + ((1 - rate) * sum[q]) / n;
          });
          assertRounded(r.prototypes.data as Float32Array, expected, "prototypes");
          assert.deepEqual(r.confusion.data, confusion.data, "the confusion is copied");
        }),
        run("hnmUpdatePrototypes"),
      );
    },
  );
  it("hnmUpdateConfusion and hnmDecay: pure; one count per row, then a decay by 1 - momentum", TIMEOUT, () => {
    fc.assert(
      fc.property(stateProblem, ({ centers, confusion, labels, predicted, rate, c }) => {
        const s = { prototypes: centers, confusion };
        const u = pure([s, labels, predicted], () => hnmUpdateConfusion(s, labels, predicted), "hnmUpdateConfusion");
        const counts = Float64Array.from(confusion.data);
        labels.forEach((y, i) => counts[y * c + predicted[i]] += 1);
        assertRounded(u.confusion.data as Float32Array, counts, "hnmUpdateConfusion");
        assert.deepEqual(u.prototypes.data, centers.data, "the prototypes are copied");
        const r = pure([u, { momentum: rate }], () => hnmDecay(u, { momentum: rate }), "hnmDecay");
        assertRounded(
          r.confusion.data as Float32Array,
          Array.from(u.confusion.data, (v) => v * (1 - rate)),
          "hnmDecay",
        );
        assert.deepEqual(r.prototypes.data, centers.data, "hnmDecay copies the prototypes");
      }),
      run("hnmUpdateConfusion"),
    );
  });
  it(
    "hnmHardNegatives: pure; the k most confused classes other than the label, ties to the smaller index",
    TIMEOUT,
    () => {
      fc.assert(
        fc.property(stateProblem.filter((p) => p.c >= 2), ({ centers, confusion, labels, k, c }) => {
          const s = { prototypes: centers, confusion };
          const r = pure([s, labels], () => hnmHardNegatives(s, labels, k), "hnmHardNegatives");
          assert.deepEqual([...r.shape], [labels.length, k]);
          labels.forEach((y, i) => {
            const count = (j: number) => confusion.data[y * c + j];
            // Brute force: the class j != y is chosen at rank t when exactly t classes beat it.
            const beats = (a: number, b: number) => count(a) > count(b) || (count(a) === count(b) && a < b);
            const ranked = Array.from({ length: c }, (_, j) => j).filter((j) => j !== y);
            const rank = (j: number) => ranked.filter((a) => beats(a, j)).length;
            const expected = ranked.filter((j) => rank(j) < k).sort((a, b) => rank(a) - rank(b));
            assert.deepEqual(Array.from(r.data.subarray(i * k, (i + 1) * k)), expected, `row ${i} (label ${y})`);
          });
          const fresh = hnmHardNegatives(hnmInit(c, 1), labels, k);
          labels.forEach((y, i) => {
            const expected = Array.from({ length: c }, (_, j) => j).filter((j) => j !== y).slice(0, k);
            assert.deepEqual(Array.from(fresh.data.subarray(i * k, (i + 1) * k)), expected, `a fresh state, row ${i}`);
          });
        }),
        run("hnmHardNegatives"),
      );
    },
  );
});
