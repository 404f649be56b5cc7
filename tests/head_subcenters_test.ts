// marginHead's sub-centres (options.subcenters K: W [C*K, D], the class cosine the largest of its K
// rows') and PartialFC's classes (the input classes [S]: only those classes' rows of W take part,
// grads.W [S*K, D]), SPEC.md section 7, docs/LOSSES.md: PyTorch float64 fixtures from
// tests/fixtures/generate_head_subcenters.py (PML's SubCenterArcFaceLoss, insightface's PartialFC),
// finite differences, agreement of the backends (the wasm one on one thread and on threads),
// identities, the class-sharded form and the named errors.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { alloc, js, mergeShardStats, partialFcSample, wasm } from "../cpu.ts";
import { init } from "../mod.ts";
import { poolsInUse } from "../src/wasm/pool.ts";
import { assertGradClose, assertLossClose, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { type FixtureCase, loadFixtures } from "./helpers/fixtures.ts";
import { numericGradient } from "./helpers/numeric.ts";
import { randomLabels, randomMatrix, Rng } from "./helpers/random.ts";
import { marginHeadSpec } from "./helpers/specs.ts";
import { type ErrorCase, errorSuite } from "./helpers/suite.ts";

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
  // The wasm kernels take 40 classes a chunk with K = 3, 32 with K = 4, 64 with K = 2, 16 with 7.
  for (const [K, c] of [[3, 1], [3, 39], [3, 40], [3, 41], [3, 130], [4, 33], [2, 200], [7, 17]]) {
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
  it("threads (3) agree with one thread and the reference: a head that splits, with and without classes", {
    timeout: 120_000,
  }, async () => {
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
  it("threads with W, x and the out buffers in WebAssembly memory (alloc), with and without classes", {
    timeout: 120_000,
  }, async () => {
    const p = problem(new Rng(6), 64, 64, 1500, 3, 0.1);
    const o: Any = { kind: "cosface", scale: 30, subcenters: 3 };
    using wx = alloc([64, 64]), ww = alloc([4500, 64]), gx = alloc([64, 64]), gw = alloc([4500, 64]);
    wx.data.set(p.x.data);
    ww.data.set(p.W.data);
    const want = js.marginHead.valueAndGrad(p, o);
    const got = await threaded.marginHead.valueAndGrad({ x: wx, W: ww, labels: p.labels }, {
      ...o,
      out: { x: gx, W: gw },
    });
    assertLossClose(got.loss as number, want.loss as number, "loss");
    assertGradClose(gx.data, want.grads.x.data, "dx in out");
    assertGradClose(gw.data, want.grads.W.data, "dW in out");
    const classes = partialFcSample(p.labels, 1500, { rate: 0.5, seed: 9 });
    using gs = alloc([classes.length * 3, 64]);
    const sampled = js.marginHead.valueAndGrad({ ...p, classes }, o);
    const q = await threaded.marginHead.valueAndGrad({ x: wx, W: ww, labels: p.labels, classes }, {
      ...o,
      out: { W: gs },
    });
    assertLossClose(q.loss as number, sampled.loss as number, "loss (classes)");
    assertGradClose(gs.data, sampled.grads.W.data, "dW in out (classes)");
    assertGradClose((q.grads.x as Any).data, sampled.grads.x.data, "dx (classes)");
  });
  it(
    "threads: a NaN row of W wins its class (the first NaN): every row's loss is NaN",
    { timeout: 120_000 },
    async () => {
      const p = problem(new Rng(7), 64, 64, 1500, 3, 0);
      const W = p.W.data.slice().fill(NaN, 2998 * 64, 2999 * 64); // the second row of class 999
      const r = await threaded.marginHead.forward({ ...p, W: { data: W, shape: p.W.shape } }, {
        scale: 30,
        subcenters: 3,
        reduction: "none",
      });
      assert.ok((r.loss as Float32Array).every(Number.isNaN), `${r.loss}`);
    },
  );
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
    it(`${b.name}: a NaN row of W wins its class (the first NaN, the losses' rule): every row's loss is NaN`, () => {
      const p = problem(new Rng(46), 6, 8, 12, 3, 0);
      for (const row of [13, 12, 14]) {
        // class 4's second row (its first finite), its first, its last
        const W = p.W.data.slice().fill(NaN, row * 8, row * 8 + 8);
        const o = { scale: 16, subcenters: 3, reduction: "none" };
        const r = b.losses.marginHead.forward({ ...p, W: { data: W, shape: p.W.shape } }, o);
        assert.ok(r.loss.every(Number.isNaN), `W row ${row}: ${r.loss}`);
      }
    });
  }
});

/**
 * The class-sharded head over shards `[bounds[k], bounds[k+1])` of the classes (W's rows of each,
 * K per class; with classes, each shard's share of them): the shares' losses summed, x's shares
 * summed, W's rows concatenated in shard order.
 */
function sharded(l: Any, inputs: Any, o: Any, bounds: number[], K: number) {
  const d = inputs.x.shape[1], C = bounds[bounds.length - 1];
  const shards = bounds.slice(0, -1).map((c0, k) => {
    const c1 = bounds[k + 1];
    const W = { data: inputs.W.data.slice(c0 * K * d, c1 * K * d), shape: [(c1 - c0) * K, d] };
    const own: Any = { ...inputs, W };
    if (inputs.classes) own.classes = Int32Array.from(inputs.classes).filter((c) => c >= c0 && c < c1);
    return { inputs: own, options: { ...o, offset: c0, classes: C } };
  });
  const merged = mergeShardStats(shards.map((s) => l.sharded.marginHead.stats(s.inputs, s.options)));
  const results = shards.map((s) => l.sharded.marginHead.finish(s.inputs, merged, s.options));
  const x = new Float64Array(inputs.x.data.length);
  for (const r of results) r.grads.x.data.forEach((g: number, i: number) => (x[i] += g));
  const W = results.flatMap((r) => Array.from(r.grads.W.data as Float32Array));
  const sum = (key: string) => results.reduce((t, r) => t + r[key], 0);
  return {
    loss: sum("loss"),
    ce: results[0].ce === undefined ? undefined : sum("ce"),
    g: results[0].g === undefined ? undefined : sum("g"),
    state: results[0].state,
    x,
    W: Float64Array.from(W),
  };
}

describe("marginHead subcenters and classes: sharded = unsharded", () => {
  const cases: [string, Any, boolean][] = [
    ["arcface K = 3", { kind: "arcface", scale: 20, subcenters: 3 }, false],
    ["cosface K = 2 with classes, sum", { kind: "cosface", scale: 20, subcenters: 2, reduction: "sum" }, true],
    ["arcface K = 1 with classes", { kind: "arcface", scale: 20 }, true],
    ["adaface K = 2", { kind: "adaface", scale: 20, subcenters: 2 }, false],
    ["adaface K = 3 with classes", { kind: "adaface", scale: 20, subcenters: 3 }, true],
    ["magface K = 2", { kind: "magface", scale: 20, subcenters: 2 }, false],
    ["magface K = 1 with classes, sum", { kind: "magface", scale: 20, reduction: "sum" }, true],
  ];
  for (const b of CPU) {
    for (const [label, o, withClasses] of cases) {
      it(`${b.name}: ${label}`, () => {
        const K = o.subcenters ?? 1;
        const p: Any = problem(new Rng(51), 9, 8, 300, K, 0.2);
        if (o.kind === "magface") { for (let i = 0; i < p.x.data.length; i++) p.x.data[i] *= 12; }
        if (o.kind === "adaface") p.state = { mean: 20, std: 5 };
        // 135 classes of 300 (every shard holds some), the labels among them
        if (withClasses) p.classes = partialFcSample(p.labels, 300, { rate: 0.45, seed: 3 });
        const want = b.losses.marginHead.valueAndGrad(p, o);
        const got = sharded(b.losses, p, o, [0, 100, 128, 300], K);
        assertLossClose(got.loss, want.loss, `${label} loss`);
        if (o.kind === "magface") {
          assertLossClose(got.ce!, want.ce, `${label} ce`);
          assertLossClose(got.g!, want.g, `${label} g`);
        }
        if (o.kind === "adaface") assert.deepEqual(got.state, want.state);
        assertGradClose(got.x, want.grads.x.data, `${label} grads.x`);
        assertGradClose(got.W, want.grads.W.data, `${label} grads.W`);
      });
    }
    it(`${b.name}: the shard records check subcenters, the face kinds' options and the state`, () => {
      const p: Any = problem(new Rng(52), 5, 8, 40, 2, 0);
      const part = (c0: number, c1: number) => ({
        ...p,
        W: { data: p.W.data.slice(c0 * 16, c1 * 16), shape: [(c1 - c0) * 2, 8] },
      });
      const o = { kind: "adaface", subcenters: 2, classes: 40 };
      const a = b.losses.sharded.marginHead.stats({ ...part(0, 20), state: { mean: 20, std: 5 } }, { ...o, offset: 0 });
      const other = b.losses.sharded.marginHead.stats({ ...part(20, 40), state: { mean: 21, std: 5 } }, {
        ...o,
        offset: 20,
      });
      assert.throws(
        () => mergeShardStats([a, other]),
        (e: Error) => e instanceof RangeError && /options/.test(e.message),
      );
      const h = b.losses.sharded.marginHead.stats({ ...part(20, 40), state: { mean: 20, std: 5 } }, {
        ...o,
        offset: 20,
        h: 0.5,
      });
      assert.throws(() => mergeShardStats([a, h]), RangeError);
      // subcenters 1 on a shard of 40 rows is another layout (classes [20, 60) of 40: refused before)
      const k1 = b.losses.sharded.marginHead.stats({ ...part(20, 30), state: { mean: 20, std: 5 } }, {
        ...o,
        subcenters: 1,
        offset: 20,
      });
      assert.throws(() => mergeShardStats([a, k1]), RangeError);
    });
  }
});

describe("marginHead subcenters and classes: named errors", () => {
  // x [3, 4], W [6, 4]: C = 6 with K = 1, 3 classes with K = 2.
  const small = () => ({
    x: randomMatrix(new Rng(8), 3, 4, 1),
    W: randomMatrix(new Rng(9), 6, 4, 1),
    labels: [0, 2, 1],
  });
  const cases: ErrorCase[] = [
    {
      name: "subcenters 0",
      inputs: small,
      options: { subcenters: 0 },
      type: RangeError,
      includes: ["options.subcenters", "0"],
    },
    {
      name: "subcenters 1.5",
      inputs: small,
      options: { subcenters: 1.5 },
      type: [TypeError, RangeError],
      includes: ["options.subcenters", "1.5"],
    },
    {
      name: 'subcenters "2"',
      inputs: small,
      options: { subcenters: "2" },
      type: TypeError,
      includes: ["options.subcenters", '"2"'],
    },
    {
      name: "W rows not a multiple of subcenters",
      inputs: small,
      options: { subcenters: 4 },
      type: RangeError,
      includes: ["W", "subcenters = 4", "6"],
    },
    {
      name: "a label past C = rows / K",
      inputs: () => ({ ...small(), labels: [0, 3, 1] }),
      options: { subcenters: 2 },
      type: RangeError,
      includes: ["labels", "3"],
    },
    {
      name: "classes unsorted",
      inputs: () => ({ ...small(), classes: [2, 1, 0] }),
      type: RangeError,
      includes: ["classes", "sorted", "1"],
    },
    {
      name: "classes repeated",
      inputs: () => ({ ...small(), classes: [0, 1, 1, 2] }),
      type: RangeError,
      includes: ["classes", "distinct"],
    },
    {
      name: "classes past C",
      inputs: () => ({ ...small(), classes: [0, 1, 2, 3] }),
      options: { subcenters: 2 },
      type: RangeError,
      includes: ["classes[3]", "[0, 3)", "3"],
    },
    {
      name: "classes negative",
      inputs: () => ({ ...small(), classes: [-1, 0, 1, 2] }),
      type: RangeError,
      includes: ["classes[0]", "-1"],
    },
    {
      name: "classes empty",
      inputs: () => ({ ...small(), classes: [] }),
      type: RangeError,
      includes: ["classes", "0"],
    },
    {
      name: "classes not integers",
      inputs: () => ({ ...small(), classes: "0,1" }),
      type: TypeError,
      includes: ["classes", '"0,1"'],
    },
    {
      name: "a label not among classes",
      inputs: () => ({ ...small(), classes: [0, 1, 3] }),
      type: RangeError,
      includes: ["labels[1]", "2", "classes"],
    },
  ];
  errorSuite(marginHeadSpec, cases);
  for (const b of CPU) {
    it(`${b.name}: sphereface and lsoftmax take neither subcenters nor classes; a shard's classes stay in its range`, () => {
      for (const name of ["sphereface", "lsoftmax"]) {
        assert.throws(
          () => b.losses[name].forward(small(), { subcenters: 2 }),
          (e: Error) => e instanceof TypeError && e.message.includes("subcenters"),
        );
        assert.throws(
          () => b.losses[name].forward({ ...small(), classes: [0, 1, 2] }, {}),
          (e: Error) => e instanceof TypeError && e.message.includes("classes"),
        );
      }
      const shard = {
        ...small(),
        W: { data: randomMatrix(new Rng(3), 4, 4, 1).data, shape: [4, 4] },
        labels: [0, 2, 5],
      };
      assert.throws(
        () =>
          b.losses.sharded.marginHead.stats({ ...shard, classes: [2, 4] }, { subcenters: 2, offset: 2, classes: 6 }),
        (e: Error) => e instanceof RangeError && e.message.includes("classes[1]") && e.message.includes("[2, 4)"),
      );
      assert.throws(
        () => b.losses.sharded.marginHead.stats({ ...shard, classes: [3] }, { subcenters: 2, offset: 2, classes: 6 }),
        (e: Error) => e instanceof RangeError && e.message.includes("labels[1]"),
      );
    });
  }
});

describe("marginHead subcenters and classes: curricularFace sharded (labelCosines, then stats and finish)", () => {
  for (const b of CPU) {
    for (const withClasses of [false, true]) {
      it(`${b.name}: K = 3${withClasses ? ", classes" : ""}: sharded = unsharded, the same next state`, () => {
        const K = 3, C = 200, bounds = [0, 64, 130, 200];
        const p: Any = problem(new Rng(61), 9, 8, C, K, 0.2);
        if (withClasses) p.classes = partialFcSample(p.labels, C, { rate: 0.5, seed: 4 });
        const o: Any = { kind: "curricularFace", scale: 20, subcenters: K };
        const state = { t: 0.3 };
        const want = b.losses.marginHead.valueAndGrad({ ...p, state }, o);
        const shard = (k: number) => {
          const c0 = bounds[k], c1 = bounds[k + 1], d = 8;
          const inputs: Any = {
            ...p,
            state,
            W: { data: p.W.data.slice(c0 * K * d, c1 * K * d), shape: [(c1 - c0) * K, d] },
          };
          if (p.classes) inputs.classes = Int32Array.from(p.classes).filter((c) => c >= c0 && c < c1);
          return { inputs, options: { ...o, offset: c0, classes: C } };
        };
        const shards = [0, 1, 2].map(shard);
        // The extra all-reduce: every row's label cosine.
        const labelCos = new Float64Array(9);
        for (const s of shards) {
          const { inputs: { state: _, ...rest } } = s;
          b.losses.sharded.marginHead.labelCosines(rest, s.options).cos.forEach((
            c: number,
            i: number,
          ) => (labelCos[i] += c));
        }
        for (const s of shards) s.inputs.labelCos = labelCos;
        const got = sharded(b.losses, { ...p, state, labelCos }, o, bounds, K);
        assertLossClose(got.loss, want.loss, "loss");
        assert.ok(Math.abs(got.state.t - want.state.t) < 1e-12, `state.t ${got.state.t} vs ${want.state.t}`);
        assertGradClose(got.x, want.grads.x.data, "grads.x");
        assertGradClose(got.W, want.grads.W.data, "grads.W");
        // Without labelCos, or with it for another kind: named errors.
        const { labelCos: _l, ...bare } = shards[0].inputs;
        assert.throws(
          () => b.losses.sharded.marginHead.stats(bare, shards[0].options),
          (e: Error) => e instanceof TypeError && e.message.includes("inputs.labelCos"),
        );
        assert.throws(
          () =>
            b.losses.sharded.marginHead.stats({ ...shards[0].inputs, state: undefined }, {
              ...shards[0].options,
              kind: "arcface",
            }),
          (e: Error) => e instanceof TypeError && e.message.includes("inputs.labelCos"),
        );
      });
    }
  }
});
