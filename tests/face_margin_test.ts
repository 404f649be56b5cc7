// The margin losses of current face recognition on cosines (SPEC.md section 7, docs/LOSSES.md):
// adaface (its state {mean, std} in and out, norms without gradient), curricularFace (state {t},
// hard negatives by the fused kernel's non-target transform) and magface (norms with gradient,
// parts ce and g). PyTorch float64 fixtures from tests/fixtures/generate_faces.py (following each
// method's public code), finite differences, identities with arcface/cosface, edges and errors.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { adafaceInit, js } from "../cpu.ts";
import { assertFinite, assertGradClose, assertLossClose, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { backends, lossOf, reference } from "./helpers/backends.ts";
import { commonOptionErrors, labelErrors, numberOptionErrors } from "./helpers/errors.ts";
import { type FixtureCase, loadFixtures } from "./helpers/fixtures.ts";
import { numericGradient } from "./helpers/numeric.ts";
import { type Mat, randomLabels, Rng } from "./helpers/random.ts";
import { randomCosines } from "./helpers/specs.ts";
import { type ErrorCase, errorSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const FILES = {
  adaface: "faces/adaface.json",
  curricularFace: "faces/curricular_face.json",
  magface: "faces/magface.json",
} as const;
type Name = keyof typeof FILES;
const NAMES = Object.keys(FILES) as Name[];

/** The raw JSON cases (for the fields of generate_faces.py: state and nextState). */
function rawCases(file: string): Any[] {
  return JSON.parse(readFileSync(new URL(`./fixtures/${file}`, import.meta.url), "utf8")).cases;
}

/** The inputs of a fixture case, with its state. */
function inputsOf(fc: FixtureCase, raw: Any): Record<string, Any> {
  return raw.state ? { ...fc.inputs, state: raw.state } : { ...fc.inputs };
}

/** A random problem of `name`: cosines inside [-0.9, 0.9], norms and state. */
function problem(name: Name, rng: Rng, n: number, c: number, ignore = 0.2): Record<string, Any> {
  const cos = randomCosines(rng, n, c, 1);
  for (let i = 0; i < cos.data.length; i++) cos.data[i] *= 0.9;
  const labels = randomLabels(rng, n, c, ignore, -100);
  const norms = Float32Array.from({ length: n }, () => (name === "magface" ? 12 : 5) + rng.uniform(0, 80));
  if (name === "adaface") return { cos, labels, norms, state: { mean: 30, std: 10 } };
  if (name === "curricularFace") return { cos, labels, state: { t: 0.2 } };
  return { cos, labels, norms };
}

/**
 * CurricularFace's loss jumps where a non-target cosine crosses its row's phi: label cosines
 * 0.95 (phi = cos(acos(0.95) + 0.5) = 0.684) and the others at least 0.08 away from phi.
 */
function awayFromHard(p: Record<string, Any>): void {
  const [n, c] = p.cos.shape;
  const phi = Math.cos(Math.acos(0.95) + 0.5);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < c; j++) {
      const k = i * c + j;
      if (j === p.labels[i]) p.cos.data[k] = 0.95;
      else if (Math.abs(p.cos.data[k] - phi) < 0.08) p.cos.data[k] = phi + (j % 2 ? 0.12 : -0.12);
    }
  }
}

const gradsOf = (name: Name) => (name === "magface" ? ["cos", "norms"] : ["cos"]);
const dataOf = (g: Any): Float32Array => (g instanceof Float32Array ? g : g.data);

