// SphereFace and L-Softmax (docs/LOSSES.md), the heads with a multiplicative angular margin, as
// one table. Each takes x [N, D], W [C, D] and labels; the logits are x W^T (SphereFace: rows of
// W normalised, x not) except the label's, a blend of its logit z_y and the margin's
// ||W_y|| ||x|| psi(theta_y) (SphereFace: ||x|| psi(theta_y)) with psi = (-1)^k cos(m theta) - 2k,
// k = floor(m theta / pi) (no gradient through k):
//
// - sphereface (A-Softmax): the label's logit ||x|| (lambda cos + psi(theta)) / (1 + lambda);
// - lsoftmax (L-Softmax): the label's logit (||W_y|| ||x|| psi(theta_y) + beta z_y) / (1 + beta);
//
// then cross-entropy; gradients w.r.t. x and W. Each has an annealing schedule for its blend
// (sphereFaceLambda, lSoftmaxBeta: pure functions of the step), in the same entry. An entry of
// ANGULAR_HEADS holds what is the loss's own; every check is written once, below the table.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as cpu from "../cpu.ts";
import * as mod from "../mod.ts";
import {
  assertFinite,
  assertGradClose,
  assertLossClose,
  assertThrowsNamed,
  assertUnchanged,
  snapshot,
} from "./helpers/assert.ts";
import { type AnyLoss, type Backend, backends, lossOf, missing, reference } from "./helpers/backends.ts";
import { commonOptionErrors, labelErrors, matrixErrors, numberOptionErrors, upstreamErrors } from "./helpers/errors.ts";
import { type Mat, randomLabels, randomMatrix, randomVector, Rng } from "./helpers/random.ts";
import {
  alignedRows,
  GRID,
  HEAD_GRID,
  type HeadSpec,
  lsoftmaxSpec,
  randomClassRows,
  spherefaceSpec,
  unitRows,
  withWidth,
} from "./helpers/specs.ts";
import { checkAgreement, errorSuite, existenceTest, type FdProblem, fdSuite, fixtureSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;
type Options = Record<string, Any>;

/** A problem of the heads. */
interface Head {
  x: Mat;
  W: Mat;
  labels: ArrayLike<number>;
}

/** A fresh problem for the error cases: x [3, 4], W [4, 4] (C = 4), labels of 3 rows. */
const small = () => ({ x: randomMatrix(new Rng(8), 3, 4, 1), W: randomMatrix(new Rng(9), 4, 4, 1), labels: [0, 3, 1] });

/** A label cosine in (-0.95, 0.95) at least 0.1 away from every k boundary cos(j pi / m). */
function labelCos(rng: Rng, m: number): number {
  for (;;) {
    const t = rng.uniform(-0.95, 0.95);
    let ok = true;
    for (let j = 0; j <= m; j++) if (Math.abs(t - Math.cos((j * Math.PI) / m)) < 0.1) ok = false;
    if (ok) return t;
  }
}

/** x [n, d] at label cosines away from the k boundaries of m, norms in [lo, hi]; W random. */
function headProblem(rng: Rng, n: number, d: number, c: number, m: number, ignore = 0, lo = 0.5, hi = 2): Head {
  const W = randomClassRows(rng, c, d);
  const labels = randomLabels(rng, n, c, ignore);
  const x = alignedRows(
    rng,
    W,
    labels,
    Array.from({ length: n }, () => labelCos(rng, m)),
    randomVector(rng, n, lo, hi),
  );
  return { x, W, labels };
}

/** psi(theta) = (-1)^k cos(m theta) - 2k, k = floor(m theta / pi), written from docs/LOSSES.md (cos(m theta) directly). */
function psiOf(m: number, c: number): number {
  const theta = Math.acos(Math.max(-1, Math.min(1, c)));
  const k = Math.floor((m * theta) / Math.PI);
  return (k % 2 === 0 ? 1 : -1) * Math.cos(m * theta) - 2 * k;
}

/** The label's logit of a head from its plain logit z_y = x . W_y (x . normalize(W_y)) and the norms ||x||, ||W_y||. */
type LabelLogit = (zy: number, nx: number, nw: number) => number;

/**
 * crossEntropy on `ce` of the logits z = x W^T (x normalize(W)^T with `normW`) computed here in
 * float64 (rounded to float32 once), the label's replaced by `target(z_y, ||x||, ||W_y||)` when given.
 */
async function viaCrossEntropy(ce: AnyLoss, inputs: Head, options: Options, normW: boolean, target?: LabelLogit) {
  const [n, d] = inputs.x.shape, c = inputs.W.shape[0];
  const { u, norms: nw } = unitRows(inputs.W);
  const w = normW ? u : inputs.W.data;
  const nx = unitRows(inputs.x).norms;
  const logits = new Float32Array(n * c);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < c; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += inputs.x.data[i * d + k] * w[j * d + k];
      logits[i * c + j] = s;
    }
    const y = inputs.labels[i];
    if (target && y >= 0) logits[i * c + y] = target(logits[i * c + y], nx[i], nw[y]);
  }
  return await ce.valueAndGrad({ logits: { data: logits, shape: [n, c] }, labels: inputs.labels }, options);
}

