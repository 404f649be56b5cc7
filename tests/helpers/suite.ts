/**
 * The suites every loss shares, written once and run on every backend:
 * existence, the PyTorch fixtures, wasm-vs-reference agreement over a random grid
 * of shapes, finite-difference checks and bad-input errors. Each loss's test file
 * calls them and adds its own identity tests.
 *
 * A loss that is not implemented yet fails one test ("is implemented on every
 * backend") and every other test of it is skipped with that reason, so the runner
 * reports it clearly instead of a cascade of TypeErrors.
 *
 * @module
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type AnyLoss, type Backend, backends, type Forward, lossOf, missing, reference } from "./backends.ts";
import { type FixtureCase, loadFixtures } from "./fixtures.ts";
import {
  assertFinite,
  assertGradClose,
  assertLossClose,
  assertThrowsNamed,
  assertUnchanged,
  type MatrixLike,
  snapshot,
} from "./assert.ts";
import { gradCheck } from "./numeric.ts";
import { Rng, seedOf } from "./random.ts";
import { GRID, type LossSpec, randomUpstream } from "./specs.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/** `it("is implemented on every backend")`: the one test that fails while a loss is missing. */
export function existenceTest(spec: LossSpec): void {
  it("is implemented on every backend", () => {
    const absent = backends.filter((b) => !lossOf(b, spec.name)).map((b) => b.name);
    assert.deepEqual(absent, [], `${spec.name} is missing on backend(s) ${absent.join(", ")}`);
  });
}

// ------------------------------------------------------------------------------------------------
// Checking one result

/** Asserts the value part of a result (loss and parts, or a softmax output) against an expected one. */
function checkValue(spec: LossSpec, got: Forward, expected: FixtureCase["expected"], label: string): void {
  if (spec.matrixOutput) {
    assert.ok(got.output, `${label}: no output`);
    assertLossClose(got.output, expected.loss, `${label} output`);
    return;
  }
  assertLossClose(got.loss as Any, expected.loss, `${label} loss`);
  if (expected.parts) {
    for (const [k, v] of Object.entries(expected.parts)) {
      assert.ok(k in got, `${label}: no part ${k} (expected ${Object.keys(expected.parts).join(", ")})`);
      assertLossClose((got as Any)[k], v, `${label} part ${k}`);
    }
  }
}

/** Asserts the gradients: exactly the keys of `spec.grads`, each close to the expected one. */
function checkGrads(
  spec: LossSpec,
  grads: Record<string, Any>,
  expected: Record<string, Any>,
  inputs: Record<string, Any>,
  label: string,
): void {
  assert.ok(grads && typeof grads === "object", `${label}: no gradients`);
  assert.deepEqual(Object.keys(grads).sort(), [...spec.grads].sort(), `${label}: gradient names`);
  for (const [name, g, input, want] of gradEntries(spec, grads, inputs, expected)) {
    assert.ok(g && g.data instanceof Float32Array, `${label}: grads.${name} is not a matrix`);
    assert.deepEqual([...g.shape], [...input.shape], `${label}: grads.${name}.shape`);
    assertGradClose(g as MatrixLike, want, `${label} grads.${name}`);
  }
}

/**
 * Each gradient matrix with its input and its expected value: a list gradient (expert
 * logits, expert features) is one entry per matrix, named `name[k]`.
 */
function gradEntries(
  spec: LossSpec,
  grads: Record<string, Any>,
  inputs: Record<string, Any>,
  expected: Record<string, Any>,
): [string, Any, Any, Any][] {
  return spec.grads.flatMap((name): [string, Any, Any, Any][] => {
    if (!Array.isArray(inputs[name])) return [[name, grads[name], inputs[name], expected[name]]];
    assert.ok(Array.isArray(grads[name]), `grads.${name} is not a list`);
    assert.equal(grads[name].length, inputs[name].length, `grads.${name}: one gradient per matrix`);
    return (inputs[name] as Any[]).map((m, k): [string, Any, Any, Any] => [
      `${name}[${k}]`,
      grads[name][k],
      m,
      expected[name]?.[k],
    ]);
  });
}

