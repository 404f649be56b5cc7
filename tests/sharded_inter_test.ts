// The class-sharded forms (losses.sharded, docs/LOSSES.md section 9) with SPEC §7's inter-class options and
// per-row margins, and the face kinds of the sharded head on WebGPU: interTopK / interTopKMargin (arcface, the
// head's arcface kind) through the protocol step `topK` and `mergeShardTopK`, interclassFilteringThreshold
// (arcface, cosface, combinedMargin), a per-row margin Float32Array [N] (margin, m2, m3). Tests: sharded =
// unsharded for 1, 2 and 3 shards on the reference (to rounding) and WebAssembly (SPEC's bound), ties of the
// k-th largest across a shard boundary, identities (interTopK 0 = without), named errors (mixed options, a
// missing, repeated or overlapping shard, a topK of another batch), and the WebGPU sharded head's face kinds
// and interTopK (its step on the GPU; a top k merged from wasm shards) against its unsharded head and the
// reference (llvmpipe: small sizes).

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { js, mergeShardStats, mergeShardTopK, partialFcSample, wasm } from "../cpu.ts";
import { assertGradClose, assertLossClose, assertThrowsNamed } from "./helpers/assert.ts";
import { backends, webgpuMissing } from "./helpers/backends.ts";
import { init } from "../mod.ts";
import { randomLabels, randomMatrix, Rng } from "./helpers/random.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

// (the reference to rounding: its float64 results rounded to float32 outputs)
const CPU = [{ name: "js", losses: js as Any, tol: 1e-6 }, { name: "wasm", losses: wasm as Any, tol: undefined }];

/** x [n, d] near its label's class, W [c*K, d]; with `dup` class j + 1 repeats class j's rows (j even): exact ties. */
function headProblem(rng: Rng, n: number, d: number, c: number, K = 1, dup = false) {
  const centres = randomMatrix(rng, c, d, 1);
  const W = randomMatrix(rng, c * K, d, 0.5);
  for (let r = 0; r < c * K; r++) {
    for (let k = 0; k < d; k++) W.data[r * d + k] += centres.data[Math.floor(r / K) * d + k];
  }
  if (dup) { for (let j = 0; j + 1 < c; j += 2) W.data.copyWithin((j + 1) * K * d, j * K * d, (j + 1) * K * d); }
  const labels = randomLabels(rng, n, c, 0.2, -100);
  const x = randomMatrix(rng, n, d, 1.2);
  for (let i = 0; i < n; i++) {
    if (labels[i] < 0) continue;
    for (let k = 0; k < d; k++) x.data[i * d + k] += centres.data[labels[i] * d + k];
  }
  return { x, W, labels };
}

/** Cosines [n, c*K] in [-1, 1] (some at the bounds); with `dup` column pairs of classes j, j + 1 (j even) equal. */
function cosProblem(rng: Rng, n: number, c: number, K = 1, dup = false) {
  const cos = randomMatrix(rng, n, c * K, 0.5);
  for (let q = 0; q < cos.data.length; q++) cos.data[q] = Math.max(-1, Math.min(1, cos.data[q]));
  if (dup) {
    for (let i = 0; i < n; i++) {
      for (let j = 0; j + 1 < c; j += 2) cos.data.copyWithin((i * c + j + 1) * K, (i * c + j) * K, (i * c + j + 1) * K);
    }
  }
  return { cos, labels: randomLabels(rng, n, c, 0.2, -100) };
}

/**
 * Runs `name` (marginHead: shards of W's rows; else of cos's columns) over class shards `bounds` (K rows or
 * columns per class) as a caller does: with interTopK the step topK on each shard and mergeShardTopK (the
 * merged top k in every shard's inputs.topK), then stats, mergeShardStats and finish. Returns the summed loss
 * shares, the assembled gradients (x's shares summed) and the shards' inputs and options.
 */