describe("face margin losses: PyTorch fixtures (tests/fixtures/generate_faces.py)", () => {
  for (const name of NAMES) {
    const cases = loadFixtures(FILES[name]), raws = rawCases(FILES[name]);
    for (const b of backends) {
      describe(`${name} ${b.name}`, () => {
        cases.forEach((fc, k) => {
          it(fc.name, async () => {
            const loss = lossOf(b, name)!;
            const inputs = inputsOf(fc, raws[k]);
            const snap = snapshot({ inputs, options: fc.options });
            const label = `${b.name} ${fc.name}`;
            const f = await loss.forward(inputs, fc.options);
            assertLossClose(f.loss as Any, fc.expected.loss, `${label} loss`);
            for (const [part, v] of Object.entries(fc.expected.parts ?? {})) {
              assertLossClose(f[part], v, `${label} part ${part}`);
            }
            if (raws[k].nextState) {
              for (const [key, v] of Object.entries(raws[k].nextState as Record<string, number>)) {
                assertLossClose(f.state[key], v, `${label} state.${key}`, 1e-12);
              }
            }
            const g = await loss.backward(inputs, fc.options, fc.upstream);
            assert.deepEqual(Object.keys(g).sort(), gradsOf(name).sort());
            for (const key of gradsOf(name)) {
              assertGradClose(dataOf(g[key]), fc.expected.grads[key] as Any, `${label} grads.${key}`);
            }
            assertUnchanged(snap, { inputs, options: fc.options });
          });
        });
      });
    }
  }
});

describe("face margin losses: finite differences (float64 reference) and agreement", () => {
  for (const name of NAMES) {
    for (const options of [{ scale: 4 }, { scale: 2, reduction: "sum" }, { scale: 3, reduction: "none" }] as Any[]) {
      it(`${name} ${JSON.stringify(options)}`, async () => {
        const rng = new Rng(17);
        const inputs = problem(name, rng, 5, 6, 0.2);
        if (name === "curricularFace") awayFromHard(inputs);
        const loss = lossOf(reference, name)!;
        const up = options.reduction === "none" ? Float32Array.from({ length: 5 }, (_, i) => 0.5 + 0.3 * i) : 1.5;
        const g = await loss.backward(inputs, options, up);
        const scalar = async () => {
          const r = await loss.forward(inputs, options);
          if (typeof r.loss === "number") return up as number * r.loss;
          return (r.loss as Float32Array).reduce((t, v, i) => t + v * (up as Float32Array)[i], 0);
        };
        for (const key of gradsOf(name)) {
          const x: Float32Array = key === "cos" ? inputs.cos.data : inputs.norms;
          const num = await numericGradient(scalar, x, key === "cos" ? 2 ** -7 : 2 ** -4);
          const a = dataOf(g[key]);
          const scale = Math.max(1, ...num.map(Math.abs));
          // (per-row losses come back in float32)
          const tol = options.reduction === "none" ? 1e-3 : 2e-5;
          for (let i = 0; i < num.length; i++) {
            assert.ok(Math.abs(a[i] - num[i]) <= tol * scale, `${name} grads.${key}[${i}] ${a[i]} vs ${num[i]}`);
          }
        }
      });
    }
    it(`${name}: every backend agrees with the reference (C around the SIMD widths and 1000)`, async () => {
      for (const c of [1, 3, 4, 5, 17, 1000]) {
        for (const n of [1, 3, 33]) {
          const inputs = problem(name, new Rng(c * 100 + n), n, c);
          const ref = await lossOf(reference, name)!.valueAndGrad(inputs, { scale: 30 });
          for (const b of backends.slice(1)) {
            const got = await lossOf(b, name)!.valueAndGrad(inputs, { scale: 30 });
            const label = `${name} ${b.name} [${n}, ${c}]`;
            assertLossClose(got.loss as Any, ref.loss as Any, `${label} loss`);
            for (const key of gradsOf(name)) {
              assertGradClose(dataOf(got.grads[key]), dataOf(ref.grads[key]), `${label} grads.${key}`);
            }
          }
        }
      }
    });
  }
});

/** The clipped copy of a problem's cosines, `[-1 + eps, 1 - eps]`. */
function clipped(cos: Mat, eps: number): Mat {
  return { data: cos.data.map((x) => Math.min(1 - eps, Math.max(-1 + eps, x))), shape: cos.shape };
}

