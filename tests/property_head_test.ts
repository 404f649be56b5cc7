// Property-based tests (fast-check) of marginHead's input `classes` (PartialFC) and its inter-class
// options: interTopK / interTopKMargin, interclassFilteringThreshold and per-row margins (SPEC.md
// section 7, docs/LOSSES.md section 3), with and without sub-centres, on the js reference and the wasm
// backend. These options are discontinuous (a class cosine that crosses the threshold, or the row's
// k-th largest, changes its logit; sub-centres that cross move the gradient to another row), so a
// float32 head and the float64 reference may differ by a whole logit on a case near such a boundary.
// The properties are chosen to hold whatever the rounding, or are asked only away from the boundaries:
//
// (1) `classes` listing every class is the head without it, bit for bit;
// (2) `classes` = a sample is the head on those classes' rows of W with the labels renumbered, bit
//     for bit (the same cosines in the same order);
// (3) renumbering the classes (W's blocks of K rows, the labels and `classes` together) renumbers
//     grads.W's blocks and leaves the loss and grads.x unchanged: each cosine is computed alone, so the
//     same classes cross every boundary (a tie moves the transform to a class of the same value);
// (4) reordering the batch (x's rows, the labels, the per-row margins) reorders the row losses and
//     grads.x, and leaves grads.W unchanged;
// (5) a per-row margin acts on its row alone: row i of the head with margins m is the head with the
//     scalar margin m_i (its "none" loss, and the gradients of upstream e_i);
// (6) wasm agrees with the reference within SPEC's bound on the cases whose float64 class cosines are
//     at least 1e-4 from every boundary (the threshold, the k-th largest after the filter, a class's
//     second-best sub-centre) and whose inter-top-k classes are below 0.99 (near 1 the transform's
//     slope magnifies a float32 cosine's rounding without bound); the others are rejected (fc.pre).
// (3) to (6) compare within SPEC's bound plus the rounding of the terms a gradient row sums (`slack`).
//
// SOFTMARGIN_PROPERTY_SEED and SOFTMARGIN_PROPERTY_RUNS as in tests/property_test.ts (a tenth of its
// cases per property: each case runs a few heads).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { js, partialFcSample, wasm } from "../cpu.ts";
import { assertGradClose, assertLossClose, SPEC_TOL } from "./helpers/assert.ts";
import { type Mat, Rng, seedOf } from "./helpers/random.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const env = (name: string) =>
  (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env[name];
const RUNS = Math.max(1, Math.ceil(Number(env("SOFTMARGIN_PROPERTY_RUNS") ?? 1500) / 10));
const SEED = Number(env("SOFTMARGIN_PROPERTY_SEED") ?? 20261122);
const run = (property: string) => ({ seed: (SEED ^ seedOf(`marginHead ${property}`)) | 0, numRuns: RUNS });
/** Bun stops a test after 5 s unless told otherwise. */
const TIMEOUT = { timeout: Math.max(120_000, RUNS * 500) };
const BACKENDS = [{ name: "js", losses: js as Any }, { name: "wasm", losses: wasm as Any }];

/** One head call: its inputs (W `[C K, D]`, `classes` when sampled) and options. */
interface Problem {
  n: number;
  d: number;
  c: number;
  K: number;
  inputs: { x: Mat; W: Mat; labels: Int32Array; classes?: Int32Array };
  options: Record<string, Any>;
  /** The per-row margin's key (`margin`, or combinedMargin's `m2`) when it is an array. */
  perRow: string | null;
  /** A seed for the permutations of the problem. */
  seed: number;
}

/**
 * x `[n, d]` near its label's class, W `[c K, d]` (each class's K rows around one centre), 20% of the
 * rows ignored (some problems), and the options of a kind: its margin (an array [n] or not), the
 * threshold (0: off), and for arcface interTopK / interTopKMargin.
 */
const problems: fc.Arbitrary<Problem> = fc.record({
  n: fc.integer({ min: 1, max: 6 }),
  d: fc.integer({ min: 2, max: 8 }),
  // beside small heads, some around the wasm chunks (128 classes; 64 with K = 2, 40 with K = 3)
  c: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 12 }), weight: 4 }, fc.constantFrom(39, 41, 64, 65, 129)),
  K: fc.constantFrom(1, 1, 2, 3),
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  kind: fc.constantFrom("arcface", "cosface", "combinedMargin"),
  scale: fc.constantFrom(1, 8, 16, 30, 64),
  threshold: fc.oneof(fc.constant(0), fc.double({ min: 0.05, max: 0.95, noNaN: true })),
  topK: fc.integer({ min: 0, max: 8 }),
  topKMargin: fc.constantFrom(0, 0.06, 0.3),
  easyMargin: fc.boolean(),
  perRow: fc.boolean(),
  sampled: fc.boolean(),
  rate: fc.double({ min: 0.05, max: 1, noNaN: true }),
  reduction: fc.constantFrom("mean", "sum", "none"),
  ignore: fc.boolean(),
}).map((a) => {
  const { n, d, c, K, kind } = a;
  const rng = new Rng(a.seed);
  const normal = (scale: number) => Math.fround(scale * rng.normal());
  const centres = Array.from({ length: c * d }, () => normal(1));
  const W = Float32Array.from(
    { length: c * K * d },
    (_, q) => centres[Math.floor(q / (K * d)) * d + (q % d)] + normal(0.5),
  );
  const labels = Int32Array.from({ length: n }, () => (a.ignore && rng.next() < 0.2 ? -100 : rng.int(c)));
  const x = new Float32Array(n * d);
  for (let i = 0; i < n * d; i++) {
    const y = labels[Math.floor(i / d)];
    x[i] = Math.fround((y >= 0 ? centres[y * d + (i % d)] : 0) + normal(1.2));
  }
  const margins = (lo: number, hi: number) => Float32Array.from({ length: n }, () => rng.uniform(lo, hi));
  const options: Record<string, Any> = { kind, scale: a.scale, subcenters: K, reduction: a.reduction };
  if (a.threshold > 0) options.interclassFilteringThreshold = a.threshold;
  let perRow: string | null = null;
  if (kind === "arcface") {
    options.margin = a.perRow ? margins(0, 0.8) : rng.uniform(0, 0.8);
    options.easyMargin = a.easyMargin;
    if (a.topK > 0) Object.assign(options, { interTopK: a.topK, interTopKMargin: a.topKMargin });
    perRow = a.perRow ? "margin" : null;
  } else if (kind === "cosface") {
    options.margin = a.perRow ? margins(0, 0.5) : rng.uniform(0, 0.5);
    perRow = a.perRow ? "margin" : null;
  } else {
    Object.assign(options, { m1: 1, m2: a.perRow ? margins(0, 0.5) : 0.3, m3: rng.uniform(0, 0.2) });
    perRow = a.perRow ? "m2" : null;
  }
  const inputs: Problem["inputs"] = { x: { data: x, shape: [n, d] }, W: { data: W, shape: [c * K, d] }, labels };
  if (a.sampled) inputs.classes = partialFcSample(labels, c, { rate: a.rate, seed: a.seed });
  return { n, d, c, K, inputs, options, perRow, seed: a.seed };
});

