// The class-sharded losses (src/losses/sharded.ts, docs/SHARDING.md): each shard holds a
// range of classes, `stats` gives its per-row (max, non-label sum, label logit), the
// caller merges them (`mergeShardStats`, the all-reduce), and `finish` gives the shard's
// loss share and gradients. Split over P = 1..8 shards of uneven sizes, with labels on
// every shard and ignored rows, the shares sum to the unsharded loss and the gradients
// assemble into the unsharded ones (columns of logits / cosines, rows of W, the sum of
// the x shares) within 1e-6 relative, on every backend; through the PyTorch fixtures the
// sharded losses meet the SPEC bound against PyTorch itself.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { alloc, mergeShardStats, type ShardStats, wasm } from "../cpu.ts";
import { assertGradClose, assertLossClose, assertThrowsNamed, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { type Backend, backends, reference } from "./helpers/backends.ts";
import { type FixtureCase, loadFixtures } from "./helpers/fixtures.ts";
import { type Assembled, LOGIT_KEY, runSharded } from "./helpers/sharded.ts";
import { type Mat, randomLabels, randomMatrix, Rng } from "./helpers/random.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/** P uneven shard sizes (each >= 1) summing to c. */
function shardSizes(rng: Rng, c: number, p: number): number[] {
  const cuts = new Set<number>();
  while (cuts.size < p - 1) cuts.add(1 + rng.int(c - 1));
  const ends = [...cuts].sort((a, b) => a - b).concat(c);
  return ends.map((e, k) => e - (k === 0 ? 0 : ends[k - 1]));
}

/** Within `tol * max(1, |ref|)` (loss) / `tol * max(1e-3, max|ref|)` (gradients) of the unsharded result. */
function assertMatches(got: Assembled, want: Any, label: string, tol: number): void {
  const loss = typeof got.loss === "number" ? got.loss : Array.from(got.loss);
  assertLossClose(loss as Any, typeof want.loss === "number" ? want.loss : Array.from(want.loss), `${label} loss`, tol);
  if (got.z !== undefined) {
    const z = typeof got.z === "number" ? got.z : Array.from(got.z);
    assertLossClose(z as Any, typeof want.z === "number" ? want.z : Array.from(want.z), `${label} part z`, tol);
  }
  for (const [k, g] of Object.entries(got.grads)) assertGradClose(g, want.grads[k].data, `${label} grads.${k}`, tol);
}

/** Labels of n rows over c classes with at least one on every shard (the first rows) and ignored rows. */
function spreadLabels(rng: Rng, n: number, sizes: number[], ignoreIndex = -100): Int32Array {
  const c = sizes.reduce((s, x) => s + x, 0);
  const labels = randomLabels(rng, n, c, 0.2, ignoreIndex);
  let off = 0;
  sizes.forEach((cs, k) => {
    labels[k] = off + rng.int(cs);
    off += cs;
  });
  return labels;
}

/** Rows of unit-ish cosines in (-1, 1), some at exactly +-1 (the clamp's edge). */
function cosines(rng: Rng, n: number, c: number): Mat {
  const m = randomMatrix(rng, n, c, 0.5);
  for (let i = 0; i < m.data.length; i++) m.data[i] = Math.max(-1, Math.min(1, m.data[i]));
  m.data[0] = 1;
  return m;
}

interface Case {
  name: string;
  options: Record<string, unknown>;
  upstream?: (n: number) => unknown;
}

const LOGIT_CASES: Record<string, Case[]> = {
  crossEntropy: [
    { name: "defaults", options: {} },
    { name: "class weights, sum, upstream -0.75", options: { reduction: "sum" }, upstream: () => -0.75 },
    { name: "label smoothing 0.1", options: { labelSmoothing: 0.1 } },
    { name: "weights and smoothing 0.2, none, upstream per row", options: { labelSmoothing: 0.2, reduction: "none" } },
    { name: "ignoreIndex -1, mean, upstream 2.5", options: { ignoreIndex: -1 }, upstream: () => 2.5 },
    // SPEC §9: the shards cap their logits, the z-loss comes from the merged lse.
    { name: "softcap 2", options: { softcap: 2 } },
    { name: "zLoss 0.05, sum, upstream -0.75", options: { zLoss: 0.05, reduction: "sum" }, upstream: () => -0.75 },
    {
      name: "weights, softcap 1.5, zLoss 0.1, smoothing 0.1, mean, upstream 2.5",
      options: { softcap: 1.5, zLoss: 0.1, labelSmoothing: 0.1 },
      upstream: () => 2.5,
    },
    { name: "softcap 3, zLoss 0.02, none, upstream per row", options: { softcap: 3, zLoss: 0.02, reduction: "none" } },
  ],
  arcface: [
    { name: "s 16, m 0.5", options: { scale: 16, margin: 0.5 } },
    { name: "easy margin, none", options: { scale: 30, margin: 0.3, easyMargin: true, reduction: "none" } },
    { name: "marginGrad constant, sum", options: { scale: 64, marginGrad: "constant", reduction: "sum" } },
  ],
  cosface: [{ name: "s 30, m 0.35", options: { scale: 30, margin: 0.35 } }],
  normface: [{ name: "defaults, sum", options: { reduction: "sum" } }],
  combinedMargin: [{ name: "m1 1.2, m2 0.3, m3 0.1", options: { scale: 32, m1: 1.2, m2: 0.3, m3: 0.1 } }],
};

const HEAD_CASES: Case[] = [
  { name: "arcface", options: { kind: "arcface", scale: 16 } },
  {
    name: "cosface, sum, upstream 2.5",
    options: { kind: "cosface", scale: 30, reduction: "sum" },
    upstream: () => 2.5,
  },
  { name: "normface, none", options: { kind: "normface", reduction: "none" } },
  { name: "combinedMargin", options: { kind: "combinedMargin", scale: 32, m1: 1.1, m2: 0.2, m3: 0.1 } },
];

/** The unsharded result the sharded one is held to, and its tolerance, on backend b. */
function oracles(b: Backend, name = ""): { backend: Backend; tol: number }[] {
  // WebGPU's logit shards run the float64 reference (host rows): held to the reference at
  // 1e-6, and to WebGPU's own unsharded kernels at the SPEC bound. Its head shards run the
  // GPU head's phases (float32): held to both at the SPEC bound.
  if (b.name !== "webgpu") return [{ backend: b, tol: 1e-6 }];
  return [{ backend: reference, tol: name === "marginHead" ? 1e-5 : 1e-6 }, { backend: b, tol: 1e-5 }];
}

const upstreamOf = (cs: Case, n: number) =>
  cs.options.reduction === "none" ? Float32Array.from({ length: n }, (_, i) => 0.5 + (i % 3)) : cs.upstream?.(n);

describe("sharded losses equal the unsharded ones (P = 1..8 uneven shards)", () => {
  for (const b of backends) {
    describe(b.name, () => {
      const small = b.name === "webgpu"; // llvmpipe: small shapes
      for (const [name, list] of Object.entries(LOGIT_CASES)) {
        for (const cs of list) {
          it(`${name}: ${cs.name}`, async () => {
            const rng = new Rng(0x5a4d + cs.name.length);
            const n = small ? 9 : 13, c = small ? 11 : 23;
            for (let p = 1; p <= 8; p++) {
              const sizes = shardSizes(rng, c, p);
              const ignoreIndex = (cs.options.ignoreIndex as number | undefined) ?? -100;
              const labels = spreadLabels(rng, n, sizes, ignoreIndex);
              const x = name === "crossEntropy" ? randomMatrix(rng, n, c, 3) : cosines(rng, n, c);
              const options = { ...cs.options } as Any;
              if (name === "crossEntropy" && /weights/.test(cs.name)) {
                options.weight = Float32Array.from({ length: c }, () => rng.uniform(0.2, 2));
              }
              const inputs = { [LOGIT_KEY[name]]: x, labels };
              const upstream = upstreamOf(cs, n);
              const before = snapshot(inputs);
              const got = await runSharded(b, name, inputs, options, sizes, upstream);
              assertUnchanged(before, inputs);
              for (const o of oracles(b)) {
                const want = await (o.backend.losses as Any)[name].valueAndGrad(inputs, options);
                if (upstream !== undefined) {
                  want.grads = await (o.backend.losses as Any)[name].backward(inputs, options, upstream);
                }
                assertMatches(
                  got,
                  { loss: want.loss, z: want.z, grads: want.grads },
                  `P ${p} [${sizes}] vs ${o.backend.name}`,
                  o.tol,
                );
              }
            }
          });
        }
      }
      for (const cs of HEAD_CASES) {
        it(`marginHead: ${cs.name}`, async () => {
          const rng = new Rng(0x4ead + cs.name.length);
          const n = small ? 6 : 11, d = small ? 5 : 9, c = small ? 10 : 140; // 140: past a 128-class chunk
          for (let p = 1; p <= 8; p++) {
            const sizes = shardSizes(rng, c, p);
            const labels = spreadLabels(rng, n, sizes);
            const inputs = { x: randomMatrix(rng, n, d, 1), W: randomMatrix(rng, c, d, 1), labels };
            const upstream = upstreamOf(cs, n);
            const got = await runSharded(b, "marginHead", inputs, cs.options, sizes, upstream);
            for (const o of oracles(b, "marginHead")) {
              const l = (o.backend.losses as Any).marginHead;
              const want = await l.valueAndGrad(inputs, cs.options);
              if (upstream !== undefined) want.grads = await l.backward(inputs, cs.options, upstream);
              assertMatches(got, want, `P ${p} [${sizes}] vs ${o.backend.name}`, o.tol);
            }
          }
        });
      }
    });
  }
});

describe("sharded losses: shards longer than a chunk of rows (streamed through WebAssembly memory)", () => {
  for (const b of backends) {
    it(b.name, async () => {
      const rng = new Rng(2024);
      const n = 70, c = 3001; // the wasm kernels take ~10 rows of 3000 classes per chunk
      const sizes = [1200, 1, 1800];
      const labels = spreadLabels(rng, n, sizes);
      const cases: [string, Any, Any][] = [
        ["crossEntropy", { logits: randomMatrix(rng, n, c, 4), labels }, {
          labelSmoothing: 0.1,
          weight: Float32Array.from({ length: c }, () => rng.uniform(0.5, 1.5)),
        }],
        ["arcface", { cos: cosines(rng, n, c), labels }, { scale: 32, reduction: "sum" }],
      ];
      for (const [name, inputs, options] of cases) {
        const got = await runSharded(b, name, inputs, options, sizes);
        for (const o of oracles(b)) {
          const want = await (o.backend.losses as Any)[name].valueAndGrad(inputs, options);
          assertMatches(got, want, `${name} vs ${o.backend.name}`, o.tol);
        }
      }
    });
  }
});

// With label smoothing and a label of class weight 0, the target's mass sits on the weighted
// classes: at the row's largest logit r, holding nearly all of p, dz_r = s (a p_r - u w_r) is
// a difference of two numbers of size a = u w_r, as small as their gap 1 - p_r. A shard
// computes it from float64 pieces, as the unsharded kernel does (assembly/cross_entropy.ts).
describe("sharded crossEntropy: the gradient at a largest logit holding the target's mass (SPEC's bound)", () => {
  const sum = (a: number[]) => a.reduce((s, x) => s + x, 0);
  // The property test's case (tests/property_test.ts, 10000 runs): the wasm shard's gradient
  // at column 1 was -1.85668e-5 against -1.85878e-5, 2.1e-8 off with a bound of 1e-8.
  const cases: { name: string; inputs: Any; options: Any; sizes: number[][] }[] = [
    {
      name: "logits [-10.17, 0], label 0 of weight 0, labelSmoothing 0.443, sum",
      inputs: { logits: { data: Float32Array.of(-10.17, 0), shape: [1, 2] }, labels: [0] },
      options: { weight: Float32Array.of(0, 2.19), labelSmoothing: 0.443, reduction: "sum" },
      sizes: [[2], [1, 1]],
    },
    (() => {
      // 40 classes, the one weighted class r holding the row maxima, the others 10 to 12 below it
      // (weight 0): 1 - p_r is the sum of 39 small exponentials, every gradient below 1e-3.
      const rng = new Rng(43);
      const c = 40, n = 3, data = new Float32Array(n * c), labels = [5, 17, 33];
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < c; j++) data[i * c + j] = j === 12 ? 1.5 : rng.uniform(-10.5, -8.5);
      }
      const weight = new Float32Array(c);
      weight[12] = 31;
      return {
        name: "40 classes, the one of weight > 0 holding the row maxima, labelSmoothing 0.8, sum",
        inputs: { logits: { data, shape: [n, c] }, labels },
        options: { weight, labelSmoothing: 0.8, reduction: "sum" },
        sizes: [[40], [13, 27], [12, 1, 27], [5, 20, 15]],
      };
    })(),
  ];
  for (const b of backends) {
    for (const k of cases) {
      it(`${b.name}: ${k.name}`, async () => {
        const want = reference.losses as Any;
        const ref = want.crossEntropy.valueAndGrad(k.inputs, k.options);
        for (const sizes of k.sizes) {
          assert.equal(sum(sizes), k.inputs.logits.shape[1]);
          const got = await runSharded(b, "crossEntropy", k.inputs, k.options, sizes);
          assertLossClose(got.loss as number, ref.loss, `shards [${sizes}] loss`);
          assertGradClose(got.grads.logits, ref.grads.logits.data, `shards [${sizes}] grads.logits`);
        }
      });
    }
  }
});