async function runShards(l: Any, name: string, inputs: Any, o: Any, bounds: number[], K = 1) {
  const head = name === "marginHead", C = bounds[bounds.length - 1];
  const shards = bounds.slice(0, -1).map((c0, k) => {
    const c1 = bounds[k + 1], own: Any = { ...inputs };
    if (head) {
      const d = inputs.x.shape[1];
      own.W = { data: inputs.W.data.slice(c0 * K * d, c1 * K * d), shape: [(c1 - c0) * K, d] };
      if (inputs.classes) own.classes = Int32Array.from(inputs.classes).filter((c) => c >= c0 && c < c1);
    } else {
      const n = inputs.cos.shape[0], w = (c1 - c0) * K, data = new Float32Array(n * w);
      for (let i = 0; i < n; i++) data.set(inputs.cos.data.subarray((i * C + c0) * K, (i * C + c1) * K), i * w);
      own.cos = { data, shape: [n, w] };
    }
    return { inputs: own, options: { ...o, offset: c0, classes: C } };
  });
  const s = l.sharded[name];
  if ((o.interTopK ?? 0) > 0) {
    const tops = [];
    for (const sh of shards) tops.push(await s.topK(sh.inputs, sh.options));
    const topK = mergeShardTopK(tops);
    for (const sh of shards) sh.inputs.topK = topK;
  }
  const stats = [];
  for (const sh of shards) stats.push(await s.stats(sh.inputs, sh.options));
  const merged = mergeShardStats(stats);
  const results: Any[] = [];
  for (const sh of shards) results.push(await s.finish(sh.inputs, merged, sh.options));
  // (reduction "none": the per-row shares summed row by row)
  const loss = results.reduce(
    (t, r) => (typeof r.loss === "number" ? t + r.loss : t + r.loss.reduce((a: number, v: number) => a + v, 0)),
    0,
  );
  if (!head) {
    const n = inputs.cos.shape[0], g = new Float32Array(n * C * K);
    results.forEach((r, k) => {
      const w = (bounds[k + 1] - bounds[k]) * K;
      for (let i = 0; i < n; i++) g.set(r.grads.cos.data.subarray(i * w, (i + 1) * w), (i * C + bounds[k]) * K);
    });
    return { loss, grads: { cos: g }, shards, results, merged };
  }
  const x = new Float64Array(inputs.x.data.length);
  for (const r of results) r.grads.x.data.forEach((g: number, i: number) => (x[i] += g));
  const W = Float64Array.from(results.flatMap((r) => Array.from(r.grads.W.data as Float32Array)));
  return { loss, grads: { x, W }, shards, results, merged };
}

/** Shard bounds of C classes: 1, 2 and 3 shards (the 2- and 3-shard ones cut between equal classes 16 | 17). */
const layouts = (C: number) => [[0, C], [0, 17, C], [0, 17, 30, C]];

const N = 10, D = 8, C = 48;
const rowMargins = (rng: Rng, lo: number, hi: number) =>
  Float32Array.from({ length: N }, () => lo + (hi - lo) * rng.next());