/** A blend's annealing schedule (a pure function of the step) and what is known of it. */
interface Schedule {
  name: string;
  fn(step: number, options?: Options): number;
  /** The same function from cpu.ts. */
  cpuFn(step: number, options?: Options): number;
  /** Its definition, written here from docs/LOSSES.md, and in words (with the defaults). */
  formula(step: number, options?: Options): number;
  definition: string;
  steps: number[];
  /** Values known beside the formula (`close`: within 1e-12 relative). */
  known(close: (a: number, e: number, label: string) => void): void;
  optionSets: Options[];
  optionSteps: number[];
  pureOptions: Options;
  /** Steps out of the domain (RangeError), a step of another type (TypeError). */
  badSteps: number[];
  badStepType: unknown;
  /** Option values out of the domain (RangeError), an option of another type (TypeError). */
  badOptions: [string, number][];
  badOptionType: [string, unknown];
}

/** A head: what is its own. */
interface AngularHead {
  spec: HeadSpec;
  /** The option that blends the margin's logit with the plain one. */
  blend: "lambda" | "beta";
  /** Whether the rows of W are normalised (SphereFace). */
  normW: boolean;
  fd(): FdProblem[];
  /** The seed of the identities' problems. */
  seed: number;
  /** Its logits and label's logit in words, and the softmax it becomes at m 1. */
  text: { logits: string; labelLogit: string; plain: string };
  /** The label's logit for m and the blend, and the blends it is checked at. */
  labelLogit(m: number, blend: number): LabelLogit;
  blends: number[];
  /** The label's class row of the monotonicity test: this multiple of e_0. */
  labelRow: number;
  /** Rows of x and W scaled by x(i), W(j): the loss the same, each gradient row divided by its factor (within tol). */
  scaling: {
    name: string;
    x(i: number): number;
    W(j: number): number;
    tol: { loss: number; x: number; W: number };
  };
  /** The largest blend of the edge cases, and of the large-logits test with its largest norm of x. */
  edgeBlend: number;
  large: { blend: number; norm: number };
  /** W of another width than x (C = 4) and the width it has; the bad values of m. */
  otherWidth: number;
  badM: unknown[];
  schedule: Schedule;
}

