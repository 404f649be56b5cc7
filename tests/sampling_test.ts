// The seeded samplers and the margin warm-up of SPEC §7 (src/sampling.ts, src/schedules.ts):
// elasticMargins, partialFcSample and marginWarmup against tests/fixtures/sampling/sampling.json, written
// by an independent Python implementation of the documented generator
// (tests/fixtures/generate_sampling.py) and wespeaker's MarginScheduler; then their laws (the
// draws' moments, the sample's contents, purity) and their named errors.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import * as cpu from "../cpu.ts";
import * as edge from "../edge.ts";
import * as mod from "../mod.ts";
import { generator, ln } from "../src/sampling.ts";
import { assertThrowsNamed } from "./helpers/assert.ts";

const { elasticMargins, partialFcSample, marginWarmup } = mod;
const fixtures = JSON.parse(readFileSync(new URL("./fixtures/sampling/sampling.json", import.meta.url), "utf8"));

describe("elasticMargins", () => {
  it("matches the independent implementation of the generator (to a float32 ulp)", () => {
    for (const c of fixtures.elastic) {
      const got = elasticMargins(c.n, { mean: c.mean, std: c.std, seed: c.seed });
      assert.ok(got instanceof Float32Array);
      assert.equal(got.length, c.n);
      for (let i = 0; i < c.n; i++) {
        const tol = 2 * 2 ** -23 * Math.max(Math.abs(c.values[i]), 1e-30);
        assert.ok(Math.abs(got[i] - c.values[i]) <= tol, `seed ${c.seed} [${i}]: ${got[i]} vs ${c.values[i]}`);
      }
    }
  });

  it("draws N(mean, std^2): moments of 200,000 draws, std 0 gives the mean, n 0 an empty array", () => {
    const n = 200_000, mean = 0.5, std = 0.05;
    const m = elasticMargins(n, { mean, std, seed: 3 });
    let s = 0, s2 = 0, beyond = 0;
    for (const x of m) {
      s += x;
      s2 += (x - mean) ** 2;
      if (Math.abs(x - mean) > 2 * std) beyond++;
    }
    assert.ok(Math.abs(s / n - mean) < 5 * std / Math.sqrt(n), `mean ${s / n}`);
    assert.ok(Math.abs(Math.sqrt(s2 / n) / std - 1) < 0.01, `std ${Math.sqrt(s2 / n)}`);
    assert.ok(Math.abs(beyond / n - 0.0455) < 0.003, `share beyond 2 std: ${beyond / n}`);
    assert.deepEqual([...elasticMargins(5, { mean: 0.35, std: 0, seed: 1 })], new Array(5).fill(Math.fround(0.35)));
    assert.equal(elasticMargins(0, { mean: 0.5, std: 0.05, seed: 1 }).length, 0);
  });

  it("is pure: the same seed gives the same array, another seed another, from every entry point", () => {
    const o = { mean: 0.5, std: 0.05, seed: 12 };
    const a = elasticMargins(9, o);
    assert.deepEqual(cpu.elasticMargins(9, o), a);
    assert.deepEqual(edge.elasticMargins(9, o), a);
    assert.notDeepEqual(elasticMargins(9, { ...o, seed: 13 }), a);
    assert.deepEqual(elasticMargins(8, o), a.subarray(0, 8), "a prefix of a longer draw");
    assert.deepEqual(o, { mean: 0.5, std: 0.05, seed: 12 });
  });

  it("refuses bad arguments with named errors", async () => {
    const ok = { mean: 0.5, std: 0.05, seed: 1 };
    await assertThrowsNamed(() => elasticMargins(-1, ok), RangeError, "n", "-1");
    await assertThrowsNamed(() => elasticMargins(2.5, ok), RangeError, "n", "2.5");
    await assertThrowsNamed(() => elasticMargins("3" as never, ok), TypeError, "n", '"3"');
    await assertThrowsNamed(() => elasticMargins(3, undefined as never), TypeError, "options");
    await assertThrowsNamed(() => elasticMargins(3, { ...ok, std: -0.1 }), RangeError, "options.std", "-0.1");
    await assertThrowsNamed(() => elasticMargins(3, { ...ok, mean: NaN }), RangeError, "options.mean", "NaN");
    await assertThrowsNamed(() => elasticMargins(3, { mean: 0.5, std: 0.05 } as never), TypeError, "options.seed");
    await assertThrowsNamed(() => elasticMargins(3, { ...ok, seed: 1.5 }), RangeError, "options.seed", "1.5");
    await assertThrowsNamed(() => elasticMargins(3, { ...ok, seed: 2 ** 32 }), RangeError, "options.seed");
    await assertThrowsNamed(() => elasticMargins(3, { ...ok, sigma: 1 } as never), TypeError, '"sigma"', "std");
  });
});