describe("sharded losses on WebAssembly-resident inputs (alloc)", () => {
  it("give what host inputs give, and the inputs are left as they were", () => {
    const rng = new Rng(31);
    const [n, cs, d] = [5, 40, 6];
    const logits = randomMatrix(rng, n, cs, 2), x = randomMatrix(rng, n, d, 1), W = randomMatrix(rng, cs, d, 1);
    const labels = [0, 50, 39, -100, 3];
    const placed = [alloc([n, cs]), alloc([n, d]), alloc([cs, d])];
    placed[0].data.set(logits.data);
    placed[1].data.set(x.data);
    placed[2].data.set(W.data);
    try {
      const ce = { offset: 0, classes: 60, labelSmoothing: 0.1 };
      const host = wasm.sharded.crossEntropy.stats({ logits, labels }, ce);
      const inMemory = wasm.sharded.crossEntropy.stats({ logits: placed[0], labels }, ce);
      assert.deepEqual(inMemory, host);
      // (classes [40, 60), the labels' 50, are on a second shard: finish needs every shard merged)
      const rest = { logits: randomMatrix(rng, n, 20, 2), labels }, restW = randomMatrix(rng, 20, d, 1);
      const merged = mergeShardStats([host, wasm.sharded.crossEntropy.stats(rest, { ...ce, offset: 40 })]);
      const a = wasm.sharded.crossEntropy.finish({ logits, labels }, merged, ce);
      const b = wasm.sharded.crossEntropy.finish({ logits: placed[0], labels }, merged, ce);
      assert.equal(b.loss, a.loss);
      assert.deepEqual(b.grads.logits.data, a.grads.logits.data);
      const mh = { kind: "cosface" as const, scale: 30, offset: 0, classes: 60 };
      const hs = wasm.sharded.marginHead.stats({ x, W, labels }, mh);
      assert.deepEqual(wasm.sharded.marginHead.stats({ x: placed[1], W: placed[2], labels }, mh), hs);
      const hm = mergeShardStats([hs, wasm.sharded.marginHead.stats({ x, W: restW, labels }, { ...mh, offset: 40 })]);
      const ha = wasm.sharded.marginHead.finish({ x, W, labels }, hm, mh);
      const hb = wasm.sharded.marginHead.finish({ x: placed[1], W: placed[2], labels }, hm, mh);
      assert.equal(hb.loss, ha.loss);
      assert.deepEqual(hb.grads.x.data, ha.grads.x.data);
      assert.deepEqual(hb.grads.W.data, ha.grads.W.data);
      assert.deepEqual(placed[0].data, logits.data);
      assert.deepEqual(placed[2].data, W.data);
    } finally {
      placed.forEach((m) => m.free());
    }
  });
});