const sphereface: AngularHead = {
  spec: spherefaceSpec,
  blend: "lambda",
  normW: true,
  fd: () => {
    const rng = new Rng(18);
    return [
      { name: "defaults (m 4, lambda 0), mean, N 4, D 5, C 6", inputs: headProblem(rng, 4, 5, 6, 4) },
      {
        name: "m 1, lambda 0, sum, upstream 2.5",
        inputs: headProblem(rng, 4, 4, 5, 1),
        options: { m: 1, lambda: 0, reduction: "sum" },
        upstream: 2.5,
      },
      {
        name: "m 2, lambda 0.5, ignored rows",
        inputs: headProblem(rng, 6, 5, 4, 2, 0.3),
        options: { m: 2, lambda: 0.5 },
      },
      {
        name: "m 3, lambda 5, ignoreIndex 1",
        inputs: { ...headProblem(rng, 4, 5, 3, 3), labels: [1, 0, 2, 1] },
        options: { m: 3, lambda: 5, ignoreIndex: 1 },
      },
      {
        name: "m 5, lambda 0, none, upstream vector",
        inputs: headProblem(rng, 3, 6, 4, 5),
        options: { m: 5, reduction: "none" },
        upstream: new Float32Array([0.5, -1.5, 2]),
        atol: 2e-5,
        h: 2 ** -5,
      },
      { name: "m 4, lambda 1000", inputs: headProblem(rng, 4, 5, 5, 4), options: { m: 4, lambda: 1000 } },
      {
        name: "m 4, norms in [3, 6] (logits of order 5), h 2^-8",
        inputs: headProblem(rng, 3, 5, 4, 4, 0, 3, 6),
        h: 2 ** -8,
      },
      { name: "C = 1 (zero gradient)", inputs: headProblem(rng, 3, 5, 1, 4), options: { m: 3 } },
    ];
  },
  seed: 46,
  text: {
    logits: "x normalize(W)^T",
    labelLogit: "||x|| (lambda cos + psi) / (1 + lambda)",
    plain: "the plain normalised-weight softmax",
  },
  labelLogit: (m, lambda) => (zy, nx) => {
    const cos = zy / Math.max(nx, 1e-12);
    return (nx * (lambda * cos + psiOf(m, cos))) / (1 + lambda);
  },
  blends: [0, 0.5, 5, 1000],
  labelRow: 1,
  scaling: {
    name: "rows of W scaled by powers of 2: the same loss and grads.x, grads.W divided by the factor",
    x: () => 1,
    W: (j) => 2 ** ((j % 5) - 2),
    tol: { loss: 1e-6, x: 1e-5, W: 1e-5 },
  },
  edgeBlend: 1000,
  large: { blend: 1000, norm: 1e4 },
  otherWidth: 3,
  badM: [0, 2.5, -1, NaN, Infinity, "4"],
  schedule: {
    name: "sphereFaceLambda",
    fn: mod.sphereFaceLambda,
    cpuFn: cpu.sphereFaceLambda,
    formula: (step, o = {}) => {
      const { base = 1000, gamma = 0.12, power = 1, min = 5 } = o;
      return Math.max(min, base * (1 + gamma * step) ** -power);
    },
    definition: "max(min, base (1 + gamma step)^-power), defaults base 1000, gamma 0.12, power 1, min 5",
    steps: [0, 1, 2.5, 10, 100, 1000, 1658, 1659, 1e4, 1e6],
    known: (close) => {
      assert.equal(mod.sphereFaceLambda(0), 1000);
      close(mod.sphereFaceLambda(100), 1000 / 13, "step 100");
      assert.equal(mod.sphereFaceLambda(1e6), 5, "the floor");
    },
    optionSets: [
      { base: 10, gamma: 0.5, power: 2, min: 0.01 },
      { power: 0.5 },
      { min: 0 },
      { gamma: 0 },
      { base: 1, min: 2 },
    ],
    optionSteps: [0, 3, 50, 7777],
    pureOptions: { base: 500, gamma: 0.2, power: 1.5, min: 1 },
    badSteps: [-1, -1e-9, NaN, Infinity],
    badStepType: "3",
    badOptions: [["base", NaN], ["gamma", Infinity], ["gamma", -0.1], ["power", NaN], ["min", -Infinity]],
    badOptionType: ["min", "5"],
  },
};