describe("sharded marginHead with interTopK, the threshold and per-row margins = the unsharded head", () => {
  const cases: [string, Any, { K?: number; classes?: boolean; dup?: boolean }][] = [
    ["arcface interTopK 3, m' 0.1", { kind: "arcface", scale: 20, interTopK: 3, interTopKMargin: 0.1 }, {}],
    ["arcface interTopK 3 with ties across shards", { kind: "arcface", scale: 20, interTopK: 3 }, { dup: true }],
    ["arcface interTopK 2, threshold 0.5, margin [N], sum", {
      kind: "arcface",
      scale: 20,
      interTopK: 2,
      interclassFilteringThreshold: 0.5,
      margin: "rows",
      reduction: "sum",
    }, {}],
    ["arcface K = 2, classes, interTopK 4", { kind: "arcface", scale: 20, subcenters: 2, interTopK: 4 }, {
      K: 2,
      classes: true,
    }],
    ["arcface interTopK >= C - 1 (every non-target)", { kind: "arcface", scale: 20, interTopK: 60 }, {}],
    ["cosface margin [N], threshold 0.4", {
      kind: "cosface",
      scale: 20,
      margin: "rows",
      interclassFilteringThreshold: 0.4,
    }, {}],
    ["combinedMargin m2 [N], m3 [N], none", {
      kind: "combinedMargin",
      scale: 20,
      m2: "rows",
      m3: "rows3",
      reduction: "none",
    }, {}],
  ];
  for (const b of CPU) {
    for (const [label, options, shape] of cases) {
      it(`${b.name}: ${label}`, async () => {
        const rng = new Rng(label.length + 7), K = shape.K ?? 1;
        const p: Any = headProblem(rng, N, D, C, K, shape.dup);
        if (shape.classes) p.classes = partialFcSample(p.labels, C, { rate: 0.6, seed: 3 });
        const o: Any = { ...options };
        for (const key of ["margin", "m2", "m3"]) {
          if (o[key] === "rows") o[key] = rowMargins(rng, 0.2, 0.6);
          if (o[key] === "rows3") o[key] = rowMargins(rng, 0, 0.2);
        }
        const sum = (l: number | Float32Array) => (typeof l === "number" ? l : l.reduce((t, v) => t + v, 0));
        const want = b.losses.marginHead.valueAndGrad(p, o);
        for (const bounds of layouts(C)) {
          const got = await runShards(b.losses, "marginHead", p, o, bounds, K);
          const at = `${bounds.length - 1} shard(s)`;
          assertLossClose(sum(got.loss), sum(want.loss), `${at} loss`, b.tol);
          assertGradClose(got.grads.x, want.grads.x.data, `${at} grads.x`, b.tol);
          assertGradClose(got.grads.W, want.grads.W.data, `${at} grads.W`, b.tol);
        }
      });
    }
  }
  it("interTopK changes the head, and interTopK 0 (no step topK) is the head without it", async () => {
    const p = headProblem(new Rng(5), N, D, C);
    const o = { kind: "arcface" as const, scale: 20 };
    const plain = await runShards(js, "marginHead", p, o, [0, 17, C]);
    const zero = await runShards(js, "marginHead", p, { ...o, interTopK: 0 }, [0, 17, C]);
    const three = await runShards(js, "marginHead", p, { ...o, interTopK: 3 }, [0, 17, C]);
    assert.equal(zero.loss, plain.loss);
    assert.deepEqual([...(zero.grads.W as Float64Array)], [...(plain.grads.W as Float64Array)]);
    assert.ok(Math.abs(three.loss - plain.loss) > 1e-3, "interTopK 3 changes the loss");
  });
});

describe("sharded losses on cosines with interTopK, the threshold and per-row margins = the unsharded loss", () => {
  const cases: [string, string, Any, { K?: number; dup?: boolean }][] = [
    ["arcface", "interTopK 3, m' 0.1", { scale: 20, interTopK: 3, interTopKMargin: 0.1 }, {}],
    ["arcface", "interTopK 4 with ties across shards, K = 2", { scale: 20, interTopK: 4, subcenters: 2 }, {
      K: 2,
      dup: true,
    }],
    ["arcface", "interTopK 2, threshold 0.3, margin [N], sum", {
      scale: 20,
      interTopK: 2,
      interclassFilteringThreshold: 0.3,
      margin: "rows",
      reduction: "sum",
    }, {}],
    ["arcface", "interTopK >= C - 1", { scale: 20, interTopK: 100 }, {}],
    ["cosface", "threshold 0.4, margin [N]", { scale: 20, interclassFilteringThreshold: 0.4, margin: "rows" }, {}],
    ["combinedMargin", "m2 [N], m3 [N], threshold 0.2, none", {
      scale: 20,
      m2: "rows",
      m3: "rows3",
      interclassFilteringThreshold: 0.2,
      reduction: "none",
    }, {}],
  ];
  for (const b of CPU) {
    for (const [name, label, options, shape] of cases) {
      it(`${b.name}: ${name} ${label}`, async () => {
        const rng = new Rng(label.length + 11), K = shape.K ?? 1;
        const p = cosProblem(rng, N, C, K, shape.dup);
        const o: Any = { ...options };
        for (const key of ["margin", "m2", "m3"]) {
          if (o[key] === "rows") o[key] = rowMargins(rng, 0.2, 0.6);
          if (o[key] === "rows3") o[key] = rowMargins(rng, 0, 0.2);
        }
        const sum = (l: number | Float32Array) => (typeof l === "number" ? l : l.reduce((t, v) => t + v, 0));
        const want = b.losses[name].valueAndGrad(p, o);
        for (const bounds of layouts(C)) {
          const got = await runShards(b.losses, name, p, o, bounds, K);
          const at = `${bounds.length - 1} shard(s)`;
          assertLossClose(sum(got.loss), sum(want.loss), `${at} loss`, b.tol);
          assertGradClose(got.grads.cos, want.grads.cos.data, `${at} grads.cos`, b.tol);
        }
      });
    }
  }
  it("interTopK 0 and threshold 0 are the loss without them; an equal per-row margin is the scalar one", async () => {
    const p = cosProblem(new Rng(9), N, C);
    const plain = await runShards(js, "arcface", p, { scale: 20 }, [0, 17, C]);
    const off = await runShards(js, "arcface", p, { scale: 20, interTopK: 0, interclassFilteringThreshold: 0 }, [
      0,
      17,
      C,
    ]);
    assert.equal(off.loss, plain.loss);
    const equal = await runShards(js, "arcface", p, { scale: 20, margin: new Float32Array(N).fill(0.5) }, [0, 17, C]);
    assertLossClose(equal.loss, plain.loss, "equal per-row margins", 1e-12);
  });
});

