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
import { assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { loadFixtures } from "./helpers/fixtures.ts";
import { Rng, seedOf } from "./helpers/random.ts";
import { metricSpecs } from "./helpers/specs_metric.ts";
import { centerRegularizationSpec } from "./helpers/specs_moe.ts";
import { checkFixtureCase } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const cases = loadFixtures("metric_parallel.json");
const specOf = (name: string) => metricSpecs.find((s) => name.startsWith(`${s.name}_`))!;
// centerRegularization's centres 0.01 and 0.001 apart (the same generator): its gradient w.r.t.
// the normalised centres, sum_j M_cj c^_j, is as nearly parallel to c^_c.
const centerCases = loadFixtures("center_parallel.json");

describe("metric losses on nearly parallel rows, CPU backends (tests/fixtures/metric_parallel.json)", () => {
  for (const [name, losses] of [["js", js], ["wasm", wasm]] as const) {
    it(`${name} matches PyTorch within SPEC's bound (${cases.length} cases)`, async () => {
      for (const fc of cases) {
        const spec = specOf(fc.name);
        await checkFixtureCase(spec, (losses as Any)[spec.name], fc, `${name} ${fc.name}`);
      }
    });
    it(`${name}: centerRegularization's nearly parallel centres (${centerCases.length} cases)`, async () => {
      for (const fc of centerCases) {
        await checkFixtureCase(
          centerRegularizationSpec,
          (losses as Any).centerRegularization,
          fc,
          `${name} ${fc.name}`,
        );
      }
    });
  }
});

/**
 * n rows about one direction u: s_i (u + eps e_i), e_i normal, s_i in [0.5, 2] (the generator's
 * `near_rows`); rows with a zero in `zero` are zero rows.
 */
function nearRows(rng: Rng, u: number[], n: number, eps: number, zero: number[] = []) {
  const d = u.length, data = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    if (zero.includes(i)) continue;
    const s = rng.uniform(0.5, 2);
    for (let k = 0; k < d; k++) data[i * d + k] = s * (u[k] + eps * rng.normal());
  }
  return { data, shape: [n, d] as [number, number] };
}

// Widths that are not a multiple of the kernel's eight float64 lanes, proxyAnchor over two chunks
// of 2,048 proxies (near the rows in the first only), and a zero row among near ones: the WebAssembly kernel against the float64
// reference backend (itself against PyTorch above) within SPEC's bound.
describe("metric losses on nearly parallel rows, wasm against the float64 reference", () => {
  for (const [name, d, c] of [["ntXent", 13, 0], ["multiSimilarity", 21, 0], ["proxyAnchor", 11, 2100]] as const) {
    it(`${name}, B = 24, D = ${d}${c ? `, C = ${c}` : ""}, rows 0.001 apart`, () => {
      const rng = new Rng(seedOf(`metric_parallel ${name} ${d}`));
      const u = Array.from({ length: d }, () => rng.normal()), b = 24;
      const labels = Int32Array.from({ length: b }, (_, i) => i % 3);
      const inputs: Any = { f: nearRows(rng, u, b, 1e-3, [5]), labels };
      if (c) {
        // The second chunk's proxies point anywhere: its rows' products are the plain ones there.
        inputs.proxies = nearRows(rng, u, c, 1e-3);
        for (let k = 2048 * d; k < c * d; k++) inputs.proxies.data[k] = rng.normal();
      }
      const want = (js as Any)[name].valueAndGrad(inputs, {});
      const got = (wasm as Any)[name].valueAndGrad(inputs, {});
      assertLossClose(got.loss, want.loss, `${name} loss`);
      for (const k of Object.keys(want.grads)) assertGradClose(got.grads[k], want.grads[k].data, `${name} grads.${k}`);
      // An upstream gradient of 1.5 (backward's third argument; valueAndGrad takes none).
      const wantUp = (js as Any)[name].backward(inputs, {}, 1.5);
      const gotUp = (wasm as Any)[name].backward(inputs, {}, 1.5);
      for (const k of Object.keys(wantUp)) assertGradClose(gotUp[k], wantUp[k].data, `${name} backward(1.5).${k}`);
    });
  }
});

// A trained batch: each class's 8 rows 0.01 apart about its own direction, the classes far apart,
// so each row has 7 near columns among 128 and the kernel takes the near pairs out of the float32
// products and adds them relative to the row's direction (`metric_near_split`, `metric_near`)
// rather than forming each flagged row in float64 over the whole batch (dropping the near pairs'
// terms fails here); with 24 rows about one direction (more near columns than a row lists) the
// flagged rows whole. Against the float64 reference backend within SPEC's bound. The precision the
// near pairs need is the fixtures' above: their collapsed batches of 10-12 rows take the split.
describe("metric losses on classes of nearly parallel rows, wasm against the float64 reference", () => {
  for (const name of ["ntXent", "multiSimilarity"] as const) {
    for (const crowd of [0, 24]) {
      it(`${name}, B = 128, D = 32, classes of 8 rows 0.01 apart${crowd ? `, ${crowd} rows about one direction` : ""}`, () => {
        const rng = new Rng(seedOf(`metric_classes ${name} ${crowd}`));
        const b = 128, d = 32, f = new Float32Array(b * d);
        const one = Array.from({ length: d }, () => rng.normal());
        for (let k = 0; k < b / 8; k++) {
          const u = k < crowd / 8 ? one : Array.from({ length: d }, () => rng.normal());
          f.set(nearRows(rng, u, 8, 1e-2).data, 8 * k * d);
        }
        const inputs = { f: { data: f, shape: [b, d] }, labels: Int32Array.from({ length: b }, (_, i) => i >> 3) };
        const want = (js as Any)[name].valueAndGrad(inputs, {});
        const got = (wasm as Any)[name].valueAndGrad(inputs, {});
        assertLossClose(got.loss, want.loss, `${name} loss`);
        assertGradClose(got.grads.f, want.grads.f.data, `${name} grads.f`);
      });
    }
  }
});