const lsoftmax: AngularHead = {
  spec: lsoftmaxSpec,
  blend: "beta",
  normW: false,
  fd: () => {
    const rng = new Rng(19);
    return [
      { name: "defaults (m 4, beta 0), mean, N 4, D 5, C 6", inputs: headProblem(rng, 4, 5, 6, 4) },
      {
        name: "m 1, beta 0, sum, upstream 2.5",
        inputs: headProblem(rng, 4, 4, 5, 1),
        options: { m: 1, beta: 0, reduction: "sum" },
        upstream: 2.5,
      },
      {
        name: "m 2, beta 1, ignored rows",
        inputs: headProblem(rng, 6, 5, 4, 2, 0.3),
        options: { m: 2, beta: 1 },
      },
      {
        name: "m 3, beta 5, ignoreIndex 1",
        inputs: { ...headProblem(rng, 4, 5, 3, 3), labels: [1, 0, 2, 1] },
        options: { m: 3, beta: 5, ignoreIndex: 1 },
      },
      {
        name: "m 5, beta 0, none, upstream vector",
        inputs: headProblem(rng, 3, 6, 4, 5),
        options: { m: 5, reduction: "none" },
        upstream: new Float32Array([0.5, -1.5, 2]),
        atol: 2e-5,
        h: 2 ** -5,
      },
      { name: "m 4, beta 100", inputs: headProblem(rng, 4, 5, 5, 4), options: { m: 4, beta: 100 } },
      {
        name: "m 4, norms of x in [2, 4] (logits of order 5), h 2^-8",
        inputs: headProblem(rng, 3, 5, 4, 4, 0, 2, 4),
        h: 2 ** -8,
      },
      { name: "C = 1 (zero gradient)", inputs: headProblem(rng, 3, 5, 1, 4), options: { m: 3 } },
    ];
  },
  seed: 47,
  text: {
    logits: "x W^T",
    labelLogit: "(||W_y|| ||x|| psi + beta z_y) / (1 + beta)",
    plain: "the plain softmax of x W^T",
  },
  labelLogit: (m, beta) => (zy, nx, nw) => (nw * nx * psiOf(m, zy / Math.max(nx * nw, 1e-12)) + beta * zy) / (1 + beta),
  blends: [0, 1, 5, 100],
  labelRow: 1.5,
  scaling: {
    name: "x * 2 and W / 2 give the same logits: the same loss, grads.x halved and grads.W doubled",
    x: () => 2,
    W: () => 1 / 2,
    tol: { loss: 1e-6, x: 1e-6, W: 1e-6 },
  },
  edgeBlend: 100,
  large: { blend: 100, norm: 5e3 },
  otherWidth: 6,
  badM: [0, 2.5, -3, NaN, -Infinity, "4"],
  schedule: {
    name: "lSoftmaxBeta",
    fn: mod.lSoftmaxBeta,
    cpuFn: cpu.lSoftmaxBeta,
    formula: (step, o = {}) => {
      const { start = 100, decay = 0.99, min = 0 } = o;
      return Math.max(min, start * decay ** step);
    },
    definition: "max(min, start decay^step), defaults start 100, decay 0.99, min 0",
    steps: [0, 1, 2.5, 10, 100, 1000, 1e4, 1e5],
    known: (close) => {
      assert.equal(mod.lSoftmaxBeta(0), 100);
      close(mod.lSoftmaxBeta(100), 100 * 0.99 ** 100, "step 100 (36.60...)");
      assert.ok(Math.abs(mod.lSoftmaxBeta(100) - 36.6032) < 1e-4, `step 100: ${mod.lSoftmaxBeta(100)}`);
      assert.equal(mod.lSoftmaxBeta(1e6, { min: 2 }), 2, "the floor");
    },
    optionSets: [
      { start: 10, decay: 0.5, min: 0.01 },
      { decay: 1 },
      { min: 50 },
      { start: 1000, decay: 0.9 },
      { decay: 0 },
    ],
    optionSteps: [0, 3, 50, 777],
    pureOptions: { start: 50, decay: 0.95, min: 1 },
    badSteps: [-1, -0.5, NaN, Infinity],
    badStepType: null,
    badOptions: [["start", NaN], ["decay", Infinity], ["decay", -0.5], ["min", NaN]],
    badOptionType: ["start", "100"],
  },
};

/** The heads with an angular margin, in the order of docs/LOSSES.md. */
const ANGULAR_HEADS: readonly AngularHead[] = [sphereface, lsoftmax];

// ------------------------------------------------------------------------------------------------
// The checks, once for every entry

/** A value as a message shows it: a string quoted. */
const show = (v: unknown) => (typeof v === "string" ? JSON.stringify(v) : String(v));