describe("face margin losses: identities", () => {
  for (const b of backends) {
    it(`${b.name}: adaface with h = 0 is cosface with the same scale and margin on clipped cosines`, async () => {
      const p = problem("adaface", new Rng(3), 9, 11);
      p.cos.data[0] = 1;
      p.cos.data[1] = -1;
      const o = { scale: 20, margin: 0.3, h: 0 };
      const a = await lossOf(b, "adaface")!.valueAndGrad(p, o);
      const c = await lossOf(b, "cosface")!.valueAndGrad({ cos: clipped(p.cos, 1e-3), labels: p.labels }, {
        scale: 20,
        margin: 0.3,
      });
      assertLossClose(a.loss as Any, c.loss as Any, "loss");
      // the clip passes no gradient outside [-1 + eps, 1 - eps] (entries 0 and 1 here)
      const want = Float64Array.from(c.grads.cos.data, (g: number, i: number) => (i < 2 ? 0 : g));
      assertGradClose(a.grads.cos.data, want, "grads.cos");
    });
    it(`${b.name}: curricularFace without hard negatives is arcface`, async () => {
      const p = problem("curricularFace", new Rng(4), 8, 6, 0);
      const [n, c] = p.cos.shape;
      // every label cosine 0.95, the others below cos(acos(0.95) + 0.5)
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < c; j++) p.cos.data[i * c + j] = j === p.labels[i] ? 0.95 : p.cos.data[i * c + j] * 0.6;
      }
      const a = await lossOf(b, "curricularFace")!.valueAndGrad(p, { scale: 16 });
      const r = await lossOf(b, "arcface")!.valueAndGrad({ cos: p.cos, labels: p.labels }, { scale: 16 });
      assertLossClose(a.loss as Any, r.loss as Any, "loss");
      assertGradClose(a.grads.cos.data, r.grads.cos.data, "grads.cos");
      assert.ok(Math.abs(a.state.t - (0.01 * 0.95 + 0.99 * 0.2)) < 1e-9, `state.t ${a.state.t}`);
    });
    it(`${b.name}: magface with one margin and lambda 0 is arcface (easyMargin)`, async () => {
      const p = problem("magface", new Rng(5), 8, 6);
      const o = { scale: 16, lowerMargin: 0.5, upperMargin: 0.5, lambda: 0 };
      const a = await lossOf(b, "magface")!.valueAndGrad(p, o);
      const r = await lossOf(b, "arcface")!.valueAndGrad({ cos: p.cos, labels: p.labels }, {
        scale: 16,
        easyMargin: true,
      });
      assertLossClose(a.loss as Any, r.loss as Any, "loss");
      assertLossClose(a.ce, r.loss as Any, "ce");
      assertGradClose(a.grads.cos.data, r.grads.cos.data, "grads.cos");
      assert.ok(a.grads.norms.every((x: number) => x === 0), "no norm gradient: the margin is constant");
    });
    it(`${b.name}: the same call twice gives the same result; state in, state out`, async () => {
      for (const name of NAMES) {
        const p = problem(name, new Rng(6), 7, 9);
        const snap = snapshot(p);
        const one = await lossOf(b, name)!.valueAndGrad(p, {});
        const two = await lossOf(b, name)!.valueAndGrad(p, {});
        assert.deepEqual(two, one, name);
        assertUnchanged(snap, p);
        if (name !== "magface") assert.notDeepEqual(one.state, p.state, `${name}: a new state`);
      }
    });
    it(`${b.name}: all rows ignored keeps the state; N = 1 keeps adaface's std; finite at +-1`, async () => {
      const cos = { data: new Float32Array([1, -1, 1, 0.5, -1, 1]), shape: [2, 3] };
      const state = adafaceInit();
      const ada = lossOf(b, "adaface")!;
      const none = await ada.valueAndGrad({ cos, labels: [-100, -100], norms: [3, 4], state }, {});
      assert.deepEqual(none.state, state);
      assert.equal(none.loss, 0);
      const one = await ada.valueAndGrad({ cos, labels: [0, -100], norms: [3, 4], state }, {});
      assert.equal(one.state.std, state.std);
      assert.ok(Math.abs(one.state.mean - (0.01 * 3 + 0.99 * 20)) < 1e-12);
      const cur = await lossOf(b, "curricularFace")!.valueAndGrad({ cos, labels: [-100, -100], state: { t: 0.3 } });
      assert.deepEqual(cur.state, { t: 0.3 });
      for (const name of NAMES) {
        const p = { cos, labels: [0, 2], norms: [30, 200], state: name === "adaface" ? state : { t: 0.5 } };
        if (name === "magface") delete (p as Any).state;
        if (name === "curricularFace") delete (p as Any).norms;
        const r = await lossOf(b, name)!.valueAndGrad(p, {});
        assertFinite(r.loss as number, `${name} loss`);
        for (const key of gradsOf(name)) assertFinite(dataOf(r.grads[key]), `${name} grads.${key}`);
      }
      const mag = await lossOf(b, "magface")!.valueAndGrad({ cos, labels: [-100, -100], norms: [3, 4] });
      assert.deepEqual([mag.loss, mag.ce, mag.g], [0, 0, 0]);
    });
  }
});

