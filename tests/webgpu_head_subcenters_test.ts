// marginHead's sub-centres (options.subcenters K > 1: W [C*K, D], a class's cosine the largest of its K
// rows', its gradient to that row alone) and PartialFC's classes with K > 1 on the WebGPU head
// (src/webgpu/margin_head_sub.wgsl, src/webgpu/margin_head_pick.wgsl), SPEC.md section 7: the PyTorch
// fixtures of tests/fixtures/generate_head_subcenters.py (host and GPU-resident inputs, classes too), agreement
// with the float64 reference and the WebAssembly backend over several tiles of classes (every kind of
// the head), the identities (K = 1 is today's head; K equal sub-centres are one class, the gradient
// to the first row), classes with K > 1, the class-sharded form, and the GPU path (readback: false maps nothing; encoder;
// losses.sync). Skipped where the runtime has no WebGPU adapter (Bun).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { js, mergeShardStats, partialFcSample, wasm } from "../cpu.ts";
import { findAdapter, gpuLosses, requestDevice } from "../src/backend.ts";
import { assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { webgpuMissing } from "./helpers/backends.ts";
import { loadFixtures } from "./helpers/fixtures.ts";
import { count, download, sharedDevice, upload } from "./helpers/gpu.ts";
import { randomLabels, randomMatrix, Rng } from "./helpers/random.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const skip = webgpuMissing;
const FILE = "heads/subcenters.json";

/** The raw JSON cases (for the fields beside the generic format: state and nextState). */
const raws: Any[] = JSON.parse(readFileSync(new URL(`./fixtures/${FILE}`, import.meta.url), "utf8")).cases;

/** The WebGPU backend on the test device. */
const gpu = async (): Promise<Any> => await gpuLosses(await sharedDevice(), { auto: false, note: "test" });

/** A result's gradient (host or GPU matrix) as a host array. */
const data = async (m: Any): Promise<Float32Array> => (m.buffer ? await download(m) : m.data);

/** A number, or a GPU matrix ([1, 1]: a number; [N, 1]: its values), as host values. */
async function values(v: Any): Promise<number | Float32Array> {
  if (typeof v === "number" || v instanceof Float32Array) return v;
  const got = await download(v);
  return v.shape[0] === 1 && v.shape[1] === 1 ? got[0] : got;
}

/**
 * C classes of K sub-centres each: W [C*K, D] (each class's rows around one centre, of norms 0.5
 * to 2), x [n, D] near its label's centre, a share of ignored rows; redrawn until every class's two
 * largest sub-centre cosines differ by at least 1e-4 for every row (the float32 and float64 choices
 * of the winner then agree).
 */
function problem(seed: number, n: number, d: number, c: number, K: number, ignore = 0.2) {
  for (let s = seed;; s += 1000) {
    const rng = new Rng(s);
    const centres = randomMatrix(rng, c, d, 1);
    const W = randomMatrix(rng, c * K, d, 0.4);
    for (let r = 0; r < c * K; r++) {
      const scale = 0.5 + rng.uniform(0, 1.5);
      for (let k = 0; k < d; k++) {
        W.data[r * d + k] = scale * (W.data[r * d + k] + centres.data[Math.floor(r / K) * d + k]);
      }
    }
    const labels = randomLabels(rng, n, c, ignore, -100);
    const x = randomMatrix(rng, n, d, 0.8);
    for (let i = 0; i < n; i++) {
      if (labels[i] < 0) continue;
      for (let k = 0; k < d; k++) x.data[i * d + k] += centres.data[labels[i] * d + k];
    }
    if (K === 1 || gap(x.data, W.data, n, d, c, K) > 1e-4) return { x, W, labels };
  }
}

/** The smallest gap between a class's two largest sub-centre cosines over every row. */
function gap(x: Float32Array, W: Float32Array, n: number, d: number, c: number, K: number): number {
  const nrm = (a: Float32Array, r: number) => Math.hypot(...a.subarray(r * d, r * d + d));
  let least = Infinity;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < c; j++) {
      const u = Array.from({ length: K }, (_, k) => {
        let dot = 0;
        for (let q = 0; q < d; q++) dot += x[i * d + q] * W[(j * K + k) * d + q];
        return dot / (nrm(x, i) * nrm(W, j * K + k));
      }).sort((a, b) => b - a);
      least = Math.min(least, u[0] - u[1]);
    }
  }
  return least;
}

