// `subcenters` (SPEC.md section 7, sub-center ArcFace, Deng et al. 2020) on every margin loss on
// cosines: arcface, cosface, normface, combinedMargin, adaface, curricularFace, magface. `cos` is
// [N, C K]; the class cosine is the maximum of its K columns after the clamp (ties to the smaller
// column), its gradient at that column alone. PyTorch float64 fixtures from
// tests/fixtures/generate_subcenters.py (PML's SubCenterArcFaceLoss's max over [N, C, K]), finite
// differences, agreement of every backend with the reference (ties and cosines of +-1 included),
// identities (subcenters 1 = today's loss; K equal columns = K = 1 with the gradient on the first),
// a GPU-resident `cos` on WebGPU, and the bad inputs as named errors.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { assertGradClose, assertLossClose, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { backends, lossOf, reference, webgpuMissing } from "./helpers/backends.ts";
import { loadFixtures } from "./helpers/fixtures.ts";
import { download, sharedDevice, upload } from "./helpers/gpu.ts";
import { init } from "../mod.ts";
import { numericGradient } from "./helpers/numeric.ts";
import { type Mat, randomLabels, Rng } from "./helpers/random.ts";
import { type LossSpec, randomCosines } from "./helpers/specs.ts";
import { type ErrorCase, errorSuite } from "./helpers/suite.ts";
import { runSharded } from "./helpers/sharded.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const NAMES = ["arcface", "cosface", "normface", "combinedMargin", "adaface", "curricularFace", "magface"] as const;
type Name = (typeof NAMES)[number];
const FILE = "subcenters/subcenters.json";

const gradsOf = (name: Name) => (name === "magface" ? ["cos", "norms"] : ["cos"]);
const dataOf = (g: Any): Float32Array => (g instanceof Float32Array ? g : g.data);

/** The inputs of `name` on cosines `cos` (N rows): its norms and state beside them. */
function inputsOf(name: Name, cos: Mat, labels: ArrayLike<number>, rng: Rng): Record<string, Any> {
  const n = cos.shape[0];
  const norms = Float32Array.from({ length: n }, () => (name === "magface" ? 12 : 5) + rng.uniform(0, 80));
  const inputs: Record<string, Any> = { cos, labels: Int32Array.from(labels) };
  if (name === "adaface" || name === "magface") inputs.norms = norms;
  if (name === "adaface") inputs.state = { mean: 30, std: 10 };
  if (name === "curricularFace") inputs.state = { t: 0.2 };
  return inputs;
}

/** A random problem with C classes of K sub-centres: cosines of `scale` (randomCosines's), 20% ignored rows. */
function problem(name: Name, rng: Rng, n: number, c: number, k: number, scale = 1): Record<string, Any> {
  return inputsOf(name, randomCosines(rng, n, c * k, scale), randomLabels(rng, n, c, 0.2, -100), rng);
}

describe("subcenters: PyTorch fixtures (tests/fixtures/generate_subcenters.py)", () => {
  const cases = loadFixtures(FILE);
  const raws = JSON.parse(readFileSync(new URL(`./fixtures/${FILE}`, import.meta.url), "utf8")).cases;
  for (const b of backends) {
    describe(b.name, () => {
      cases.forEach((fc, q) => {
        it(fc.name, async () => {
          const { kind, ...options } = fc.options as Any;
          const loss = lossOf(b, kind)!;
          const inputs: Record<string, Any> = raws[q].state ? { ...fc.inputs, state: raws[q].state } : { ...fc.inputs };
          const snap = snapshot({ inputs, options });
          const label = `${b.name} ${fc.name}`;
          const f = await loss.forward(inputs, options);
          assertLossClose(f.loss as Any, fc.expected.loss, `${label} loss`);
          for (const [part, v] of Object.entries(fc.expected.parts ?? {})) {
            assertLossClose(f[part], v, `${label} ${part}`);
          }
          for (const [key, v] of Object.entries((raws[q].nextState ?? {}) as Record<string, number>)) {
            assertLossClose(f.state[key], v, `${label} state.${key}`, 1e-12);
          }
          const g = await loss.backward(inputs, options, fc.upstream);
          assert.deepEqual(Object.keys(g).sort(), gradsOf(kind).sort());
          for (const key of gradsOf(kind)) {
            assertGradClose(dataOf(g[key]), fc.expected.grads[key] as Any, `${label} grads.${key}`);
          }
          assert.deepEqual([...g.cos.shape], [...(fc.inputs.cos as Any).shape], `${label}: grads.cos is [N, C K]`);
          assertUnchanged(snap, { inputs, options });
        });
      });
    });
  }
});