/**
 * Runs forward, backward and valueAndGrad of one fixture case (backward with the
 * case's upstream; valueAndGrad when the upstream is absent, that is 1) and checks
 * each against PyTorch, and that no input or option changed.
 */
export async function checkFixtureCase(spec: LossSpec, loss: AnyLoss, fc: FixtureCase, label: string): Promise<void> {
  const { inputs, options, upstream, expected } = fc;
  const all = { inputs, options, upstream };
  const snap = snapshot(all);
  const unchanged = (what: string) => assertUnchanged(snap, all, `${label}: after ${what}: `);

  const f = await loss.forward(inputs, options);
  unchanged("forward");
  checkValue(spec, f, expected, `${label} forward`);

  if (spec.matrixOutput) {
    const g = await loss.backward(inputs, options, upstream);
    unchanged("backward");
    checkGrads(spec, g, expected.grads, inputs, `${label} backward`);
    const vg = await loss.valueAndGrad(inputs, options, upstream);
    unchanged("valueAndGrad");
    checkValue(spec, vg, expected, `${label} valueAndGrad`);
    checkGrads(spec, vg.grads, expected.grads, inputs, `${label} valueAndGrad`);
  } else if (upstream === undefined) {
    const vg = await loss.valueAndGrad(inputs, options);
    unchanged("valueAndGrad");
    checkValue(spec, vg, expected, `${label} valueAndGrad`);
    checkGrads(spec, vg.grads, expected.grads, inputs, `${label} valueAndGrad`);
    const g = await loss.backward(inputs, options);
    unchanged("backward");
    checkGrads(spec, g, expected.grads, inputs, `${label} backward`);
  } else {
    const g = await loss.backward(inputs, options, upstream);
    unchanged("backward");
    checkGrads(spec, g, expected.grads, inputs, `${label} backward(upstream)`);
  }
}

/** One test per PyTorch fixture case per backend. */
export function fixtureSuite(spec: LossSpec): void {
  const cases = loadFixtures(spec.fixtures);
  describe(`matches PyTorch (${spec.fixtures}, ${cases.length} cases)`, () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing(spec.name, [b]);
        for (const fc of cases) {
          it(fc.name, { skip }, async () => {
            await checkFixtureCase(spec, lossOf(b, spec.name)!, fc, `${b.name} ${fc.name}`);
          });
        }
      });
    }
  });
}

// ------------------------------------------------------------------------------------------------
// Agreement with the reference over random shapes

function compareValue(spec: LossSpec, got: Forward, ref: Forward, label: string): void {
  if (spec.matrixOutput) {
    assert.ok(got.output && ref.output, `${label}: no output`);
    assertFinite(ref.output.data, `${label} reference output`, ref.output.shape);
    assertLossClose(got.output, ref.output.data, `${label} output`);
    return;
  }
  if (typeof ref.loss === "number") assertFinite(ref.loss, `${label} reference loss`);
  else assertFinite(ref.loss as Float32Array, `${label} reference loss`);
  assertLossClose(got.loss as Any, ref.loss as Any, `${label} loss`);
  // Named parts (every member besides loss and grads) agree too.
  const parts = (r: Forward) => Object.keys(r).filter((k) => k !== "loss" && k !== "grads").sort();
  assert.deepEqual(parts(got), parts(ref), `${label}: part names`);
  // A matrix part (mixOutputs' meanLogits) is compared by its values.
  const value = (x: Any) => (x && typeof x === "object" && "data" in x ? x.data : x);
  for (const k of parts(ref)) assertLossClose(value((got as Any)[k]), value((ref as Any)[k]), `${label} part ${k}`);
}

