// marginHead's sub-centres (options.subcenters K: W [C*K, D], the class cosine the largest of its K
// rows') and PartialFC's classes (the input classes [S]: only those classes' rows of W take part,
// grads.W [S*K, D]), SPEC.md section 7, docs/LOSSES.md: PyTorch float64 fixtures from
// tests/fixtures/generate_head_subcenters.py (PML's SubCenterArcFaceLoss, insightface's PartialFC),
// finite differences, agreement of the backends (the wasm one on one thread and on threads),
// identities, the class-sharded form and the named errors.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { js, partialFcSample, wasm } from "../cpu.ts";
import { init } from "../mod.ts";
import { poolsInUse } from "../src/wasm/pool.ts";
import { assertGradClose, assertLossClose, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { type FixtureCase, loadFixtures } from "./helpers/fixtures.ts";
import { numericGradient } from "./helpers/numeric.ts";
import { randomLabels, randomMatrix, Rng } from "./helpers/random.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const FILE = "heads/subcenters.json";
/** The CPU backends (the WebGPU head's sub-centres are tested with its own kernels). */
const CPU = [{ name: "js", losses: js as Any }, { name: "wasm", losses: wasm as Any }];

/** The raw JSON cases (for the fields beside the generic format: state and nextState). */
const raws: Any[] = JSON.parse(readFileSync(new URL(`./fixtures/${FILE}`, import.meta.url), "utf8")).cases;

function inputsOf(fc: FixtureCase, raw: Any): Record<string, Any> {
  return raw.state ? { ...fc.inputs, state: raw.state } : { ...fc.inputs };
}

describe("marginHead subcenters and classes: PyTorch fixtures (tests/fixtures/generate_head_subcenters.py)", () => {
  const cases = loadFixtures(FILE);
  for (const b of CPU) {
    describe(b.name, () => {
      cases.forEach((fc, k) => {
        it(fc.name, () => {
          const inputs = inputsOf(fc, raws[k]);
          const snap = snapshot({ inputs, options: fc.options });
          const label = `${b.name} ${fc.name}`;
          const r = b.losses.marginHead.forward(inputs, fc.options);
          assertLossClose(r.loss, fc.expected.loss, `${label} loss`);
          for (const [part, v] of Object.entries(fc.expected.parts ?? {})) {
            assertLossClose(r[part], v, `${label} part ${part}`);
          }
          if (raws[k].nextState) {
            for (const [key, v] of Object.entries(raws[k].nextState as Record<string, number>)) {
              assertLossClose(r.state[key], v, `${label} state.${key}`, 1e-12);
            }
          }
          const g = b.losses.marginHead.backward(inputs, fc.options, fc.upstream);
          for (const key of ["x", "W"]) {
            assertGradClose(g[key].data, fc.expected.grads[key] as Any, `${label} grads.${key}`);
          }
          assertUnchanged(snap, { inputs, options: fc.options });
        });
      });
    });
  }
});

/**
 * A problem of C classes of K sub-centres each: W [C*K, D] (each class's rows around one centre),
 * x [n, D] near its label's centre, labels with a share of ignored rows.
 */
function problem(rng: Rng, n: number, d: number, c: number, K: number, ignore = 0.2) {
  const centres = randomMatrix(rng, c, d, 1);
  const W = randomMatrix(rng, c * K, d, 0.4);
  for (let r = 0; r < c * K; r++) {
    const s = 0.5 + rng.uniform(0, 1.5);
    for (let k = 0; k < d; k++) {
      W.data[r * d + k] = s * (W.data[r * d + k] + centres.data[Math.floor(r / K) * d + k]);
    }
  }
  const labels = randomLabels(rng, n, c, ignore, -100);
  const x = randomMatrix(rng, n, d, 0.8);
  for (let i = 0; i < n; i++) {
    if (labels[i] < 0) continue;
    for (let k = 0; k < d; k++) x.data[i * d + k] += centres.data[labels[i] * d + k];
  }
  return { x, W, labels };
}

/** The smallest gap between a class's two largest sub-centre cosines (a finite difference must not cross it). */
function gap(p: { x: Any; W: Any }, K: number): number {
  const [n, d] = p.x.shape, rows = p.W.shape[0];
  const nrm = (a: Float32Array, r: number) => Math.hypot(...a.subarray(r * d, r * d + d));
  let least = Infinity;
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < rows / K; c++) {
      const u = Array.from({ length: K }, (_, k) => {
        let dot = 0;
        for (let q = 0; q < d; q++) dot += p.x.data[i * d + q] * p.W.data[(c * K + k) * d + q];
        return dot / (nrm(p.x.data, i) * nrm(p.W.data, c * K + k));
      }).sort((a, b) => b - a);
      if (K > 1) least = Math.min(least, u[0] - u[1]);
    }
  }
  return least;
}