describe("partialFcSample", () => {
  it("matches the independent implementation of the generator", () => {
    for (const c of fixtures.partialFc) {
      const got = partialFcSample(c.labels, c.classes, { rate: c.rate, seed: c.seed });
      assert.ok(got instanceof Int32Array);
      assert.deepEqual([...got], c.expected, JSON.stringify({ ...c, expected: undefined }));
    }
  });

  it("holds every distinct label and ceil(rate C) classes in all, sorted and distinct; rate 1 is every class", () => {
    for (let seed = 0; seed < 40; seed++) {
      const c = 37 + seed, labels = Array.from({ length: 9 }, (_, i) => (i * 7 + seed) % c);
      labels[3] = -5;
      const rate = 0.05 + (seed % 10) / 10;
      const got = partialFcSample(labels, c, { rate, seed, ignoreIndex: -5 });
      const distinct = new Set(labels.filter((y) => y !== -5));
      for (const y of distinct) assert.ok(got.includes(y), `label ${y}`);
      assert.equal(got.length, Math.max(distinct.size, Math.ceil(rate * c - 1e-9)));
      for (let i = 1; i < got.length; i++) assert.ok(got[i - 1] < got[i]);
      assert.ok(got[0] >= 0 && got[got.length - 1] < c);
    }
    assert.deepEqual([...partialFcSample([1], 6, { rate: 1, seed: 0 })], [0, 1, 2, 3, 4, 5]);
    assert.equal(partialFcSample([], 10, { rate: 0.3, seed: 0 }).length, 3, "0.3 of 10 classes is 3");
  });

  it("draws the other classes uniformly (counts over 4,000 seeds)", () => {
    const c = 20, counts = new Float64Array(c), seeds = 4000;
    for (let seed = 0; seed < seeds; seed++) for (const j of partialFcSample([0], c, { rate: 0.25, seed })) counts[j]++;
    assert.equal(counts[0], seeds);
    const expected = seeds * 4 / 19; // 4 of the 19 other classes each time
    for (let j = 1; j < c; j++) assert.ok(Math.abs(counts[j] - expected) < 5 * Math.sqrt(expected), `class ${j}`);
  });

  it("never changes the caller's labels; the same call twice gives the same sample", () => {
    const labels = new Int32Array([4, 2, 9]);
    const a = partialFcSample(labels, 50, { rate: 0.2, seed: 8 });
    assert.deepEqual(partialFcSample(labels, 50, { rate: 0.2, seed: 8 }), a);
    assert.deepEqual(cpu.partialFcSample(labels, 50, { rate: 0.2, seed: 8 }), a);
    assert.deepEqual([...labels], [4, 2, 9]);
  });

  it("refuses bad arguments with named errors", async () => {
    const ok = { rate: 0.5, seed: 1 };
    await assertThrowsNamed(() => partialFcSample([0, 10], 10, ok), RangeError, "labels[1]", "[0, 10)", "10");
    await assertThrowsNamed(() => partialFcSample("1" as never, 10, ok), TypeError, "labels");
    await assertThrowsNamed(() => partialFcSample([0], 0, ok), RangeError, "classes", "0");
    await assertThrowsNamed(() => partialFcSample([0], 2.5, ok), RangeError, "classes", "2.5");
    await assertThrowsNamed(() => partialFcSample([0], 10, { ...ok, rate: 0 }), RangeError, "options.rate", "(0, 1]");
    await assertThrowsNamed(() => partialFcSample([0], 10, { ...ok, rate: 1.5 }), RangeError, "options.rate", "1.5");
    await assertThrowsNamed(() => partialFcSample([0], 10, { rate: 0.5 } as never), TypeError, "options.seed");
    await assertThrowsNamed(() => partialFcSample([0], 10, { ...ok, seed: -1 }), RangeError, "options.seed", "-1");
    await assertThrowsNamed(() => partialFcSample([0], 10, { ...ok, sampleRate: 1 } as never), TypeError, "sampleRate");
  });
});