/** A short description of a problem for a failure message. */
const show = (p: Problem) =>
  JSON.stringify({
    n: p.n,
    d: p.d,
    c: p.c,
    K: p.K,
    classes: p.inputs.classes ? Array.from(p.inputs.classes) : undefined,
    ...p.options,
    [p.perRow ?? ""]: p.perRow ? Array.from(p.options[p.perRow] as Float32Array) : undefined,
  });

/**
 * The rows' rounding allowance, as tests/property_test.ts's `termSlack` for the heads: 16 ulps (2^-20)
 * of the size of the terms a gradient row sums, which nearly parallel rows cancel: `s |r_i| (2 + F_i) /
 * ||x_i||` for grads.x (r_i the row's gradient scale, the non-label terms at most 2 s |r_i|, the label's
 * at most s |r_i| F_i with F_i = 1 + 1 / sqrt(1 - c_y^2) bounding the target's slope at its cosine c_y:
 * arcface's `cos m + sin m c / sqrt(1 - c^2)`, combinedMargin's with m1 = 1, cosface's 1), and
 * `sum_i s |r_i| (2 + F_i) / ||W_j||` for grads.W; the largest over the rows.
 */
function slack(p: Problem, key: "x" | "W", upstream?: Float32Array): number {
  const { labels } = p.inputs, m = p.inputs[key], d = p.d, reduction = p.options.reduction;
  const { cos, cols } = classCosines(p), S = cols.length;
  const count = labels.filter((y) => y >= 0).length;
  const size = (i: number) => {
    if (labels[i] < 0) return 0;
    const r = reduction === "none" ? Math.abs(upstream?.[i] ?? 1) : reduction === "mean" ? 1 / count : 1;
    const cy = cos[i * S + cols.indexOf(labels[i])];
    return p.options.scale * r * (3 + 1 / Math.sqrt(Math.max(1 - cy * cy, 1e-12)));
  };
  const norm = (j: number) => Math.max(Math.hypot(...m.data.subarray(j * d, j * d + d)), 1e-12);
  let worst = 0, rows = 0;
  for (let i = 0; i < p.n; i++) rows += size(i);
  for (let j = 0; j < m.shape[0]; j++) worst = Math.max(worst, (key === "x" ? size(j) : rows) / norm(j));
  return 2 ** -20 * worst;
}

