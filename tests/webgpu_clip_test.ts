// clip and siglip on GPU-resident inputs (WebGPU backend): PyTorch's values with the
// gradients left on the GPU, one submission and one readback per call (every strip of 256
// rows in it), and the caller's GPU out buffers written in place.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { init } from "../mod.ts";
import { assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { webgpuMissing } from "./helpers/backends.ts";
import { loadFixtures } from "./helpers/fixtures.ts";
import { count, download, sharedDevice, upload } from "./helpers/gpu.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const skip = webgpuMissing;

describe("clip and siglip on GPU-resident inputs match PyTorch", () => {
  for (const [loss, file] of [["clip", "clip/clip.json"], ["siglip", "clip/siglip.json"]]) {
    // (Not the cases at scale 1e4 nor of identical rows, whose float32 bounds tests/clip_test.ts checks.)
    const cases = loadFixtures(file).filter((c) => !c.name.includes("scale1e4") && !c.name.includes("identical"));
    for (const fc of skip ? [] : cases) {
      it(`${loss} ${fc.name}`, async () => {
        const dev = await sharedDevice();
        const l = (await init({ backend: "webgpu", device: dev })) as Any;
        const inputs = { ...fc.inputs, a: await upload(fc.inputs.a as Any), b: await upload(fc.inputs.b as Any) };
        const got = await count<Any>(dev, () => l[loss].backward(inputs, {}, fc.upstream));
        assert.deepEqual([got.submits, got.maps], [1, 1], "submissions, readbacks");
        for (const k of ["a", "b"]) {
          const g = got.r[k];
          assert.ok(g.buffer instanceof GPUBuffer, `grads.${k} on the GPU`);
          assertGradClose({ data: await download(g), shape: g.shape }, fc.expected.grads[k] as Any, `grads.${k}`);
          g.buffer.destroy();
        }
        for (const [k, want] of Object.entries(fc.expected.numbers!)) {
          assert.equal(typeof got.r[k], "number", `grads.${k} a number`);
          assertLossClose(got.r[k], want, `grads.${k}`);
        }
        const f = await l[loss].forward(inputs);
        assertLossClose(f.loss, fc.expected.loss as number, "loss");
        await l.dispose();
      });
    }
  }

  it("init's auto backend weighs a host problem by N^2 D / 16 (minGpuLogits)", { skip }, async () => {
    const dev = await sharedDevice();
    const [fc] = loadFixtures("clip/clip.json").filter((c) => c.name.includes("blocks"));
    const n = 300, d = 8, weight = n * n * d / 16;
    for (const [min, submits] of [[weight + 1, 0], [weight, 1]]) {
      const l = (await init({ backend: "auto", device: dev, minGpuLogits: min })) as Any;
      const got = await count<Any>(dev, () => l.clip.forward(fc.inputs));
      assert.equal(got.submits, submits, `minGpuLogits ${min}`);
      assertLossClose(got.r.loss, fc.expected.loss as number, "loss");
      await l.dispose();
    }
  });

  it("writes the caller's GPU out buffers in place", { skip }, async () => {
    const dev = await sharedDevice();
    const l = (await init({ backend: "webgpu", device: dev })) as Any;
    const [fc] = loadFixtures("clip/siglip.json").filter((c) => c.name.includes("blocks"));
    const a = await upload(fc.inputs.a as Any), b = await upload(fc.inputs.b as Any);
    const zero = { data: new Float32Array((fc.inputs.a as Any).data.length), shape: a.shape };
    const out = { a: await upload(zero), b: await upload(zero) };
    const r = await l.siglip.valueAndGrad({ ...fc.inputs, a, b }, { out });
    assert.equal(r.grads.a, out.a);
    assertGradClose({ data: await download(out.b), shape: b.shape }, fc.expected.grads.b as Any, "out.b");
    await l.dispose();
  });
});