describe("sharded inter-class options: named errors", () => {
  const p = headProblem(new Rng(21), 6, D, 20);
  const part = (c0: number, c1: number) => ({ ...p, W: { data: p.W.data.slice(c0 * D, c1 * D), shape: [c1 - c0, D] } });
  const o = { kind: "arcface" as const, scale: 20, interTopK: 2 };
  const at = (c0: number, extra: Any = {}) => ({ ...o, offset: c0, classes: 20, ...extra });
  const s = js.sharded.marginHead as Any;
  it("stats without inputs.topK, or with it and interTopK 0: TypeError naming inputs.topK", async () => {
    await assertThrowsNamed(() => s.stats(part(0, 10), at(0)), TypeError, "inputs.topK");
    const top = mergeShardTopK([s.topK(part(0, 10), at(0)), s.topK(part(10, 20), at(10))]);
    await assertThrowsNamed(
      () => s.stats({ ...part(0, 10), topK: top }, at(0, { interTopK: 0 })),
      TypeError,
      "inputs.topK",
    );
    await assertThrowsNamed(() => s.topK(part(0, 10), at(0, { interTopK: 0 })), RangeError, "options.interTopK");
  });
  it("a merged top k missing a shard, repeated or overlapping shards: RangeError", async () => {
    const a = s.topK(part(0, 10), at(0)), b = s.topK(part(10, 20), at(10));
    await assertThrowsNamed(
      () => s.stats({ ...part(0, 10), topK: mergeShardTopK([a]) }, at(0)),
      RangeError,
      "inputs.topK",
      "missing",
    );
    await assertThrowsNamed(() => mergeShardTopK([a, a]), RangeError, "merged twice");
    const c = s.topK(part(5, 15), at(5));
    await assertThrowsNamed(() => mergeShardTopK([a, c]), RangeError, "overlapping");
    // The other shard's part of the merge only: this shard's range is not among them.
    await assertThrowsNamed(
      () => s.stats({ ...part(0, 10), topK: mergeShardTopK([b]) }, at(0)),
      RangeError,
      "inputs.topK",
    );
  });
  it("mixed options (interTopKMargin, the threshold, k, a per-row margin) are refused by name", async () => {
    const a = s.topK(part(0, 10), at(0));
    await assertThrowsNamed(
      () => mergeShardTopK([a, s.topK(part(10, 20), at(10, { interclassFilteringThreshold: 0.5 }))]),
      RangeError,
      "options",
    );
    await assertThrowsNamed(() => mergeShardTopK([a, s.topK(part(10, 20), at(10, { interTopK: 3 }))]), RangeError, "k");
    // Stats of shards whose options differ from the merged top k's or from each other's.
    const both = (o0: Any, o1: Any) => {
      const top = mergeShardTopK([s.topK(part(0, 10), at(0, o0)), s.topK(part(10, 20), at(10, o0))]);
      return mergeShardStats([
        s.stats({ ...part(0, 10), topK: top }, at(0, o0)),
        s.stats({ ...part(10, 20), topK: top }, at(10, o1)),
      ]);
    };
    both({}, {}); // (the same options: fine)
    await assertThrowsNamed(() => both({}, { interTopKMargin: 0.2 }), RangeError, "options");
    const m1 = new Float32Array(6).fill(0.5), m2 = m1.map((v, i) => (i === 3 ? 0.4 : v));
    both({ margin: m1 }, { margin: m1 });
    await assertThrowsNamed(() => both({ margin: m1 }, { margin: m2 }), RangeError, "options");
    // The losses on cosines: another threshold on one shard (no interTopK: refused by the merge).
    const q = cosProblem(new Rng(4), 6, 20),
      cols = (c0: number, c1: number) => ({
        ...q,
        cos: {
          data: Float32Array.from(
            { length: 6 * (c1 - c0) },
            (_, e) => q.cos.data[Math.floor(e / (c1 - c0)) * 20 + c0 + (e % (c1 - c0))],
          ),
          shape: [6, c1 - c0],
        },
      });
    const arc = js.sharded.cosface as Any;
    const t = (c0: number, v: number) => ({ interclassFilteringThreshold: v, offset: c0, classes: 20 });
    await assertThrowsNamed(
      () => mergeShardStats([arc.stats(cols(0, 10), t(0, 0.4)), arc.stats(cols(10, 20), t(10, 0.5))]),
      RangeError,
      "options",
    );
    // A top k of another batch (other labels).
    const labels = Int32Array.from(p.labels).map((y) => (y < 0 ? y : (y + 1) % 20));
    const foreign = mergeShardTopK([
      s.topK({ ...part(0, 10), labels }, at(0)),
      s.topK({ ...part(10, 20), labels }, at(10)),
    ]);
    await assertThrowsNamed(() => s.stats({ ...part(0, 10), topK: foreign }, at(0)), RangeError, "batch");
    // A malformed top k.
    await assertThrowsNamed(() => mergeShardTopK([{ ...a, values: new Float64Array(3) }]), RangeError, "values");
    await assertThrowsNamed(() => mergeShardTopK([]), TypeError, "list");
  });
  it("the losses on cosines: topK only with interTopK; cosface has none", async () => {
    const q = cosProblem(new Rng(3), 4, 6);
    const sh = { offset: 0, classes: 6 };
    assert.equal((js.sharded.cosface as Any).topK, undefined);
    await assertThrowsNamed(
      () => (js.sharded.cosface as Any).stats(q, { ...sh, interTopK: 1 }),
      TypeError,
      "interTopK",
    );
    await assertThrowsNamed(
      () => (js.sharded.arcface as Any).stats(q, { ...sh, interTopK: 1 }),
      TypeError,
      "inputs.topK",
    );
  });
});

