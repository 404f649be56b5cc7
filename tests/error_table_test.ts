// The documented error table (docs/LOSSES.md "Edge cases" and "Reductions and upstream
// gradients") held by every loss on every backend: one upstream check (a number, finite, of
// the right length), D >= 1 wherever an embedding width is taken, `alloc`'s shape of exactly
// two sizes, `init`'s note naming the options the backend ignores, and the float32 domains
// of every bounded option (`temperature`, `scale`, the loss weights, `gamma`, the margins,
// `softcap`): refused by name past them, finite on every backend at them.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { alloc, centerUpdate, hnmInit, init } from "../mod.ts";
import { definitions } from "../src/losses/mod.ts";
import { assertThrowsNamed } from "./helpers/assert.ts";
import { backends, webgpuMissing } from "./helpers/backends.ts";
import { Rng } from "./helpers/random.ts";
import {
  combinedMarginSpec,
  cosfaceSpec,
  cosineMarginSpecs,
  crossEntropySpec,
  distillationSpec,
  focalSpec,
  lsoftmaxSpec,
  marginHeadSpec,
  spherefaceSpec,
} from "./helpers/specs.ts";
import {
  centerRegularizationSpec,
  featureDiversitySpec,
  hnmContrastiveSpec,
  iclMoeSpec,
  mixOutputsSpec,
  physicsContrastiveSpec,
  physMoeSpec,
} from "./helpers/specs_moe.ts";
import { cases, isMetric } from "./helpers/wasm_cases.ts";
import { multiSimilaritySpec, ntXentSpec, proxyAnchorSpec, tripletMarginSpec } from "./helpers/specs_metric.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const CASES = cases().filter((cs) => !isMetric(cs) && !cs.spec.matrixOutput);
const N = 3;

/** Whether a loss takes `reduction` (its upstream is then one value per row with `"none"`). */
const hasReduction = (name: string) => {
  const d = (definitions as Record<string, { options: Any }>)[name];
  const options = d === undefined ? [] : typeof d.options === "function" ? d.options({}) : d.options;
  return options.includes("reduction");
};

/** Every number (and typed array value) in a result, nested. */
function numbers(r: unknown, into: number[] = []): number[] {
  if (typeof r === "number") into.push(r);
  else if (ArrayBuffer.isView(r)) into.push(...(r as Float32Array));
  else if (typeof r === "object" && r !== null) { for (const v of Object.values(r)) numbers(v, into); }
  return into;
}