/** The fixture files of the sharded losses. */
const FIXTURES: Record<string, string> = {
  crossEntropy: "cross_entropy.json",
  arcface: "arcface.json",
  cosface: "cosface.json",
  normface: "normface.json",
  combinedMargin: "combined_margin.json",
  marginHead: "margin_head.json",
};

describe("sharded losses match PyTorch (the unsharded fixtures, 3 shards)", () => {
  for (const b of backends) {
    describe(b.name, () => {
      for (const [name, file] of Object.entries(FIXTURES)) {
        it(name, async () => {
          const cases: FixtureCase[] = loadFixtures(file);
          for (const fc of cases) {
            const key = LOGIT_KEY[name];
            const full = (key ? fc.inputs[key] : fc.inputs.W) as Mat;
            const c = full.shape[key ? 1 : 0];
            const sizes = shardSizes(new Rng(c), c, Math.min(3, c));
            const got = await runSharded(b, name, fc.inputs, fc.options, sizes, fc.upstream);
            const loss = typeof got.loss === "number" ? got.loss : Array.from(got.loss);
            assertLossClose(loss as Any, fc.expected.loss as Any, `${fc.name} loss`);
            for (const [k, g] of Object.entries(got.grads)) {
              assertGradClose(g, fc.expected.grads[k] as Any, `${fc.name} grads.${k}`);
            }
          }
        });
      }
    });
  }
});