function identities(entry: AngularHead, b: Backend, skip: string | false): void {
  const { spec: { name }, blend } = entry;
  const rng = new Rng(entry.seed);
  const n = 9, d = 8, c = 13;

  it(`m 1, ${blend} 0 is crossEntropy on ${entry.text.logits}; gradients by the chain rule`, {
    skip,
  }, async () => {
    const loss = lossOf(b, name)!, ce = lossOf(b, "crossEntropy")!;
    const inputs = headProblem(rng, n, d, c, 1, 0.2);
    const { u, norms } = unitRows(inputs.W);
    const w = entry.normW ? u : inputs.W.data;
    for (const o of [{}, { reduction: "sum" }, { reduction: "none" }] as Options[]) {
      const e = await viaCrossEntropy(ce, inputs, o, entry.normW);
      const r = await loss.valueAndGrad(inputs, { ...o, m: 1, [blend]: 0 });
      // z = x w^T: dx = G w and t = G^T x; with w = W^ (normalised rows), dW_j = (t_j - (t_j . W^_j) W^_j) / ||W_j||.
      const G = e.grads.logits.data as Float32Array;
      const dx = new Float64Array(n * d), t = new Float64Array(c * d);
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < c; j++) {
          for (let k = 0; k < d; k++) {
            dx[i * d + k] += G[i * c + j] * w[j * d + k];
            t[j * d + k] += G[i * c + j] * inputs.x.data[i * d + k];
          }
        }
      }
      if (entry.normW) {
        for (let j = 0; j < c; j++) {
          let dot = 0;
          for (let k = 0; k < d; k++) dot += t[j * d + k] * u[j * d + k];
          for (let k = 0; k < d; k++) t[j * d + k] = (t[j * d + k] - dot * u[j * d + k]) / norms[j];
        }
      }
      assertLossClose(r.loss as Any, e.loss as Any, `${JSON.stringify(o)} loss`);
      assertGradClose(r.grads.x, dx, `${JSON.stringify(o)} grads.x`);
      assertGradClose(r.grads.W, t, `${JSON.stringify(o)} grads.W`);
    }
  });

  it(`each row's loss is crossEntropy with the label's logit ${entry.text.labelLogit}`, { skip }, async () => {
    const loss = lossOf(b, name)!, ce = lossOf(b, "crossEntropy")!;
    for (const m of [1, 2, 3, 4, 5]) {
      // Any label cosine: psi is continuous, so the k chosen at a boundary does not matter.
      const W = randomClassRows(rng, c, d);
      const labels = randomLabels(rng, n, c, 0.2);
      const x = alignedRows(rng, W, labels, randomVector(rng, n, -1, 1), randomVector(rng, n, 0.2, 4));
      for (const v of entry.blends) {
        const e = await viaCrossEntropy(
          ce,
          { x, W, labels },
          { reduction: "none" },
          entry.normW,
          entry.labelLogit(m, v),
        );
        const r = await loss.forward({ x, W, labels }, { m, [blend]: v, reduction: "none" });
        assertLossClose(r.loss as Any, e.loss as Any, `m ${m} ${blend} ${v}`);
      }
    }
  });

  it("the label's logit decreases with theta (psi is monotone), so the loss increases", { skip }, async () => {
    const loss = lossOf(b, name)!;
    // W_0 is the label; W_1 = e_2 is orthogonal to the plane x turns in (its logit stays 0).
    // One row per angle theta = a pi / 200, a = 1..199, ||x|| = 2.
    const W = { data: new Float32Array([entry.labelRow, 0, 0, 0, 0, 1]), shape: [2, 3] as [number, number] };
    const angles = Array.from({ length: 199 }, (_, a) => ((a + 1) * Math.PI) / 200);
    const x = {
      data: Float32Array.from(angles.flatMap((t) => [2 * Math.cos(t), 2 * Math.sin(t), 0])),
      shape: [199, 3],
    };
    const labels = new Int32Array(199);
    for (const m of [1, 2, 3, 4, 5]) {
      for (const v of [0, 5]) {
        const l = (await loss.forward({ x, W, labels }, { m, [blend]: v, reduction: "none" })).loss as Float32Array;
        let last = -Infinity;
        for (let a = 0; a < 199; a++) {
          assert.ok(
            l[a] >= last - 1e-12 * Math.abs(last),
            `m ${m} ${blend} ${v} theta ${angles[a]}: ${l[a]} < ${last}`,
          );
          last = l[a];
        }
      }
    }
  });

  it(entry.scaling.name, { skip }, async () => {
    const loss = lossOf(b, name)!;
    const { x: fx, W: fw, tol } = entry.scaling;
    const inputs = headProblem(rng, n, d, c, 4, 0.2);
    const scaled = {
      x: { data: inputs.x.data.map((v, i) => v * fx(Math.floor(i / d))), shape: inputs.x.shape },
      W: { data: inputs.W.data.map((v, i) => v * fw(Math.floor(i / d))), shape: inputs.W.shape },
      labels: inputs.labels,
    };
    for (const o of [{}, { m: 3, [blend]: 5, reduction: "none" }]) {
      const a = await loss.valueAndGrad(inputs, o);
      const s = await loss.valueAndGrad(scaled, o);
      const gx = a.grads.x.data.map((v: number, i: number) => v / fx(Math.floor(i / d)));
      const gw = a.grads.W.data.map((v: number, i: number) => v / fw(Math.floor(i / d)));
      assertLossClose(s.loss as Any, a.loss as Any, `${JSON.stringify(o)} loss`, tol.loss);
      assertGradClose(s.grads.x, gx, `${JSON.stringify(o)} grads.x`, tol.x);
      assertGradClose(s.grads.W, gw, `${JSON.stringify(o)} grads.W`, tol.W);
    }
  });

  it(`a very large ${blend} (1e6, its bound) approaches m 1 (${entry.text.plain})`, { skip }, async () => {
    const loss = lossOf(b, name)!;
    const inputs = headProblem(rng, n, d, c, 4, 0.2);
    const one = await loss.valueAndGrad(inputs, { m: 1 });
    const big = await loss.valueAndGrad(inputs, { m: 4, [blend]: 1e6 });
    assertLossClose(big.loss as Any, one.loss as Any, "loss");
    assertGradClose(big.grads.x, one.grads.x.data, "grads.x");
    assertGradClose(big.grads.W, one.grads.W.data, "grads.W");
  });

  it(`the defaults are m 4, ${blend} 0, mean`, { skip }, async () => {
    const loss = lossOf(b, name)!;
    const inputs = headProblem(rng, n, d, c, 4, 0.2);
    const a = await loss.valueAndGrad(inputs);
    const e = await loss.valueAndGrad(inputs, { m: 4, [blend]: 0, reduction: "mean", ignoreIndex: -100 });
    assert.equal(a.loss, e.loss);
    assert.deepEqual(a.grads.x.data, e.grads.x.data);
    assert.deepEqual(a.grads.W.data, e.grads.W.data);
  });
}