// ------------------------------------------------------------------------------------------------
// Errors

const small = (name: Name) => () => problem(name, new Rng(8), 3, 4, 0);

function errorCases(name: Name): ErrorCase[] {
  const make = small(name);
  const cases: ErrorCase[] = [
    ...labelErrors(make),
    ...commonOptionErrors(make, "cos"),
    ...numberOptionErrors(make, "scale", [0, -1, NaN, 1e7]),
  ];
  if (name !== "curricularFace") {
    cases.push(
      {
        name: "norms of the wrong length",
        inputs: () => ({ ...make(), norms: [1, 2] }),
        type: RangeError,
        includes: ["norms", "3", "2"],
      },
      { name: "norms not an array", inputs: () => ({ ...make(), norms: 5 }), type: TypeError, includes: ["norms"] },
      {
        name: "norms missing",
        inputs: () => ({ ...make(), norms: undefined }),
        type: TypeError,
        includes: ["norms", "undefined"],
      },
    );
  }
  if (name === "adaface") {
    cases.push(
      ...numberOptionErrors(make, "alpha", [-0.1, 1.5, NaN]),
      ...numberOptionErrors(make, "eps", [0, 0.5, -1]),
      ...numberOptionErrors(make, "margin", [3, NaN]),
      {
        name: "state.std negative",
        inputs: () => ({ ...make(), state: { mean: 1, std: -1 } }),
        type: RangeError,
        includes: ["state.std", "-1"],
      },
      {
        name: "state missing",
        inputs: () => ({ ...make(), state: undefined }),
        type: TypeError,
        includes: ["state", "undefined"],
      },
      {
        name: "state.mean not a number",
        inputs: () => ({ ...make(), state: { mean: "a", std: 1 } }),
        type: TypeError,
        includes: ["state.mean", '"a"'],
      },
    );
  }
  if (name === "curricularFace") {
    cases.push(
      ...numberOptionErrors(make, "momentum", [-0.1, 2]),
      ...numberOptionErrors(make, "margin", [-0.1, 4]),
      {
        name: "state.t infinite",
        inputs: () => ({ ...make(), state: { t: Infinity } }),
        type: RangeError,
        includes: ["state.t", "Infinity"],
      },
    );
  }
  if (name === "magface") {
    cases.push(
      ...numberOptionErrors(make, "lowerNorm", [0, -1]),
      ...numberOptionErrors(make, "upperMargin", [4, -1]),
      ...numberOptionErrors(make, "lambda", [-1, NaN]),
      {
        name: "upperNorm not above lowerNorm",
        inputs: make,
        options: { lowerNorm: 50, upperNorm: 40 },
        type: RangeError,
        includes: ["options.upperNorm", "40"],
      },
    );
  }
  return cases;
}

for (const name of NAMES) describe(name, () => errorSuite({ name } as Any, errorCases(name)));

// ------------------------------------------------------------------------------------------------
// The inter-class options of arcface, cosface, combinedMargin (the same non-target transform)

describe("interclassFilteringThreshold and interTopK: PyTorch fixtures (insightface, wespeaker)", () => {
  const cases = loadFixtures("faces/inter_class.json");
  for (const b of backends) {
    describe(b.name, () => {
      for (const fc of cases) {
        it(fc.name, async () => {
          const { kind, ...options } = fc.options as Any;
          const loss = lossOf(b, kind)!;
          const label = `${b.name} ${fc.name}`;
          const f = await loss.forward(fc.inputs, options);
          assertLossClose(f.loss as Any, fc.expected.loss, `${label} loss`);
          const g = await loss.backward(fc.inputs, options, fc.upstream);
          assertGradClose(g.cos.data, fc.expected.grads.cos as Any, `${label} grads.cos`);
        });
      }
    });
  }
});

