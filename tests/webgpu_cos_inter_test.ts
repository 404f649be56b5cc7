// The margin losses on GPU-resident cosines with a per-row margin (ElasticFace, SPEC §7) and interTopK on
// the WebGPU backend: the fused row kernel's `targets` entry forms each row's label target on the GPU from
// its own constants (src/webgpu/cross_entropy.wgsl's `row_tg`) and finds each row's top k (`topk_row`). Checked against the host-cos WebGPU path (the
// host's float64 targets) and the float64 reference within SPEC's bound, the GPU path (readback: false
// maps nothing, one submission), the identity equal values = the scalar, and sub-centres with it.
// Skipped where the runtime has no WebGPU adapter (Bun).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { js } from "../cpu.ts";
import { gpuLosses } from "../src/backend.ts";
import { count, download, sharedDevice, upload } from "./helpers/gpu.ts";
import { assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { webgpuMissing } from "./helpers/backends.ts";
import { randomLabels, Rng } from "./helpers/random.ts";
import { randomCosines } from "./helpers/specs.ts";
import { loadFixtures } from "./helpers/fixtures.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const skip = webgpuMissing;
const N = 9, C = 7;

/** A result's loss and cos gradient as host arrays (GPU matrices read back). */
async function host(r: Any): Promise<{ loss: Float32Array | number; grad: Float32Array }> {
  const loss = typeof r.loss === "number" || r.loss instanceof Float32Array ? r.loss : await download(r.loss);
  const g = r.grads.cos;
  return { loss, grad: g instanceof Float32Array ? g : g.data ?? await download(g) };
}

const rng = new Rng(71);
const margins = Float32Array.from({ length: N }, () => rng.uniform(0.05, 2.9)); // some past pi - m's threshold
/** (loss, option, its per-row values, other options). */
const CASES: [string, string, Float32Array, Record<string, Any>][] = [
  ["arcface", "margin", margins, {}],
  ["arcface", "margin", margins, { easyMargin: true, marginGrad: "constant" }],
  ["cosface", "margin", margins.map((m) => m / 2 - 0.5), {}],
  ["combinedMargin", "m2", margins.map((m) => m - 1), { m1: 1.2 }],
  ["combinedMargin", "m3", margins.map((m) => m / 2 - 0.5), { m2: 0.3 }],
  ["arcface", "margin", margins, { subcenters: 2, interclassFilteringThreshold: 0.4 }],
];

describe("WebGPU: a per-row margin on GPU-resident cosines", { skip }, () => {
  for (const [name, key, values, extra] of CASES) {
    it(`${name} ${key} ${JSON.stringify(extra)}: = the host-cos WebGPU path and the reference; readback: false maps nothing`, async () => {
      const dev = await sharedDevice();
      const l = await gpuLosses(dev, { auto: false, note: "test" });
      const k = extra.subcenters ?? 1;
      const p = { cos: randomCosines(new Rng(72), N, C * k, 1), labels: randomLabels(new Rng(73), N, C, 0.2, -100) };
      const gp = { ...p, cos: await upload(p.cos) };
      for (const reduction of ["mean", "none"]) {
        const o = { scale: 16, reduction, ...extra, [key]: values };
        const label = `${name} ${reduction}`;
        const ref = await (js as Any)[name].valueAndGrad(p, o);
        const hostCos = await host(await (l as Any)[name].valueAndGrad(p, o));
        const gpu = await host(await (l as Any)[name].valueAndGrad(gp, o));
        for (const [want, what] of [[ref, "reference"], [hostCos, "host cos"]] as const) {
          const w = what === "reference" ? { loss: ref.loss, grad: ref.grads.cos.data } : want as Any;
          assertLossClose(gpu.loss as Any, w.loss, `${label}: loss = the ${what}'s`);
          assertGradClose(gpu.grad, w.grad, `${label}: grads = the ${what}'s`);
        }
        const c = await count<Any>(dev, () => (l as Any)[name].valueAndGrad(gp, { ...o, readback: false }));
        assert.equal(c.maps, 0, `${label}: readback false maps nothing`);
        assert.equal(c.submits, 1, `${label}: one submission`);
        assert.ok(c.r.loss.buffer && c.r.grads.cos.buffer, `${label}: the results on the GPU`);
        const d = await host(c.r);
        assertLossClose(
          reduction === "none" ? d.loss : (d.loss as Float32Array)[0],
          gpu.loss as Any,
          `${label}: GPU path`,
        );
        assertGradClose(d.grad, gpu.grad, `${label}: GPU path grads`);
      }
      l.dispose();
    });
  }

  it("equal per-row values on GPU cosines are the scalar's loss (arcface, combinedMargin m2)", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" });
    const p = { cos: randomCosines(new Rng(74), N, C, 1), labels: randomLabels(new Rng(75), N, C, 0.2, -100) };
    const gp = { ...p, cos: await upload(p.cos) };
    for (const [name, key, v] of [["arcface", "margin", 0.7], ["combinedMargin", "m2", 0.2]] as const) {
      const o = { scale: 16, reduction: "none" };
      const same = await host(await (l as Any)[name].valueAndGrad(gp, { ...o, [key]: new Float32Array(N).fill(v) }));
      const scalar = await host(await (l as Any)[name].valueAndGrad(gp, { ...o, [key]: v }));
      assertLossClose(same.loss as Any, scalar.loss as Any, `${name}: loss`);
      assertGradClose(same.grad, scalar.grad, `${name}: grads`);
    }
    l.dispose();
  });
});