function edgeCases(entry: AngularHead, b: Backend, skip: string | false): void {
  const { spec: { name }, blend } = entry;

  it("an all-ignored batch has loss 0 and zero gradients", { skip }, async () => {
    const loss = lossOf(b, name)!;
    const rng = new Rng(2);
    const inputs = { x: randomMatrix(rng, 3, 5, 2), W: randomMatrix(rng, 4, 5, 1), labels: [-100, -100, -100] };
    for (const o of [{}, { m: 1 }, { [blend]: 5, reduction: "sum" }, { m: 2, reduction: "none" }]) {
      const r = await loss.valueAndGrad(inputs, o);
      if (typeof r.loss === "number") assert.equal(r.loss, 0);
      else assert.deepEqual([...r.loss as Float32Array], [0, 0, 0]);
      assert.ok(r.grads.x.data.every((v: number) => v === 0), `x ${JSON.stringify(o)}`);
      assert.ok(r.grads.W.data.every((v: number) => v === 0), `W ${JSON.stringify(o)}`);
    }
  });

  it(
    "label cosines of exactly +-1 (D = 1), at the k boundaries, zero rows and norms of 30..60: finite, as the reference",
    { skip },
    async () => {
      const loss = lossOf(b, name)!, ref = lossOf(reference, name)!;
      const rng = new Rng(3);
      const d1 = { x: randomMatrix(rng, 6, 1, 2), W: randomMatrix(rng, 5, 1, 1), labels: [0, 1, 2, 3, 4, 0] };
      // D = 2, W_0 = e_0: x at theta = j pi / m for m = 2..5 (float32-rounded), the k boundaries.
      const angles = [
        Math.PI / 2,
        Math.PI / 3,
        (2 * Math.PI) / 3,
        Math.PI / 4,
        (3 * Math.PI) / 4,
        Math.PI / 5,
        Math.PI,
      ];
      const boundary = {
        x: { data: new Float32Array(angles.flatMap((t) => [1.5 * Math.cos(t), 1.5 * Math.sin(t)])), shape: [7, 2] },
        W: { data: new Float32Array([1, 0, 0.3, -0.8, -0.5, 0.5]), shape: [3, 2] },
        labels: [0, 0, 0, 0, 0, 0, 0],
      };
      const zero = headProblem(rng, 4, 6, 5, 4);
      zero.x.data.fill(0, 6, 12); // a labelled zero row
      zero.W.data.fill(0, zero.labels[2] * 6, zero.labels[2] * 6 + 6); // another row's class
      const large = headProblem(rng, 5, 8, 7, 4, 0, 30, 60);
      const options = [{}, { m: 1 }, { m: 2, [blend]: 0.5, reduction: "none" }, { m: 3 }, {
        m: 5,
        [blend]: entry.edgeBlend,
      }];
      for (const [what, inputs] of [["D 1", d1], ["boundaries", boundary], ["zero rows", zero], ["large", large]]) {
        for (const o of options) {
          const r = await loss.valueAndGrad(inputs, o);
          const e = await ref.valueAndGrad(inputs, o);
          const label = `${what} ${JSON.stringify(o)}`;
          assertFinite(r.loss as Any, `${label} loss`);
          assertFinite(r.grads.x.data, `${label} grads.x`, r.grads.x.shape);
          assertFinite(r.grads.W.data, `${label} grads.W`, r.grads.W.shape);
          assertLossClose(r.loss as Any, e.loss as Any, `${label} loss`);
          assertGradClose(r.grads.x, e.grads.x.data, `${label} grads.x`);
          assertGradClose(r.grads.W, e.grads.W.data, `${label} grads.W`);
        }
      }
    },
  );
}