/** Gradients within SPEC's bound plus the rows' rounding allowance (`slack`). */
function gradClose(got: Mat, want: Mat, label: string, allowance: number) {
  let max = 0;
  for (const v of want.data) max = Math.max(max, Math.abs(v));
  const floor = Math.max(1e-3, max);
  assertGradClose(got.data, want.data, label, SPEC_TOL + allowance / floor);
}

const close = (got: Any, want: Any, label: string, p: Problem, upstream?: Float32Array) => {
  assertLossClose(got.loss, want.loss, `${label} loss`);
  gradClose(got.grads.x, want.grads.x, `${label} grads.x`, slack(p, "x", upstream));
  gradClose(got.grads.W, want.grads.W, `${label} grads.W`, slack(p, "W", upstream));
};

const same = (got: Any, want: Any, label: string) => {
  assert.deepEqual(got.loss, want.loss, `${label} loss`);
  assert.deepEqual(got.grads.x.data, want.grads.x.data, `${label} grads.x`);
  assert.deepEqual(got.grads.W.data, want.grads.W.data, `${label} grads.W`);
};

/** W's blocks of K rows `blocks[r]`, in that order. */
function gather(W: Mat, K: number, blocks: ArrayLike<number>): Mat {
  const d = W.shape[1], span = K * d, data = new Float32Array(blocks.length * span);
  for (let r = 0; r < blocks.length; r++) data.set(W.data.subarray(blocks[r] * span, (blocks[r] + 1) * span), r * span);
  return { data, shape: [blocks.length * K, d] };
}