describe("subcenters: identities on every backend", () => {
  for (const name of NAMES) {
    for (const b of backends) {
      it(`${b.name} ${name}: subcenters 1 is today's loss; K equal columns are K = 1, the gradient on the first`, async () => {
        const loss = lossOf(b, name)!;
        const rng = new Rng(31);
        const one = problem(name, rng, 6, 9, 1);
        const o = { scale: 16 };
        const today = await loss.valueAndGrad(one, o);
        const same = await loss.valueAndGrad(one, { ...o, subcenters: 1 });
        assert.equal(same.loss, today.loss, "subcenters: 1");
        assert.deepEqual(same.grads.cos.data, today.grads.cos.data, "subcenters: 1 gradient");
        for (const K of [2, 5]) {
          const data = new Float32Array(6 * 9 * K);
          for (let t = 0; t < 6 * 9; t++) data.fill(one.cos.data[t], t * K, (t + 1) * K);
          const r = await loss.valueAndGrad({ ...one, cos: { data, shape: [6, 9 * K] } }, { ...o, subcenters: K });
          assertLossClose(r.loss as Any, today.loss as Any, `K = ${K} loss`, 1e-6);
          if (name === "magface") assertLossClose(r.grads.norms, today.grads.norms, `K = ${K} norms`, 1e-6);
          const g = r.grads.cos.data as Float32Array;
          for (let t = 0; t < 6 * 9; t++) {
            assert.ok(
              Math.abs(g[t * K] - today.grads.cos.data[t]) <= 1e-6 * Math.max(1, Math.abs(today.grads.cos.data[t])),
              `K = ${K} grads[${t * K}] ${g[t * K]} vs ${today.grads.cos.data[t]}`,
            );
            for (let q = 1; q < K; q++) assert.equal(g[t * K + q], 0, `K = ${K}: grads[${t * K + q}] is 0`);
          }
        }
      });
    }
  }
});

/**
 * A problem whose sub-centres are apart (the largest of each class at least 0.1 above the others:
 * finite differences stay on one side of the maximum), cosines inside [-0.9, 0.9].
 */
function apart(name: Name, rng: Rng, n: number, c: number, k: number): Record<string, Any> {
  const data = new Float32Array(n * c * k);
  for (let t = 0; t < n * c; t++) {
    const top = rng.uniform(-0.5, 0.9), win = rng.int(k);
    for (let q = 0; q < k; q++) data[t * k + q] = q === win ? top : top - 0.1 - 0.3 * rng.next();
  }
  return inputsOf(name, { data, shape: [n, c * k] }, randomLabels(rng, n, c, 0.2, -100), rng);
}

describe("subcenters: finite differences (float64 reference)", () => {
  // (curricularFace's loss jumps where a class cosine crosses its row's phi: its fixtures and agreement cover it)
  for (const name of NAMES.filter((x) => x !== "curricularFace")) {
    for (const options of [{ scale: 4, subcenters: 3 }, { scale: 2, subcenters: 2, reduction: "none" }] as Any[]) {
      it(`${name} ${JSON.stringify(options)}`, async () => {
        const inputs = apart(name, new Rng(7), 4, 5, options.subcenters);
        const loss = lossOf(reference, name)!;
        const up = options.reduction === "none" ? Float32Array.from({ length: 4 }, (_, i) => 0.5 + 0.3 * i) : 1.5;
        const g = await loss.backward(inputs, options, up);
        const scalar = async () => {
          const r = await loss.forward(inputs, options);
          if (typeof r.loss === "number") return (up as number) * r.loss;
          return (r.loss as Float32Array).reduce((t, v, i) => t + v * (up as Float32Array)[i], 0);
        };
        const num = await numericGradient(scalar, inputs.cos.data, 2 ** -8);
        const a = g.cos.data as Float32Array, scale = Math.max(1, ...num.map(Math.abs));
        const tol = options.reduction === "none" ? 1e-3 : 2e-5;
        for (let i = 0; i < num.length; i++) {
          assert.ok(Math.abs(a[i] - num[i]) <= tol * scale, `${name} grads.cos[${i}] ${a[i]} vs ${num[i]}`);
        }
      });
    }
  }
});

