// The metric-learning staples of SPEC §8 (docs/LOSSES.md "Contrastive and metric-learning
// staples"): ntXent, tripletMargin, multiSimilarity and proxyAnchor against PyTorch
// float64 fixtures following pytorch-metric-learning (tests/fixtures/generate_metric.py),
// the float64 reference, finite differences, identities and SPEC's edge cases, on every
// backend.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { assertFinite, assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { backends, lossOf, missing, webgpuMissing } from "./helpers/backends.ts";
import { download, sharedDevice, upload } from "./helpers/gpu.ts";
import { init } from "../mod.ts";
import { commonOptionErrors, matrixErrors, numberOptionErrors, upstreamErrors } from "./helpers/errors.ts";
import { randomMatrix, Rng } from "./helpers/random.ts";
import type { LossSpec } from "./helpers/specs.ts";
import { multiSimilaritySpec, ntXentSpec, proxyAnchorSpec, tripletMarginSpec } from "./helpers/specs_metric.ts";
import { agreementSuite, type ErrorCase, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;
type Mat = { data: Float32Array; shape: [number, number] };

/** A fresh valid 3 x 4 problem (the error builders break one thing in it). */
const small = () => ({ f: randomMatrix(new Rng(3), 3, 4), labels: [0, 0, 1] });
const smallProxy = () => ({ ...small(), proxies: randomMatrix(new Rng(4), 2, 4) });

/** Labels broken in every way these losses can see (any integer >= 0 without proxies). */
function labelCases(make: () => Record<string, Any>, bound?: number): ErrorCase[] {
  const with_ = (labels: unknown) => () => ({ ...make(), labels });
  const cases: ErrorCase[] = [
    { name: "labels missing", inputs: with_(undefined), type: TypeError, includes: ["labels", "undefined"] },
    { name: "labels a Float32Array", inputs: with_(new Float32Array(3)), type: TypeError, includes: ["labels"] },
    { name: "labels of another length", inputs: with_([0, 1]), type: RangeError, includes: ["labels", "2"] },
    { name: "a negative label", inputs: with_([0, -1, 1]), type: RangeError, includes: ["labels[1]", "-1"] },
    { name: "a fractional label", inputs: with_([0, 0.5, 1]), type: RangeError, includes: ["labels[1]", "0.5"] },
  ];
  if (bound !== undefined) {
    cases.push({
      name: "a label past the proxies",
      inputs: with_([0, bound, 1]),
      type: RangeError,
      includes: ["labels[1]", String(bound)],
    });
  }
  return cases;
}

/** The shared suites of one loss: existence, fixtures, agreement, finite differences, errors. */
function suites(spec: LossSpec, fd: () => Any[], errors: ErrorCase[]): void {
  existenceTest(spec);
  fixtureSuite(spec);
  agreementSuite(spec);
  fdSuite(spec, fd);
  errorSuite(spec, errors);
}

/** A finite-difference problem: B rows of D, labels cycling over k classes. */
function fdInputs(seed: number, b: number, d: number, k: number): Record<string, Any> {
  return { f: randomMatrix(new Rng(seed), b, d), labels: Array.from({ length: b }, (_, i) => i % k) };
}

const common = (make: () => Record<string, Any>) => [
  ...matrixErrors(make, "f", true, "f"),
  ...commonOptionErrors(make, "f", false),
  ...upstreamErrors(make).slice(0, 1),
  {
    name: "reduction is not an option",
    inputs: make,
    options: { reduction: "sum" },
    type: TypeError,
    includes: ['"reduction"'],
  },
];

describe("ntXent", () => {
  suites(ntXentSpec, () => [
    { name: "default temperature", inputs: fdInputs(1, 6, 4, 3), atol: 2e-6 },
    {
      name: "temperature 0.5, upstream -1.5",
      inputs: fdInputs(2, 7, 3, 2),
      options: { temperature: 0.5 },
      upstream: -1.5,
    },
  ], [
    ...common(small),
    ...labelCases(small),
    ...numberOptionErrors(small, "temperature", [0, -1, NaN, Infinity, "0.1"]),
  ]);
});

describe("tripletMargin", () => {
  suites(
    tripletMarginSpec,
    () =>
      ["all", "hard", "semihard", "batchHard"].flatMap((mining, i) =>
        [false, true].map((soft) => ({
          name: `${mining}${soft ? ", soft" : ""}, margin 0.4`,
          inputs: fdInputs(10 + i, 7, 4, 3),
          options: { mining, soft, margin: 0.4 },
          upstream: 2,
          h: 2 ** -10,
          atol: 1e-6,
        }))
      ),
    [
      ...common(small),
      ...labelCases(small),
      ...numberOptionErrors(small, "margin", [NaN, 5, -5, "0.1"]),
      {
        name: "unknown mining",
        inputs: small,
        options: { mining: "easy" },
        type: RangeError,
        includes: ["options.mining", '"easy"', '"batchHard"'],
      },
      {
        name: "soft not a boolean",
        inputs: small,
        options: { soft: 1 },
        type: TypeError,
        includes: ["options.soft", "1"],
      },
    ],
  );
});

describe("multiSimilarity", () => {
  suites(multiSimilaritySpec, () => [
    { name: "defaults", inputs: fdInputs(20, 6, 4, 3), atol: 2e-6 },
    { name: "alpha 1, beta 10, base 0.2", inputs: fdInputs(21, 7, 3, 2), options: { alpha: 1, beta: 10, base: 0.2 } },
  ], [
    ...common(small),
    ...labelCases(small),
    ...numberOptionErrors(small, "alpha", [0, -1, NaN, 1e7]),
    ...numberOptionErrors(small, "beta", [0, NaN, "50"]),
    ...numberOptionErrors(small, "base", [3, NaN]),
  ]);
});

describe("proxyAnchor", () => {
  suites(proxyAnchorSpec, () => [
    {
      name: "margin 0.2, alpha 4",
      inputs: { ...fdInputs(30, 6, 4, 3), proxies: randomMatrix(new Rng(31), 4, 4) },
      options: { margin: 0.2, alpha: 4 },
    },
    {
      name: "defaults, upstream 0.5",
      inputs: { ...fdInputs(32, 5, 3, 2), proxies: randomMatrix(new Rng(33), 3, 3) },
      upstream: 0.5,
      atol: 2e-6,
    },
  ], [
    ...common(smallProxy),
    ...labelCases(smallProxy, 2),
    ...matrixErrors(smallProxy, "proxies", false, "f").filter((e) =>
      !e.name.includes("missing") && !e.name.includes("fewer rows")
    ),
    {
      name: "proxies missing",
      inputs: () => ({ ...smallProxy(), proxies: undefined }),
      type: TypeError,
      includes: ["proxies", "undefined"],
    },
    {
      name: "proxies of another width",
      inputs: () => ({ ...smallProxy(), proxies: randomMatrix(new Rng(5), 2, 3) }),
      type: RangeError,
      includes: ["proxies", "3"],
    },
    ...numberOptionErrors(smallProxy, "margin", [NaN, 3]),
    ...numberOptionErrors(smallProxy, "alpha", [0, Infinity]),
  ]);
});

// ------------------------------------------------------------------------------------------------
// Identities and edge cases, on every backend

/** SimCLR's NT-Xent (Chen et al. 2020, eq. 1) written out: rows 2k and 2k + 1 are the two views of image k. */
function simclr(f: Mat, t: number): number {
  const [n, d] = f.shape;
  const h = Array.from({ length: n }, (_, i) => {
    const row = Array.from(f.data.subarray(i * d, (i + 1) * d));
    const norm = Math.hypot(...row);
    return row.map((v) => v / norm);
  });
  const sim = (i: number, j: number) => h[i].reduce((s, v, q) => s + v * h[j][q], 0) / t;
  let total = 0;
  for (let i = 0; i < n; i++) {
    const j = i ^ 1;
    let den = 0;
    for (let k = 0; k < n; k++) if (k !== i) den += Math.exp(sim(i, k));
    total += -Math.log(Math.exp(sim(i, j)) / den);
  }
  return total / n;
}

/** Rows `perm` of a matrix, or of labels. */
function permute<T extends Mat | number[]>(m: T, perm: number[]): T {
  if (Array.isArray(m)) return perm.map((i) => m[i]) as T;
  const d = m.shape[1], data = new Float32Array(m.data.length);
  perm.forEach((i, p) => data.set(m.data.subarray(i * d, (i + 1) * d), p * d));
  return { data, shape: m.shape } as T;
}

const OPTIONS: Record<string, Record<string, Any>[]> = {
  ntXent: [{}, { temperature: 1e-4 }],
  tripletMargin: [{}, { mining: "hard", margin: 0.3 }, { mining: "semihard", margin: 0.6 }, {
    mining: "batchHard",
    soft: true,
  }],
  multiSimilarity: [{}],
  proxyAnchor: [{}],
};

const withProxies = (name: string, inputs: Record<string, Any>, c: number) =>
  name === "proxyAnchor" ? { ...inputs, proxies: randomMatrix(new Rng(77), c, inputs.f.shape[1]) } : inputs;

for (const b of backends) {
  describe(`${b.name}: identities and edge cases`, () => {
    it("ntXent with two views per label is SimCLR's NT-Xent", { skip: missing("ntXent", [b]) }, async () => {
      const f = randomMatrix(new Rng(8), 10, 6) as Mat;
      const labels = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4];
      for (const t of [0.07, 0.5, 1]) {
        const r = await lossOf(b, "ntXent")!.forward({ f, labels }, { temperature: t });
        assertLossClose(r.loss as number, simclr(f, t), `${b.name} t = ${t}`);
      }
    });

    for (const name of Object.keys(OPTIONS)) {
      const skip = missing(name, [b]);
      it(`${name}: permuting the batch keeps the loss and permutes the gradient`, { skip }, async () => {
        const loss = lossOf(b, name)!;
        const f = randomMatrix(new Rng(9), 11, 5) as Mat, labels = [0, 1, 2, 0, 1, 2, 0, 1, 3, 3, 2];
        const perm = [4, 9, 0, 2, 10, 7, 1, 3, 8, 6, 5];
        const base = withProxies(name, { f, labels }, 4);
        for (const o of OPTIONS[name]) {
          const a = await loss.valueAndGrad(base, o);
          const r = await loss.valueAndGrad({ ...base, f: permute(f, perm), labels: permute(labels, perm) }, o);
          const label = `${b.name} ${name} ${JSON.stringify(o)}`;
          assertLossClose(r.loss as number, a.loss as number, `${label} loss`);
          assertGradClose(r.grads.f, permute(a.grads.f as Mat, perm).data, `${label} grads.f`);
          if (a.grads.proxies) assertGradClose(r.grads.proxies, a.grads.proxies.data, `${label} grads.proxies`);
        }
      });

      it(`${name}: no positive pair, one class, identical rows, a zero row: finite`, { skip }, async () => {
        const loss = lossOf(b, name)!;
        const f = randomMatrix(new Rng(12), 6, 4) as Mat;
        const same = { data: f.data.map((_, q) => f.data[q % 4]), shape: f.shape };
        const zero = { data: f.data.map((v, q) => (q < 4 ? 0 : v)), shape: f.shape };
        const problems: [string, Record<string, Any>][] = [
          ["no positive pair", { f, labels: [0, 1, 2, 3, 4, 5] }],
          ["one class", { f, labels: [1, 1, 1, 1, 1, 1] }],
          ["identical rows", { f: same, labels: [0, 0, 1, 1, 2, 2] }],
          ["a zero row", { f: zero, labels: [0, 0, 1, 1, 2, 2] }],
        ];
        for (const [what, inputs] of problems) {
          for (const o of [...OPTIONS[name], ...(name === "ntXent" ? [{ temperature: 1e-6 }] : [])]) {
            const r = await loss.valueAndGrad(withProxies(name, inputs, 6), o);
            const label = `${b.name} ${name} ${what} ${JSON.stringify(o)}`;
            assertFinite(r.loss as number, `${label} loss`);
            for (const [k, g] of Object.entries(r.grads as Record<string, Mat>)) assertFinite(g.data, `${label} ${k}`);
            // Without a positive pair (ntXent, tripletMargin) or a negative (ntXent: l_ap = log 1)
            // the loss is 0 with zero gradients.
            const empty = (name === "tripletMargin" && what !== "identical rows" && what !== "a zero row" &&
              what !== "") && (what === "no positive pair" || what === "one class");
            if ((name === "ntXent" && (what === "no positive pair" || what === "one class")) || empty) {
              assert.equal(r.loss, 0, `${label}: loss`);
              assert.ok(r.grads.f.data.every((v: number) => v === 0), `${label}: gradient not zero`);
            }
          }
        }
      });
    }

    it("tripletMargin: identical rows of one class give d_ap = 0 and the margin", {
      skip: missing("tripletMargin", [b]),
    }, async () => {
      // Rows 0, 1 equal (class 0), rows 2, 3 equal (class 1), the classes orthogonal: every
      // triplet has d_ap = 0, d_an = sqrt 2; with margin 2 each l = 2 - sqrt 2.
      const f = { data: new Float32Array([1, 0, 2, 0, 0, 1, 0, 3]), shape: [4, 2] };
      const r = await lossOf(b, "tripletMargin")!.valueAndGrad({ f, labels: [0, 0, 1, 1] }, { margin: 2 });
      assertLossClose(r.loss as number, 2 - Math.SQRT2, `${b.name} loss`);
      assertFinite(r.grads.f.data, `${b.name} grads.f`);
    });
  });
}