/**
 * Logits up to ~1e4 against the reference. Logits this large are summed in float64 and held
 * relative to each row's maximum, with the column scale 1/||W_j|| in float64 too (rounded to
 * float32 it moved a logit of 5000 by 3e-4 and the gradients up to 4x past SPEC's bound).
 */
function largeLogits(entry: AngularHead, b: Backend): void {
  const { spec: { name }, blend, large } = entry;
  it("logits up to ~1e4: finite, and within SPEC's bound of the reference", {
    skip: missing(name, [reference, b]),
  }, async () => {
    const loss = lossOf(b, name)!, ref = lossOf(reference, name)!;
    const rng = new Rng(10000);
    for (const [n, d, c] of [[9, 3, 300], [5, 16, 37], [2, 8, 300]]) {
      const W = randomClassRows(rng, c, d);
      const labels = randomLabels(rng, n, c, 0.2);
      const x = alignedRows(rng, W, labels, randomVector(rng, n, -1, 1), randomVector(rng, n, 100, large.norm));
      for (const o of [{}, { m: 1 }, { m: 3, [blend]: 5, reduction: "none" }, { m: 2, [blend]: large.blend }]) {
        const r = await loss.valueAndGrad({ x, W, labels }, o);
        const e = await ref.valueAndGrad({ x, W, labels }, o);
        const label = `D ${d} C ${c} ${JSON.stringify(o)}`;
        assertFinite(r.grads.x.data, `${label} grads.x`, r.grads.x.shape);
        assertFinite(r.grads.W.data, `${label} grads.W`, r.grads.W.shape);
        assertLossClose(r.loss as Any, e.loss as Any, `${label} loss`);
        assertGradClose(r.grads.x, e.grads.x.data, `${label} grads.x`);
        assertGradClose(r.grads.W, e.grads.W.data, `${label} grads.W`);
      }
    }
  });
}

function scheduleSuite(s: Schedule): void {
  const close = (a: number, e: number, label: string) =>
    assert.ok(Math.abs(a - e) <= 1e-12 * Math.abs(e), `${label}: got ${a}, expected ${e}`);

  it("mod.ts and cpu.ts export the same function", () => {
    assert.equal(typeof s.fn, "function");
    assert.equal(s.fn, s.cpuFn);
  });

  it(`is ${s.definition}`, () => {
    for (const step of s.steps) {
      close(s.fn(step), s.formula(step), `step ${step}`);
      close(s.fn(step, {}), s.formula(step), `step ${step}, {}`);
    }
    s.known(close);
    for (const o of s.optionSets) {
      for (const step of s.optionSteps) close(s.fn(step, o), s.formula(step, o), `${JSON.stringify(o)} ${step}`);
    }
  });

  it("is a pure function: the same value on every call, its options unchanged", () => {
    const o = { ...s.pureOptions };
    const snap = snapshot(o);
    const first = [0, 10, 20].map((step) => s.fn(step, o));
    const again = [0, 10, 20].map((step) => s.cpuFn(step, o));
    assert.deepEqual(again, first);
    assertUnchanged(snap, o, "options");
  });

  it("rejects a negative or non-finite step and non-finite options, naming the argument", async () => {
    for (const step of s.badSteps) {
      await assertThrowsNamed(() => s.fn(step), RangeError, /(^|[^\w.])step($|[^\w])/, String(step));
    }
    await assertThrowsNamed(() => s.fn(s.badStepType as Any), TypeError, "step", show(s.badStepType));
    for (const [k, v] of s.badOptions) {
      await assertThrowsNamed(() => s.fn(1, { [k]: v }), RangeError, `options.${k}`, String(v));
    }
    const [key, value] = s.badOptionType;
    await assertThrowsNamed(() => s.fn(1, { [key]: value }), TypeError, `options.${key}`, show(value));
    await assertThrowsNamed(() => s.fn(undefined as Any), TypeError, "step", "undefined");
    await assertThrowsNamed(() => s.fn(1, { floor: 5 }), TypeError, "options", '"floor"');
  });
}