describe("sharded inter-class options on WebAssembly threads = the unsharded loss", () => {
  it("arcface on cosines and the arcface head, interTopK 3, threshold 0.5, margin [N], 3 shards", async () => {
    const threaded = await init({ backend: "wasm", threads: 3 }) as Any;
    try {
      const rng = new Rng(31), margin = rowMargins(rng, 0.2, 0.6);
      const o = { scale: 20, interTopK: 3, interclassFilteringThreshold: 0.5, margin };
      const q = cosProblem(rng, N, C);
      const want = wasm.arcface.valueAndGrad(q, o);
      const got = await runShards(threaded, "arcface", q, o, [0, 17, 30, C]);
      assertLossClose(got.loss, want.loss as number, "arcface loss");
      assertGradClose(got.grads.cos, want.grads.cos.data, "arcface grads.cos");
      const p = headProblem(rng, N, D, C);
      const head = wasm.marginHead.valueAndGrad(p, o);
      const shards = await runShards(threaded, "marginHead", p, o, [0, 17, 30, C]);
      assertLossClose(shards.loss, head.loss as number, "head loss");
      assertGradClose(shards.grads.x, head.grads.x.data, "head grads.x");
      assertGradClose(shards.grads.W, head.grads.W.data, "head grads.W");
    } finally {
      threaded.dispose();
    }
  });
});

const gpu = backends.find((b) => b.name === "webgpu")?.losses as Any;