describe("WebGPU: interTopK on GPU-resident cosines", { skip }, () => {
  it("the PyTorch fixtures (tests/fixtures/faces/inter_class.json, wespeaker) on GPU cos; readback: false maps nothing", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" });
    const cases = loadFixtures("faces/inter_class.json").filter((fc) => "interTopK" in (fc.options as Any));
    assert.ok(cases.length >= 8, "the interTopK cases");
    for (const fc of cases) {
      const { kind, ...options } = fc.options as Any;
      const gp = { ...fc.inputs, cos: await upload(fc.inputs.cos as Any) };
      const f = await host({ ...(await (l as Any)[kind].forward(gp, options)), grads: { cos: new Float32Array() } });
      assertLossClose(f.loss as Any, fc.expected.loss, `${fc.name} loss`);
      const g = await (l as Any)[kind].backward(gp, options, fc.upstream);
      assertGradClose(await download(g.cos), fc.expected.grads.cos as Any, `${fc.name} grads.cos`);
      const c = await count<Any>(dev, () => (l as Any)[kind].valueAndGrad(gp, { ...options, readback: false }));
      assert.equal(c.maps, 0, `${fc.name}: readback false maps nothing`);
      assert.equal(c.submits, 1, `${fc.name}: one submission`);
      const h = await (l as Any)[kind].valueAndGrad(fc.inputs, options);
      assertGradClose(await download(c.r.grads.cos), h.grads.cos.data, `${fc.name}: GPU path = host cos`);
    }
    l.dispose();
  });

  it("ties across classes, sub-centres, a per-row margin and k >= C - 1: = the host-cos path and the reference", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" });
    // (cosines on a grid of 1/8: many ties, exact in float32)
    const grid = (r: Rng, n: number, c: number) => {
      const m = randomCosines(r, n, c, 1);
      for (let i = 0; i < m.data.length; i++) m.data[i] = Math.round(m.data[i] * 8) / 8;
      return m;
    };
    const sets: Record<string, Any>[] = [
      { interTopK: 2 },
      { interTopK: 3, interTopKMargin: 0.2, interclassFilteringThreshold: 0.5 },
      { interTopK: 2, subcenters: 2 },
      { interTopK: 2, margin: margins },
      { interTopK: C - 1 },
      { interTopK: 1, reduction: "none", easyMargin: true },
    ];
    for (const extra of sets) {
      const k = extra.subcenters ?? 1;
      const p = { cos: grid(new Rng(76), N, C * k), labels: randomLabels(new Rng(77), N, C, 0.2, -100) };
      const gp = { ...p, cos: await upload(p.cos) };
      const o = { scale: 16, ...extra };
      const label = JSON.stringify({ ...extra, margin: extra.margin ? "[N]" : undefined });
      const ref = await js.arcface.valueAndGrad(p, o as Any);
      const hostCos = await host(await l.arcface.valueAndGrad(p, o as Any));
      const gpu = await host(await l.arcface.valueAndGrad(gp as Any, o as Any));
      assertLossClose(gpu.loss as Any, ref.loss as Any, `${label}: loss = the reference's`);
      assertGradClose(gpu.grad, ref.grads.cos.data, `${label}: grads = the reference's`);
      assertLossClose(gpu.loss as Any, hostCos.loss as Any, `${label}: loss = host cos`);
      assertGradClose(gpu.grad, hostCos.grad, `${label}: grads = host cos`);
      // The caller's encoder (nothing submitted or mapped until the caller submits), and losses.sync.
      const enc = dev.createCommandEncoder();
      const e = await count<Any>(dev, () => l.arcface.valueAndGrad(gp as Any, { ...o, readback: false, encoder: enc }));
      assert.deepEqual([e.submits, e.maps], [0, 0], `${label}: the encoder call submits and maps nothing`);
      dev.queue.submit([enc.finish()]);
      assertGradClose(await download(e.r.grads.cos), gpu.grad, `${label}: encoder grads`);
      const r = (l.sync as Any).arcface.valueAndGrad(gp, o);
      assert.ok(!(r instanceof Promise), `${label}: losses.sync gives a value`);
      assertGradClose(await download(r.grads.cos), gpu.grad, `${label}: sync grads`);
    }
    l.dispose();
  });
});