describe("subcenters: every backend agrees with the reference (ties, +-1 and beyond at scale 1e4)", () => {
  for (const name of NAMES) {
    it(name, async () => {
      for (const [c, k] of [[1, 2], [4, 3], [17, 2], [300, 5]]) {
        for (const n of [1, 3, 33]) {
          for (const scale of [1, 1e4]) {
            const inputs = problem(name, new Rng(c * 1000 + n * 10 + k), n, c, k, scale);
            const o: Any = { scale: 30, subcenters: k };
            if (name === "arcface" && c > 3) Object.assign(o, { interTopK: 2, interclassFilteringThreshold: 0.7 });
            if (name === "cosface") o.interclassFilteringThreshold = 0.5;
            const ref = await lossOf(reference, name)!.valueAndGrad(inputs, o);
            for (const b of backends.slice(1)) {
              const got = await lossOf(b, name)!.valueAndGrad(inputs, o);
              const label = `${name} ${b.name} [${n}, ${c} x ${k}] scale ${scale}`;
              assertLossClose(got.loss as Any, ref.loss as Any, `${label} loss`);
              for (const key of gradsOf(name)) {
                assertGradClose(dataOf(got.grads[key]), dataOf(ref.grads[key]), `${label} grads.${key}`);
              }
            }
          }
        }
      }
    });
  }
});

describe("subcenters: edges on every backend", () => {
  for (const b of backends) {
    it(`${b.name}: a class whose every sub-centre ties sends its gradient to its first column; +-1 and beyond`, async () => {
      // row 0: class 0 (the label) all 0.5, class 1 all 0.25; row 1: class 1 = [1, 1.5] (the bound first: it
      // takes the gradient), class 0 = [1.25, 1] (beyond first: it wins, gradient 0); N = 2, C = 3, K = 2
      const cos = { data: Float32Array.of(0.5, 0.5, 0.25, 0.25, -1, -1, 1.25, 1, 1, 1.5, 0.1, -0.2), shape: [2, 6] };
      const g = (await lossOf(b, "arcface")!.backward({ cos, labels: [0, 2] }, { scale: 8, subcenters: 2 })).cos.data;
      assert.ok(
        g[0] !== 0 && g[1] === 0 && g[2] !== 0 && g[3] === 0 && g[4] !== 0 && g[5] === 0,
        `row 0: ${g.slice(0, 6)}`,
      );
      assert.ok(g[6] === 0 && g[7] === 0 && g[8] !== 0 && g[9] === 0, `row 1: ${g.slice(6)}`);
      for (const x of g) assert.ok(Number.isFinite(x));
    });
    it(`${b.name}: the first NaN column wins its class (the rule of every kernel, marginHead's included)`, async () => {
      // row 0: class 0 [0.2, NaN, NaN] (column 1 wins), class 1 [NaN, 0.9, NaN] (column 3), class 2 (the
      // label) [0.1, 0.3, -0.5] (column 7); row 1 finite. The gradient is 0 off the winners.
      const cos = {
        data: Float32Array.of(
          0.2,
          NaN,
          NaN,
          NaN,
          0.9,
          NaN,
          0.1,
          0.3,
          -0.5,
          0.5,
          0.2,
          0.1,
          0.3,
          0.4,
          0.2,
          0.1,
          0.6,
          0.2,
        ),
        shape: [2, 9],
      };
      const o = { scale: 8, subcenters: 3, reduction: "none" };
      const r = await lossOf(b, "arcface")!.valueAndGrad({ cos, labels: [2, 0] }, o);
      const g = r.grads.cos.data as Float32Array;
      const won = [...g.subarray(0, 9)].flatMap((v, q) => (v === 0 ? [] : [q]));
      assert.deepEqual(won, [1, 3, 7], `row 0's winners: ${g.subarray(0, 9)}`);
      assert.ok(Number.isNaN((r.loss as Float32Array)[0]), "row 0's loss is NaN");
      assert.ok(Number.isFinite((r.loss as Float32Array)[1]), "row 1's loss is finite");
    });
  }
});

describe("subcenters: a GPU-resident cos on WebGPU", { skip: webgpuMissing }, () => {
  for (const name of ["arcface", "cosface", "normface", "combinedMargin"] as const) {
    it(`${name}: the values of host cosines, the gradient [N, C K] on the GPU`, async () => {
      const l = await init({ backend: "webgpu", device: await sharedDevice() }) as Any;
      const inputs = problem(name, new Rng(5), 9, 6, 3, 1e4);
      const o = { scale: 16, subcenters: 3, ...(name === "normface" ? {} : { interclassFilteringThreshold: 0.6 }) };
      const host = await l[name].valueAndGrad(inputs, o);
      const gpu = await l[name].valueAndGrad({ ...inputs, cos: await upload(inputs.cos) }, o);
      assertLossClose(gpu.loss as Any, host.loss as Any, `${name} loss`, 1e-6);
      assert.deepEqual([...gpu.grads.cos.shape], [9, 18]);
      assertGradClose(await download(gpu.grads.cos), host.grads.cos.data, `${name} grads.cos`, 1e-6);
      l.dispose();
    });
  }
});