describe("mergeShardStats", () => {
  const rng = new Rng(77);
  const stats = (n: number, smooth: boolean): ShardStats => {
    const s = {
      max: Float64Array.from({ length: n }, () => rng.uniform(-50, 50)),
      sum: Float64Array.from({ length: n }, () => rng.uniform(0, 30)),
      target: Float64Array.from({ length: n }, () => rng.uniform(-5, 5)),
    };
    return smooth
      ? { ...s, below: Float64Array.from({ length: n }, () => rng.uniform(0, 100)), weightSum: rng.uniform(1, 9) }
      : s;
  };

  it("is the exact log-sum-exp merge (against a direct float64 sum)", () => {
    const list = [stats(4, false), stats(4, false), stats(4, false)];
    const m = mergeShardStats(list);
    for (let i = 0; i < 4; i++) {
      const M = Math.max(...list.map((s) => s.max[i]));
      assert.equal(m.max[i], M);
      const total = list.reduce((t, s) => t + s.sum[i] * Math.exp(s.max[i] - M), 0);
      assert.ok(Math.abs(m.sum[i] - total) <= 1e-15 * total);
      assert.equal(m.target[i], list[0].target[i] + list[1].target[i] + list[2].target[i]);
    }
  });

  it("is independent of the order and of the grouping (a tree all-reduce)", () => {
    for (const smooth of [false, true]) {
      const list = Array.from({ length: 7 }, () => stats(5, smooth));
      const flat = mergeShardStats(list);
      const reversed = mergeShardStats([...list].reverse());
      const tree = mergeShardStats([mergeShardStats(list.slice(0, 3)), mergeShardStats(list.slice(3))]);
      for (const other of [reversed, tree]) {
        assert.deepEqual(other.max, flat.max);
        const fields: ("sum" | "target" | "below")[] = smooth ? ["sum", "target", "below"] : ["sum", "target"];
        for (const f of fields) {
          const a = other[f] as Float64Array, e = flat[f] as Float64Array;
          for (let i = 0; i < 5; i++) assert.ok(Math.abs(a[i] - e[i]) <= 1e-13 * Math.max(1, Math.abs(e[i])), f);
        }
        if (smooth) assert.ok(Math.abs(other.weightSum! - flat.weightSum!) <= 1e-13 * flat.weightSum!);
      }
    }
  });

  it("refuses bad lists with named errors", async () => {
    await assertThrowsNamed(() => mergeShardStats([]), TypeError, "list", "non-empty");
    await assertThrowsNamed(() => mergeShardStats([{ max: [1] } as Any]), TypeError, "list[0].max", "Float64Array");
    await assertThrowsNamed(() => mergeShardStats([stats(3, false), stats(4, false)]), RangeError, "list[1].max", "3");
    await assertThrowsNamed(() => mergeShardStats([stats(3, true), stats(3, false)]), TypeError, "list[1].below");
    await assertThrowsNamed(() => mergeShardStats([stats(3, false), stats(3, true)]), TypeError, "list[1]", "below");
    // Malformed records: not 5 values per shard, a range outside [0, classes).
    const rec = (...r: number[]) => ({ ...stats(3, false), shards: Float64Array.from(r) });
    await assertThrowsNamed(() => mergeShardStats([rec(0, 1, 3, 7)]), RangeError, "list[0].shards", "5", "4");
    await assertThrowsNamed(
      () => mergeShardStats([rec(0, 1, 3, 7, 9), rec(2, 4, 3, 7, 9)]),
      RangeError,
      "list[1]",
      "[2, 4)",
    );
    await assertThrowsNamed(
      () => mergeShardStats([rec(0, 1, 3, 7, 9), rec(1, 3, 4, 7, 9)]),
      RangeError,
      "list[1]",
      "4",
    );
  });
});