function compareGrads(spec: LossSpec, got: Record<string, Any>, ref: Record<string, Any>, label: string): void {
  assert.deepEqual(Object.keys(got).sort(), [...spec.grads].sort(), `${label}: gradient names`);
  const refs = new Map(gradEntries(spec, ref, ref, ref).map(([name, g]) => [name, g]));
  for (const [name, g] of gradEntries(spec, got, ref, ref)) {
    const r = refs.get(name);
    assertFinite(r.data, `${label} reference grads.${name}`, r.shape);
    assert.deepEqual([...g.shape], [...r.shape], `${label} grads.${name}.shape`);
    assertGradClose(g, r.data, `${label} grads.${name}`);
  }
}

/**
 * `backend` against the float64 reference on random problems with C classes: every
 * row count and logit scale of the grid, every option set of the loss; forward,
 * backward (random upstream) and valueAndGrad, SPEC's accuracy bound, finite
 * results, inputs unchanged.
 *
 * The problems run concurrently: an asynchronous backend (WebGPU) then waits on its device
 * for all of them at once instead of one after another (a synchronous one runs them in turn).
 * Every problem is checked; the first failure in grid order is thrown.
 */
export async function checkAgreement(
  spec: LossSpec,
  backend: Backend,
  c: number,
  cache?: Map<string, { rg: Any; rvg: Any }>,
): Promise<void> {
  const settled = await Promise.allSettled(
    GRID.rows.flatMap((n) =>
      GRID.scales.flatMap((scale) => spec.optionSets(c).map((o) => checkProblem(spec, backend, n, c, scale, o, cache)))
    ),
  );
  const failed = settled.find((r) => r.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

/** One problem of `checkAgreement`. */
async function checkProblem(
  spec: LossSpec,
  backend: Backend,
  n: number,
  c: number,
  scale: number,
  o: Record<string, Any>,
  cache?: Map<string, { rg: Any; rvg: Any }>,
): Promise<void> {
  const ref = lossOf(reference, spec.name)!;
  const loss = lossOf(backend, spec.name)!;
  const problem = `${spec.name} N=${n} C=${c} scale=${scale} options=${describeOptions(o)}`;
  const label = `${backend.name} ${problem}`;
  const rng = new Rng(seedOf(problem));
  const inputs = spec.random(rng, n, c, scale, o);
  const upstream = randomUpstream(spec, rng, n, c, o);
  const all = { inputs, o, upstream };
  const snap = snapshot(all);

  // The reference is the slow part: valueAndGrad's value stands for forward's (the
  // fixture suites check the reference's forward and valueAndGrad separately), and a
  // caller running several builds against it passes a cache.
  let refs = cache?.get(problem);
  if (!refs) {
    const rg = await ref.backward(inputs, o, upstream);
    const rvg = spec.matrixOutput ? await ref.valueAndGrad(inputs, o, upstream) : await ref.valueAndGrad(inputs, o);
    refs = { rg, rvg };
    cache?.set(problem, refs);
  }
  const { rg, rvg } = refs;
  const rf: Forward = rvg;
  const bf = await loss.forward(inputs, o);
  assertUnchanged(snap, all, `${label}: after forward: `);
  const bg = await loss.backward(inputs, o, upstream);
  assertUnchanged(snap, all, `${label}: after backward: `);
  const bvg = spec.matrixOutput ? await loss.valueAndGrad(inputs, o, upstream) : await loss.valueAndGrad(inputs, o);
  assertUnchanged(snap, all, `${label}: after valueAndGrad: `);

  compareValue(spec, bf, rf, `${label} forward`);
  compareValue(spec, bvg, rvg, `${label} valueAndGrad`);
  compareGrads(spec, bg, rg, `${label} backward(upstream)`);
  compareGrads(spec, bvg.grads, rvg.grads, `${label} valueAndGrad`);
}

/** Options in a message: vectors by length only. */
export function describeOptions(o: Record<string, Any>): string {
  const parts = Object.entries(o).map(([k, v]) =>
    `${k}: ${ArrayBuffer.isView(v) ? `[${(v as Float32Array).length}]` : JSON.stringify(v)}`
  );
  return `{${parts.join(", ")}}`;
}

/** One test per class count of the grid, for every backend but the reference. */
export function agreementSuite(spec: LossSpec): void {
  describe("agrees with the float64 reference on random shapes", () => {
    for (const b of backends) {
      if (b === reference) continue;
      describe(b.name, () => {
        const skip = missing(spec.name, [reference, b]);
        for (const c of GRID.classes) {
          it(`C = ${c}, N in ${GRID.rows.join("/")}, scales ${GRID.scales.join("/")}`, { skip }, async () => {
            await checkAgreement(spec, b, c);
          });
        }
      });
    }
  });
}

// ------------------------------------------------------------------------------------------------
// Finite differences (the js reference)

/** A small problem for a finite-difference check. */
export interface FdProblem {
  name: string;
  inputs: Record<string, Any>;
  options?: Record<string, Any>;
  upstream?: Any;
  /** Inputs to differentiate; default: every gradient of the loss. */
  wrt?: readonly string[];
  atol?: number;
  rtol?: number;
  h?: number;
}

/** One finite-difference test of the js reference per problem. */
export function fdSuite(spec: LossSpec, problems: () => FdProblem[]): void {
  describe("js reference gradient matches finite differences", () => {
    const skip = missing(spec.name, [reference]);
    // Problems are built lazily so a missing loss (or helper) never breaks collection.
    const list = skip ? [{ name: "(all problems)" } as FdProblem] : problems();
    for (const p of list) {
      it(p.name, { skip }, async () => {
        await gradCheck({
          loss: lossOf(reference, spec.name)!,
          inputs: p.inputs,
          options: p.options,
          upstream: p.upstream,
          wrt: p.wrt ?? spec.grads,
          atol: p.atol,
          rtol: p.rtol,
          h: p.h,
          label: `${spec.name} ${p.name}`,
        });
      });
    }
  });
}

// ------------------------------------------------------------------------------------------------
// Errors

/** A bad call and the error it must throw. */
export interface ErrorCase {
  name: string;
  inputs: () => Record<string, Any>;
  options?: Any;
  /** The upstream gradient passed to backward (and valueAndGrad), or a function of the inputs giving it. */
  upstream?: Any;
  /** Only this method takes the bad argument (upstream: backward). Default: all three. */
  methods?: readonly ("forward" | "backward" | "valueAndGrad")[];
  type: (new (...args: Any[]) => Error) | readonly (new (...args: Any[]) => Error)[];
  /** What the message must contain: the argument's name and the actual value. */
  includes: readonly (string | RegExp)[];
}

/** One test per bad input per backend: every method throws the right error naming the argument. */
export function errorSuite(spec: LossSpec, cases: readonly ErrorCase[]): void {
  describe("rejects bad inputs with a message naming the argument", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing(spec.name, [b]);
        for (const ec of cases) {
          it(ec.name, { skip }, async () => {
            const loss = lossOf(b, spec.name)!;
            for (const m of ec.methods ?? ["forward", "backward", "valueAndGrad"] as const) {
              const inputs = ec.inputs();
              const all = { inputs, options: ec.options };
              const snap = snapshot(all);
              const up = typeof ec.upstream === "function" ? ec.upstream(inputs) : ec.upstream;
              const call = m === "backward"
                ? () => loss.backward(inputs, ec.options, up)
                : m === "forward"
                ? () => loss.forward(inputs, ec.options)
                : () => loss.valueAndGrad(inputs, ec.options, up);
              try {
                await assertThrowsNamed(call, ec.type, ...ec.includes);
              } catch (e) {
                (e as Error).message = `${m}: ${(e as Error).message}`;
                throw e;
              }
              assertUnchanged(snap, all, `${m}: `);
            }
          });
        }
      });
    }
  });
}

/** Backends on which `names` all exist, for tests that combine losses. */
export function backendsWith(...names: string[]): Backend[] {
  return backends.filter((b) => names.every((n) => lossOf(b, n)));
}
