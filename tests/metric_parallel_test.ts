// The metric-learning staples (ntXent, tripletMargin, multiSimilarity, proxyAnchor) on the
// WebAssembly kernel (assembly/metric.ts) with nearly parallel rows: every row (and proxy) within
// 0.01 or 0.001 of one direction or of its class's, at norms from 0.5 to 2, and a 32 x 64
// proxyAnchor batch at alpha 1e4 (tests/fixtures/generate_metric_parallel.py). There the
// normalisation's backward keeps 1/100 to 1/1000 of the gradient w.r.t. the normalised rows: the
// products formed in full from float32 normalised rows and then projected were off by up to 1.1e-4
// of the largest element here (SPEC's bound is 1e-5); the kernel forms a row's product relative to
// its own direction where it has a near pair (`metric_relative`). Against the PyTorch float64
// fixtures within SPEC's bound; the float64 reference backend too. (WebGPU: the same fixtures in
// tests/webgpu_metric_parallel_test.ts.)
import { describe, it } from "node:test";
import { js, wasm } from "../cpu.ts";
import { loadFixtures } from "./helpers/fixtures.ts";
import { metricSpecs } from "./helpers/specs_metric.ts";
import { checkFixtureCase } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const cases = loadFixtures("metric_parallel.json");
const specOf = (name: string) => metricSpecs.find((s) => name.startsWith(`${s.name}_`))!;

describe("metric losses on nearly parallel rows, CPU backends (tests/fixtures/metric_parallel.json)", () => {
  for (const [name, losses] of [["js", js], ["wasm", wasm]] as const) {
    it(`${name} matches PyTorch within SPEC's bound (${cases.length} cases)`, async () => {
      for (const fc of cases) {
        const spec = specOf(fc.name);
        await checkFixtureCase(spec, (losses as Any)[spec.name], fc, `${name} ${fc.name}`);
      }
    });
  }
});