describe("sharded losses: bad input", () => {
  for (const b of backends) {
    it(b.name, async () => {
      const s = (b.losses as Any).sharded;
      const rng = new Rng(5);
      const logits = randomMatrix(rng, 3, 2, 1), labels = [0, 4, 2];
      const ok = { offset: 1, classes: 5 };
      await assertThrowsNamed(() => s.crossEntropy.stats({ logits, labels }, {}), TypeError, "options.classes");
      await assertThrowsNamed(
        () => s.crossEntropy.stats({ logits, labels }, { classes: 5 }),
        TypeError,
        "options.offset",
      );
      await assertThrowsNamed(
        () => s.crossEntropy.stats({ logits, labels }, { offset: 4, classes: 5 }),
        RangeError,
        "options.offset",
        "[0, 3]",
        "4",
      );
      await assertThrowsNamed(
        () => s.crossEntropy.stats({ logits, labels: [0, 5, 1] }, ok),
        RangeError,
        "labels[1]",
        "[0, 5)",
      );
      await assertThrowsNamed(
        () => s.crossEntropy.stats({ logits, labels }, { ...ok, temperature: 1 }),
        TypeError,
        "temperature",
      );
      await assertThrowsNamed(() => s.crossEntropy.stats({ logits, labels }, { ...ok, out: {} }), TypeError, "out");
      await assertThrowsNamed(() => s.crossEntropy.stats({ logits, labels, W: logits }, ok), TypeError, "W");
      await assertThrowsNamed(
        () => s.crossEntropy.stats({ logits, labels }, { ...ok, weight: [1, 1] }),
        RangeError,
        "options.weight",
      );
      const stats = await s.crossEntropy.stats({ logits, labels }, ok);
      await assertThrowsNamed(
        () => s.crossEntropy.finish({ logits, labels }, { ...stats, sum: new Float64Array(2) }, ok),
        RangeError,
        "stats.sum",
        "3",
      );
      await assertThrowsNamed(
        () => s.crossEntropy.finish({ logits, labels }, stats, { ...ok, labelSmoothing: 0.1 }),
        TypeError,
        "stats.below",
      );
      await assertThrowsNamed(
        () => s.arcface.stats({ cos: logits, labels }, { ...ok, margin: 4 }),
        RangeError,
        "options.margin",
      );
      const x = randomMatrix(rng, 3, 4, 1), W = randomMatrix(rng, 2, 3, 1);
      await assertThrowsNamed(() => s.marginHead.stats({ x, W, labels }, ok), RangeError, "W");
      await assertThrowsNamed(
        () =>
          s.marginHead.stats({ x, W: randomMatrix(rng, 2, 4, 1), labels }, {
            ...ok,
            kind: "cosface",
            easyMargin: true,
          }),
        TypeError,
        "easyMargin",
      );
    });
  }
});

