// The face margin losses (adaface, curricularFace, magface; SPEC §7) on GPU-resident cosines
// (SPEC §10): the batch statistics, the next state and the targets computed on the GPU
// (src/webgpu/face_margin.wgsl). The PyTorch fixtures of tests/fixtures/generate_faces.py with
// cos (and norms) uploaded; `readback: false` maps nothing and gives the readback path's
// values, the state a GPU matrix; the state chained on the GPU over several steps equals the
// float64 reference's chain; `encoder` and the synchronous form; named errors. Skipped where
// the runtime has no WebGPU adapter (Bun).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { adafaceInit, init } from "../mod.ts";
import { gpuLosses } from "../src/backend.ts";
import { assertGradClose, assertLossClose, assertThrowsNamed } from "./helpers/assert.ts";
import { webgpuMissing } from "./helpers/backends.ts";
import { loadFixtures } from "./helpers/fixtures.ts";
import { count, download, sharedDevice, upload } from "./helpers/gpu.ts";
import { randomLabels, Rng } from "./helpers/random.ts";
import { randomCosines } from "./helpers/specs.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const skip = webgpuMissing;

const FILES = {
  adaface: "faces/adaface.json",
  curricularFace: "faces/curricular_face.json",
  magface: "faces/magface.json",
} as const;
type Name = keyof typeof FILES;
const NAMES = Object.keys(FILES) as Name[];
const STATE: Record<Name, string[]> = { adaface: ["mean", "std"], curricularFace: ["t"], magface: [] };

const rawCases = (file: string): Any[] =>
  JSON.parse(readFileSync(new URL(`./fixtures/${file}`, import.meta.url), "utf8")).cases;

/** A vector as a GPU matrix `[N, 1]`. */
const column = (x: ArrayLike<number>) => upload({ data: Float32Array.from(x), shape: [x.length, 1] });

/** A random problem of `name` (cosines inside [-0.9, 0.9], some rows ignored). */
function problem(name: Name, rng: Rng, n: number, c: number): Record<string, Any> {
  const cos = randomCosines(rng, n, c, 1);
  for (let i = 0; i < cos.data.length; i++) cos.data[i] *= 0.9;
  const labels = randomLabels(rng, n, c, 0.2, -100);
  const norms = Float32Array.from({ length: n }, () => (name === "magface" ? 12 : 5) + rng.uniform(0, 80));
  if (name === "adaface") return { cos, labels, norms, state: { mean: 30, std: 10 } };
  if (name === "curricularFace") return { cos, labels, state: { t: 0.2 } };
  return { cos, labels, norms };
}

/** `inputs` with cos on the GPU, and the norms too when `gpuNorms`. */
async function onGpu(inputs: Record<string, Any>, gpuNorms: boolean): Promise<Record<string, Any>> {
  const out: Record<string, Any> = { ...inputs, cos: await upload(inputs.cos) };
  if (gpuNorms && inputs.norms) out.norms = await column(inputs.norms);
  return out;
}

/** A value as host numbers: a GPU matrix read back, a host matrix's data, a number as [x]. */
async function host(x: Any): Promise<Float32Array | number[]> {
  if (typeof x === "number") return [x];
  if (x instanceof Float32Array) return x;
  if (x?.buffer && x.shape) return await download(x);
  return x.data;
}

describe("face margin losses on GPU-resident cosines: PyTorch fixtures", { skip }, () => {
  for (const name of NAMES) {
    it(`${name}: every fixture, cos (and norms) on the GPU`, async () => {
      const l = await gpuLosses(await sharedDevice(), { auto: false, note: "test" });
      const raws = rawCases(FILES[name]);
      const cases = loadFixtures(FILES[name]);
      for (const [k, fc] of cases.entries()) {
        const base = raws[k].state ? { ...fc.inputs, state: raws[k].state } : { ...fc.inputs };
        const inputs = await onGpu(base, k % 2 === 1);
        const label = `${name} ${fc.name}`;
        const r = await (l as Any)[name].valueAndGrad(inputs, fc.options);
        assertLossClose(r.loss, fc.expected.loss, `${label} loss`);
        for (const [part, v] of Object.entries(fc.expected.parts ?? {})) {
          assertLossClose(r[part], v, `${label} ${part}`);
        }
        for (const [key, v] of Object.entries((raws[k].nextState ?? {}) as Record<string, number>)) {
          assertLossClose(r.state[key], v, `${label} state.${key}`, 1e-9);
        }
        const g = fc.upstream === undefined
          ? r.grads
          : await (l as Any)[name].backward(inputs, fc.options, fc.upstream);
        for (const key of name === "magface" ? ["cos", "norms"] : ["cos"]) {
          assert.ok(g[key].buffer, `${label} grads.${key} stays on the GPU`);
          assertGradClose(await download(g[key]), fc.expected.grads[key] as Any, `${label} grads.${key}`);
        }
      }
      l.dispose();
    });
  }
});

