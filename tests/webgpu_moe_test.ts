// The WebGPU kernels of the metric-learning and mixture-of-experts families on GPU-resident
// inputs (the shared suites of each loss run them on host arrays): the gradients stay on
// the GPU, one submission and one readback per call (physMoe's five terms and their
// combination included), against the float64 reference (SPEC's bound) and the PyTorch
// fixtures; shapes spanning several 64 x 64 tiles, and the float-pair logits of
// physicsContrastive's small temperatures.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { js } from "../cpu.ts";
import { init } from "../mod.ts";
import { count, download, sharedDevice, upload } from "./helpers/gpu.ts";
import { assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { webgpuMissing } from "./helpers/backends.ts";
import { randomLabels, randomMatrix, Rng } from "./helpers/random.ts";
import { physMoeSpec, randomGating, randomRule, unitRows } from "./helpers/specs_moe.ts";
import { loadFixtures } from "./helpers/fixtures.ts";

// deno-lint-ignore no-explicit-any
type Any = any;
type Mat = { data: Float32Array; shape: readonly [number, number] };

const skip = webgpuMissing;

const device = sharedDevice;

/** A case: the loss, its options, host inputs, which of them go to the GPU, the gradients to compare. */
interface Case {
  name: string;
  loss: string;
  options: Any;
  inputs: Record<string, Any>;
  resident: string[];
  grads: string[];
  /** Submissions and readbacks of a call on host inputs (default one of each). */
  hostCalls?: [number, number];
}

function contrastiveCases(): Case[] {
  const rng = new Rng(31);
  const out: Case[] = [];
  // 130 rows: three row tiles, the last one partial; D = 70: two column tiles.
  for (const [b, d, k, tau, rule] of [[9, 4, 3, 0.07, false], [130, 70, 6, 0.07, true], [70, 8, 4, 1e-4, true]]) {
    const inputs: Record<string, Any> = {
      f: unitRows(rng, b as number, d as number),
      labels: randomLabels(rng, b as number, k as number),
    };
    if (rule) inputs.rule = randomRule(rng, k as number);
    out.push({
      name: `physicsContrastive B ${b} D ${d} tau ${tau}${rule ? " rule" : ""}`,
      loss: "physicsContrastive",
      options: { temperature: tau, threshold: 0.6 },
      inputs,
      resident: ["f"],
      grads: ["f"],
    });
  }
  return out;
}

function centerCases(): Case[] {
  const rng = new Rng(32);
  // D = 300: two column blocks of the centres' gradient; class 6 has no rows.
  const labels = randomLabels(rng, 130, 6);
  return [{ reduction: "mean" }, { reduction: "sum" }].map((options) => ({
    name: `centerLoss N 130 D 300 C 7 ${options.reduction}`,
    loss: "centerLoss",
    options,
    inputs: { x: randomMatrix(rng, 130, 300, 1), centers: randomMatrix(rng, 7, 300, 1), labels },
    resident: ["x", "centers"],
    grads: ["x", "centers"],
  }));
}

function hierarchicalCases(): Case[] {
  const rng = new Rng(33);
  // C = 300 fine classes over K = 5 coarse ones: rows wider than a workgroup; logits of scale
  // 30 (confident rows: the label-at-the-maximum gradient -o / (1 + o)).
  const fineToCoarse = Array.from({ length: 300 }, (_, j) => j % 5);
  // A lone confident row (B = 1): its gradient, a few ulps of 1 from 1 / (1 + o) - 1, sets SPEC's bound.
  return [[33, 1], [33, 30], [1, 30]].map(([b, scale]) => ({
    name: `hierarchical B ${b} K 5 C 300 scale ${scale}`,
    loss: "hierarchical",
    options: {},
    inputs: {
      coarse: randomMatrix(rng, b, 5, scale),
      fine: randomMatrix(rng, b, 300, scale),
      labels: randomLabels(rng, b, 300),
      fineToCoarse,
    },
    resident: ["coarse", "fine"],
    grads: ["coarse", "fine"],
  }));
}

function diversityCases(): Case[] {
  const rng = new Rng(34);
  // D = 300: two column blocks; expert 2 repeats expert 0 on row 1 (a distance of exactly 0).
  return [[1, 5, 0.01], [4, 300, 0.5]].map(([e, d, lambda]) => {
    const features = Array.from({ length: e }, () => randomMatrix(rng, 9, d, 1));
    if (e > 2) features[2].data.set(features[0].data.subarray(d, 2 * d), d);
    return {
      name: `featureDiversity E ${e} B 9 D ${d}`,
      loss: "featureDiversity",
      options: { lambda },
      inputs: { features },
      resident: ["features"],
      grads: ["features"],
    };
  });
}

function hnmCases(): Case[] {
  const rng = new Rng(35);
  const out: Case[] = [];
  // D = 300: rows wider than a workgroup; k = 6 hard negatives of C = 9; at temperature 1e-4
  // the logits are up to 1e4 (float-pair cosines).
  // (B = 1: row 0 alone sets SPEC's bound; with the others, rows that one negative dominates
  // have gradients of order 1 / t.)
  for (const [b, tau] of [[17, 0.07], [17, 1e-4], [1, 1e-4]]) {
    const c = 9, d = 300, k = 6;
    const labels = randomLabels(rng, b, c);
    const hard = new Int32Array(b * k);
    for (let i = 0; i < b; i++) {
      for (let j = 0, cls = 0; j < k; cls++) if (cls !== labels[i]) hard[i * k + j++] = cls;
    }
    const prototypes = randomMatrix(rng, c, d, 1);
    // Prototype 1 is prototype 0 moved by 1e-3 per element, row 0 (label 0, class 1 among its
    // hard negatives) close to both: at tau 1e-4 its two logits differ by about 0.1, and a
    // float32 cosine would move them by 1e-3.
    for (let q = 0; q < d; q++) prototypes.data[d + q] = prototypes.data[q] + 1e-3 * rng.normal();
    labels[0] = 0;
    for (let j = 0, cls = 1; j < k; cls++) hard[j++] = cls;
    const f = randomMatrix(rng, b, d, 1);
    // Row 0 close to prototype 0: a confident row at tau 0.07.
    for (let q = 0; q < d; q++) f.data[q] = prototypes.data[q] + 0.01 * f.data[q];
    out.push({
      name: `hnmContrastive B ${b} C ${c} D ${d} k ${k} tau ${tau}`,
      loss: "hnmContrastive",
      options: { temperature: tau },
      inputs: { f, prototypes, labels, hard: { data: hard, shape: [b, k] } },
      resident: ["f", "prototypes"],
      grads: ["f"],
    });
  }
  return out;
}

function centerRegCases(): Case[] {
  const rng = new Rng(36);
  // D = 300: rows wider than a workgroup; class 6 has no rows; f near its centre's direction
  // (the normalisation's projection nearly cancels there).
  const b = 130, c = 7, d = 300;
  const labels = randomLabels(rng, b, c - 1);
  const centers = randomMatrix(rng, c, d, 1);
  const f = randomMatrix(rng, b, d, 0.05);
  for (let i = 0; i < b; i++) for (let q = 0; q < d; q++) f.data[i * d + q] += centers.data[labels[i] * d + q] / 4;
  return [0.5, 2].map((prototypeWeight) => ({
    name: `centerRegularization B ${b} C ${c} D ${d} prototypeWeight ${prototypeWeight}`,
    loss: "centerRegularization",
    options: { prototypeWeight },
    inputs: { f, centers, labels, rule: randomRule(rng, c) },
    resident: ["f", "centers"],
    grads: ["f", "centers"],
  }));
}

function expertCases(): Case[] {
  const rng = new Rng(37);
  const out: Case[] = [];
  // C = 300: rows wider than a workgroup; logits of scale 1e4 (nearly one-hot softmaxes: the
  // complements of the statistics); E = 1 (no pairs to speak of) and E = 4.
  for (const [e, b, c, scale] of [[3, 9, 300, 1], [4, 5, 17, 1e4], [1, 3, 5, 30]]) {
    const expertLogits = Array.from({ length: e }, () => randomMatrix(rng, b, c, scale));
    const labels = randomLabels(rng, b, c);
    const prior = Float32Array.from({ length: c }, (_, j) => 1 / (1 + j));
    out.push({
      name: `mixOutputs E ${e} B ${b} C ${c} scale ${scale}`,
      loss: "mixOutputs",
      options: { prior, distillWeight: 0.5, parallelWeight: 0.3 },
      inputs: { expertLogits, labels },
      resident: ["expertLogits"],
      grads: ["expertLogits"],
    }, {
      name: `iclMoe E ${e} B ${b} C ${c} scale ${scale}`,
      loss: "iclMoe",
      options: { tailExperts: [0], gamma: 0.5 },
      inputs: { expertLogits, labels, gating: randomGating(rng, b, e) },
      resident: ["expertLogits", "gating"],
      grads: ["expertLogits"],
    });
  }
  return out;
}

/** physMoe's problems: the shared suites' random ones, small (llvmpipe). */
function physCases(): Case[] {
  const rng = new Rng(38);
  return [[5, 7, {}], [9, 40, { tailExperts: [0, 1], lambdaScl: 1, lambdaReg: 0.5 }], [3, 4, { contrast: false }]].map((
    [b, c, options],
  ) => ({
    name: `physMoe B ${b} C ${c} ${JSON.stringify(options)}`,
    loss: "physMoe",
    options,
    inputs: physMoeSpec.random(rng, b as number, c as number, 30, options as Any),
    resident: ["features", "coarse", "expertLogits", "gating", "centers"],
    grads: ["features", "coarse", "expertLogits", "gating", "centers"],
    // Host inputs run term by term (one call per GPU term, the combination on the host).
    hostCalls: (options as Any).contrast === false ? [3, 3] : [4, 4],
  }));
}

const cases: Case[] = [
  ...contrastiveCases(),
  ...centerCases(),
  ...hierarchicalCases(),
  ...diversityCases(),
  ...hnmCases(),
  ...centerRegCases(),
  ...expertCases(),
  ...physCases(),
];

/** A host input (a matrix or a list of matrices) on the GPU. */
const toGpu = (m: Any) => (Array.isArray(m) ? Promise.all(m.map((x: Any) => upload(x))) : upload(m));
/** A gradient (a matrix or a list of them) as pairs [name, matrix]. */
const each = (name: string, g: Any): [string, Any][] =>
  Array.isArray(g) ? g.map((m, i) => [`${name}[${i}]`, m]) : [[name, g]];

describe("WebGPU metric-learning and mixture-of-experts kernels", () => {
  for (const c of cases) {
    it(`${c.name}: GPU-resident inputs, gradients on the GPU, one submission and one readback`, {
      skip,
    }, async () => {
      const dev = await device();
      const l = (await init({ backend: "webgpu", device: dev })) as Any;
      const inputs = { ...c.inputs };
      for (const k of c.resident) inputs[k] = await toGpu(c.inputs[k]);
      const got = await count<Any>(dev, () => l[c.loss].valueAndGrad(inputs, c.options));
      assert.deepEqual([got.submits, got.maps], [1, 1], "submissions, readbacks");
      const ref = (js as Any)[c.loss].valueAndGrad(c.inputs, c.options);
      assertLossClose(got.r.loss, ref.loss, "loss");
      for (const k of c.grads) {
        const r = each(k, ref.grads[k]);
        for (const [i, [name, g]] of each(k, got.r.grads[k]).entries()) {
          assert.ok(g.buffer instanceof GPUBuffer, `grads.${name} on the GPU`);
          assertGradClose({ data: await download(g), shape: r[i][1].shape }, r[i][1].data, name);
        }
      }
    });
    const [submits, maps] = c.hostCalls ?? [1, 1];
    it(`${c.name}: host inputs, ${submits} submission(s) and ${maps} readback(s)`, { skip }, async () => {
      const dev = await device();
      const l = (await init({ backend: "webgpu", device: dev })) as Any;
      const got = await count<Any>(dev, () => l[c.loss].valueAndGrad(c.inputs, c.options));
      assert.deepEqual([got.submits, got.maps], [submits, maps], "submissions, readbacks");
      const ref = (js as Any)[c.loss].valueAndGrad(c.inputs, c.options);
      assertLossClose(got.r.loss, ref.loss, "loss");
      for (const k of c.grads) {
        const r = each(k, ref.grads[k]);
        each(k, got.r.grads[k]).forEach(([name, g], i) => assertGradClose(g, r[i][1].data, name));
      }
    });
  }

  it("physicsContrastive writes a GPU-resident gradient into the caller's out buffer", { skip }, async () => {
    const dev = await device();
    const l = (await init({ backend: "webgpu", device: dev })) as Any;
    const c = contrastiveCases()[1];
    const out = await upload({ data: new Float32Array(c.inputs.f.data.length), shape: c.inputs.f.shape });
    const got = await l.physicsContrastive.valueAndGrad({ ...c.inputs, f: await upload(c.inputs.f) }, {
      ...c.options,
      out: { f: out },
    });
    assert.equal(got.grads.f.buffer, out.buffer);
    const ref = (js as Any).physicsContrastive.valueAndGrad(c.inputs, c.options);
    assertGradClose({ data: await download(out), shape: c.inputs.f.shape }, ref.grads.f.data, "f");
  });
});

describe("hierarchical on the WebGPU backend", () => {
  it("writes the gradient of the fine classes outside the true group as exactly 0 (over stale out values)", {
    skip,
  }, async () => {
    const dev = await device();
    const l = (await init({ backend: "webgpu", device: dev })) as Any;
    const c = hierarchicalCases()[0];
    const out = await upload({ data: new Float32Array(33 * 300).fill(7), shape: [33, 300] });
    const inputs = { ...c.inputs, coarse: await upload(c.inputs.coarse), fine: await upload(c.inputs.fine) };
    const got = await l.hierarchical.valueAndGrad(inputs, { out: { fine: out } });
    assert.equal(got.grads.fine.buffer, out.buffer);
    const gf = await download(out);
    const { labels, fineToCoarse } = c.inputs;
    let zeros = 0;
    for (let i = 0; i < 33; i++) {
      for (let j = 0; j < 300; j++) {
        if (fineToCoarse[j] === fineToCoarse[labels[i]]) continue;
        assert.equal(gf[i * 300 + j], 0, `fine gradient [${i}, ${j}]`);
        zeros++;
      }
    }
    assert.equal(zeros, 33 * 240);
  });
});

describe("featureDiversity on the WebGPU backend", () => {
  it("stacks GPU-resident and host experts in one submission, gradients on the GPU", { skip }, async () => {
    const dev = await device();
    const l = (await init({ backend: "webgpu", device: dev })) as Any;
    const c = diversityCases()[1];
    const f = c.inputs.features;
    const inputs = { features: [f[0], await upload(f[1]), f[2], await upload(f[3])] };
    const got = await count<Any>(dev, () => l.featureDiversity.valueAndGrad(inputs, c.options));
    assert.deepEqual([got.submits, got.maps], [1, 1], "submissions, readbacks");
    const ref = (js as Any).featureDiversity.valueAndGrad(c.inputs, c.options);
    assertLossClose(got.r.loss, ref.loss, "loss");
    for (let s = 0; s < 4; s++) {
      const g = got.r.grads.features[s];
      assert.ok(g.buffer instanceof GPUBuffer, `grads.features[${s}] on the GPU`);
      assertGradClose({ data: await download(g), shape: g.shape }, ref.grads.features[s].data, `features[${s}]`);
    }
  });
});

/** The matrices of `inputs` named in `keys` on the GPU (lists matrix by matrix). */
async function residentOf(inputs: Record<string, Any>, keys: readonly string[]): Promise<Record<string, Any>> {
  const out = { ...inputs };
  for (const k of keys) if (inputs[k] !== undefined) out[k] = await toGpu(inputs[k]);
  return out;
}

describe("mixture-of-experts losses on GPU-resident inputs match PyTorch", () => {
  const resident: Record<string, string[]> = {
    mixOutputs: ["expertLogits"],
    iclMoe: ["expertLogits", "gating"],
    physMoe: ["features", "coarse", "expertLogits", "gating", "centers"],
  };
  for (
    const [loss, file] of [["mixOutputs", "mix_outputs.json"], ["iclMoe", "icl_moe.json"], ["physMoe", "phys_moe.json"]]
  ) {
    for (const fc of skip ? [] : loadFixtures(file)) {
      it(`${loss} ${fc.name}`, async () => {
        const dev = await device();
        const l = (await init({ backend: "webgpu", device: dev })) as Any;
        const inputs = await residentOf(fc.inputs, resident[loss]);
        const got = await count<Any>(
          dev,
          async () =>
            fc.upstream === undefined
              ? await l[loss].valueAndGrad(inputs, fc.options)
              : { grads: await l[loss].backward(inputs, fc.options, fc.upstream) },
        );
        assert.deepEqual([got.submits, got.maps], [1, 1], "submissions, readbacks");
        if (fc.upstream === undefined) {
          assertLossClose(got.r.loss, fc.expected.loss, "loss");
          for (const [k, v] of Object.entries(fc.expected.parts ?? {})) {
            // A matrix part (mixOutputs' mean logits) stays on the GPU too.
            const part = got.r[k];
            if (part && typeof part === "object") assert.ok(part.buffer instanceof GPUBuffer, `part ${k} on the GPU`);
            assertLossClose(part && typeof part === "object" ? await download(part) : part, v, `part ${k}`);
          }
        }
        for (const [k, want] of Object.entries(fc.expected.grads)) {
          const wants = Array.isArray(want) ? want : [want];
          for (const [i, [name, g]] of each(k, got.r.grads[k]).entries()) {
            assert.ok(g.buffer instanceof GPUBuffer, `grads.${name} on the GPU`);
            assertGradClose({ data: await download(g), shape: g.shape }, wants[i], name);
          }
        }
      });
    }
  }
});

describe("mixOutputs and iclMoe on the WebGPU backend", () => {
  it("bad GPU-resident input gives named errors", { skip }, async () => {
    const dev = await device();
    const l = (await init({ backend: "webgpu", device: dev })) as Any;
    const { assertThrowsNamed } = await import("./helpers/assert.ts");
    // iclMoe with E 1, B 3, C 5: a GPU-resident gating [3, 1] for two experts.
    const c = expertCases()[5];
    const inputs = await residentOf(c.inputs, ["expertLogits", "gating"]);
    const wide = await upload({ data: new Float32Array(3 * 6), shape: [3, 6] });
    const [z] = inputs.expertLogits;
    await assertThrowsNamed(
      () => l.iclMoe.valueAndGrad({ ...inputs, expertLogits: [z, z] }, c.options),
      RangeError,
      "gating",
      "1",
    );
    await assertThrowsNamed(
      () => l.mixOutputs.valueAndGrad({ expertLogits: [inputs.expertLogits[0], wide], labels: inputs.labels }),
      RangeError,
      "expertLogits[1]",
      "6",
    );
    await assertThrowsNamed(
      () =>
        l.mixOutputs.valueAndGrad({ expertLogits: inputs.expertLogits, labels: inputs.labels }, {
          out: { expertLogits: c.inputs.expertLogits },
        }),
      TypeError,
      "options.out.expertLogits[0]",
      "GPU matrix",
    );
    await assertThrowsNamed(
      () => l.mixOutputs.valueAndGrad({ expertLogits: inputs.expertLogits, labels: [0, 9, 1] }),
      RangeError,
      "labels",
      "9",
    );
  });
});

describe("physMoe on the WebGPU backend", () => {
  const host = () => physCases()[1].inputs;
  const options = physCases()[1].options;
  const all = ["features", "coarse", "expertLogits", "gating", "centers"];

  it("GPU-resident and mixed inputs: the host path's gradients, on the GPU, in one submission and one readback", {
    skip,
  }, async () => {
    const dev = await device();
    const l = (await init({ backend: "webgpu", device: dev })) as Any;
    const inputs = host();
    const want = await l.physMoe.valueAndGrad(inputs, options);
    for (const keys of [all, ["expertLogits"], ["features", "gating"]]) {
      const got = await count<Any>(dev, () => residentOf(inputs, keys).then((x) => l.physMoe.valueAndGrad(x, options)));
      assert.deepEqual([got.submits, got.maps], [1, 1], `${keys}: submissions, readbacks`);
      for (const part of ["loss", "scl", "dol", "col", "hier", "reg"]) {
        assertLossClose(got.r[part], want[part], `${keys}: ${part}`);
      }
      for (const k of all) {
        const w = each(k, want.grads[k]);
        for (const [i, [name, g]] of each(k, got.r.grads[k]).entries()) {
          assert.ok(g.buffer instanceof GPUBuffer, `${keys}: grads.${name} on the GPU`);
          assertGradClose({ data: await download(g), shape: g.shape }, w[i][1].data, `${keys}: ${name}`);
        }
      }
    }
  });

  it("keeps no buffer but the gradients it returns (the terms' intermediate gradients are destroyed)", {
    skip,
  }, async () => {
    const dev = await device();
    const l = (await init({ backend: "webgpu", device: dev })) as Any;
    const inputs = await residentOf(host(), all);
    // The first call fills the context's scratch pool; the second takes its scratch from there.
    await l.physMoe.valueAndGrad(inputs, options);
    const create = dev.createBuffer, destroy = GPUBuffer.prototype.destroy;
    const live = new Set<GPUBuffer>();
    dev.createBuffer = (d: GPUBufferDescriptor) => {
      const b = create.call(dev, d);
      live.add(b);
      return b;
    };
    GPUBuffer.prototype.destroy = function (this: GPUBuffer) {
      live.delete(this);
      return destroy.call(this);
    };
    try {
      const got = await l.physMoe.valueAndGrad(inputs, options);
      const returned = all.flatMap((k) => each(k, got.grads[k]).map(([, g]) => g.buffer));
      assert.deepEqual(new Set(returned), live, "buffers left alive: exactly the returned gradients");
    } finally {
      dev.createBuffer = create;
      GPUBuffer.prototype.destroy = destroy;
    }
  });

  it("writes GPU-resident gradients into the caller's out buffers", { skip }, async () => {
    const dev = await device();
    const l = (await init({ backend: "webgpu", device: dev })) as Any;
    const inputs = host();
    const ref = (js as Any).physMoe.valueAndGrad(inputs, options);
    const zeros = (m: Mat) => upload({ data: new Float32Array(m.data.length).fill(7), shape: m.shape });
    const out = {
      features: await zeros(inputs.features),
      gating: await zeros(inputs.gating),
      centers: await zeros(inputs.centers),
      expertLogits: await Promise.all(inputs.expertLogits.map(zeros)),
    };
    const got = await l.physMoe.valueAndGrad(await residentOf(inputs, all), { ...options, out });
    for (const k of ["features", "gating", "centers", "expertLogits"]) {
      const outs = each(k, (out as Any)[k]), refs = each(k, ref.grads[k]);
      for (const [i, [name, g]] of each(k, got.grads[k]).entries()) {
        assert.equal(g.buffer, outs[i][1].buffer, `grads.${name} is the out buffer`);
        assertGradClose({ data: await download(g), shape: g.shape }, refs[i][1].data, name);
      }
    }
  });

  it("bad GPU-resident input gives named errors; the CPU backends refuse it", { skip }, async () => {
    const dev = await device();
    const l = (await init({ backend: "webgpu", device: dev })) as Any;
    const inputs = await residentOf(host(), all);
    const { assertThrowsNamed } = await import("./helpers/assert.ts");
    await assertThrowsNamed(
      async () => l.physMoe.valueAndGrad({ ...inputs, rule: await upload(host().rule) }, options),
      TypeError,
      "rule",
      "GPUBuffer",
    );
    const short = await upload({ data: new Float32Array(8 * 40), shape: [8, 40] });
    await assertThrowsNamed(
      () => l.physMoe.valueAndGrad({ ...inputs, expertLogits: [inputs.expertLogits[0], short, short] }, options),
      RangeError,
      "expertLogits[1]",
      "8",
    );
    await assertThrowsNamed(
      () => l.physMoe.valueAndGrad(inputs, { ...options, out: { features: host().features } }),
      TypeError,
      "options.out.features",
      "GPU matrix",
    );
    // checkFinite reads GPU-resident inputs back and names them as physMoe does.
    const bad = host();
    const nan = (m: Mat, at: number) => {
      const data = m.data.slice();
      data[at] = NaN;
      return upload({ data, shape: m.shape });
    };
    await assertThrowsNamed(
      async () =>
        l.physMoe.valueAndGrad({ ...inputs, features: await nan(bad.features, 3) }, { ...options, checkFinite: true }),
      RangeError,
      "features",
      "NaN",
    );
    await assertThrowsNamed(
      async () =>
        l.physMoe.valueAndGrad({
          ...inputs,
          expertLogits: [inputs.expertLogits[0], await nan(bad.expertLogits[1], 5), inputs.expertLogits[2]],
        }, { ...options, checkFinite: true }),
      RangeError,
      "expertLogits[1]",
      "NaN",
    );
    await assertThrowsNamed(
      async () =>
        l.physMoe.valueAndGrad({ ...inputs, gating: await nan(bad.gating, 0) }, { ...options, checkFinite: true }),
      RangeError,
      "gating",
      "NaN",
    );
    assert.throws(
      () => (js as Any).physMoe.valueAndGrad(inputs, options),
      (e: Error) =>
        e instanceof TypeError && e.message.includes("GPUBuffer") && e.message.includes('backend: "webgpu"'),
    );
  });
});