/** The bad inputs of `subcenters` (a valid problem: cos [3, 4], labels [0, 1, 1], K = 2). */
function errorCases(name: Name): ErrorCase[] {
  const make = () => inputsOf(name, randomCosines(new Rng(3), 3, 4), [0, 1, 1], new Rng(4));
  const bad = (what: string, value: unknown, type: typeof RangeError | typeof TypeError, includes: string[]) => ({
    name: `subcenters ${what}`,
    inputs: make,
    options: { subcenters: value },
    type,
    includes,
  });
  return [
    bad("0", 0, RangeError, ["options.subcenters", ">= 1", "0"]),
    bad("-2", -2, RangeError, ["options.subcenters", "-2"]),
    bad("1.5", 1.5, TypeError, ["options.subcenters", "integer", "1.5"]),
    bad("NaN", NaN, TypeError, ["options.subcenters", "NaN"]),
    bad("a string", "2", TypeError, ["options.subcenters", '"2"']),
    bad("not dividing the columns", 3, RangeError, ["cos", "options.subcenters = 3", "got 4"]),
    {
      name: "a label >= C (C = columns / K)",
      inputs: () => ({ ...make(), labels: Int32Array.of(0, 2, 1) }),
      options: { subcenters: 2 },
      type: RangeError,
      includes: ["labels[1]", "[0, 2)", "2"],
    },
    {
      name: "out.cos of [N, C] (not [N, C K])",
      inputs: make,
      options: { subcenters: 2, out: { cos: { data: new Float32Array(6), shape: [3, 2] } } },
      methods: ["backward", "valueAndGrad"],
      type: RangeError,
      includes: ["options.out.cos"],
    },
  ];
}

for (const name of NAMES) {
  describe(`subcenters: ${name}`, () => errorSuite({ name } as LossSpec, errorCases(name)));
}

describe("subcenters: the class-sharded forms (losses.sharded) equal the unsharded loss", () => {
  for (const name of ["arcface", "cosface", "normface", "combinedMargin"] as const) {
    for (const b of backends) {
      it(`${b.name} ${name}: shards of 2, 1 and 4 classes of 3 sub-centres`, async () => {
        const inputs = problem(name, new Rng(41), 9, 7, 3, 1e4);
        for (const o of [{ scale: 16, subcenters: 3 }, { subcenters: 3, reduction: "none" }] as Any[]) {
          const up = o.reduction === "none" ? Float32Array.from({ length: 9 }, (_, i) => i - 4) : 0.5;
          const whole = await lossOf(b, name)!.forward(inputs, o);
          const g = await lossOf(b, name)!.backward(inputs, o, up);
          const s = await runSharded(b, name, inputs, o, [2, 1, 4], up);
          assertLossClose(s.loss as Any, whole.loss as Any, `${b.name} ${name} sharded loss`);
          assertGradClose(s.grads.cos.data, g.cos.data, `${b.name} ${name} sharded grads.cos`);
        }
      });
    }
  }
});

describe("subcenters: wasm on 2 threads (each with its own scratch)", () => {
  it("arcface and its shards with K = 3 over rows split between the threads agree with the reference", async () => {
    const l = (await init({ backend: "wasm", threads: 2 })) as Any;
    const inputs = problem("arcface", new Rng(77), 64, 2000, 3, 1e4);
    const o = { scale: 30, subcenters: 3, interclassFilteringThreshold: 0.8 };
    const ref = await lossOf(reference, "arcface")!.valueAndGrad(inputs, o);
    const got = await l.arcface.valueAndGrad(inputs, o);
    assertLossClose(got.loss, ref.loss as Any, "threads loss");
    assertGradClose(got.grads.cos.data, ref.grads.cos.data, "threads grads.cos");
    const s = await runSharded({ name: "wasm threads", losses: l }, "arcface", inputs, { scale: 30, subcenters: 3 }, [
      1500,
      500,
    ]);
    const whole = await lossOf(reference, "arcface")!.valueAndGrad(inputs, { scale: 30, subcenters: 3 });
    assertLossClose(s.loss as Any, whole.loss as Any, "threads sharded loss");
    assertGradClose(s.grads.cos.data, whole.grads.cos.data, "threads sharded grads.cos");
    l.dispose();
  });
});