describe("interclassFilteringThreshold and interTopK: identities and errors", () => {
  const p = () => ({ cos: randomCosines(new Rng(21), 7, 12, 1), labels: randomLabels(new Rng(22), 7, 12, 0.2, -100) });
  for (const b of backends) {
    it(`${b.name}: threshold 0, interTopK 0 and interTopK with margin 0 are today's loss; threshold 1 filters nothing`, async () => {
      const inputs = p();
      for (const name of ["arcface", "cosface", "combinedMargin"]) {
        const plain = await lossOf(b, name)!.valueAndGrad(inputs, { scale: 20 });
        const same: Any[] = [{ interclassFilteringThreshold: 0 }, { interclassFilteringThreshold: 1 }];
        if (name === "arcface") same.push({ interTopK: 0 }, { interTopK: 3, interTopKMargin: 0 });
        for (const o of same) {
          const r = await lossOf(b, name)!.valueAndGrad(inputs, { scale: 20, ...o });
          assertLossClose(r.loss as Any, plain.loss as Any, `${name} ${JSON.stringify(o)} loss`);
          assertGradClose(r.grads.cos.data, plain.grads.cos.data, `${name} ${JSON.stringify(o)} grads.cos`);
        }
      }
    });
    it(`${b.name}: interTopK agrees with the reference on random rows with ties (C = 1000)`, async () => {
      const cos = randomCosines(new Rng(5), 9, 1000, 1);
      for (let q = 0; q < cos.data.length; q += 7) cos.data[q] = 0.5; // ties at the k-th
      const inputs = { cos, labels: randomLabels(new Rng(6), 9, 1000, 0.2, -100) };
      for (const o of [{ interTopK: 5 }, { interTopK: 40, interclassFilteringThreshold: 0.7 }]) {
        const ref = await lossOf(reference, "arcface")!.valueAndGrad(inputs, { scale: 30, ...o });
        const got = await lossOf(b, "arcface")!.valueAndGrad(inputs, { scale: 30, ...o });
        assertLossClose(got.loss as Any, ref.loss as Any, "loss");
        assertGradClose(got.grads.cos.data, ref.grads.cos.data, "grads.cos");
      }
    });
  }
  const make = () => ({ cos: randomCosines(new Rng(8), 3, 4, 1), labels: [0, 3, 1] });
  errorSuite({ name: "arcface" } as Any, [
    ...numberOptionErrors(make, "interclassFilteringThreshold", [-0.1, 1.5, NaN]),
    ...numberOptionErrors(make, "interTopKMargin", [-0.1, 4, NaN]),
    {
      name: "interTopK negative",
      inputs: make,
      options: { interTopK: -1 },
      type: RangeError,
      includes: ["options.interTopK", "-1"],
    },
    {
      name: "interTopK not an integer",
      inputs: make,
      options: { interTopK: 1.5 },
      type: TypeError,
      includes: ["options.interTopK", "1.5"],
    },
  ]);
  errorSuite({ name: "cosface" } as Any, [
    {
      name: "interTopK is arcface's",
      inputs: make,
      options: { interTopK: 1 },
      type: TypeError,
      includes: ['"interTopK"'],
    },
  ]);
  it("the sharded forms take the inter-class options (tests/sharded_inter_test.ts); interTopK needs inputs.topK", () => {
    assert.throws(
      () => js.sharded.arcface.stats(make(), { offset: 0, classes: 4, interTopK: 1 } as Any),
      (e: Error) => e instanceof TypeError && e.message.includes("inputs.topK"),
    );
    assert.throws(
      () => js.sharded.normface.stats(make(), { offset: 0, classes: 4, interTopK: 1 } as Any),
      (e: Error) => e instanceof TypeError && e.message.includes('"interTopK"'),
    );
  });
});

// ------------------------------------------------------------------------------------------------
// The three as marginHead kinds (every backend; tests/webgpu_face_test.ts: GPU-resident x and W)