describe("face margin losses on GPU-resident cosines: readback: false, encoder, sync", { skip }, () => {
  const N = 6, C = 9;
  const optionSets = [{ scale: 30 }, { scale: 20, reduction: "sum" }, {
    scale: 10,
    reduction: "none",
    marginGrad: "constant",
  }];
  for (const name of NAMES) {
    it(`${name}: zero maps, one submission, the readback path's values and the reference's`, async () => {
      const dev = await sharedDevice();
      const l = await gpuLosses(dev, { auto: false, note: "test" });
      const js = await init({ backend: "js" });
      for (const [k, o] of optionSets.entries()) {
        const p = problem(name, new Rng(40 + k), N, C);
        const inputs = await onGpu(p, k !== 1);
        const label = `${name} ${JSON.stringify(o)}`;
        const want: Any = await (js as Any)[name].valueAndGrad(p, o);
        const read = await (l as Any)[name].valueAndGrad(inputs, o);
        const c = await count<Any>(dev, () => (l as Any)[name].valueAndGrad(inputs, { ...o, readback: false }));
        assert.deepEqual([c.maps, c.submits], [0, 1], `${label}: maps and submissions`);
        const r = c.r;
        assert.deepEqual(r.loss.shape, o.reduction === "none" ? [N, 1] : [1, 1], `${label} loss shape`);
        for (const part of ["loss", ...(name === "magface" ? ["ce", "g"] : [])]) {
          if (o.reduction === "none" && part !== "loss") continue;
          const got: Any = await host(r[part]);
          const ref = typeof want[part] === "number" ? [want[part]] : want[part];
          const back = typeof read[part] === "number" ? [read[part]] : read[part];
          for (let i = 0; i < ref.length; i++) {
            assertLossClose(got[i], ref[i], `${label} ${part}[${i}]`);
            assertLossClose(got[i], back[i], `${label} ${part}[${i}] vs readback`);
          }
        }
        if (STATE[name].length > 0) {
          assert.deepEqual(r.state.shape, [1, STATE[name].length], `${label}: the state a GPU matrix`);
          const s = await download(r.state);
          STATE[name].forEach((f, q) => assertLossClose(s[q], want.state[f], `${label} state.${f}`, 1e-6));
        }
        for (const key of name === "magface" ? ["cos", "norms"] : ["cos"]) {
          const ref = want.grads[key] instanceof Float32Array ? want.grads[key] : want.grads[key].data;
          assertGradClose(await download(r.grads[key]), ref, `${label} grads.${key}`);
        }
        // backward with an upstream gradient and forward, on the GPU path too.
        const up = o.reduction === "none" ? Float32Array.from({ length: N }, (_, i) => 0.5 + 0.25 * i) : 1.5;
        const wb = await (js as Any)[name].backward(p, o, up);
        const b = await count<Any>(dev, () => (l as Any)[name].backward(inputs, { ...o, readback: false }, up));
        assert.equal(b.maps, 0, `${label}: backward maps`);
        assertGradClose(await download(b.r.cos), wb.cos.data, `${label} backward cos`);
        const f = await count<Any>(dev, () => (l as Any)[name].forward(inputs, { ...o, readback: false }));
        assert.equal(f.maps, 0, `${label}: forward maps`);
        assert.ok(f.r.loss.buffer, `${label}: forward's loss on the GPU`);
      }
      l.dispose();
    });
  }

  for (const name of ["adaface", "curricularFace"] as const) {
    it(`${name}: the state chained on the GPU over four steps equals the reference's chain`, async () => {
      const dev = await sharedDevice();
      const l = await gpuLosses(dev, { auto: false, note: "test" });
      const js = await init({ backend: "js" });
      let hostState: Any = name === "adaface" ? adafaceInit() : { t: 0 };
      let gpuState: Any = hostState;
      for (let step = 0; step < 4; step++) {
        const p = problem(name, new Rng(90 + step), N, C);
        delete p.state;
        const inputs = await onGpu(p, true);
        const want: Any = await (js as Any)[name].forward({ ...p, state: hostState }, { scale: 16 });
        const c = await count<Any>(
          dev,
          () => (l as Any)[name].forward({ ...inputs, state: gpuState }, { scale: 16, readback: false }),
        );
        assert.equal(c.maps, 0, `${name} step ${step}: maps`);
        assertLossClose((await download(c.r.loss))[0], want.loss, `${name} step ${step} loss`);
        const s = await download(c.r.state);
        STATE[name].forEach((f, q) => assertLossClose(s[q], want.state[f], `${name} step ${step} state.${f}`, 1e-6));
        hostState = want.state;
        gpuState = c.r.state;
      }
      l.dispose();
    });
  }

  it("recorded into the caller's encoder, and losses.sync in a synchronous callback", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" });
    for (const name of NAMES) {
      const p = problem(name, new Rng(7), N, C);
      const inputs = await onGpu(p, true);
      const want: Any = await (l as Any)[name].valueAndGrad(inputs, { scale: 30 });
      const enc = dev.createCommandEncoder();
      const e = await count<Any>(
        dev,
        () => (l as Any)[name].valueAndGrad(inputs, { scale: 30, readback: false, encoder: enc }),
      );
      assert.deepEqual([e.submits, e.maps], [0, 0], `${name}: the call submits and maps nothing`);
      dev.queue.submit([enc.finish()]);
      assertLossClose((await download(e.r.loss))[0], want.loss, `${name} encoder loss`);
      const s = (l.sync as Any)[name].valueAndGrad(inputs, { scale: 30 });
      assert.ok(!(s instanceof Promise) && s.loss.buffer, `${name}: sync gives GPU results, not a Promise`);
      assertLossClose((await download(s.loss))[0], want.loss, `${name} sync loss`);
      assertGradClose(await download(s.grads.cos), await download(want.grads.cos), `${name} sync grads.cos`);
    }
    l.dispose();
  });

  it("named errors: a GPU state with a host cos, shapes of a GPU state and norms, out.norms", async () => {
    const l = await gpuLosses(await sharedDevice(), { auto: false, note: "test" });
    const p = problem("adaface", new Rng(3), N, C);
    const cos = await upload(p.cos);
    const st2 = await upload({ data: Float32Array.of(20, 100), shape: [1, 2] });
    const st3 = await upload({ data: Float32Array.of(20, 100, 0), shape: [1, 3] });
    const norms = await column(p.norms);
    const wide = await upload({ data: new Float32Array(2 * N), shape: [N, 2] });
    const cases: [string, Record<string, Any>, Any, string, typeof TypeError][] = [
      ["adaface", { ...p, state: st2 }, {}, "with host inputs", TypeError],
      ["curricularFace", { cos: p.cos, labels: p.labels, state: await column([0]) }, {}, "with host inputs", TypeError],
      ["adaface", { ...p, cos, state: st3 }, {}, "[1, 2]", RangeError],
      ["curricularFace", { cos, labels: p.labels, state: st2 }, {}, "[1, 1]", RangeError],
      ["adaface", { ...p, cos, norms: wide }, {}, `[${N}, 1] or [1, ${N}]`, RangeError],
      ["magface", { cos, labels: p.labels, norms }, { out: { norms: new Float32Array(N) } }, "out.norms", TypeError],
      ["adaface", { ...p, cos, state: { mean: 1 } }, {}, "state.std", TypeError],
    ];
    for (const [name, inputs, o, what, type] of cases) {
      await assertThrowsNamed(() => (l as Any)[name].valueAndGrad(inputs, o), type, what);
    }
    l.dispose();
  });
});

