// linearCrossEntropy (SPEC §9, docs/LOSSES.md "Large vocabularies"): crossEntropy of
// x W^T + bias with every crossEntropy option, gradients w.r.t. x, W and bias, parts z and
// accuracy, optional classes. The wasm kernel streams the classes in chunks of 128 (class
// counts around multiples of 128 matter), flushes x's gradient into float64 every 16 chunks
// (V > 2048 matters) and takes the rows in blocks of at most 512 (N > 512 matters), W's
// gradient added over the blocks as a float32 pair (hi, lo).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { init } from "../mod.ts";
import { assertFinite, assertGradClose, assertLossClose, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { backends, lossOf, missing, reference } from "./helpers/backends.ts";
import { commonOptionErrors, labelErrors, matrixErrors, numberOptionErrors, upstreamErrors } from "./helpers/errors.ts";
import { type FixtureCase, loadFixtures } from "./helpers/fixtures.ts";
import { gradCheck, numericGradient } from "./helpers/numeric.ts";
import { randomLabels, randomMatrix, randomVector, Rng } from "./helpers/random.ts";
import { type ErrorCase, errorSuite, existenceTest } from "./helpers/suite.ts";
import type { LossSpec } from "./helpers/specs.ts";
import { poolsInUse } from "../src/wasm/pool.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const NAME = "linearCrossEntropy";
const spec = { name: NAME } as LossSpec;
const wasmB = backends.find((b) => b.name === "wasm")!;

/** A bias gradient as a matrix-like for the assertions. */
const vec = (data: Float32Array) => ({ data, shape: [data.length] });

/** A random problem: x [n, d], W [v, d], bias [v] (or none), labels with some ignored. */
function problem(rng: Rng, n: number, d: number, v: number, bias = true, scale = 1) {
  return {
    x: randomMatrix(rng, n, d, scale),
    W: randomMatrix(rng, v, d, 1),
    ...(bias ? { bias: randomVector(rng, v, -1, 1) } : {}),
    labels: randomLabels(rng, n, v, 0.2),
  };
}

/** The logits x W^T + bias, float64 products rounded to float32. */
function logitsOf(p: Any): { data: Float32Array; shape: [number, number] } {
  const [n, d] = p.x.shape, v = p.W.shape[0];
  const data = new Float32Array(n * v);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < v; j++) {
      let u = p.bias ? p.bias[j] : 0;
      for (let k = 0; k < d; k++) u += p.x.data[i * d + k] * p.W.data[j * d + k];
      data[i * v + j] = u;
    }
  }
  return { data, shape: [n, v] };
}

/** From G = dL/dlogits [n, v]: dx = G W, dW = G^T x, db = column sums (float64). */
function chain(p: Any, G: Float32Array) {
  const [n, d] = p.x.shape, v = p.W.shape[0];
  const dx = new Float64Array(n * d), dW = new Float64Array(v * d), db = new Float64Array(v);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < v; j++) {
      const g = G[i * v + j];
      db[j] += g;
      for (let k = 0; k < d; k++) {
        dx[i * d + k] += g * p.W.data[j * d + k];
        dW[j * d + k] += g * p.x.data[i * d + k];
      }
    }
  }
  return { dx, dW, db };
}

/** Checks a result's loss, parts and gradients against expected values. */
function checkResult(got: Any, want: Any, label: string, grads = true) {
  assertLossClose(got.loss, want.loss, `${label} loss`);
  for (const k of ["z", "accuracy"]) if (k in want) assertLossClose(got[k], want[k], `${label} part ${k}`);
  if (!grads) return;
  const values = (g: Any) => (g && "data" in g && "shape" in g && !("kind" in g) ? g.data : g);
  assertGradClose(got.grads.x, values(want.grads.x), `${label} grads.x`);
  assertGradClose(got.grads.W, values(want.grads.W), `${label} grads.W`);
  if (want.grads.bias) assertGradClose(vec(got.grads.bias), want.grads.bias, `${label} grads.bias`);
  else assert.equal(got.grads.bias, undefined, `${label}: no grads.bias without a bias`);
}