describe("WebGPU: the sharded head's face kinds = its unsharded head", { skip: webgpuMissing }, () => {
  const n = 6, d = 8, c = 70, bounds = [[0, 30, c], [0, 20, 45, c]];
  for (
    const [kind, options, state] of [
      ["adaface", { kind: "adaface", scale: 16 }, { mean: 1.5, std: 0.4 }],
      ["magface", { kind: "magface", scale: 16, lowerNorm: 0.5, upperNorm: 4 }, undefined],
      ["curricularFace", { kind: "curricularFace", scale: 16 }, { t: 0.2 }],
    ] as [string, Any, Any][]
  ) {
    it(`${kind}: 2 and 3 shards (host rows through the GPU head's two phases)`, async () => {
      const p: Any = headProblem(new Rng(kind.length), n, d, c);
      const inputs: Any = state ? { ...p, state } : p;
      const want = await gpu.marginHead.valueAndGrad(inputs, options);
      for (const b of bounds) {
        const shardInputs: Any = { ...inputs };
        if (kind === "curricularFace") {
          // The extra all-reduce of N floats: every row's label cosine.
          const labelCos = new Float64Array(n);
          for (let k = 0; k + 1 < b.length; k++) {
            const W = { data: p.W.data.slice(b[k] * d, b[k + 1] * d), shape: [b[k + 1] - b[k], d] };
            const r = await gpu.sharded.marginHead.labelCosines({ ...inputs, W }, {
              ...options,
              offset: b[k],
              classes: c,
            });
            r.cos.forEach((v: number, i: number) => (labelCos[i] += v));
          }
          shardInputs.labelCos = Float32Array.from(labelCos);
        }
        const got = await runShards(gpu, "marginHead", shardInputs, options, b);
        const at = `${b.length - 1} shards`;
        assertLossClose(got.loss, want.loss, `${at} loss`, 1e-4);
        assertGradClose(got.grads.x, want.grads.x.data, `${at} grads.x`, 1e-4);
        assertGradClose(got.grads.W, want.grads.W.data, `${at} grads.W`, 1e-4);
        if (state) {
          for (const [key, v] of Object.entries(want.state as Record<string, number>)) {
            for (const r of got.results) assert.ok(Math.abs(r.state[key] - v) < 1e-5, `${at} state.${key}`);
          }
        }
        if (kind === "magface") {
          const parts = got.results.reduce((t: number, r: Any) => t + r.g, 0);
          assert.ok(Math.abs(parts - want.g) < 1e-4 * Math.max(1, Math.abs(want.g)), `${at} g`);
        }
      }
    });
  }
  it("a per-row margin (host targets through the GPU head's phases) = the unsharded wasm head", async () => {
    const p = headProblem(new Rng(12), n, d, c), rng = new Rng(13);
    for (
      const o of [
        { kind: "arcface", scale: 16, margin: rowMargins(rng, 0.2, 0.6).subarray(0, n) },
        { kind: "cosface", scale: 16, margin: rowMargins(rng, 0.2, 0.4).subarray(0, n), reduction: "sum" },
        { kind: "combinedMargin", scale: 16, m2: rowMargins(rng, 0.1, 0.5).subarray(0, n), m3: 0.05 },
      ] as Any[]
    ) {
      const want = wasm.marginHead.valueAndGrad(p, o) as Any;
      for (const b of bounds) {
        const got = await runShards(gpu, "marginHead", p, o, b);
        const at = `${o.kind} ${b.length - 1} shards`;
        assertLossClose(got.loss, want.loss, `${at} loss`, 1e-4);
        assertGradClose(got.grads.x, want.grads.x.data, `${at} grads.x`, 1e-4);
        assertGradClose(got.grads.W, want.grads.W.data, `${at} grads.W`, 1e-4);
      }
    }
  });
  it("takes interTopK from a top k merged from WebAssembly shards (mixed backends); takes the threshold", async () => {
    const p = headProblem(new Rng(2), n, d, 10);
    const o: Any = { kind: "arcface", scale: 16, interTopK: 2 };
    const want = await gpu.marginHead.valueAndGrad(p, o);
    const shards = [[0, 4], [4, 10]].map(([c0, c1]) => ({
      inputs: { ...p, W: { data: p.W.data.slice(c0 * d, c1 * d), shape: [c1 - c0, d] } } as Any,
      options: { ...o, offset: c0, classes: 10 },
    }));
    const topK = mergeShardTopK(shards.map((sh) => (wasm.sharded.marginHead as Any).topK(sh.inputs, sh.options)));
    const stats = [];
    for (const sh of shards) stats.push(await gpu.sharded.marginHead.stats({ ...sh.inputs, topK }, sh.options));
    const merged = mergeShardStats(stats);
    let loss = 0;
    const gx = new Float64Array(n * d), gW: number[] = [];
    for (const sh of shards) {
      const r = await gpu.sharded.marginHead.finish({ ...sh.inputs, topK }, merged, sh.options);
      loss += r.loss;
      r.grads.x.data.forEach((g: number, i: number) => (gx[i] += g));
      gW.push(...r.grads.W.data);
    }
    assertLossClose(loss, want.loss, "loss (wasm's top k, GPU shards)", 1e-5);
    assertGradClose(gx, want.grads.x.data, "grads.x (wasm's top k, GPU shards)", 1e-5);
    assertGradClose(Float64Array.from(gW), want.grads.W.data, "grads.W (wasm's top k, GPU shards)", 1e-5);
    const t: Any = { kind: "arcface", scale: 16, interclassFilteringThreshold: 0.2 };
    const got = await runShards(gpu, "marginHead", p, t, [0, 4, 10]);
    assertLossClose(
      got.loss,
      (wasm.marginHead.valueAndGrad(p, t) as Any).loss,
      "loss (the threshold over two GPU shards)",
    );
  });
});