/** Every backend's result against the reference's. */
function agree(got: Any, want: Any, label: string): void {
  assertLossClose(got.loss, want.loss, `${label} loss`);
  for (const key of ["x", "W"]) {
    assert.deepEqual(got.grads[key].shape, want.grads[key].shape, `${label} grads.${key}.shape`);
    assertGradClose(got.grads[key].data, want.grads[key].data, `${label} grads.${key}`);
  }
}

const threaded = await init({ backend: "wasm", threads: 3 });

describe("marginHead subcenters and classes: the backends agree with the reference", () => {
  // The wasm kernels take 128 / K classes a chunk: C around 42 (K = 3) and 32 (K = 4) matters.
  for (const [K, c] of [[3, 1], [3, 41], [3, 42], [3, 43], [3, 130], [4, 33], [2, 200]]) {
    for (const n of [1, 6]) {
      it(`wasm K = ${K}, C = ${c}, N = ${n}, with and without classes`, () => {
        const p = problem(new Rng(K * 1000 + c * 10 + n), n, 8, c, K);
        for (const kind of ["arcface", "curricularFace"]) {
          const o: Any = { kind, scale: 30, subcenters: K };
          const inputs: Any = kind === "curricularFace" ? { ...p, state: { t: 0.2 } } : p;
          agree(wasm.marginHead.valueAndGrad(inputs, o), js.marginHead.valueAndGrad(inputs, o), `${kind}`);
          const classes = partialFcSample(p.labels, c, { rate: 0.5, seed: c });
          const q = { ...inputs, classes };
          agree(wasm.marginHead.valueAndGrad(q, o), js.marginHead.valueAndGrad(q, o), `${kind} classes`);
        }
      });
    }
  }
  it("threads (3) agree with one thread and the reference: a head that splits, with and without classes", async () => {
    const p = problem(new Rng(5), 64, 64, 1500, 3, 0.1);
    const o: Any = { kind: "arcface", scale: 30, margin: 0.4, subcenters: 3 };
    for (const inputs of [p, { ...p, classes: partialFcSample(p.labels, 1500, { rate: 0.8, seed: 2 }) }]) {
      const want = js.marginHead.valueAndGrad(inputs, o);
      const runs = threaded.threads > 1 ? (poolsInUse().get(3)?.runs ?? 0) : 0;
      const got = await threaded.marginHead.valueAndGrad(inputs, o);
      if (threaded.threads > 1) assert.ok(poolsInUse().get(3)!.runs > runs, "the head ran on the pool");
      agree(got, want, "threads");
      agree(wasm.marginHead.valueAndGrad(inputs, o), want, "one thread");
    }
  });
});

describe("marginHead subcenters and classes: finite differences (float64 reference)", () => {
  for (
    const [label, o, withClasses] of [
      ["arcface K = 3", { kind: "arcface", scale: 4, subcenters: 3 }, false],
      ["cosface K = 2, classes, sum", { kind: "cosface", scale: 3, subcenters: 2, reduction: "sum" }, true],
      ["magface K = 2", { kind: "magface", scale: 3, subcenters: 2, lambda: 0.5 }, false],
    ] as [string, Any, boolean][]
  ) {
    it(label, () => {
      let seed = 31, p: Any = problem(new Rng(seed), 4, 5, 6, o.subcenters, 0.2);
      while (gap(p, o.subcenters) < 0.02) p = problem(new Rng(++seed), 4, 5, 6, o.subcenters, 0.2);
      if (o.kind === "magface") {
        for (let i = 0; i < p.x.data.length; i++) p.x.data[i] *= 8; // norms inside [10, 110] mostly
      }
      if (withClasses) p.classes = partialFcSample(p.labels, 6, { rate: 0.7, seed: 1 });
      const g: Any = js.marginHead.backward(p, o, 1.5);
      const scalar = () => Promise.resolve(1.5 * (js.marginHead.forward(p, o).loss as number));
      return (async () => {
        for (const key of ["x", "W"]) {
          const num = await numericGradient(scalar, p[key].data, 2 ** -8);
          const a = g[key].data as Float32Array;
          const scale = Math.max(1, ...num.map(Math.abs));
          if (!withClasses || key === "x") assert.equal(a.length, num.length);
          // With classes, grads.W holds the sampled classes' rows only (the others' gradient is 0).
          const rows = withClasses ? Array.from(p.classes as Int32Array).flatMap((c) => [2 * c, 2 * c + 1]) : null;
          for (let i = 0; i < num.length; i++) {
            let want = num[i];
            let at = i;
            if (rows && key === "W") {
              const r = Math.floor(i / 5), q = rows.indexOf(r);
              if (q < 0) {
                assert.ok(Math.abs(want) <= 2e-5 * scale, `W row ${r} is not sampled: gradient ${want}`);
                continue;
              }
              at = q * 5 + (i % 5);
            }
            want = num[i];
            assert.ok(Math.abs(a[at] - want) <= 2e-5 * scale, `${label} grads.${key}[${i}] ${a[at]} vs ${want}`);
          }
        }
      })();
    });
  }
});