/** Loss (and parts, state) and both gradients of `got` within SPEC's bound of `want`'s. */
async function agree(got: Any, want: Any, label: string): Promise<void> {
  assertLossClose(await values(got.loss) as Any, want.loss, `${label} loss`);
  for (const part of ["ce", "g"]) {
    if (want[part] !== undefined) assertLossClose(await values(got[part]) as Any, want[part], `${label} ${part}`);
  }
  for (const key of ["x", "W"]) {
    assert.deepEqual(got.grads[key].shape, want.grads[key].shape, `${label} grads.${key}.shape`);
    assertGradClose(await data(got.grads[key]), want.grads[key].data, `${label} grads.${key}`);
  }
}

/** Every kind of the head, with its state where it has one. */
const KINDS: [string, Record<string, Any>, Record<string, Any>][] = [
  ["arcface", { margin: 0.4 }, {}],
  ["cosface", { reduction: "sum" }, {}],
  ["normface", { reduction: "none" }, {}],
  ["combinedMargin", { m1: 1.1, m2: 0.2, m3: 0.1 }, {}],
  ["adaface", {}, { state: { mean: 3, std: 1 } }],
  ["curricularFace", {}, { state: { t: 0.3 } }],
  ["magface", { lambda: 0.5 }, {}],
];

describe(
  "WebGPU marginHead subcenters: PyTorch fixtures (tests/fixtures/generate_head_subcenters.py)",
  { skip },
  () => {
    it("every case from host inputs and from GPU-resident x and W; the gradients from one of them", async () => {
      const l = await gpu();
      for (const [k, fc] of loadFixtures(FILE).entries()) {
        const host: Any = raws[k].state ? { ...fc.inputs, state: raws[k].state } : { ...fc.inputs };
        const onGpu: Any = { ...host, x: await upload(host.x), W: await upload(host.W) };
        for (const [where, inputs] of [["host", host], ["gpu", onGpu]]) {
          const label = `${fc.name} (${where})`;
          const r: Any = await l.marginHead.forward(inputs, fc.options);
          assertLossClose(r.loss, fc.expected.loss, `${label} loss`);
          for (const [part, v] of Object.entries(fc.expected.parts ?? {})) {
            assertLossClose(r[part], v as Any, `${label} part ${part}`);
          }
          for (const [key, v] of Object.entries((raws[k].nextState ?? {}) as Record<string, number>)) {
            assertLossClose(r.state[key], v, `${label} state.${key}`, 1e-6);
          }
          if ((k % 2 === 0) !== (where === "host")) continue; // (the gradients from one of the two: llvmpipe is slow)
          const g: Any = await l.marginHead.backward(inputs, fc.options, fc.upstream);
          for (const key of ["x", "W"]) {
            assertGradClose(await data(g[key]), fc.expected.grads[key] as Any, `${label} grads.${key}`);
          }
        }
      }
      l.dispose();
    });
  },
);

describe("WebGPU marginHead subcenters: agreement with the reference and WebAssembly", { skip }, () => {
  // Tiles of floor(64 / K) classes: K = 3 takes 21 a tile, 2 takes 32, 5 takes 12, 64 one.
  const SIZES: [number, number, number][] = [[3, 1, 3], [3, 50, 6], [2, 70, 9], [5, 30, 5], [7, 20, 70], [64, 3, 4]];
  for (const [K, c, n] of SIZES) {
    it(`K = ${K}, C = ${c}, N = ${n}: every kind, with and without classes`, async () => {
      const l = await gpu();
      const p = problem(K * 100 + c, n, 8, c, K);
      for (const [kind, opts, extra] of KINDS) {
        if (K === 64 && kind !== "arcface") continue;
        const o = { kind, scale: 20, subcenters: K, ...opts };
        const inputs: Any = { ...p, ...extra };
        if (kind === "magface") inputs.x = { ...p.x, data: p.x.data.map((v) => 12 * v) };
        const want = js.marginHead.valueAndGrad(inputs, o as Any) as Any;
        await agree(await l.marginHead.valueAndGrad(inputs, o), want, `${kind}`);
        await agree(wasm.marginHead.valueAndGrad(inputs, o as Any), want, `${kind} (wasm)`);
        if (kind === "adaface" || kind === "curricularFace") {
          const got: Any = await l.marginHead.forward(inputs, o);
          for (const [f, v] of Object.entries(want.state)) {
            assertLossClose(got.state[f], v as number, `${kind} state.${f}`);
          }
        }
        const classes = partialFcSample(p.labels, c, { rate: 0.5, seed: c });
        const q = { ...inputs, classes };
        await agree(await l.marginHead.valueAndGrad(q, o), js.marginHead.valueAndGrad(q, o as Any), `${kind} classes`);
      }
      l.dispose();
    });
  }
});