describe("marginHead kinds adaface, curricularFace, magface", () => {
  const rnd = (n: number, seed: number, scale: number) => {
    const rng = new Rng(seed);
    return Float32Array.from({ length: n }, () => rng.uniform(-scale, scale));
  };
  const N = 6, D = 8, C = 11;
  const x = { data: rnd(N * D, 1, 4), shape: [N, D] as const };
  const W = { data: rnd(C * D, 2, 1), shape: [C, D] as const };
  const labels = [0, 3, 5, -100, 10, 2];
  const kinds = [
    ["adaface", { state: { mean: 5, std: 2 } }, {}],
    ["curricularFace", { state: { t: 0.3 } }, {}],
    ["magface", {}, { lowerNorm: 1, upperNorm: 20 }],
  ] as const;
  /** cos = normalize(x) normalize(W)^T in float64, rounded once; norms = ||x||. */
  const cosOf = () => {
    const nrm = (m: Float32Array, r: number) => Math.hypot(...m.subarray(r * D, (r + 1) * D));
    const cos = new Float32Array(N * C);
    for (let i = 0; i < N; i++) {
      for (let j = 0; j < C; j++) {
        let dot = 0;
        for (let k = 0; k < D; k++) dot += x.data[i * D + k] * W.data[j * D + k];
        cos[i * C + j] = dot / (nrm(x.data, i) * nrm(W.data, j));
      }
    }
    return { cos: { data: cos, shape: [N, C] }, norms: Float32Array.from({ length: N }, (_, i) => nrm(x.data, i)) };
  };
  for (const b of backends) {
    for (const [kind, extra, opts] of kinds) {
      it(`${b.name} ${kind}: the head's value, parts and state are the loss's on its cosines and norms`, async () => {
        const h = await lossOf(b, "marginHead")!.forward({ x, W, labels, ...extra }, { kind, scale: 8, ...opts });
        const { cos, norms } = cosOf();
        const inputs: Any = { cos, labels, ...extra };
        if (kind !== "curricularFace") inputs.norms = norms;
        const l = await lossOf(reference, kind)!.forward(inputs, { scale: 8, ...opts });
        assertLossClose(h.loss as Any, l.loss as Any, "loss");
        if (kind === "magface") assertLossClose(h.g, l.g, "g");
        else for (const [k, v] of Object.entries(l.state)) assertLossClose(h.state[k], v as number, `state.${k}`, 1e-6);
      });
    }
  }
  for (const [kind, extra, opts] of kinds.filter(([k]) => k !== "curricularFace")) {
    it(`js ${kind}: finite differences of the head (x gets the norm's gradient too)`, async () => {
      const loss = lossOf(reference, "marginHead")!;
      const inputs: Any = {
        x: { data: x.data.slice(), shape: x.shape },
        W: { data: W.data.slice(), shape: W.shape },
        labels,
        ...extra,
      };
      const o = { kind, scale: 4, ...opts };
      const g = await loss.backward(inputs, o);
      // (AdaFace's norms are detached: the head's x gradient leaves out their dependence on x, W's has none)
      for (const key of kind === "adaface" ? ["W"] : ["x", "W"]) {
        const num = await numericGradient(
          async () => (await loss.forward(inputs, o)).loss as number,
          inputs[key].data,
          2 ** -9,
        );
        const scale = Math.max(1, ...num.map(Math.abs));
        for (let i = 0; i < num.length; i++) {
          assert.ok(
            Math.abs(g[key].data[i] - num[i]) <= 1e-5 * scale,
            `${kind} grads.${key}[${i}] ${g[key].data[i]} vs ${num[i]}`,
          );
        }
      }
    });
  }
  it("refuses state without a stateful kind, and curricularFace in the sharded head", () => {
    assert.throws(
      () => js.marginHead.forward({ x, W, labels, state: { t: 0 } } as Any, { kind: "arcface" }),
      TypeError,
    );
    assert.throws(
      () =>
        js.sharded.marginHead.stats({ x, W, labels, state: { t: 0 } } as Any, {
          kind: "curricularFace",
          offset: 0,
          classes: C,
        } as Any),
      (e: Error) => e instanceof TypeError && e.message.includes("curricularFace"),
    );
  });
});

// ------------------------------------------------------------------------------------------------
// A per-row margin (ElasticFace) on arcface, cosface, combinedMargin