for (const entry of ANGULAR_HEADS) {
  const { spec, blend } = entry;

  describe(spec.name, () => {
    existenceTest(spec);
    fixtureSuite(spec);
    fdSuite(spec, entry.fd);

    describe("agrees with the float64 reference on random shapes", () => {
      for (const b of backends) {
        if (b === reference) continue;
        describe(b.name, () => {
          const skip = missing(spec.name, [reference, b]);
          for (const d of spec.widths) {
            for (const c of HEAD_GRID.classes) {
              it(`D = ${d}, C = ${c}, N in ${GRID.rows.join("/")}, x norms up to ${GRID.scales.join("/")} (capped)`, {
                skip,
              }, async () => {
                await checkAgreement(withWidth(spec, d), b, c);
              });
            }
          }
        });
      }
    });

    describe("identities", () => {
      for (const b of backends) describe(b.name, () => identities(entry, b, missing([spec.name, "crossEntropy"], [b])));
    });

    describe("edge cases", () => {
      for (const b of backends) describe(b.name, () => edgeCases(entry, b, missing(spec.name, [b])));
    });

    describe("large logits agree with the float64 reference", () => {
      for (const b of backends) if (b !== reference) describe(b.name, () => largeLogits(entry, b));
    });

    errorSuite(spec, [
      // "C = 0" of matrixErrors empties D here; both are below, named for what they are.
      ...matrixErrors(small, "x", true, "x").filter((e) => e.name !== "C = 0"),
      ...matrixErrors(small, "W", false, "x").slice(0, 6),
      {
        name: "W of another width D than x",
        inputs: () => ({
          ...small(),
          W: { data: new Float32Array(4 * entry.otherWidth), shape: [4, entry.otherWidth] },
        }),
        type: RangeError,
        includes: ["W.shape[1]", String(entry.otherWidth)],
      },
      {
        name: "W with no rows (C = 0)",
        inputs: () => ({ ...small(), W: { data: new Float32Array(0), shape: [0, 4] } }),
        type: RangeError,
        includes: [/(^|[^\w.])W($|[^\w])/, "0"],
      },
      {
        name: "D = 0",
        inputs: () => ({
          x: { data: new Float32Array(0), shape: [3, 0] },
          W: { data: new Float32Array(0), shape: [4, 0] },
          labels: [0, 3, 1],
        }),
        type: RangeError,
        includes: [/(^|[^\w.])x($|[^\w])/, "0"],
      },
      ...labelErrors(small),
      ...numberOptionErrors(small, "m", entry.badM, true),
      ...numberOptionErrors(small, blend, [-1, -1e-9, NaN, Infinity, "0"]),
      ...commonOptionErrors(small, "x"),
      {
        name: "checkFinite: NaN in W",
        inputs: () => {
          const p = small();
          p.W.data[6] = NaN; // [1, 2]
          return p;
        },
        options: { checkFinite: true },
        type: RangeError,
        includes: [/(^|[^\w.])W($|[^\w])/, "[1, 2]", "NaN"],
      },
      ...upstreamErrors(small),
    ]);

    describe("inputs", () => {
      it("inputs and options are unchanged by every call on every backend", async () => {
        for (const b of backends) {
          const loss = lossOf(b, spec.name);
          if (!loss) continue;
          const rng = new Rng(4);
          const inputs = { x: randomMatrix(rng, 3, 5, 1), W: randomMatrix(rng, 130, 5, 1), labels: [129, -100, 0] };
          for (const options of [{ m: 3, [blend]: 2 }, { reduction: "none" }]) {
            const up = options.reduction === "none" ? randomVector(rng, 3, -1, 1) : 3;
            const snap = snapshot({ inputs, options, up });
            await loss.forward(inputs, options);
            await loss.backward(inputs, options, up);
            await loss.valueAndGrad(inputs, options);
            assertUnchanged(snap, { inputs, options, up }, `${b.name}: `);
          }
        }
      });
    });
  });

  describe(entry.schedule.name, () => scheduleSuite(entry.schedule));
}