// Issue 19 item 5: the statistics carry each shard's record (its class range of C, a fingerprint of
// the batch and one of the options), so that the layouts that once gave a wrong loss silently
// (the example: unsharded 0.3022; overlapping shards [0, 2) + [1, 3) gave 0.4643, a missing
// shard 0, a shard merged twice 0.3569, another batch's statistics or another scale a wrong number)
// are refused with named errors, and the right layouts still give the unsharded loss.
describe("sharded losses refuse wrong shard layouts", () => {
  const labels = [0, 2];
  const full: Mat = { data: new Float32Array([2, 1, 0, 0.5, 1, 3]), shape: [2, 3] };
  /** Columns [a, b) of `m` (default: the example's logits) as a crossEntropy shard's inputs. */
  const cols = (a: number, b: number, m: Mat = full, ls: number[] = labels) => {
    const [n, c] = m.shape;
    const data = Float32Array.from(
      { length: n * (b - a) },
      (_, t) => m.data[Math.floor(t / (b - a)) * c + a + (t % (b - a))],
    );
    return { logits: { data, shape: [n, b - a] }, labels: ls };
  };
  const at = (offset: number, more: object = {}) => ({ offset, classes: 3, ...more });

  for (const b of backends) {
    it(b.name, async () => {
      const s = (b.losses as Any).sharded, ce = s.crossEntropy;
      const [s0, s1] = [cols(0, 1), cols(1, 3)];
      const [st0, st1] = [await ce.stats(s0, at(0)), await ce.stats(s1, at(1))];
      // The right layout, in a flat and in a tree merge: the unsharded loss.
      const want = (await (b.losses as Any).crossEntropy.forward({ logits: full, labels })).loss;
      for (const merged of [mergeShardStats([st0, st1]), mergeShardStats([mergeShardStats([st1]), st0])]) {
        const got = (await ce.finish(s0, merged, at(0))).loss + (await ce.finish(s1, merged, at(1))).loss;
        assertLossClose(got, want, "right layout", 1e-6);
        assert.ok(Math.abs(got - 0.3022) < 1e-4, `${got}`);
        // A few floats per shard, whatever N.
        assert.equal(merged.shards!.length, 2 * 5);
      }
      // Overlapping shards [0, 2) + [1, 3).
      const over = [await ce.stats(cols(0, 2), at(0)), await ce.stats(cols(1, 3), at(1))];
      await assertThrowsNamed(() => mergeShardStats(over), RangeError, "list", "[0, 2)", "[1, 3)", "overlapping");
      // A missing shard: [0, 1) finished alone (it merges: a tree's partial merge is a merge).
      const alone = mergeShardStats([st0]);
      await assertThrowsNamed(() => ce.finish(s0, alone, at(0)), RangeError, "stats", "[1, 3)", "missing");
      await assertThrowsNamed(() => ce.finish(s1, mergeShardStats([st1]), at(1)), RangeError, "[0, 1)", "missing");
      // One shard's statistics merged twice (flat, and through a tree).
      await assertThrowsNamed(() => mergeShardStats([st0, st1, st1]), RangeError, "[1, 3)", "merged twice");
      const twice = () => mergeShardStats([mergeShardStats([st0, st1]), st1]);
      await assertThrowsNamed(twice, RangeError, "list[0]", "list[1]", "merged twice");
      // Statistics of another batch of the same N: refused by the merge and by finish.
      const other = await ce.stats(cols(1, 3, full, [1, 1]), at(1));
      await assertThrowsNamed(() => mergeShardStats([st0, other]), RangeError, "list[1]", "batch");
      const foreign = mergeShardStats([await ce.stats(cols(0, 1, full, [1, 1]), at(0)), other]);
      await assertThrowsNamed(() => ce.finish(s0, foreign, at(0)), RangeError, "stats", "batch");
      // Shards with different options (arcface's scale), and finish with options other than the stats'.
      const cos: Mat = { data: new Float32Array([0.5, 0.1, -0.2, 0.3, 0.2, 0.7]), shape: [2, 3] };
      const [c0, c1] = [cols(0, 1, cos), cols(1, 3, cos)].map((x) => ({ cos: x.logits, labels }));
      const mixed = [await s.arcface.stats(c0, at(0, { scale: 64 })), await s.arcface.stats(c1, at(1, { scale: 30 }))];
      await assertThrowsNamed(() => mergeShardStats(mixed), RangeError, "list[1]", "options");
      const same = mergeShardStats([await s.arcface.stats(c0, at(0)), await s.arcface.stats(c1, at(1))]);
      await assertThrowsNamed(() => s.arcface.finish(c1, same, at(1, { scale: 30 })), RangeError, "stats", "options");
      await assertThrowsNamed(
        () => ce.finish(s0, mergeShardStats([st0, st1]), at(0, { reduction: "sum" })),
        RangeError,
        "options",
      );
      // The defaults given explicitly are the same options.
      const explicit = await ce.stats(s1, at(1, { reduction: "mean", ignoreIndex: -100, labelSmoothing: 0 }));
      assert.equal(
        (await ce.finish(s0, mergeShardStats([st0, explicit]), at(0))).loss,
        (await ce.finish(s0, mergeShardStats([st0, st1]), at(0))).loss,
      );
      // Another split of the same classes: [0, 2) cannot finish with the statistics of [0, 1) + [1, 3).
      const merged = mergeShardStats([st0, st1]);
      await assertThrowsNamed(
        () => ce.finish(cols(0, 2), merged, at(0)),
        RangeError,
        "stats",
        "[0, 2)",
        "[0, 1), [1, 3)",
      );
      // Statistics without their records.
      const { shards: _, ...bare } = merged;
      await assertThrowsNamed(() => ce.finish(s0, bare, at(0)), TypeError, "stats.shards", "Float64Array");
      await assertThrowsNamed(() => mergeShardStats([st0, { ...st1, shards: undefined }]), TypeError, "list[1].shards");
      // marginHead: x is replicated, so x of another batch with the same labels is refused too.
      const rng = new Rng(8);
      const x = randomMatrix(rng, 2, 4, 1), W = randomMatrix(rng, 3, 4, 1), x2 = randomMatrix(rng, 2, 4, 1);
      const h = { kind: "cosface", scale: 30 };
      const W0 = { data: W.data.slice(0, 4), shape: [1, 4] }, W1 = { data: W.data.slice(4), shape: [2, 4] };
      const hs = [
        await s.marginHead.stats({ x, W: W0, labels }, at(0, h)),
        await s.marginHead.stats({ x: x2, W: W1, labels }, at(1, h)),
      ];
      await assertThrowsNamed(() => mergeShardStats(hs), RangeError, "list[1]", "batch");
    });
  }

  it("the two-collective merge: the records all-gathered, finish accepts it", () => {
    const ce = wasm.sharded.crossEntropy;
    const shards = [cols(0, 1), cols(1, 3)], options = [at(0), at(1)];
    const stats = shards.map((x, k) => ce.stats(x as Any, options[k]));
    // MAX all-reduce of max, SUM of the rescaled sum and of target, an all-gather of the records.
    const max = stats[0].max.map((_, i) => Math.max(...stats.map((s) => s.max[i])));
    const sum = max.map((m, i) => stats.reduce((t, s) => t + s.sum[i] * Math.exp(s.max[i] - m), 0));
    const target = max.map((_, i) => stats.reduce((t, s) => t + s.target[i], 0));
    const shardsRecords = Float64Array.from(stats.flatMap((s) => [...s.shards!]));
    const byHand = { max, sum, target, shards: shardsRecords };
    const merged = mergeShardStats(stats);
    for (let k = 0; k < 2; k++) {
      assertLossClose(
        ce.finish(shards[k] as Any, byHand, options[k]).loss as number,
        ce.finish(shards[k] as Any, merged, options[k]).loss as number,
        `shard ${k}`,
        1e-12,
      );
    }
  });
});