describe("marginHead's face kinds on the WebGPU head", { skip }, () => {
  const N = 7, D = 8, C = 70;
  /** x with row norms from 3 to about 120 (MagFace's clamp cut at both ends), W, labels (one ignored). */
  function head(rng: Rng): Record<string, Any> {
    const x = randomCosines(rng, N, D, 1);
    for (let i = 0; i < N; i++) for (let k = 0; k < D; k++) x.data[i * D + k] *= 3 + 20 * i;
    const W = randomCosines(rng, C, D, 1);
    const labels = Array.from({ length: N }, (_, i) => (i === 2 ? -100 : (i * 31) % C));
    return { x, W, labels };
  }
  const stateOf = (kind: string) =>
    kind === "adaface" ? { mean: 30, std: 10 } : kind === "curricularFace" ? { t: 0.3 } : undefined;

  for (const kind of NAMES) {
    it(`${kind}: host and GPU-resident x, W agree with the reference; readback: false maps nothing`, async () => {
      const dev = await sharedDevice();
      const l = await gpuLosses(dev, { auto: false, note: "test" });
      const js = await init({ backend: "js" });
      for (const o of [{ kind, scale: 16 }, { kind, scale: 8, reduction: "sum", marginGrad: "constant" }] as Any[]) {
        const p = head(new Rng(5));
        const state = stateOf(kind);
        const inputs = state ? { ...p, state } : p;
        const label = JSON.stringify(o);
        const want: Any = await js.marginHead.valueAndGrad(inputs as Any, o);
        const onHost = await l.marginHead.valueAndGrad(inputs as Any, o);
        const gpu = { ...inputs, x: await upload(p.x), W: await upload(p.W) };
        const c = await count<Any>(dev, () => l.marginHead.valueAndGrad(gpu as Any, { ...o, readback: false }));
        assert.deepEqual([c.maps, c.submits], [0, 1], `${label}: maps and submissions`);
        for (const [got, where] of [[onHost, "host"], [c.r, "gpu"]] as const) {
          for (const part of ["loss", ...(kind === "magface" ? ["ce", "g"] : [])]) {
            assertLossClose(
              (await host((got as Any)[part]))[0],
              (want as Any)[part],
              `${kind} ${where} ${label} ${part}`,
            );
          }
          for (const g of ["x", "W"]) {
            const v = await host((got as Any).grads[g]);
            assertGradClose(v as Float32Array, (want as Any).grads[g].data, `${kind} ${where} ${label} grads.${g}`);
          }
        }
        if (state) {
          STATE[kind].forEach((f) =>
            assertLossClose((onHost as Any).state[f], (want as Any).state[f], `${label} state.${f}`, 1e-9)
          );
          const s = await download(c.r.state);
          STATE[kind].forEach((f, q) => assertLossClose(s[q], (want as Any).state[f], `${label} gpu state.${f}`, 1e-6));
          // The next step from the GPU state.
          const next = await js.marginHead.forward({ ...p, state: (want as Any).state } as Any, o);
          const n2 = await count<Any>(
            dev,
            () => l.marginHead.forward({ ...gpu, state: c.r.state } as Any, { ...o, readback: false }),
          );
          assert.equal(n2.maps, 0);
          assertLossClose((await download(n2.r.loss))[0], next.loss as number, `${label} step 2 loss`);
        }
      }
      l.dispose();
    });
  }
});