describe(NAME, () => {
  existenceTest(spec);

  // ----------------------------------------------------------------------------------------------
  describe("matches PyTorch (linear_cross_entropy.json: F.linear + F.cross_entropy, softcap and z-loss as Liger)", () => {
    const cases = loadFixtures("lce/linear_cross_entropy.json");
    for (const b of backends) {
      describe(b.name, () => {
        for (const fc of cases) {
          it(fc.name, { skip: missing(NAME, [b]) }, async () => {
            const loss = lossOf(b, NAME)!;
            const { inputs, options, upstream, expected } = fc as FixtureCase;
            const snap = snapshot({ inputs, options, upstream });
            const want: Any = { loss: expected.loss, ...expected.parts, grads: expected.grads };
            const f = await loss.forward(inputs, options);
            checkResult(f, want, `${b.name} forward`, false);
            const g = await loss.backward(inputs, options, upstream);
            checkResult({ loss: want.loss, z: want.z, accuracy: want.accuracy, grads: g }, want, `${b.name} backward`);
            if (upstream === undefined) checkResult(await loss.valueAndGrad(inputs, options), want, `${b.name} vg`);
            assertUnchanged(snap, { inputs, options, upstream }, `${b.name}: `);
          });
        }
      });
    }
  });

  // ----------------------------------------------------------------------------------------------
  describe("wasm agrees with the float64 reference", () => {
    const shapes: [number, number, number][] = [
      [1, 1, 1],
      [3, 5, 2],
      [2, 7, 127],
      [5, 4, 128],
      [4, 9, 129],
      [33, 3, 300],
      [3, 5, 2100], // past one float64 flush of x's gradient (16 chunks)
      [1030, 3, 20], // three row blocks (at most 512 rows each)
    ];
    const optionSets: Any[] = [
      {},
      { labelSmoothing: 0.1, softcap: 4, zLoss: 0.01, reduction: "sum" },
      { weight: "random", labelSmoothing: 0.2, zLoss: 1e-3, reduction: "none" },
      { softcap: 1e9, ignoreIndex: -1 },
    ];
    for (const [n, d, v] of shapes) {
      for (const [k, o0] of optionSets.entries()) {
        it(`N=${n} D=${d} V=${v} options ${k}`, () => {
          const rng = new Rng(n * 7919 + d * 31 + v + k);
          const p: Any = problem(rng, n, d, v, k % 2 === 0);
          if (o0.ignoreIndex === -1) p.labels = p.labels.map((y: number) => (y === -100 ? -1 : y));
          const o = { ...o0, ...(o0.weight ? { weight: randomVector(rng, v, 0.2, 2) } : {}) };
          const up = o.reduction === "none" ? randomVector(rng, n, -2, 2) : 1.5;
          const ref = (reference.losses as Any)[NAME], w = (wasmB.losses as Any)[NAME];
          const want = ref.valueAndGrad(p, o);
          const got = w.valueAndGrad(p, o);
          checkResult(got, want, "valueAndGrad");
          const gb = w.backward(p, o, up), rb = ref.backward(p, o, up);
          checkResult({ ...want, grads: gb }, { ...want, grads: rb }, "backward");
        });
      }
    }
  });

  // ----------------------------------------------------------------------------------------------
  describe("identities", () => {
    for (const b of backends) {
      describe(b.name, () => {
        const skip = missing(NAME, [b]);
        it("= crossEntropy of the materialised logits, every option (loss, z, gradients by the chain rule)", {
          skip,
        }, async () => {
          const rng = new Rng(11);
          const p: Any = problem(rng, 6, 5, 131);
          const logits = logitsOf(p);
          for (
            const o of [
              {},
              { weight: randomVector(rng, 131, 0.2, 2), labelSmoothing: 0.15, softcap: 3, zLoss: 0.02 },
              { reduction: "none", softcap: 10, zLoss: 0.1 },
            ] as Any[]
          ) {
            const up = o.reduction === "none" ? randomVector(rng, 6, -2, 2) : -0.5;
            const ce = (reference.losses as Any).crossEntropy;
            const want = ce.valueAndGrad({ logits, labels: p.labels }, o);
            const G = ce.backward({ logits, labels: p.labels }, o, up).logits.data;
            const got = await lossOf(b, NAME)!.valueAndGrad(p, o);
            assertLossClose(got.loss as Any, want.loss, "loss");
            assertLossClose(got.z, want.z, "z");
            const g = await lossOf(b, NAME)!.backward(p, o, up);
            const { dx, dW, db } = chain(p, G);
            assertGradClose(g.x, dx, "grads.x");
            assertGradClose(g.W, dW, "grads.W");
            assertGradClose(vec(g.bias), db, "grads.bias");
          }
        });

        it("softcap 1e9 and zLoss 0 = no options", { skip }, async () => {
          const p = problem(new Rng(12), 5, 4, 40);
          const l = lossOf(b, NAME)!;
          const a = await l.valueAndGrad(p, { softcap: 1e9, zLoss: 0 }), r = await l.valueAndGrad(p, {});
          checkResult(a, { ...r, grads: { x: r.grads.x.data, W: r.grads.W.data, bias: r.grads.bias } }, "softcap 1e9");
          assert.equal(a.z, 0);
        });

        it("classes = every class in order = the full call", { skip }, async () => {
          const p = problem(new Rng(13), 7, 3, 150);
          const o = { labelSmoothing: 0.1, zLoss: 0.01, weight: randomVector(new Rng(14), 150, 0.5, 1.5) };
          const l = lossOf(b, NAME)!;
          const a = await l.valueAndGrad({ ...p, classes: Int32Array.from({ length: 150 }, (_, j) => j) }, o);
          const r = await l.valueAndGrad(p, o);
          checkResult(a, { ...r, grads: { x: r.grads.x.data, W: r.grads.W.data, bias: r.grads.bias } }, "classes");
        });

        it("classes: the softmax over the chosen rows of W (= the call on those rows, weight and bias gathered)", {
          skip,
        }, async () => {
          const rng = new Rng(15);
          const p: Any = problem(rng, 6, 4, 20);
          const classes = [0, 3, 4, 9, 17, 19];
          p.labels = Int32Array.from([3, 19, -100, 0, 9, 17]);
          const weight = randomVector(rng, 20, 0.5, 1.5);
          const pick = (m: Float32Array, d: number) => {
            const out = new Float32Array(classes.length * d);
            classes.forEach((k, r) => out.set(m.subarray(k * d, (k + 1) * d), r * d));
            return out;
          };
          const sub = {
            x: p.x,
            W: { data: pick(p.W.data, 4), shape: [6, 4] },
            bias: pick(p.bias, 1),
            labels: p.labels.map((y: number) => (y < 0 ? y : classes.indexOf(y))),
          };
          const l = lossOf(b, NAME)!;
          const a = await l.valueAndGrad({ ...p, classes }, { weight, labelSmoothing: 0.2 });
          const r = await l.valueAndGrad(sub, { weight: pick(weight, 1), labelSmoothing: 0.2 });
          assert.deepEqual([...a.grads.W.shape], [6, 4]);
          assert.equal(a.grads.bias.length, 6);
          checkResult(a, { ...r, grads: { x: r.grads.x.data, W: r.grads.W.data, bias: r.grads.bias } }, "classes");
        });

        it(
          'reduction "none": the per-row upstream weighs each row\'s gradient (Liger #678, #968)',
          { skip },
          async () => {
            // backward with upstream e_k = row k alone, summed; and with u = sum_k u_k (row k alone).
            const rng = new Rng(16);
            const p: Any = problem(rng, 4, 3, 140);
            p.labels = Int32Array.from([5, 139, 0, 70]);
            const o = { reduction: "none", zLoss: 0.05, softcap: 6 } as const;
            const u = Float32Array.from([0.5, -2, 0, 3]);
            const l = lossOf(b, NAME)!;
            const g = await l.backward(p, o, u);
            const dx = new Float64Array(12), dW = new Float64Array(140 * 3), db = new Float64Array(140);
            for (let k = 0; k < 4; k++) {
              const row = {
                x: { data: p.x.data.slice(3 * k, 3 * k + 3), shape: [1, 3] },
                W: p.W,
                bias: p.bias,
                labels: [p.labels[k]],
              };
              const r = await l.backward(row, { ...o, reduction: "sum" }, u[k]);
              r.x.data.forEach((v: number, j: number) => (dx[3 * k + j] += v));
              r.W.data.forEach((v: number, j: number) => (dW[j] += v));
              r.bias.forEach((v: number, j: number) => (db[j] += v));
            }
            assertGradClose(g.x, dx, "grads.x");
            assertGradClose(g.W, dW, "grads.W");
            assertGradClose(vec(g.bias), db, "grads.bias");
          },
        );

        it("all rows ignored: loss, z and accuracy 0, zero gradients", { skip }, async () => {
          const p = { ...problem(new Rng(17), 3, 4, 9), labels: [-100, -100, -100] };
          const r = await lossOf(b, NAME)!.valueAndGrad(p, { zLoss: 0.1, labelSmoothing: 0.1, softcap: 2 });
          assert.equal(r.loss, 0);
          assert.equal(r.z, 0);
          assert.equal(r.accuracy, 0);
          for (const g of [r.grads.x.data, r.grads.W.data, r.grads.bias]) assert.ok(g.every((v: number) => v === 0));
        });

        it(
          "logits near 1e4 nearly tied (and a bias of 1e3): the loss as the reference's (float64 dot products on wasm)",
          {
            skip,
          },
          async () => {
            const rng = new Rng(21);
            const d = 64, v = 300, n = 4;
            const W = randomMatrix(rng, v, d, 12);
            // class 1 is class 0 scaled by 1 - 1e-4: logits of about 1e4 that differ by about 1
            for (let k = 0; k < d; k++) W.data[d + k] = Math.fround(W.data[k] * (1 - 1e-4));
            const x = { data: new Float32Array(n * d), shape: [n, d] };
            for (let i = 0; i < n; i++) {
              for (let k = 0; k < d; k++) x.data[i * d + k] = Math.fround(W.data[k] * (1 + 0.01 * i));
            }
            const bias = randomVector(rng, v, -1000, 1000);
            bias[0] = bias[1] = 0;
            const p = { x, W, bias, labels: [0, 1, 0, 1] };
            for (const o of [{ reduction: "none" }, { labelSmoothing: 0.1, zLoss: 1e-6 }] as Any[]) {
              const want = (reference.losses as Any)[NAME].valueAndGrad(p, o);
              const got = await lossOf(b, NAME)!.forward(p, o);
              // (The loss and parts: the gradient w.r.t. x is a difference of two nearly parallel
              // rows of W here, whose float32 sum cancels to 1e-4 of its terms.)
              checkResult(got, want, "forward", false);
            }
          },
        );

        it("logits of |1e3| with a softcap above them and a z-loss: as the reference (the cap on relative values)", {
          skip,
        }, async () => {
          // Every row of W near one row (logits of about -1300 and 300 within 1 of each other): the
          // z-loss gradient 2 k lse p needs p to 1e-5, which float32 logits of 1e3 do not give.
          const r0 = [...Array(16).fill(-14.014246940612793), 25.79250144958496];
          const r1 = [
            1.04,
            -17.2,
            -25.6,
            4.41,
            15.2,
            -9.8,
            -10.4,
            20.6,
            -14,
            7.9,
            -24.4,
            -15.3,
            18.9,
            22.5,
            5.7,
            -24.4,
            3,
          ];
          const x = { data: Float32Array.from([...r0, ...r1]), shape: [2, 17] };
          const W = { data: new Float32Array(31 * 17).fill(-4.67141580581665), shape: [31, 17] };
          for (let j = 0; j < 31; j++) W.data[j * 17 + (j % 17)] = Math.fround(-4.67141580581665 - 0.002 * j);
          const p = { x, W, labels: [0, 3] };
          for (
            const o of [{ softcap: 1e9, zLoss: 0.6, reduction: "sum" }, {
              softcap: 2000,
              labelSmoothing: 0.5,
              zLoss: 0.01,
            }] as Any[]
          ) {
            const want = (reference.losses as Any)[NAME].valueAndGrad(p, o);
            checkResult(await lossOf(b, NAME)!.valueAndGrad(p, o), want, `softcap ${o.softcap}`);
          }
        });

        it("logits of |1e3| and a softcap: finite, and equal to crossEntropy's", { skip }, async () => {
          const p: Any = problem(new Rng(18), 4, 8, 50, true, 30);
          const o = { softcap: 30, zLoss: 1e-4 };
          const got = await lossOf(b, NAME)!.valueAndGrad(p, o);
          assertFinite(got.loss as number, "loss");
          assertFinite(got.grads.W.data, "grads.W");
          const want = (reference.losses as Any).crossEntropy.forward({ logits: logitsOf(p), labels: p.labels }, o);
          assertLossClose(got.loss as Any, want.loss, "loss");
        });
      });
    }
  });

  // ----------------------------------------------------------------------------------------------
  describe("finite differences (float64 reference, float32 inputs in exact steps)", () => {
    const rng = new Rng(19);
    const p: Any = problem(rng, 3, 4, 6);
    p.labels = Int32Array.from([1, -100, 5]);
    const sets: Any[] = [
      { weight: randomVector(rng, 6, 0.5, 1.5), labelSmoothing: 0.1, softcap: 2, zLoss: 0.05 },
      { reduction: "sum", zLoss: 0.3 },
    ];
    for (const [k, o] of sets.entries()) {
      it(`grads.x, grads.W and grads.bias, option set ${k}`, async () => {
        const loss = lossOf(reference, NAME)!;
        await gradCheck({ loss, inputs: p, options: o, wrt: ["x", "W"], upstream: 0.7, label: `set ${k}` });
        const bias = p.bias.slice();
        const num = await numericGradient(
          (b) => Promise.resolve(0.7 * ((loss.forward({ ...p, bias: b }, o) as Any).loss as number)),
          bias,
        );
        assertGradClose(vec((loss.backward(p, o, 0.7) as Any).bias), num, "grads.bias", 1e-6);
      });
    }
  });

  // ----------------------------------------------------------------------------------------------
  describe("threads (vocabulary ranges) equal one thread", () => {
    it("2 threads: loss, parts and gradients within SPEC's bound of the reference", async () => {
      const two = await init({ backend: "wasm", threads: 2 });
      try {
        const rng = new Rng(20);
        const p: Any = problem(rng, 64, 64, 2100); // n V D = 8.6e6: two ranges (MIN_PER_THREAD 2^22 each)
        const o = { labelSmoothing: 0.1, softcap: 20, zLoss: 1e-3, weight: randomVector(rng, 2100, 0.5, 1.5) };
        const got = await (two as Any)[NAME].valueAndGrad(p, o);
        const want = (reference.losses as Any)[NAME].valueAndGrad(p, o);
        checkResult(
          got,
          { ...want, grads: { x: want.grads.x.data, W: want.grads.W.data, bias: want.grads.bias } },
          "2 threads",
        );
      } finally {
        two.dispose();
      }
    });
  });

  // ----------------------------------------------------------------------------------------------
  it("2 threads, several row blocks (N = 1100): within SPEC's bound of the reference", async () => {
    const two = await init({ backend: "wasm", threads: 2 });
    try {
      const rng = new Rng(21);
      const p: Any = problem(rng, 1100, 48, 520); // three blocks of 368 rows, each 9.2e6 multiply-adds: two ranges
      const o = { labelSmoothing: 0.05, zLoss: 1e-3, reduction: "none" };
      const up = randomVector(rng, 1100, -2, 2);
      const pl = poolsInUse().get(2)!, runs = pl.runs;
      const got = await (two as Any)[NAME].backward(p, o, up);
      assert.ok(pl.runs >= runs + 6, `two parallel runs per block: ${pl.runs - runs}`);
      const want = (reference.losses as Any)[NAME].backward(p, o, up);
      assertGradClose(got.x, want.x.data, "2 threads grads.x");
      assertGradClose(got.W, want.W.data, "2 threads grads.W");
      assertGradClose(vec(got.bias), want.bias, "2 threads grads.bias");
    } finally {
      two.dispose();
    }
  });

  // ----------------------------------------------------------------------------------------------
  it("wasm: W's gradient summed over 65,536 rows (128 row blocks) stays within 1e-6 max|ref| of float64", () => {
    // Rows that pull one class the same way (90% share label 0, x > 0): dW_0 = sum_i G_i0 x_i is a
    // coherent sum of 65,536 terms. One float32 chain over the rows (a single GEMM over N) is off by
    // about 7e-6 max|ref| here, near SPEC's 1e-5; the blocks' products added as a float32 pair stay
    // at about 2e-8.
    const n = 65536, d = 4, v = 8, rng = new Rng(65536);
    const x = Float32Array.from({ length: n * d }, () => Math.fround(0.5 + rng.next()));
    const W = Float32Array.from({ length: v * d }, () => Math.fround(rng.next() - 0.5));
    const labels = Int32Array.from({ length: n }, () => (rng.next() < 0.9 ? 0 : Math.floor(rng.next() * v)));
    const p = { x: { data: x, shape: [n, d] }, W: { data: W, shape: [v, d] }, labels };
    const o = { reduction: "sum" };
    const want = (reference.losses as Any)[NAME].backward(p, o).W.data;
    const got = (wasmB.losses as Any)[NAME].backward(p, o).W.data;
    let top = 0, err = 0;
    want.forEach((g: number, k: number) =>
      [top, err] = [Math.max(top, Math.abs(g)), Math.max(err, Math.abs(got[k] - g))]
    );
    assert.ok(err <= 1e-6 * top, `max|dW - ref| = ${err} > 1e-6 max|ref| = ${1e-6 * top}`);
  });

  // ----------------------------------------------------------------------------------------------
  it("wasm: W and the gradient buffers in WebAssembly memory (alloc) give the same bits as ordinary arrays", async () => {
    const { alloc } = await import("../cpu.ts");
    const rng = new Rng(24);
    const p: Any = problem(rng, 5, 7, 300);
    const W = alloc([300, 7]), oW = alloc([300, 7]);
    W.data.set(p.W.data);
    try {
      for (const o of [{ labelSmoothing: 0.1, softcap: 3, zLoss: 0.01 }, { reduction: "none" }] as Any[]) {
        const l = (wasmB.losses as Any)[NAME];
        const want = l.valueAndGrad(p, o);
        for (const out of [undefined, { W: oW }]) {
          const got = l.valueAndGrad({ ...p, W }, out ? { ...o, out } : o);
          assert.deepEqual(got.loss, want.loss);
          assert.deepEqual(got.grads.x.data, want.grads.x.data);
          assert.deepEqual(Float32Array.from(got.grads.W.data), want.grads.W.data);
          assert.deepEqual(got.grads.bias, want.grads.bias);
          if (out) assert.equal(got.grads.W, oW);
        }
      }
    } finally {
      W.free();
      oW.free();
    }
  });

  // ----------------------------------------------------------------------------------------------
  describe("sharded form (vocabulary-parallel): the shards' shares and gradients assemble into the full call", () => {
    for (const b of backends) {
      it(b.name, async () => {
        const rng = new Rng(23);
        const v = 300, d = 6, n = 9, sizes = [100, 28, 172];
        const p: Any = problem(rng, n, d, v);
        p.labels[0] = 99;
        p.labels[1] = 100;
        const weight = randomVector(rng, v, 0.5, 1.5);
        for (
          const o of [
            { labelSmoothing: 0.1, softcap: 3, zLoss: 0.01, weight },
            { reduction: "none", zLoss: 0.1 },
            {},
          ] as Any[]
        ) {
          const up = o.reduction === "none" ? randomVector(rng, n, -2, 2) : 0.5;
          const sharded = (b.losses as Any).sharded[NAME];
          const offsets = sizes.map((_, k) => sizes.slice(0, k).reduce((t, x) => t + x, 0));
          const shards = sizes.map((cs, k) => ({
            x: p.x,
            W: { data: p.W.data.slice(offsets[k] * d, (offsets[k] + cs) * d), shape: [cs, d] },
            bias: p.bias.slice(offsets[k], offsets[k] + cs),
            labels: p.labels,
          }));
          const opts = offsets.map((offset) => ({ ...o, offset, classes: v }));
          const stats: Any[] = [];
          for (let k = 0; k < 3; k++) stats.push(await sharded.stats(shards[k], opts[k]));
          const merged = (await import("../cpu.ts")).mergeShardStats(stats);
          const results: Any[] = [];
          for (let k = 0; k < 3; k++) results.push(await sharded.finish(shards[k], merged, opts[k], up));
          const want = (reference.losses as Any)[NAME];
          const wf = want.forward(p, o), wb = want.backward(p, o, up);
          const sum = (key: string) =>
            typeof wf.loss === "number"
              ? results.reduce((t, r: Any) => t + r[key], 0)
              : Float64Array.from({ length: n }, (_, i) => results.reduce((t, r: Any) => t + r[key][i], 0));
          assertLossClose(sum("loss") as Any, wf.loss, "loss");
          assertLossClose(sum("z") as Any, wf.z, "z");
          const gx = new Float64Array(n * d), gW = new Float32Array(v * d), gb = new Float32Array(v);
          results.forEach((r: Any, k) => {
            r.grads.x.data.forEach((g: number, j: number) => (gx[j] += g));
            gW.set(r.grads.W.data, offsets[k] * d);
            gb.set(r.grads.bias, offsets[k]);
          });
          assertGradClose(vec(Float32Array.from(gx)), wb.x.data, "grads.x");
          assertGradClose(vec(gW), wb.W.data, "grads.W");
          assertGradClose(vec(gb), wb.bias, "grads.bias");
        }
      });
    }
  });

  it("sharded form: a repeated shard or a missing one is refused by name (the shards' records)", async () => {
    const { js: ref, mergeShardStats } = await import("../cpu.ts");
    const p: Any = problem(new Rng(25), 4, 3, 20);
    const half = (k: number) => ({
      ...p,
      W: { data: p.W.data.slice(k * 30, (k + 1) * 30), shape: [10, 3] },
      bias: p.bias.slice(k * 10, (k + 1) * 10),
    });
    const sharded = (ref as Any).sharded[NAME];
    const a = sharded.stats(half(0), { offset: 0, classes: 20 }),
      b = sharded.stats(half(1), { offset: 10, classes: 20 });
    assert.throws(() => mergeShardStats([a, a]), RangeError);
    assert.throws(() => sharded.finish(half(0), mergeShardStats([a]), { offset: 0, classes: 20 }), RangeError);
    const whole = sharded.finish(half(0), mergeShardStats([a, b]), { offset: 0, classes: 20 });
    assertFinite(whole.loss, "loss");
  });

  // ----------------------------------------------------------------------------------------------
  const small = () => ({
    x: randomMatrix(new Rng(8), 3, 4, 1),
    W: randomMatrix(new Rng(9), 4, 4, 1),
    bias: new Float32Array(4),
    labels: [0, 3, 1],
  });
  const errors: ErrorCase[] = [
    ...matrixErrors(small, "x", true, "x"),
    ...matrixErrors(small, "W", false, "x").filter((c) => !c.name.includes("fewer rows")),
    {
      name: "W of another width",
      inputs: () => ({ ...small(), W: { data: new Float32Array(15), shape: [5, 3] } }),
      type: RangeError,
      includes: ["W", "3"],
    },
    ...labelErrors(small),
    ...commonOptionErrors(small, "x"),
    ...upstreamErrors(small),
    ...numberOptionErrors(small, "softcap", [0, -1, NaN, 2e9]),
    ...numberOptionErrors(small, "zLoss", [-1e-4, NaN, Infinity]),
    ...numberOptionErrors(small, "labelSmoothing", [-0.1, 1.5, NaN]),
    {
      name: "bias of the wrong length",
      inputs: () => ({ ...small(), bias: new Float32Array(3) }),
      type: RangeError,
      includes: ["bias", "4", "3"],
    },
    {
      name: "bias not an array",
      inputs: () => ({ ...small(), bias: 1 }),
      type: TypeError,
      includes: ["bias", "1"],
    },
    {
      name: "classes not sorted",
      inputs: () => ({ ...small(), classes: [0, 3, 1] }),
      type: RangeError,
      includes: ["classes", "sorted", "1"],
    },
    {
      name: "classes with a repeat",
      inputs: () => ({ ...small(), classes: [0, 1, 1, 3] }),
      type: RangeError,
      includes: ["classes", "distinct", "1"],
    },
    {
      name: "a class out of range",
      inputs: () => ({ ...small(), classes: [0, 1, 3, 4] }),
      type: RangeError,
      includes: ["classes[3]", "[0, 4)", "4"],
    },
    {
      name: "empty classes",
      inputs: () => ({ ...small(), classes: [] }),
      type: RangeError,
      includes: ["classes", "0"],
    },
    {
      name: "a label not among classes",
      inputs: () => ({ ...small(), classes: [0, 3] }),
      type: RangeError,
      includes: ["labels[2]", "1", "classes"],
    },
    {
      name: "weight of the wrong length",
      inputs: small,
      options: { weight: [1, 1, 1] },
      type: RangeError,
      includes: ["options.weight", "3"],
    },
    {
      name: "out.bias of the wrong length",
      inputs: small,
      options: { out: { bias: new Float32Array(3) } },
      methods: ["backward", "valueAndGrad"],
      type: TypeError,
      includes: ["options.out.bias", "4"],
    },
  ];
  errorSuite(spec, errors);
});