describe("a per-row margin Float32Array [N]", () => {
  const n = 9, c = 7;
  const inputs = () => ({
    cos: randomCosines(new Rng(31), n, c, 1),
    labels: randomLabels(new Rng(32), n, c, 0.2, -100),
  });
  const rng = new Rng(33);
  const margins = Float32Array.from({ length: n }, () => rng.uniform(0.05, 2.9)); // some past pi - m's threshold
  const cases = [
    ["arcface", "margin", {}],
    ["arcface", "margin", { easyMargin: true, interTopK: 2 }],
    ["cosface", "margin", {}],
    ["combinedMargin", "m2", { m1: 1.2 }],
    ["combinedMargin", "m3", {}],
  ] as const;
  for (const b of backends) {
    for (const [name, key, extra] of cases) {
      it(`${b.name} ${name} ${key} ${JSON.stringify(extra)}: row i is the loss with margin m_i; equal values are the scalar`, async () => {
        const p = inputs(), loss = lossOf(b, name)!;
        const values = name === "cosface" || key === "m3"
          ? margins.map((m) => m / 2 - 0.5)
          : key === "m2"
          ? margins.map((m) => m - 1)
          : margins;
        const o = { scale: 16, reduction: "none", ...extra };
        const r = await loss.valueAndGrad(p, { ...o, [key]: values });
        for (let i = 0; i < n; i++) {
          const one = await loss.valueAndGrad(p, { ...o, [key]: values[i] });
          assertLossClose((r.loss as Float32Array)[i], (one.loss as Float32Array)[i], `row ${i} loss`);
          assertGradClose(
            r.grads.cos.data.subarray(i * c, (i + 1) * c),
            one.grads.cos.data.subarray(i * c, (i + 1) * c),
            `row ${i} grads`,
          );
        }
        const same = await loss.valueAndGrad(p, { scale: 16, ...extra, [key]: new Float32Array(n).fill(values[0]) });
        const scalar = await loss.valueAndGrad(p, { scale: 16, ...extra, [key]: values[0] });
        assertLossClose(same.loss as Any, scalar.loss as Any, "equal values: loss");
        assertGradClose(same.grads.cos.data, scalar.grads.cos.data, "equal values: grads");
      });
    }
  }
  errorSuite({ name: "arcface" } as Any, [
    {
      name: "a margin array of the wrong length",
      inputs,
      options: { margin: new Float32Array(3) },
      type: RangeError,
      includes: ["options.margin", "9", "3"],
    },
    {
      name: "a margin array with NaN",
      inputs,
      options: { margin: new Float32Array(n).fill(NaN) },
      type: RangeError,
      includes: ["options.margin[0]", "NaN"],
    },
    {
      name: "a margin array value out of [0, pi)",
      inputs,
      options: { margin: new Float32Array(n).fill(4) },
      type: RangeError,
      includes: ["options.margin", "4"],
    },
  ]);
  it("the sharded forms check a margin array as the losses do (sharded = unsharded: tests/sharded_inter_test.ts)", () => {
    const x = { data: new Float32Array([1, 0, 0, 1]), shape: [2, 2] as const };
    assert.throws(
      () =>
        js.sharded.marginHead.stats({ x, W: x, labels: [0, 1] }, {
          offset: 0,
          classes: 2,
          margin: new Float32Array(3) as Any,
        }),
      (e: Error) => e instanceof RangeError && e.message.includes("options.margin"),
    );
    assert.throws(
      () =>
        js.sharded.arcface.stats({ cos: x, labels: [0, 1] }, {
          offset: 0,
          classes: 2,
          margin: Float32Array.of(0.5, 4),
        }),
      (e: Error) => e instanceof RangeError && e.message.includes("options.margin"),
    );
  });
});

describe("magface out buffers", () => {
  for (const b of backends) {
    it(`${b.name}: out.norms receives the norms' gradient; a wrong one is a TypeError`, async () => {
      const p = problem("magface", new Rng(40), 4, 5);
      const want = await lossOf(b, "magface")!.backward(p, {});
      const out = new Float32Array(4).fill(NaN);
      const got = await lossOf(b, "magface")!.backward(p, { out: { norms: out } });
      assert.equal(got.norms, out);
      assert.deepEqual(Array.from(out), Array.from(want.norms as Float32Array));
      await assert.rejects(
        async () => await lossOf(b, "magface")!.backward(p, { out: { norms: new Float32Array(3) } }),
        TypeError,
      );
    });
  }
});