describe("marginHead subcenters and classes: identities", () => {
  for (const b of CPU) {
    it(`${b.name}: subcenters 1 is today's head`, () => {
      const p = problem(new Rng(41), 7, 8, 150, 1);
      const want = b.losses.marginHead.valueAndGrad(p, { scale: 20 });
      const got = b.losses.marginHead.valueAndGrad(p, { scale: 20, subcenters: 1 });
      assert.deepEqual(got.loss, want.loss);
      assert.deepEqual(got.grads.W.data, want.grads.W.data);
      assert.deepEqual(got.grads.x.data, want.grads.x.data);
    });
    it(`${b.name}: classes = every class is the full head (K = 3)`, () => {
      const p = problem(new Rng(42), 7, 8, 60, 3);
      const o = { scale: 20, subcenters: 3 };
      const want = b.losses.marginHead.valueAndGrad(p, o);
      const all = Int32Array.from({ length: 60 }, (_, j) => j);
      const got = b.losses.marginHead.valueAndGrad({ ...p, classes: all }, o);
      assert.equal(got.loss, want.loss);
      assert.deepEqual(got.grads.W.data, want.grads.W.data);
      assert.deepEqual(got.grads.x.data, want.grads.x.data);
    });
    it(`${b.name}: classes = a sample is the head on those rows of W (K = 2)`, () => {
      const p = problem(new Rng(43), 7, 8, 90, 2);
      const o = { scale: 20, subcenters: 2, kind: "cosface" };
      const classes = partialFcSample(p.labels, 90, { rate: 0.3, seed: 7 });
      const rows = new Float32Array(classes.length * 16);
      classes.forEach((c, r) => rows.set(p.W.data.subarray(c * 16, c * 16 + 16), r * 16));
      const local = p.labels.map((y) => (y < 0 ? y : classes.indexOf(y)));
      const want = b.losses.marginHead.valueAndGrad({
        x: p.x,
        W: { data: rows, shape: [rows.length / 8, 8] },
        labels: local,
      }, o);
      const got = b.losses.marginHead.valueAndGrad({ ...p, classes }, o);
      agree(got, want, "sampled");
      assert.deepEqual(got.grads.W.shape, [classes.length * 2, 8]);
    });
    it(`${b.name}: K equal sub-centres are one (the gradient to the first row of each class)`, () => {
      const p = problem(new Rng(44), 7, 8, 50, 1);
      const K = 3, W = new Float32Array(50 * K * 8);
      for (let r = 0; r < 50 * K; r++) {
        W.set(p.W.data.subarray(Math.floor(r / K) * 8, Math.floor(r / K) * 8 + 8), r * 8);
      }
      const o = { scale: 20, kind: "combinedMargin", m2: 0.3, m3: 0.1 };
      const want = b.losses.marginHead.valueAndGrad(p, o);
      const got = b.losses.marginHead.valueAndGrad({ ...p, W: { data: W, shape: [50 * K, 8] } }, {
        ...o,
        subcenters: K,
      });
      assertLossClose(got.loss, want.loss, "loss");
      assertGradClose(got.grads.x.data, want.grads.x.data, "grads.x");
      const first = Float64Array.from(
        got.grads.W.data as Float32Array,
        (g, i) => (Math.floor(i / 8) % K === 0 ? g : 0),
      );
      assert.deepEqual(first, Float64Array.from(got.grads.W.data as Float32Array), "the other sub-centres get 0");
      const firstRows = new Float32Array(50 * 8);
      for (let c = 0; c < 50; c++) firstRows.set(got.grads.W.data.subarray(c * K * 8, c * K * 8 + 8), c * 8);
      assertGradClose(firstRows, want.grads.W.data, "grads.W");
    });
    it(`${b.name}: the head = normalise + matmul + the class maximum + arcface on cosines`, () => {
      const p = problem(new Rng(45), 9, 8, 20, 3);
      const n = 9, d = 8, c = 20, K = 3;
      const cos = new Float32Array(n * c).fill(-2);
      const nrm = (a: Float32Array, r: number) => Math.max(Math.hypot(...a.subarray(r * d, r * d + d)), 1e-12);
      for (let i = 0; i < n; i++) {
        for (let r = 0; r < c * K; r++) {
          let dot = 0;
          for (let k = 0; k < d; k++) dot += p.x.data[i * d + k] * p.W.data[r * d + k];
          const u = Math.min(1, Math.max(-1, dot / (nrm(p.x.data, i) * nrm(p.W.data, r))));
          const j = Math.floor(r / K);
          cos[i * c + j] = Math.max(cos[i * c + j], u);
        }
      }
      const want = b.losses.arcface.forward({ cos: { data: cos, shape: [n, c] }, labels: p.labels }, { scale: 16 });
      const got = b.losses.marginHead.forward(p, { scale: 16, subcenters: K });
      assertLossClose(got.loss, want.loss, "loss");
    });
  }
});