describe("marginWarmup", () => {
  it("follows SPEC's formula; within 0.1% of the range of wespeaker's MarginScheduler (its documented difference)", () => {
    for (const c of fixtures.warmup) {
      const o = { start: c.start, end: c.end, from: c.from, to: c.to, curve: c.curve };
      const got = marginWarmup(c.step, o);
      assert.ok(Math.abs(got - c.spec) <= 1e-12, `${JSON.stringify(c)}: ${got}`);
      assert.ok(Math.abs(got - c.wespeaker) <= 1.001e-3 * Math.abs(c.to - c.from), `${JSON.stringify(c)}`);
      assert.equal(cpu.marginWarmup(c.step, o), got);
    }
  });

  it("is monotone from `from` to `to` and continuous at both ends (defaults from 0, to 0.2, exp)", () => {
    const o = { start: 10, end: 20 };
    let last = -Infinity;
    for (let s = 0; s <= 30; s += 0.25) {
      const m = marginWarmup(s, o);
      assert.ok(m >= last, `step ${s}`);
      last = m;
    }
    assert.equal(marginWarmup(10, o), 0);
    assert.ok(Math.abs(marginWarmup(20 - 1e-9, o) - 0.2) < 1e-9);
    assert.equal(marginWarmup(20, o), 0.2);
    assert.ok(marginWarmup(12, o) > marginWarmup(12, { ...o, curve: "linear" }), "exp grows faster first");
  });

  it("refuses bad arguments with named errors", async () => {
    await assertThrowsNamed(() => marginWarmup(1, { start: 5, end: 5 }), RangeError, "options.end", "(5, inf)", "5");
    await assertThrowsNamed(() => marginWarmup(1, { start: 5, end: 2 }), RangeError, "options.end", "2");
    await assertThrowsNamed(() => marginWarmup(1, { end: 2 } as never), TypeError, "options.start");
    await assertThrowsNamed(() => marginWarmup(1, undefined as never), TypeError, "options");
    await assertThrowsNamed(() => marginWarmup(-1, { start: 0, end: 2 }), RangeError, "step", "-1");
    await assertThrowsNamed(() => marginWarmup(NaN, { start: 0, end: 2 }), RangeError, "step", "NaN");
    await assertThrowsNamed(() => marginWarmup(1, { start: 0, end: 2, to: Infinity }), RangeError, "options.to");
    await assertThrowsNamed(
      () => marginWarmup(1, { start: 0, end: 2, curve: "cosine" as never }),
      RangeError,
      "options.curve",
      '"cosine"',
    );
    await assertThrowsNamed(() => marginWarmup(1, { start: 0, end: 2, final: 1 } as never), TypeError, '"final"');
  });
});

describe("the generator's parts", () => {
  it("ln is within 2 ulp of Math.log from subnormals to the largest double", () => {
    const rng = generator(99);
    const xs = [
      5e-324,
      2.2e-308,
      1e-300,
      0.5,
      Math.SQRT1_2,
      1 - 2 ** -53,
      1,
      1 + 2 ** -52,
      Math.SQRT2,
      2,
      Math.E,
      1e300,
    ];
    for (let i = 0; i < 20000; i++) xs.push(2 ** (rng.next() * 2000 - 1000) * (1 + rng.next()));
    for (const x of xs) {
      const got = ln(x), want = Math.log(x);
      assert.ok(Math.abs(got - want) <= 2 * 2 ** -52 * Math.max(Math.abs(want), 1), `ln(${x}): ${got} vs ${want}`);
    }
    assert.equal(ln(1), 0);
  });

  it("uniform draws lie in [0, 1) with mean 1/2", () => {
    const rng = generator(0);
    let s = 0;
    for (let i = 0; i < 100000; i++) {
      const u = rng.next();
      assert.ok(u >= 0 && u < 1);
      s += u;
    }
    assert.ok(Math.abs(s / 100000 - 0.5) < 0.005);
  });
});