describe("marginHead's classes (PartialFC) on the WebGPU head", { skip }, () => {
  const N = 6, D = 8, C = 40;
  const rng = new Rng(77);
  const x = randomCosines(rng, N, D, 1);
  for (let i = 0; i < x.data.length; i++) x.data[i] *= 12;
  const W = randomCosines(rng, C, D, 1);
  const labels = [3, 17, -100, 3, 29, 8];
  // The labels' classes and a few others, sorted.
  const classes = Int32Array.of(1, 3, 8, 11, 17, 20, 29, 33, 39);
  const cases: [string, Record<string, Any>][] = [
    ["arcface", {}],
    ["adaface", { state: { mean: 12, std: 3 } }],
    ["curricularFace", { state: { t: 0.2 } }],
    ["magface", {}],
  ];
  it("each kind agrees with the reference, from host and GPU-resident x; all classes = the full head", async () => {
    const dev = await sharedDevice();
    const l = await gpuLosses(dev, { auto: false, note: "test" });
    const js = await init({ backend: "js" });
    const gx = await upload(x);
    for (const [kind, extra] of cases) {
      const o = { kind, scale: 16 } as Any;
      const inputs = { x, W, labels, classes, ...extra };
      const want: Any = await js.marginHead.valueAndGrad(inputs as Any, o);
      const got: Any = await l.marginHead.valueAndGrad(inputs as Any, o);
      assertLossClose(got.loss as number, want.loss as number, `${kind} loss`);
      assert.deepEqual(got.grads.W.shape, [classes.length, D], `${kind}: grads.W [S, D]`);
      assertGradClose(got.grads.W.data as Float32Array, want.grads.W.data as Float32Array, `${kind} grads.W`);
      assertGradClose(got.grads.x.data as Float32Array, want.grads.x.data as Float32Array, `${kind} grads.x`);
      const c = await count<Any>(
        dev,
        () => l.marginHead.valueAndGrad({ ...inputs, x: gx } as Any, { ...o, readback: false }),
      );
      assert.equal(c.maps, 0, `${kind}: maps`);
      assertLossClose((await download(c.r.loss))[0], want.loss as number, `${kind} gpu loss`);
      assertGradClose(await download(c.r.grads.W), want.grads.W.data as Float32Array, `${kind} gpu grads.W`);
      // Every class sampled: the full head's values.
      const all = Int32Array.from({ length: C }, (_, j) => j);
      const full: Any = await l.marginHead.valueAndGrad({ x, W, labels, ...extra } as Any, o);
      const every: Any = await l.marginHead.valueAndGrad({ x, W, labels, classes: all, ...extra } as Any, o);
      assertLossClose(every.loss as number, full.loss as number, `${kind} all classes`);
      assertGradClose(every.grads.W.data as Float32Array, full.grads.W.data as Float32Array, `${kind} all classes W`);
    }
    l.dispose();
  });
});
