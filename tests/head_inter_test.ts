// marginHead's inter-class options and per-row margins (SPEC.md section 7, docs/LOSSES.md): interTopK /
// interTopKMargin (arcface), interclassFilteringThreshold (arcface, cosface, combinedMargin) and a
// per-row margin Float32Array [N] (arcface, cosface, combinedMargin m2 / m3). Tests: identities (the
// options off are today's head; an equal per-row margin is the scalar one), the head = normalise +
// matmul (+ the sub-centre maximum) + the loss on cosines with the same options, the wasm backend (one
// thread and threads) against the reference, finite differences on the reference, named errors (the
// WebGPU class-sharded head refuses what it does not take). The WebGPU head: tests/webgpu_head_inter_test.ts.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { js, mergeShardStats, partialFcSample, wasm } from "../cpu.ts";
import { init } from "../mod.ts";
import { poolsInUse } from "../src/wasm/pool.ts";
import { assertGradClose, assertLossClose, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { numberOptionErrors } from "./helpers/errors.ts";
import { numericGradient } from "./helpers/numeric.ts";
import { randomLabels, randomMatrix, Rng } from "./helpers/random.ts";
import { type ErrorCase, errorSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const CPU = [{ name: "js", losses: js as Any }, { name: "wasm", losses: wasm as Any }];

/**
 * x [n, d] near its label's class, W [c*K, d] (each class's K rows around one centre); with `dup`,
 * class j + 1 repeats class j's rows for every even j (exact ties of the class cosines).
 */
function problem(rng: Rng, n: number, d: number, c: number, K = 1, dup = false) {
  const centres = randomMatrix(rng, c, d, 1);
  const W = randomMatrix(rng, c * K, d, 0.5);
  for (let r = 0; r < c * K; r++) {
    for (let k = 0; k < d; k++) W.data[r * d + k] += centres.data[Math.floor(r / K) * d + k];
  }
  if (dup) {
    for (let j = 0; j + 1 < c; j += 2) W.data.copyWithin((j + 1) * K * d, j * K * d, (j + 1) * K * d);
  }
  const labels = randomLabels(rng, n, c, 0.2, -100);
  const x = randomMatrix(rng, n, d, 1.2);
  for (let i = 0; i < n; i++) {
    if (labels[i] < 0) continue;
    for (let k = 0; k < d; k++) x.data[i * d + k] += centres.data[labels[i] * d + k];
  }
  return { x, W, labels };
}

/** The class cosines `[n, c]` of a head problem in float64 (the largest of each class's K rows, clamped). */
function classCosines(p: { x: Any; W: Any }, K: number): Float64Array {
  const [n, d] = p.x.shape, c = p.W.shape[0] / K;
  const nrm = (a: Float32Array, r: number) => Math.max(Math.hypot(...a.subarray(r * d, r * d + d)), 1e-12);
  const cos = new Float64Array(n * c).fill(-2);
  for (let i = 0; i < n; i++) {
    for (let r = 0; r < c * K; r++) {
      let dot = 0;
      for (let k = 0; k < d; k++) dot += p.x.data[i * d + k] * p.W.data[r * d + k];
      const u = Math.min(1, Math.max(-1, dot / (nrm(p.x.data, i) * nrm(p.W.data, r))));
      const j = Math.floor(r / K);
      cos[i * c + j] = Math.max(cos[i * c + j], u);
    }
  }
  return cos;
}

function agree(got: Any, want: Any, label: string): void {
  assertLossClose(got.loss, want.loss, `${label} loss`);
  for (const key of ["x", "W"]) {
    assert.deepEqual(got.grads[key].shape, want.grads[key].shape, `${label} grads.${key}.shape`);
    assertGradClose(got.grads[key].data, want.grads[key].data, `${label} grads.${key}`);
  }
}

const margins = (n: number, lo: number, hi: number, seed: number) => {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => rng.uniform(lo, hi));
};

describe("marginHead inter-class options and per-row margins: identities", () => {
  for (const b of CPU) {
    it(`${b.name}: threshold 0, interTopK 0 and interTopKMargin 0 are today's head; an equal per-row margin is the scalar one`, () => {
      const p = problem(new Rng(1), 9, 8, 150, 1);
      const same: [Any, Any[]][] = [
        [{ kind: "arcface", scale: 20, margin: 0.3 }, [
          { interclassFilteringThreshold: 0 },
          { interTopK: 0 },
          { interTopK: 0, interTopKMargin: 0.2 },
          { interTopK: 4, interTopKMargin: 0 },
          { margin: new Float32Array(9).fill(0.3) },
        ]],
        [{ kind: "cosface", scale: 20, margin: 0.25 }, [
          { interclassFilteringThreshold: 0 },
          { margin: new Float32Array(9).fill(0.25) },
        ]],
        [{ kind: "combinedMargin", scale: 20, m1: 1, m2: 0.3, m3: 0.1 }, [
          { interclassFilteringThreshold: 0 },
          { m2: new Float32Array(9).fill(0.3) },
          { m2: new Float32Array(9).fill(0.3), m3: new Float32Array(9).fill(0.1) },
        ]],
      ];
      for (const [base, variants] of same) {
        const want = b.losses.marginHead.valueAndGrad(p, base);
        for (const o of variants) {
          const label = `${base.kind} ${Object.keys(o).join(",")}`;
          const got = b.losses.marginHead.valueAndGrad(p, { ...base, ...o });
          // (interTopKMargin 0 and equal margins: the same logits by another path, equal up to rounding)
          agree(got, want, label);
          if (!("interTopKMargin" in o) && !(o.margin ?? o.m2)) {
            assert.equal(got.loss, want.loss, `${label}: the same value`);
            assert.deepEqual(got.grads.W.data, want.grads.W.data, `${label}: the same dW`);
          }
        }
      }
    });
  }
});

describe("marginHead inter-class options and per-row margins: the head = normalise + matmul + the loss on cosines", () => {
  const cases: [string, Any, number][] = [
    ["arcface interTopK 3", { kind: "arcface", scale: 16, interTopK: 3 }, 1],
    ["arcface interTopK 2, threshold 0.6, m' 0.1", {
      kind: "arcface",
      scale: 16,
      interTopK: 2,
      interclassFilteringThreshold: 0.6,
      interTopKMargin: 0.1,
    }, 1],
    ["arcface interTopK 4, K = 3", { kind: "arcface", scale: 16, interTopK: 4, subcenters: 3 }, 3],
    ["arcface interTopK >= C - 1", { kind: "arcface", scale: 16, interTopK: 40 }, 1],
    ["arcface interTopK 3, tied classes", { kind: "arcface", scale: 16, interTopK: 3, dup: true }, 1],
    [
      "arcface interTopK 5, K = 2, tied classes",
      { kind: "arcface", scale: 16, interTopK: 5, subcenters: 2, dup: true },
      2,
    ],
    ["cosface threshold 0.5", { kind: "cosface", scale: 16, interclassFilteringThreshold: 0.5 }, 1],
    ["combinedMargin threshold 0.4", {
      kind: "combinedMargin",
      scale: 16,
      m2: 0.2,
      m3: 0.1,
      interclassFilteringThreshold: 0.4,
    }, 1],
  ];
  for (const b of CPU) {
    for (const [label, o, K] of cases) {
      it(`${b.name}: ${label}`, () => {
        const { dup, ...head } = o;
        const n = 11, c = 20, p = problem(new Rng(7 + K), n, 8, c, K, dup);
        const cos = { data: Float32Array.from(classCosines(p, K)), shape: [n, c] };
        const { kind, subcenters: _, ...options } = head;
        const want = b.losses[kind].forward({ cos, labels: p.labels }, options);
        const got = b.losses.marginHead.forward(p, head);
        assertLossClose(got.loss, want.loss, "loss");
        // and with a per-row margin (arcface, cosface) / per-row m2 (combinedMargin)
        const key = kind === "combinedMargin" ? "m2" : "margin";
        const rows = margins(n, 0.1, 0.5, 3);
        const w2 = b.losses[kind].forward({ cos, labels: p.labels }, { ...options, [key]: rows });
        const g2 = b.losses.marginHead.forward(p, { ...head, [key]: rows });
        assertLossClose(g2.loss, w2.loss, "loss (per-row margin)");
      });
    }
  }
});

describe("marginHead inter-class options and per-row margins: edge cases", () => {
  for (const b of CPU) {
    it(`${b.name}: N = 1, cosines of exactly +-1 and 0, every non-target tied: the head = arcface on its cosines`, () => {
      // x and W on the axes: the cosines are exactly 1 (the label, class 0, and the non-target class 6),
      // 0 (classes 1, 2, 3, 5: tied) and -1 (class 4).
      const d = 4, c = 7;
      const W = Float32Array.of(2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, -1, -1, 0, 0, 0, 0, -2, 0, 0, 5, 0, 0, 0);
      const x = { data: Float32Array.of(3, 0, 0, 0), shape: [1, d] };
      const inputs = { x, W: { data: W, shape: [c, d] }, labels: [0] };
      const cos = { data: Float32Array.from(classCosines(inputs, 1)), shape: [1, c] };
      for (
        const o of [
          { scale: 10, interTopK: 1 },
          { scale: 10, interTopK: 2, interTopKMargin: 0.3 },
          { scale: 10, interTopK: 3, interclassFilteringThreshold: 0.5 },
          { scale: 10, interTopK: 6, margin: Float32Array.of(0.2) },
        ] as Any[]
      ) {
        const want = b.losses.arcface.valueAndGrad({ cos, labels: [0] }, o);
        const got = b.losses.marginHead.valueAndGrad(inputs, o);
        assertLossClose(got.loss, want.loss, `${JSON.stringify(o)} loss`);
        for (const key of ["x", "W"]) {
          assert.ok(got.grads[key].data.every(Number.isFinite), `${JSON.stringify(o)} grads.${key} finite`);
        }
      }
    });
  }
});

/**
 * The class-sharded head over shards `[bounds[k], bounds[k+1])` of the classes (K rows each; with
 * classes, each shard's share): the losses and x's shares summed, W's rows concatenated.
 */
function sharded(l: Any, inputs: Any, o: Any, bounds: number[], K: number) {
  const d = inputs.x.shape[1], C = bounds[bounds.length - 1];
  const shards = bounds.slice(0, -1).map((c0, k) => {
    const c1 = bounds[k + 1];
    const own: Any = { ...inputs, W: { data: inputs.W.data.slice(c0 * K * d, c1 * K * d), shape: [(c1 - c0) * K, d] } };
    if (inputs.classes) own.classes = Int32Array.from(inputs.classes).filter((c) => c >= c0 && c < c1);
    return { inputs: own, options: { ...o, offset: c0, classes: C } };
  });
  const merged = mergeShardStats(shards.map((s) => l.sharded.marginHead.stats(s.inputs, s.options)));
  const results = shards.map((s) => l.sharded.marginHead.finish(s.inputs, merged, s.options));
  const x = new Float64Array(inputs.x.data.length);
  for (const r of results) r.grads.x.data.forEach((g: number, i: number) => (x[i] += g));
  const W = Float64Array.from(results.flatMap((r) => Array.from(r.grads.W.data as Float32Array)));
  return { loss: results.reduce((t, r) => t + r.loss, 0), x, W };
}

describe("marginHead interclassFilteringThreshold: the class-sharded head = the head", () => {
  for (const b of CPU) {
    for (
      const [label, o, classes] of [
        ["cosface", { kind: "cosface", scale: 20, interclassFilteringThreshold: 0.4 }, false],
        [
          "arcface K = 2 with classes",
          { kind: "arcface", scale: 20, subcenters: 2, interclassFilteringThreshold: 0.5 },
          true,
        ],
        ["combinedMargin, sum", {
          kind: "combinedMargin",
          scale: 20,
          m3: 0.1,
          interclassFilteringThreshold: 0.3,
          reduction: "sum",
        }, false],
      ] as [string, Any, boolean][]
    ) {
      it(`${b.name}: ${label}`, () => {
        const K = o.subcenters ?? 1, c = 50, p: Any = problem(new Rng(60 + K), 9, 8, c, K);
        if (classes) p.classes = partialFcSample(p.labels, c, { rate: 0.6, seed: 4 });
        const want = b.losses.marginHead.valueAndGrad(p, o);
        const plain = b.losses.marginHead.forward(p, { ...o, interclassFilteringThreshold: 0 });
        assert.ok(Math.abs(plain.loss - want.loss) > 1e-3, "the threshold changes this head");
        const got = sharded(b.losses, p, o, [0, 17, 40, c], K);
        assertLossClose(got.loss, want.loss, "loss");
        assertGradClose(got.x, want.grads.x.data, "grads.x");
        assertGradClose(got.W, want.grads.W.data, "grads.W");
      });
    }
  }
  it("shards with another threshold are refused", () => {
    const p = problem(new Rng(70), 5, 8, 20);
    const o = { kind: "cosface" as const, interclassFilteringThreshold: 0.4 };
    const shard = (c0: number, c1: number, t: number) =>
      js.sharded.marginHead.stats(
        { ...p, W: { data: p.W.data.slice(c0 * 8, c1 * 8), shape: [c1 - c0, 8] } },
        { ...o, interclassFilteringThreshold: t, offset: c0, classes: 20 },
      );
    assert.throws(() => mergeShardStats([shard(0, 10, 0.4), shard(10, 20, 0.5)]), RangeError);
  });
});

const threaded = await init({ backend: "wasm", threads: 3 });

describe("marginHead inter-class options and per-row margins: wasm (one thread and threads) = the reference", () => {
  // The wasm kernels take 128 classes a chunk (40 with K = 3); duplicated classes tie exactly.
  for (const [K, c, dup] of [[1, 130, false], [1, 300, true], [3, 83, true], [2, 5, false]] as const) {
    it(`K = ${K}, C = ${c}${dup ? ", tied classes" : ""}`, () => {
      const n = 7, p = problem(new Rng(K * 100 + c), n, 8, c, K, dup);
      for (
        const o of [
          { kind: "arcface", scale: 30, interTopK: 5 },
          {
            kind: "arcface",
            scale: 30,
            interTopK: 3,
            interclassFilteringThreshold: 0.5,
            margin: margins(n, 0, 0.6, 1),
          },
          { kind: "cosface", scale: 30, interclassFilteringThreshold: 0.3, margin: margins(n, 0.1, 0.4, 2) },
          { kind: "combinedMargin", scale: 30, m3: margins(n, 0, 0.2, 4), interclassFilteringThreshold: 0.45 },
        ] as Any[]
      ) {
        const inputs = p;
        const oo = { ...o, subcenters: K };
        const snap = snapshot({ inputs, options: oo });
        const want = js.marginHead.valueAndGrad(inputs, oo);
        agree(wasm.marginHead.valueAndGrad(inputs, oo), want, `${o.kind} wasm`);
        assertUnchanged(snap, { inputs, options: oo });
        if (c > 20) {
          const classes = partialFcSample(p.labels, c, { rate: 0.6, seed: c });
          const q = { ...inputs, classes };
          agree(wasm.marginHead.valueAndGrad(q, oo), js.marginHead.valueAndGrad(q, oo), `${o.kind} classes`);
        }
      }
    });
  }
  it("threads (3) agree with the reference: a head that splits, interTopK with ties and a per-row margin", async () => {
    const n = 64, p = problem(new Rng(5), n, 64, 3000, 1, true);
    const o: Any = {
      kind: "arcface",
      scale: 30,
      interTopK: 6,
      interclassFilteringThreshold: 0.8,
      margin: margins(n, 0.2, 0.5, 9),
    };
    const want = js.marginHead.valueAndGrad(p, o);
    const runs = threaded.threads > 1 ? (poolsInUse().get(3)?.runs ?? 0) : 0;
    const got = await threaded.marginHead.valueAndGrad(p, o);
    if (threaded.threads > 1) assert.ok(poolsInUse().get(3)!.runs > runs, "the head ran on the pool");
    agree(got, want, "threads");
  });
});

describe("marginHead inter-class options and per-row margins: finite differences (float64 reference)", () => {
  /** The least distance of a row's non-target class cosines to the k-th largest's boundary and to the threshold. */
  function slack(p: Any, k: number, t: number, K: number): number {
    const [n] = p.x.shape, c = p.W.shape[0] / K, cos = classCosines(p, K);
    let least = Infinity;
    for (let i = 0; i < n; i++) {
      if (p.labels[i] < 0) continue;
      const row: number[] = [];
      for (let j = 0; j < c; j++) {
        if (j === p.labels[i]) continue;
        const u = cos[i * c + j];
        if (t > 0) least = Math.min(least, Math.abs(u - t));
        row.push(t > 0 && u > t ? 0 : u);
      }
      row.sort((a, b) => b - a);
      if (k > 0 && k < row.length) least = Math.min(least, row[k - 1] - row[k]);
    }
    return least;
  }
  for (
    const [label, o] of [
      ["arcface interTopK 2, threshold 0.7, a per-row margin", {
        kind: "arcface",
        scale: 4,
        interTopK: 2,
        interTopKMargin: 0.2,
        interclassFilteringThreshold: 0.7,
        margin: Float32Array.of(0.1, 0.3, 0.5, 0.2),
      }],
      ["arcface interTopK 3, K = 2, sum", { kind: "arcface", scale: 4, interTopK: 3, subcenters: 2, reduction: "sum" }],
      ["cosface threshold 0.5, a per-row margin", {
        kind: "cosface",
        scale: 4,
        interclassFilteringThreshold: 0.5,
        margin: Float32Array.of(0.1, 0.3, 0.5, 0.2),
      }],
      ["combinedMargin per-row m2 and m3", {
        kind: "combinedMargin",
        scale: 4,
        m2: Float32Array.of(0.1, 0.3, 0.5, 0.2),
        m3: Float32Array.of(0, 0.1, 0.2, 0.05),
      }],
    ] as [string, Any][]
  ) {
    it(label, async () => {
      const K = o.subcenters ?? 1;
      let seed = 3, p: Any = problem(new Rng(seed), 4, 5, 7, K);
      while (slack(p, o.interTopK ?? 0, o.interclassFilteringThreshold ?? 0, K) < 0.02) {
        p = problem(new Rng(++seed), 4, 5, 7, K);
      }
      const g: Any = js.marginHead.backward(p, o, 1.5);
      const scalar = () => Promise.resolve(1.5 * (js.marginHead.forward(p, o).loss as number));
      for (const key of ["x", "W"]) {
        const num = await numericGradient(scalar, p[key].data, 2 ** -8);
        const a = g[key].data as Float32Array;
        const scale = Math.max(1, ...num.map(Math.abs));
        assert.equal(a.length, num.length);
        for (let i = 0; i < num.length; i++) {
          assert.ok(Math.abs(a[i] - num[i]) <= 2e-5 * scale, `${label} grads.${key}[${i}] ${a[i]} vs ${num[i]}`);
        }
      }
    });
  }
});

describe("marginHead inter-class options and per-row margins: named errors", () => {
  const small = () => ({
    x: randomMatrix(new Rng(8), 3, 4, 1),
    W: randomMatrix(new Rng(9), 6, 4, 1),
    labels: [0, 2, 1],
  });
  const arc = (extra: Any) => (o: Any) => ({ ...o, options: { kind: "arcface", ...o.options, ...extra } });
  const cases: ErrorCase[] = [
    ...numberOptionErrors(small, "interclassFilteringThreshold", [-0.1, 1.5, NaN]),
    ...numberOptionErrors(small, "interTopKMargin", [-0.1, 4, NaN]).map(arc({})),
    {
      name: "interTopK -1",
      inputs: small,
      options: { interTopK: -1 },
      type: RangeError,
      includes: ["options.interTopK", "-1"],
    },
    {
      name: "interTopK 1.5",
      inputs: small,
      options: { interTopK: 1.5 },
      type: TypeError,
      includes: ["options.interTopK", "1.5"],
    },
    {
      name: "interTopK is arcface's (cosface)",
      inputs: small,
      options: { kind: "cosface", interTopK: 2 },
      type: TypeError,
      includes: ['"interTopK"'],
    },
    {
      name: "the threshold is not normface's",
      inputs: small,
      options: { kind: "normface", interclassFilteringThreshold: 0.5 },
      type: TypeError,
      includes: ['"interclassFilteringThreshold"'],
    },
    {
      name: "a per-row margin of the wrong length",
      inputs: small,
      options: { margin: new Float32Array(2).fill(0.3) },
      type: RangeError,
      includes: ["options.margin", "3", "2"],
    },
    {
      name: "a per-row margin out of range",
      inputs: small,
      options: { margin: Float32Array.of(0.2, 4, 0.1) },
      type: RangeError,
      includes: ["options.margin", "4"],
    },
    {
      name: "a per-row m2 that is not numbers",
      inputs: small,
      options: { kind: "combinedMargin", m2: ["a", 0.1, 0.1] },
      type: [TypeError, RangeError],
      includes: ["options.m2"],
    },
  ];
  errorSuite({ name: "marginHead" } as Any, cases);

  it("the class-sharded head takes interTopK with inputs.topK (tests/sharded_inter_test.ts), else names it", () => {
    const p = small();
    const shard = { offset: 0, classes: 6 };
    for (const b of CPU) {
      assert.throws(
        () => b.losses.sharded.marginHead.stats(p, { ...shard, interTopK: 2 }),
        (e: Error) => e instanceof TypeError && e.message.includes("inputs.topK"),
        b.name,
      );
      assert.throws(
        () => b.losses.sharded.marginHead.stats(p, { ...shard, kind: "cosface", interTopK: 2 }),
        (e: Error) => e instanceof TypeError && e.message.includes('"interTopK"'),
        b.name,
      );
    }
  });
});