describe(
  "WebGPU: the sharded head with interTopK = its unsharded head and the reference",
  { skip: webgpuMissing },
  () => {
    const n = 6, c = 48;
    const cases: [string, Any, { K?: number; classes?: boolean; dup?: boolean }][] = [
      ["arcface interTopK 3, m' 0.1", { kind: "arcface", scale: 16, interTopK: 3, interTopKMargin: 0.1 }, {}],
      ["interTopK 3, ties across the shard boundary 16 | 17", { kind: "arcface", scale: 16, interTopK: 3 }, {
        dup: true,
      }],
      ["interTopK 2, threshold 0.5, margin [N], sum", {
        kind: "arcface",
        scale: 16,
        interTopK: 2,
        interclassFilteringThreshold: 0.5,
        margin: "rows",
        reduction: "sum",
      }, {}],
      ["K = 2, classes, interTopK 4", { kind: "arcface", scale: 16, subcenters: 2, interTopK: 4 }, {
        K: 2,
        classes: true,
      }],
      ["interTopK >= C - 1 (every non-target; a shard's list of all its classes)", {
        kind: "arcface",
        scale: 16,
        interTopK: 60,
      }, {}],
    ];
    for (const [label, given, shape] of cases) {
      it(label, async () => {
        const K = shape.K ?? 1, p: Any = headProblem(new Rng(label.length + 3), n, D, c, K, shape.dup);
        if (shape.classes) p.classes = partialFcSample(p.labels, c, { rate: 0.6, seed: 3 });
        const o = given.margin === "rows"
          ? { ...given, margin: rowMargins(new Rng(4), 0.2, 0.6).subarray(0, n) }
          : given;
        const want = await gpu.marginHead.valueAndGrad(p, o);
        const ref = (js as Any).marginHead.valueAndGrad(p, o);
        const plain = await gpu.marginHead.valueAndGrad(p, { ...o, interTopK: 0 });
        assert.ok(Math.abs(want.loss - plain.loss) > 1e-3, "interTopK changes the GPU head");
        assertLossClose(want.loss, ref.loss, "the unsharded GPU head = the reference", 1e-5);
        for (const bounds of layouts(c)) {
          const got = await runShards(gpu, "marginHead", p, o, bounds, K);
          const at = `${bounds.length - 1} shard(s)`;
          for (const [what, w] of [["GPU head", want], ["reference", ref]] as [string, Any][]) {
            assertLossClose(got.loss, w.loss, `${at} loss (${what})`, 1e-5);
            assertGradClose(got.grads.x, w.grads.x.data, `${at} grads.x (${what})`, 1e-5);
            assertGradClose(got.grads.W, w.grads.W.data, `${at} grads.W (${what})`, 1e-5);
          }
        }
      });
    }
    it("the step's top k on the GPU = the reference shard's (values to float32, the same global classes)", async () => {
      const p: Any = headProblem(new Rng(9), n, D, c, 1, true);
      const o = { kind: "arcface", interTopK: 3, offset: 17, classes: c };
      const own = { ...p, W: { data: p.W.data.slice(17 * D, 30 * D), shape: [13, D] } };
      const g = await gpu.sharded.marginHead.topK(own, o), r = (js.sharded.marginHead as Any).topK(own, o);
      assert.deepEqual([...g.classes], [...r.classes]);
      g.values.forEach((v: number, q: number) =>
        assert.ok(v === r.values[q] || Math.abs(v - r.values[q]) < 1e-6, `values[${q}]`)
      );
    });
  },
);