describe("WebGPU marginHead subcenters: W in windows and chunks (a binding limit of 8 KiB)", { skip }, () => {
  // d = 4, K = 3: windows and chunks of 384 rows of W (128 classes, 7 tiles of 21), three of each over 900 rows.
  it("K = 3, C = 300: every window's tiles and every chunk, with and without classes, host and GPU-resident", async () => {
    const dev = await requestDevice((await findAdapter()).adapter!);
    const l: Any = await gpuLosses(dev, { auto: false, note: "test", maxBindingBytes: 8192 });
    const p = problem(91, 5, 4, 300, 3);
    for (const [kind, opts, extra] of [KINDS[0], KINDS[5]]) {
      const o = { kind, scale: 20, subcenters: 3, ...opts };
      const inputs: Any = { ...p, ...extra };
      await agree(await l.marginHead.valueAndGrad(inputs, o), js.marginHead.valueAndGrad(inputs, o as Any), kind);
      const gpuInputs = { ...inputs, x: await upload(p.x, dev), W: await upload(p.W, dev) };
      const r: Any = await l.marginHead.valueAndGrad(gpuInputs, o);
      const want: Any = js.marginHead.valueAndGrad(inputs, o as Any);
      assertLossClose(r.loss, want.loss, `${kind} (gpu) loss`);
      assertGradClose(await download(r.grads.W, dev), want.grads.W.data, `${kind} (gpu) grads.W`);
      const classes = partialFcSample(p.labels, 300, { rate: 0.6, seed: 2 });
      const q = { ...inputs, classes };
      await agree(await l.marginHead.valueAndGrad(q, o), js.marginHead.valueAndGrad(q, o as Any), `${kind} classes`);
    }
    l.dispose();
    dev.destroy();
  });
});