describe("webgpu: GPU-resident inputs", () => {
  for (const name of Object.keys(OPTIONS)) {
    it(`${name}: GPU matrices in, GPU gradients out (into out buffers too), the host's values`, {
      skip: webgpuMissing,
    }, async () => {
      const dev = await sharedDevice();
      const gpu = (await init({ backend: "webgpu", device: dev })) as Any;
      const f = randomMatrix(new Rng(21), 7, 5) as Mat, labels = [0, 1, 0, 1, 2, 2, 0];
      const host = withProxies(name, { f, labels }, 3);
      const want = await gpu[name].valueAndGrad(host);
      const resident: Record<string, Any> = { ...host, f: await upload(f) };
      if (host.proxies) resident.proxies = await upload(host.proxies);
      const got = await gpu[name].valueAndGrad(resident);
      assertLossClose(got.loss, want.loss, `${name} loss`);
      for (const key of Object.keys(want.grads)) {
        assert.ok(got.grads[key].buffer, `${name} grads.${key} is on the GPU`);
        assertGradClose(await download(got.grads[key]), want.grads[key].data, `${name} grads.${key}`);
      }
      const out = { f: await upload({ data: new Float32Array(35), shape: [7, 5] }) };
      const r = await gpu[name].backward(resident, { out }, 2);
      assert.equal(r.f.buffer, out.f.buffer, `${name}: grads.f is out.f`);
      const twice = (await download(out.f)).map((v: number) => v / 2);
      assertGradClose(twice, want.grads.f.data, `${name} out.f`);
      await assert.rejects(() => gpu[name].valueAndGrad(resident, { out: { f } }), TypeError);
    });
  }
});