/** A random permutation of [0, n). */
function permutation(n: number, rng: Rng): Int32Array {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

/**
 * The class cosines `[n, S]` of the classes of the softmax (float64; the largest clamped cosine of
 * each class's K rows) and each class's gap to its second-best sub-centre (Infinity for K = 1).
 */
function classCosines(p: Problem): { cos: Float64Array; gaps: Float64Array; cols: Int32Array } {
  const { n, d, K } = p, { x, W } = p.inputs;
  const cols = p.inputs.classes ?? Int32Array.from({ length: p.c }, (_, j) => j);
  const nrm = (a: Float32Array, r: number) => Math.max(Math.hypot(...a.subarray(r * d, r * d + d)), 1e-12);
  const cos = new Float64Array(n * cols.length), gaps = new Float64Array(n * cols.length);
  for (let i = 0; i < n; i++) {
    cols.forEach((j, s) => {
      const u = Array.from({ length: K }, (_, q) => {
        let dot = 0;
        for (let k = 0; k < d; k++) dot += x.data[i * d + k] * W.data[(j * K + q) * d + k];
        return Math.min(1, Math.max(-1, dot / (nrm(x.data, i) * nrm(W.data, j * K + q))));
      }).sort((a, b) => b - a);
      cos[i * cols.length + s] = u[0];
      gaps[i * cols.length + s] = K > 1 ? u[0] - u[1] : Infinity;
    });
  }
  return { cos, gaps, cols };
}

/** Whether every labelled row's class cosines are at least `gap` from each boundary of the options. */
function awayFromBoundaries(p: Problem, gap = 1e-4): boolean {
  const { cos, gaps, cols } = classCosines(p);
  const S = cols.length, T = p.options.interclassFilteringThreshold ?? 0, k = p.options.interTopK ?? 0;
  for (let i = 0; i < p.n; i++) {
    const y = p.inputs.labels[i];
    if (y < 0) continue;
    const others: { v: number; filtered: boolean }[] = [];
    for (let s = 0; s < S; s++) {
      if (gaps[i * S + s] < gap) return false;
      if (cols[s] === y) continue;
      const c = cos[i * S + s];
      if (T > 0 && Math.abs(c - T) < gap) return false;
      others.push(T > 0 && c > T ? { v: 0, filtered: true } : { v: c, filtered: false });
    }
    if (k > 0 && k < others.length) {
      others.sort((a, b) => b.v - a.v);
      const [a, b] = [others[k - 1], others[k]];
      // (classes the filter set to 0 tie exactly, in both backends)
      if (a.v - b.v < gap && !(a.filtered && b.filtered)) return false;
    }
    // The inter-top-k logit's slope s (cos m' - c sin m' / sqrt(1 - c^2)) grows without bound towards
    // c = 1, where it multiplies a float32 cosine's rounding by 1 / (1 - c^2)^(3/2): its classes below 0.99.
    if (k > 0 && others.slice(0, k).some((o) => o.v > 0.99)) return false;
  }
  return true;
}

describe(`marginHead classes and inter-class options: properties (fast-check, seed ${SEED}, ${RUNS} cases each)`, () => {
  it("(1) classes listing every class is the head without it, bit for bit", TIMEOUT, () => {
    fc.assert(
      fc.property(problems, (p) => {
        const { classes: _, ...inputs } = p.inputs;
        const all = { ...inputs, classes: Int32Array.from({ length: p.c }, (_, j) => j) };
        for (const b of BACKENDS) {
          const label = `${b.name} ${show(p)}`;
          same(
            b.losses.marginHead.valueAndGrad(all, p.options),
            b.losses.marginHead.valueAndGrad(inputs, p.options),
            label,
          );
        }
      }),
      run("classes all"),
    );
  });

  it("(2) classes = a sample is the head on the gathered rows of W, labels renumbered, bit for bit", TIMEOUT, () => {
    fc.assert(
      fc.property(problems.filter((p) => p.inputs.classes !== undefined), (p) => {
        const { classes, x, W, labels } = p.inputs as Required<Problem["inputs"]>;
        const local = new Map(Array.from(classes, (j, s) => [j, s]));
        const gathered = {
          x,
          W: gather(W, p.K, classes),
          labels: labels.map((y) => (y < 0 ? y : local.get(y)!)),
        };
        for (const b of BACKENDS) {
          const label = `${b.name} ${show(p)}`;
          same(
            b.losses.marginHead.valueAndGrad(p.inputs, p.options),
            b.losses.marginHead.valueAndGrad(gathered, p.options),
            label,
          );
        }
      }),
      run("classes sample"),
    );
  });

  it("(3) renumbering the classes renumbers grads.W's blocks; the loss and grads.x stay", TIMEOUT, () => {
    fc.assert(
      fc.property(problems, (p) => {
        const { x, W, labels, classes } = p.inputs;
        const pi = permutation(p.c, new Rng(p.seed ^ 0x5bd1e995)); // class j becomes pi[j]
        const inverse = new Int32Array(p.c);
        pi.forEach((to, from) => (inverse[to] = from));
        const moved: Any = { x, W: gather(W, p.K, inverse), labels: labels.map((y) => (y < 0 ? y : pi[y])) };
        if (classes) moved.classes = Int32Array.from(classes, (j) => pi[j]).sort();
        // grads.W's blocks are the classes of the softmax in order: block r of the first head (class
        // rows[r]) is the renumbered head's block of class pi[rows[r]].
        const rows = classes ?? Int32Array.from({ length: p.c }, (_, j) => j);
        const rowsMoved: Int32Array = moved.classes ?? Int32Array.from({ length: p.c }, (_, j) => j);
        for (const b of BACKENDS) {
          const label = `${b.name} ${show(p)}`;
          const want = b.losses.marginHead.valueAndGrad(p.inputs, p.options);
          const got = b.losses.marginHead.valueAndGrad(moved, p.options);
          const back = gather(got.grads.W, p.K, Array.from(rows, (j) => rowsMoved.indexOf(pi[j])));
          close({ ...got, grads: { x: got.grads.x, W: back } }, want, label, p);
        }
      }),
      run("class order"),
    );
  });

  it("(4) reordering the batch reorders the row losses and grads.x; grads.W stays", TIMEOUT, () => {
    fc.assert(
      fc.property(problems, (p) => {
        const { x, labels } = p.inputs;
        const sigma = permutation(p.n, new Rng(p.seed ^ 0x27d4eb2d)); // row i of the new batch is row sigma[i]
        const rows = (m: Mat) => gather(m, 1, sigma);
        const moved = { ...p.inputs, x: rows(x), labels: Int32Array.from(sigma, (i) => labels[i]) };
        const options = { ...p.options };
        if (p.perRow) options[p.perRow] = Float32Array.from(sigma, (i) => p.options[p.perRow!][i]);
        for (const b of BACKENDS) {
          const label = `${b.name} ${show(p)}`;
          const want = b.losses.marginHead.valueAndGrad(p.inputs, p.options);
          const got = b.losses.marginHead.valueAndGrad(moved, options);
          const loss = p.options.reduction === "none" ? Float32Array.from(sigma, (i) => want.loss[i]) : want.loss;
          close(got, { loss, grads: { x: rows(want.grads.x), W: want.grads.W } }, label, p);
        }
      }),
      run("batch order"),
    );
  });

  it("(5) a per-row margin acts on its row alone: row i is the head with the scalar margin m_i", TIMEOUT, () => {
    fc.assert(
      fc.property(problems.filter((p) => p.perRow !== null), (p) => {
        const key = p.perRow!, m = p.options[key] as Float32Array;
        const none = { ...p.options, reduction: "none" };
        for (const b of BACKENDS) {
          const head = b.losses.marginHead;
          const rows = head.forward(p.inputs, none).loss;
          for (let i = 0; i < Math.min(p.n, 3); i++) {
            const label = `${b.name} row ${i} ${show(p)}`;
            const one = { ...none, [key]: m[i] };
            assertLossClose(rows[i], head.forward(p.inputs, one).loss[i], `${label} loss`);
            const e = new Float32Array(p.n);
            e[i] = 1;
            const got = head.backward(p.inputs, none, e), want = head.backward(p.inputs, one, e);
            const q = { ...p, options: none };
            gradClose(got.x, want.x, `${label} grads.x`, slack(q, "x", e));
            gradClose(got.W, want.W, `${label} grads.W`, slack(q, "W", e));
          }
        }
      }),
      run("per-row margin"),
    );
  });

  it("(6) wasm agrees with the reference away from the boundaries (the others rejected)", TIMEOUT, () => {
    fc.assert(
      fc.property(problems, (p) => {
        fc.pre(awayFromBoundaries(p));
        const label = `wasm ${show(p)}`;
        const got = wasm.marginHead.valueAndGrad(p.inputs, p.options);
        close(got, js.marginHead.valueAndGrad(p.inputs, p.options), label, p);
      }),
      run("agreement"),
    );
  });
});