describe("WebGPU marginHead subcenters: identities", { skip }, () => {
  it("subcenters 1 is today's head (bit for bit)", async () => {
    const l = await gpu();
    const p = problem(41, 7, 8, 150, 1);
    const want: Any = await l.marginHead.valueAndGrad(p, { scale: 20 });
    const got: Any = await l.marginHead.valueAndGrad(p, { scale: 20, subcenters: 1 });
    assert.equal(got.loss, want.loss);
    assert.deepEqual(got.grads.x.data, want.grads.x.data);
    assert.deepEqual(got.grads.W.data, want.grads.W.data);
    l.dispose();
  });

  it("K equal sub-centres (ties) are one class: the gradient to the first row of each class, 0 at the others", async () => {
    const l = await gpu();
    const p = problem(44, 7, 8, 50, 1);
    for (const [kind, opts, extra] of KINDS) {
      const K = 3, W = new Float32Array(50 * K * 8);
      for (let r = 0; r < 50 * K; r++) {
        W.set(p.W.data.subarray(Math.floor(r / K) * 8, Math.floor(r / K) * 8 + 8), r * 8);
      }
      const o = { kind, scale: 20, ...opts };
      const inputs: Any = { ...p, ...extra };
      const want: Any = await l.marginHead.valueAndGrad(inputs, o);
      const got: Any = await l.marginHead.valueAndGrad({ ...inputs, W: { data: W, shape: [50 * K, 8] } }, {
        ...o,
        subcenters: K,
      });
      assertLossClose(await values(got.loss) as Any, await values(want.loss) as Any, `${kind} loss`);
      assertGradClose(got.grads.x.data, want.grads.x.data, `${kind} grads.x`);
      const gw = got.grads.W.data as Float32Array;
      for (let i = 0; i < gw.length; i++) {
        if (Math.floor(i / 8) % K !== 0) assert.equal(gw[i], 0, `${kind}: W row ${Math.floor(i / 8)} gets 0`);
      }
      const firstRows = new Float32Array(50 * 8);
      for (let c = 0; c < 50; c++) firstRows.set(gw.subarray(c * K * 8, c * K * 8 + 8), c * 8);
      assertGradClose(firstRows, want.grads.W.data, `${kind} grads.W (first rows)`);
      // The reference's rule, the same: ties to the smaller row.
      await agree(
        got,
        js.marginHead.valueAndGrad({ ...inputs, W: { data: W, shape: [50 * K, 8] } }, {
          ...o,
          subcenters: K,
        } as Any),
        `${kind} = the reference`,
      );
    }
    l.dispose();
  });

  it("a NaN row of W wins its class (the first NaN, every backend's rule): as a NaN class of the K = 1 head", async () => {
    // The K = 1 head: a NaN row of W makes its class's cosine NaN in every row, and so every row's loss
    // NaN (the label's and the non-label's alike, as on the CPU backends: tests/webgpu_nan_test.ts).
    // K = 3 must do the same.
    const l = await gpu();
    const p = problem(46, 6, 8, 12, 3, 0);
    p.labels[0] = 4;
    const W1 = new Float32Array(12 * 8);
    for (let c = 0; c < 12; c++) W1.set(p.W.data.subarray(c * 3 * 8, c * 3 * 8 + 8), c * 8);
    W1.fill(NaN, 4 * 8, 5 * 8);
    const o = { scale: 16, reduction: "none" };
    const k1 = await values((await l.marginHead.forward({ ...p, W: { data: W1, shape: [12, 8] } }, o)).loss);
    const want = Array.from(k1 as Float32Array, Number.isNaN);
    assert.deepEqual(want, Array.from(p.labels, () => true), "the K = 1 head: every row's loss is NaN");
    for (const row of [13, 12, 14]) {
      // class 4's second row (after a finite first), its first, its last
      const W = p.W.data.slice().fill(NaN, row * 8, row * 8 + 8);
      const r: Any = await l.marginHead.forward({ ...p, W: { data: W, shape: p.W.shape } }, { ...o, subcenters: 3 });
      const loss = await values(r.loss) as Float32Array;
      assert.deepEqual(Array.from(loss, Number.isNaN), want, `W row ${row}: ${loss}`);
    }
    l.dispose();
  });

  it("classes = every class is the full head; classes = a sample is the head on those rows of W (K = 3)", async () => {
    const l = await gpu();
    const p = problem(42, 9, 8, 60, 3);
    const o = { scale: 20, subcenters: 3, kind: "cosface" };
    const full: Any = await l.marginHead.valueAndGrad(p, o);
    const all = Int32Array.from({ length: 60 }, (_, j) => j);
    await agree(await l.marginHead.valueAndGrad({ ...p, classes: all }, o), full, "every class");
    const classes = partialFcSample(p.labels, 60, { rate: 0.3, seed: 7 });
    const span = 3 * 8, rows = new Float32Array(classes.length * span);
    classes.forEach((c, r) => rows.set(p.W.data.subarray(c * span, (c + 1) * span), r * span));
    const local = p.labels.map((y) => (y < 0 ? y : classes.indexOf(y)));
    const want: Any = await l.marginHead.valueAndGrad({
      x: p.x,
      W: { data: rows, shape: [rows.length / 8, 8] },
      labels: local,
    }, o);
    const got: Any = await l.marginHead.valueAndGrad({ ...p, classes }, o);
    assert.deepEqual(got.grads.W.shape, [classes.length * 3, 8]);
    await agree(got, want, "sampled");
    l.dispose();
  });
});

describe("WebGPU marginHead subcenters: the class-sharded form (src/webgpu/sharded.ts)", { skip }, () => {
  for (const [kind, withClasses] of [["arcface", false], ["cosface", true], ["combinedMargin", true]] as const) {
    it(`${kind} K = 3${withClasses ? " with classes" : ""}: three shards = the unsharded reference`, async () => {
      const l = await gpu();
      const K = 3, C = 150, d = 8, bounds = [0, 50, 64, 150];
      const p: Any = problem(81, 9, d, C, K);
      if (withClasses) p.classes = partialFcSample(p.labels, C, { rate: 0.45, seed: 3 });
      const o = { kind, scale: 20, subcenters: K };
      const want: Any = js.marginHead.valueAndGrad(p, o as Any);
      const shards = bounds.slice(0, -1).map((c0, k) => {
        const c1 = bounds[k + 1];
        const own: Any = { ...p, W: { data: p.W.data.slice(c0 * K * d, c1 * K * d), shape: [(c1 - c0) * K, d] } };
        if (p.classes) own.classes = Int32Array.from(p.classes).filter((c) => c >= c0 && c < c1);
        return { inputs: own, options: { ...o, offset: c0, classes: C } };
      });
      const stats = [];
      for (const s of shards) stats.push(await l.sharded.marginHead.stats(s.inputs, s.options));
      const merged = mergeShardStats(stats);
      const results: Any[] = [];
      for (const s of shards) results.push(await l.sharded.marginHead.finish(s.inputs, merged, s.options));
      assertLossClose(results.reduce((t, r) => t + r.loss, 0), want.loss, "loss");
      const gx = new Float64Array(p.x.data.length);
      for (const r of results) r.grads.x.data.forEach((g: number, i: number) => (gx[i] += g));
      assertGradClose(gx, want.grads.x.data, "grads.x");
      const gW = Float64Array.from(results.flatMap((r) => Array.from(r.grads.W.data as Float32Array)));
      assertGradClose(gW, want.grads.W.data, "grads.W");
      l.dispose();
    });
  }
});