for (const b of backends) {
  const lossOf = (name: string) => (b.losses as Any)[name];

  describe(`${b.name}: upstream gradients are checked by one rule`, () => {
    for (const cs of CASES) {
      it(`${cs.spec.name}`, async () => {
        const backward = (upstream: unknown, options: Any = {}) =>
          lossOf(cs.spec.name).backward(cs.inputs, options, upstream);
        await assertThrowsNamed(() => backward(NaN), RangeError, "upstream", "NaN");
        await assertThrowsNamed(() => backward(-Infinity), RangeError, "upstream", "-Infinity");
        await assertThrowsNamed(() => backward("1"), TypeError, "upstream", '"1"');
        if (!hasReduction(cs.spec.name)) return;
        const none = { reduction: "none" };
        await assertThrowsNamed(() => backward(["1", "x"], none), RangeError, "upstream", "2");
        await assertThrowsNamed(() => backward(["1", "x", "y"], none), TypeError, "upstream[0]", '"1"');
        await assertThrowsNamed(() => backward([1, NaN, 1], none), RangeError, "upstream[1]", "NaN");
        await assertThrowsNamed(() => backward(new Float32Array([1, 1, Infinity]), none), RangeError, "upstream[2]");
        await assertThrowsNamed(() => backward(2, none), TypeError, "upstream", "2");
        const r = await backward(Float64Array.from({ length: N }, (_, i) => i - 1), none);
        assert.ok(numbers(r).every(Number.isFinite));
      });
    }
  });

  describe(`${b.name}: D >= 1`, () => {
    it("featureDiversity refuses features of width 0", async () => {
      const features = [0, 1].map(() => ({ data: new Float32Array(0), shape: [N, 0] }));
      await assertThrowsNamed(() => lossOf("featureDiversity").forward({ features }), RangeError, "features[0]", "0");
    });
  });

  describe(`${b.name}: class weights are at most 1e6`, () => {
    for (const [spec, option] of [[crossEntropySpec, "weight"], [focalSpec, "alpha"]] as [Any, string][]) {
      it(`${spec.name}: ${option}`, async () => {
        const loss = lossOf(spec.name);
        const inputs = spec.random(new Rng(0), 5, 7, 1e4, {});
        const at = new Array(7).fill(1e6);
        await assertThrowsNamed(
          () => loss.valueAndGrad(inputs, { [option]: [...at.slice(1), 1.01e6] }),
          RangeError,
          `options.${option}[6]`,
          "1010000",
        );
        assert.ok(numbers(await loss.valueAndGrad(inputs, { [option]: at, reduction: "sum" })).every(Number.isFinite));
      });
    }
  });

  describe(`${b.name}: the domains of the bounded options`, () => {
    const temperatures = [distillationSpec, physicsContrastiveSpec, hnmContrastiveSpec, physMoeSpec, ntXentSpec];
    const scales = [...cosineMarginSpecs, marginHeadSpec];
    // [spec, option, the bound, just past it, far past it, other options (the margin head's kind)]
    type Extreme = [Any, string, number, number, number, Any?];
    const weights: [Any, string][] = [
      [featureDiversitySpec, "lambda"],
      [centerRegularizationSpec, "prototypeWeight"],
      [mixOutputsSpec, "distillWeight"],
      [mixOutputsSpec, "parallelWeight"],
      ...["lambdaScl", "lambdaHier", "lambdaReg", "prototypeWeight"].map((o): [Any, string] => [physMoeSpec, o]),
    ];
    const combined = { kind: "combinedMargin" };
    const extremes: Extreme[] = [
      ...temperatures.map((s): Extreme => [s, "temperature", 1e-6, 0.99e-6, 1e-300]),
      ...scales.map((s): Extreme => [s, "scale", 1e6, 1.01e6, 1e300]),
      ...weights.flatMap(([s, o]): Extreme[] => [[s, o, 1e6, 1.01e6, 1e300], [s, o, -1e6, -1.01e6, -1e300]]),
      [crossEntropySpec, "zLoss", 1e6, 1.01e6, 1e300],
      [spherefaceSpec, "lambda", 1e6, 1.01e6, 1e300],
      [lsoftmaxSpec, "beta", 1e6, 1.01e6, 1e300],
      ...[focalSpec, iclMoeSpec, physMoeSpec].map((s): Extreme => [s, "gamma", 100, 101, 1e300]),
      [cosfaceSpec, "margin", 2, 2.01, 1e30],
      [cosfaceSpec, "margin", -2, -2.01, -1e30],
      [marginHeadSpec, "margin", -2, -2.01, -1e30, { kind: "cosface" }],
      [combinedMarginSpec, "m3", 2, 2.01, 1e300],
      [combinedMarginSpec, "m3", -2, -2.01, -1e300],
      [combinedMarginSpec, "m1", 8, 8.01, 1e10],
      [marginHeadSpec, "m1", 8, 8.01, 1e10, combined],
      [combinedMarginSpec, "m2", Math.PI, 3.15, 1e300],
      [combinedMarginSpec, "m2", -Math.PI, -3.15, -1e300],
      [spherefaceSpec, "m", 8, 9, 1e9],
      [lsoftmaxSpec, "m", 8, 9, 1e9],
      [crossEntropySpec, "softcap", 1e9, 1.01e9, 1e300],
      [tripletMarginSpec, "margin", 4, 4.01, 1e300],
      [tripletMarginSpec, "margin", -4, -4.01, -1e300],
      ...([[multiSimilaritySpec, "alpha"], [multiSimilaritySpec, "beta"], [proxyAnchorSpec, "alpha"]] as [
        Any,
        string,
      ][])
        .flatMap(([s, o]): Extreme[] => [[s, o, 1e6, 1.01e6, 1e300], [s, o, 1e-6, 0.99e-6, 1e-300]]),
      [multiSimilaritySpec, "base", 2, 2.01, 1e300],
      [multiSimilaritySpec, "base", -2, -2.01, -1e300],
      [proxyAnchorSpec, "margin", 2, 2.01, 1e30],
      [proxyAnchorSpec, "margin", -2, -2.01, -1e30],
    ];
    for (const [spec, option, edge, past, far, extra = {}] of extremes) {
      it(`${spec.name}: ${option} past ${edge} is a RangeError, at it every value is finite`, async () => {
        const loss = lossOf(spec.name);
        const draw = (seed: number, scale: number) =>
          spec.random(new Rng(seed), 5, 7, scale, spec.name === "physicsContrastive" ? { threshold: 0.8 } : {});
        for (const bad of [past, far]) {
          await assertThrowsNamed(
            () => loss.valueAndGrad(draw(0, 1), { ...extra, [option]: bad }),
            RangeError,
            `options.${option}`,
            String(bad),
          );
        }
        const reductions = hasReduction(spec.name) ? ["mean", "sum", "none"] : [undefined];
        // Logits of 1e4 and cosines at and just past +-1 (the random problems' largest scale).
        for (const scale of [1, 1e4]) {
          for (const reduction of reductions) {
            for (let seed = 0; seed < 3; seed++) {
              const r = await loss.valueAndGrad(
                draw(seed, scale),
                reduction ? { ...extra, [option]: edge, reduction } : { ...extra, [option]: edge },
              );
              const bad = numbers(r).find((x) => !Number.isFinite(x));
              assert.equal(bad, undefined, `${spec.name} ${option} ${edge} scale ${scale} ${reduction}: ${bad}`);
            }
          }
        }
      });
    }
  });
}

