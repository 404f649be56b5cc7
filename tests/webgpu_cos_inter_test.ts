// The margin losses on GPU-resident cosines with a per-row margin (ElasticFace, SPEC §7) on the WebGPU
// backend: the fused row kernel's `targets` entry forms each row's label target on the GPU from its own
// constants (src/webgpu/cross_entropy.wgsl's `row_tg`). Checked against the host-cos WebGPU path (the
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