describe("WebGPU marginHead subcenters: the GPU path (SPEC §10)", { skip }, () => {
  it("readback: false from GPU-resident x and W maps nothing and gives the readback path's values", async () => {
    const dev = await sharedDevice();
    const l = await gpu();
    const p = problem(71, 6, 8, 40, 3);
    const gx = await upload(p.x), gW = await upload(p.W);
    for (const [kind, opts, extra] of KINDS) {
      const o = { kind, scale: 20, subcenters: 3, ...opts };
      const inputs: Any = { x: gx, W: gW, labels: p.labels, ...extra };
      const want: Any = js.marginHead.valueAndGrad({ ...p, ...extra }, o as Any);
      const c = await count<Any>(dev, () => l.marginHead.valueAndGrad(inputs, { ...o, readback: false }));
      assert.equal(c.maps, 0, `${kind}: maps`);
      assert.ok(c.r.loss.buffer && c.r.grads.x.buffer && c.r.grads.W.buffer, `${kind}: GPU results`);
      await agree(c.r, want, `${kind} readback: false`);
      if (want.state) {
        const s = await download(c.r.state);
        Object.values(want.state).forEach((v, q) => assertLossClose(s[q], v as number, `${kind} state[${q}]`, 1e-6));
      }
      // With classes: x on the GPU, W on the host or on the GPU (the sampled rows copied on the GPU).
      const classes = partialFcSample(p.labels, 40, { rate: 0.5, seed: 5 });
      const sampled = js.marginHead.valueAndGrad({ ...p, ...extra, classes }, o as Any);
      for (const [where, W] of [["host", p.W], ["gpu", gW]] as const) {
        const q: Any = { ...inputs, W, classes };
        const cq = await count<Any>(dev, () => l.marginHead.valueAndGrad(q, { ...o, readback: false }));
        assert.equal(cq.maps, 0, `${kind} classes, W on the ${where}: maps`);
        await agree(cq.r, sampled, `${kind} classes, W on the ${where}`);
      }
    }
    l.dispose();
  });

  it("recorded into the caller's encoder, and losses.sync", async () => {
    const dev = await sharedDevice();
    const l = await gpu();
    const p = problem(72, 6, 8, 30, 2);
    const inputs: Any = { x: await upload(p.x), W: await upload(p.W), labels: p.labels };
    const o = { kind: "arcface", scale: 20, subcenters: 2 };
    const want: Any = js.marginHead.valueAndGrad(p, o as Any);
    const enc = dev.createCommandEncoder();
    const e = await count<Any>(dev, () => l.marginHead.valueAndGrad(inputs, { ...o, readback: false, encoder: enc }));
    assert.deepEqual([e.submits, e.maps], [0, 0], "the call submits and maps nothing");
    dev.queue.submit([enc.finish()]);
    await agree(e.r, want, "encoder");
    const s: Any = l.sync.marginHead.valueAndGrad(inputs, o);
    assert.ok(!(s instanceof Promise) && s.loss.buffer, "sync gives GPU results, not a Promise");
    await agree(s, want, "sync");
    l.dispose();
  });

  it("subcenters above 64 is a named error on WebGPU", async () => {
    const l = await gpu();
    const p = problem(73, 2, 4, 1, 65, 0);
    await assert.rejects(
      async () => await l.marginHead.valueAndGrad(p, { subcenters: 65 }),
      (e: Error) => e instanceof RangeError && e.message.includes("options.subcenters") && e.message.includes("65"),
    );
    l.dispose();
  });
});