describe("state functions and alloc", () => {
  it("centerUpdate refuses centres of width 0", async () => {
    const centers = { data: new Float32Array(0), shape: [2, 0] as const };
    const x = { data: new Float32Array(0), shape: [1, 0] as const };
    await assertThrowsNamed(() => centerUpdate(centers, x, [0]), RangeError, "centers", "0");
  });

  it("a size of the wrong type is a TypeError, one out of range a RangeError", async () => {
    await assertThrowsNamed(() => hnmInit("3" as Any, 2), TypeError, "classes", '"3"');
    await assertThrowsNamed(() => hnmInit(3, 1.5), RangeError, "dim", "1.5");
    await assertThrowsNamed(() => alloc(["2", 3] as Any), TypeError, "shape[0]", '"2"');
    await assertThrowsNamed(() => alloc([2, -3]), RangeError, "shape[1]", "-3");
  });

  it("alloc takes exactly [rows, cols]", async () => {
    await assertThrowsNamed(() => alloc([2, 3, 4] as Any), TypeError, "shape", "3");
    await assertThrowsNamed(() => alloc([2] as Any), TypeError, "shape", "1");
    await assertThrowsNamed(() => alloc(6 as Any), TypeError, "shape", "6");
    const m = alloc([2, 3]);
    assert.deepEqual([m.shape, m.data.length], [[2, 3], 6]);
    m.free();
  });
});

describe("init's note names the options its backend ignores", () => {
  it("threads on js, device and minGpuLogits on wasm", async () => {
    const l = await init({ backend: "js", threads: 2 });
    assert.match(l.note, /options\.threads/);
    l.dispose();
    const device = { queue: {} } as unknown as GPUDevice;
    const w = await init({ backend: "wasm", threads: 1, device, minGpuLogits: 10 });
    assert.match(w.note, /options\.device/);
    assert.match(w.note, /options\.minGpuLogits/);
    assert.doesNotMatch(w.note, /options\.threads/);
    w.dispose();
    const quiet = await init({ backend: "js" });
    assert.doesNotMatch(quiet.note, /ignore/);
    quiet.dispose();
  });

  it("threads and minGpuLogits on webgpu", { skip: webgpuMissing }, async () => {
    const l = await init({ backend: "webgpu", threads: 2, minGpuLogits: 10 });
    assert.match(l.note, /options\.threads/);
    assert.match(l.note, /options\.minGpuLogits/);
    l.dispose();
  });
});
