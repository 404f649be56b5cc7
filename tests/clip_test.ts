// clip and siglip (SPEC.md §8; open_clip's ClipLoss and SigLipLoss): PyTorch float64
// fixtures (tests/fixtures/generate_clip.py) with their number gradients, finite
// differences w.r.t. a, b, scale and bias, agreement of the backends across blocks,
// identities, edges and named errors.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { assertGradClose, assertLossClose, assertUnchanged, snapshot, SPEC_TOL } from "./helpers/assert.ts";
import { backends, lossOf, missing, reference } from "./helpers/backends.ts";
import { commonOptionErrors, matrixErrors } from "./helpers/errors.ts";
import { loadFixtures } from "./helpers/fixtures.ts";
import { Rng } from "./helpers/random.ts";
import { clipSpec, siglipSpec, unitRows } from "./helpers/specs_clip.ts";
import { errorSuite, existenceTest, fdSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/**
 * The bound of a float32 backend at logit scales above open_clip's largest (100): the
 * similarities are float32 dot products (error ~1e-7 relative), so a logit `scale S` moves
 * by ~1e-7 scale; at scale 1e4 the gradients stay within 1e-4 (docs/LOSSES.md).
 */
const tolFor = (backend: string, scale: number) => (backend === "js" || scale <= 100 ? SPEC_TOL : 1e-4);

/** The number inputs of each loss. */
const NUMBERS: Record<string, readonly string[]> = { clip: ["scale"], siglip: ["scale", "bias"] };

/** A number gradient against the reference: within `tol * max(1, |ref|)`. */
function assertNumberClose(got: unknown, want: number, label: string, tol = SPEC_TOL): void {
  assert.equal(typeof got, "number", `${label}: a number gradient`);
  assertLossClose(got as number, want, label, tol);
}

for (const spec of [clipSpec, siglipSpec]) {
  describe(spec.name, () => {
    existenceTest(spec);

    describe(`matches PyTorch (${spec.fixtures})`, () => {
      for (const b of backends) {
        for (const fc of loadFixtures(spec.fixtures)) {
          it(`${b.name} ${fc.name}`, { skip: missing(spec.name, [b]) }, async () => {
            const loss = lossOf(b, spec.name)!, label = `${b.name} ${fc.name}`;
            const tol = tolFor(b.name, fc.inputs.scale as number);
            const snap = snapshot(fc.inputs);
            const f = await loss.forward(fc.inputs);
            assertLossClose(f.loss as number, fc.expected.loss as number, `${label} forward`, tol);
            const r = fc.upstream === undefined
              ? await loss.valueAndGrad(fc.inputs)
              : { loss: undefined, grads: await loss.backward(fc.inputs, {}, fc.upstream) };
            if (r.loss !== undefined) assertLossClose(r.loss as number, fc.expected.loss as number, label, tol);
            assert.deepEqual(Object.keys(r.grads).sort(), [...spec.grads, ...NUMBERS[spec.name]].sort(), label);
            for (const k of spec.grads) {
              if (b.name !== "js" && fc.name.includes("identical")) {
                // Identical rows: each gradient row is a sum of terms of size up to 2 scale / N
                // that cancel exactly; float32 resolves it to 2^-20 of that size.
                const want = fc.expected.grads[k] as Any, slack = 2 ** -20 * 2 * (fc.inputs.scale as number) / 6;
                const worst = Math.max(
                  ...Array.from(r.grads[k].data as Float32Array, (x, i) => Math.abs(x - want.data[i])),
                );
                assert.ok(worst <= slack, `${label} ${k}: error ${worst} > ${slack} (cancelling terms)`);
              } else assertGradClose(r.grads[k], fc.expected.grads[k] as Any, `${label} ${k}`, tol);
            }
            for (const k of NUMBERS[spec.name]) {
              assertNumberClose(r.grads[k], fc.expected.numbers![k], `${label} grads.${k}`, tol);
            }
            assertUnchanged(snap, fc.inputs, `${label}: `);
          });
        }
      }
    });

    fdSuite(spec, () => {
      const rng = new Rng(spec.name === "clip" ? 3 : 4);
      const p = spec.random(rng, 5, 3, 4, {});
      return [
        { name: "unit rows", inputs: p },
        {
          name: "unnormalised rows, upstream -2",
          inputs: { ...p, a: { ...p.a, data: p.a.data.map((x: number) => 2 * x) } },
          upstream: -2,
        },
      ];
    });

    it("the number gradients match central differences (js reference, float64)", async () => {
      const loss = lossOf(reference, spec.name)!;
      for (const [n, scale] of [[1, 3], [4, 2], [7, 20]]) {
        const p = spec.random(new Rng(n), n, 3, scale, {});
        if (spec.name === "siglip") p.bias = -1.5;
        const g = await loss.backward(p, {}, 0.5);
        for (const k of NUMBERS[spec.name]) {
          const at = async (x: number) => 0.5 * ((await loss.forward({ ...p, [k]: x })).loss as number);
          const h = 1e-5 * Math.max(1, Math.abs(p[k]));
          const fd = (await at(p[k] + h) - await at(p[k] - h)) / (2 * h);
          assertNumberClose(g[k], fd, `d/d${k} at N=${n}, scale ${scale}`, 1e-6);
        }
      }
    });

    describe("agreement with the reference across blocks (256 x 256) and SIMD tails", () => {
      for (const b of backends.filter((x) => x.name !== "js")) {
        it(b.name, { skip: missing(spec.name, [b]) }, async () => {
          for (const [n, d, scale] of [[1, 1, 1], [3, 5, 30], [17, 7, 100], [259, 6, 14], [513, 4, 50]]) {
            const rng = new Rng(n * 31 + d);
            const p = spec.random(rng, n, d, scale, {});
            const want = await lossOf(reference, spec.name)!.valueAndGrad(p);
            const got = await lossOf(b, spec.name)!.valueAndGrad(p);
            const label = `${b.name} N=${n} D=${d} scale ${scale}`;
            assertLossClose(got.loss as number, want.loss as number, label);
            for (const k of spec.grads) assertGradClose(got.grads[k], want.grads[k].data, `${label} ${k}`);
            for (const k of NUMBERS[spec.name]) assertNumberClose(got.grads[k], want.grads[k], `${label} ${k}`);
          }
        });
      }
    });

    describe("identities and edges", () => {
      for (const b of backends) {
        const skip = missing(spec.name, [b]);
        it(`${b.name}: permuting the pairs keeps the loss and permutes the gradients`, { skip }, async () => {
          const loss = lossOf(b, spec.name)!, n = 9, d = 5;
          const p = spec.random(new Rng(11), n, d, 30, {});
          const perm = [3, 0, 8, 1, 7, 2, 6, 4, 5];
          const move = (m: Any) => {
            const data = new Float32Array(m.data.length);
            perm.forEach((i, q) => data.set(m.data.subarray(i * d, (i + 1) * d), q * d));
            return { data, shape: m.shape };
          };
          const r = await loss.valueAndGrad(p), s = await loss.valueAndGrad({ ...p, a: move(p.a), b: move(p.b) });
          assertLossClose(s.loss as number, r.loss as number, "loss");
          for (const k of spec.grads) assertGradClose(s.grads[k], move(r.grads[k]).data, `grads.${k}`);
          for (const k of NUMBERS[spec.name]) assertNumberClose(s.grads[k], r.grads[k], `grads.${k}`);
        });

        it(`${b.name}: identical rows and scale 1e4 stay finite; N = 1`, { skip }, async () => {
          const loss = lossOf(b, spec.name)!;
          const same = unitRows(new Rng(5), 1, 6);
          const rows = { data: new Float32Array(6 * 4).map((_, i) => same.data[i % 6]), shape: [4, 6] };
          for (const scale of [1e4, 1e6]) {
            const r = await loss.valueAndGrad({
              a: rows,
              b: rows,
              scale,
              ...(spec.name === "siglip" ? { bias: -10 } : {}),
            });
            assert.ok(Number.isFinite(r.loss as number), `loss at scale ${scale}`);
            for (const k of spec.grads) assert.ok(r.grads[k].data.every(Number.isFinite), `grads.${k}`);
            for (const k of NUMBERS[spec.name]) assert.ok(Number.isFinite(r.grads[k]), `grads.${k}`);
          }
          if (spec.name === "clip") {
            // Identical rows: every logit equal, so each cross-entropy is log N.
            const r = await loss.forward({ a: rows, b: rows, scale: 1e4 });
            assertLossClose(r.loss as number, Math.log(4), "identical rows: log N");
            // N = 1: one logit per softmax, the loss and every gradient exactly 0.
            const one = await loss.valueAndGrad({ a: same, b: unitRows(new Rng(6), 1, 6), scale: 50 });
            assert.equal(one.loss, 0);
            assert.deepEqual([...one.grads.a.data, ...one.grads.b.data, one.grads.scale], new Array(13).fill(0));
          } else {
            // N = 1: -log sigmoid(t a.b + bias), its bias gradient sigmoid(x) - 1.
            const a = same, bb = unitRows(new Rng(6), 1, 6);
            let dot = 0;
            for (let k = 0; k < 6; k++) dot += a.data[k] * bb.data[k];
            const x = 3 * dot - 1;
            const one = await loss.valueAndGrad({ a, b: bb, scale: 3, bias: -1 });
            assertLossClose(one.loss as number, Math.log1p(Math.exp(-x)), "N = 1 loss");
            assertNumberClose(one.grads.bias, 1 / (1 + Math.exp(-x)) - 1, "N = 1 bias gradient");
          }
        });

        if (spec.name === "clip") {
          it(
            `${b.name}: near one-hot pairs keep the relative accuracy of 1 - p (S = I, scale 12)`,
            { skip },
            async () => {
              // p_ii = e^12 / (e^12 + N - 1): 1 - p ~ 1e-4, which a float32 p_ii - 1 would resolve to 1e-3 of itself.
              for (const n of [8, 260]) {
                const eye = { data: new Float32Array(n * n).map((_, k) => (k % (n + 1) === 0 ? 1 : 0)), shape: [n, n] };
                const p = { a: eye, b: eye, scale: 12 };
                const want = await lossOf(reference, "clip")!.valueAndGrad(p);
                const got = await lossOf(b, "clip")!.valueAndGrad(p);
                // Each cross-entropy is -log p_ii = log(1 + (N - 1) e^-12).
                const exact = Math.log1p((n - 1) * Math.exp(-12));
                assert.ok(Math.abs((want.loss as number) - exact) <= 1e-9 * exact, `reference loss ${want.loss}`);
                assert.ok(
                  Math.abs((got.loss as number) - exact) <= 1e-5 * exact,
                  `N=${n} loss ${got.loss} vs ${exact}`,
                );
                for (const k of spec.grads) assertGradClose(got.grads[k], want.grads[k].data, `N=${n} grads.${k}`);
                assertNumberClose(got.grads.scale, want.grads.scale, `N=${n} grads.scale`);
              }
            },
          );
        }

        if (spec.name === "siglip") {
          it(`${b.name}: the bias gradient is (1/N) sum_ij (sigmoid(x_ij) - [i = j])`, { skip }, async () => {
            const loss = lossOf(b, "siglip")!, n = 7, d = 4;
            const p = spec.random(new Rng(21), n, d, 10, {});
            const r = await loss.backward(p, {}, 1);
            let want = 0;
            for (let i = 0; i < n; i++) {
              for (let j = 0; j < n; j++) {
                let s = 0;
                for (let k = 0; k < d; k++) s += p.a.data[i * d + k] * p.b.data[j * d + k];
                want += 1 / (1 + Math.exp(-(p.scale * s + p.bias))) - (i === j ? 1 : 0);
              }
            }
            assertNumberClose(r.bias, want / n, "grads.bias");
          });
        }
      }
    });

    const small = () => spec.random(new Rng(2), 3, 4, 10, {});
    errorSuite(spec, [
      ...matrixErrors(small, "a", true, "a"),
      ...matrixErrors(small, "b", false, "a"),
      ...commonOptionErrors(small, "a", false),
      ...NUMBERS[spec.name].flatMap((k) => [
        {
          name: `${k} missing`,
          inputs: () => ({ ...small(), [k]: undefined }),
          type: TypeError,
          includes: [k, "undefined"],
        },
        { name: `${k} a string`, inputs: () => ({ ...small(), [k]: "1" }), type: TypeError, includes: [k, '"1"'] },
        { name: `${k} NaN`, inputs: () => ({ ...small(), [k]: NaN }), type: RangeError, includes: [k, "NaN"] },
        { name: `${k} 1e7`, inputs: () => ({ ...small(), [k]: 1e7 }), type: RangeError, includes: [k, "10000000"] },
      ]),
      { name: "scale 0", inputs: () => ({ ...small(), scale: 0 }), type: RangeError, includes: ["scale", "(0", "0"] },
      { name: "scale -1", inputs: () => ({ ...small(), scale: -1 }), type: RangeError, includes: ["scale", "-1"] },
      {
        name: "an empty batch",
        inputs: () => ({ ...small(), a: { data: new Float32Array(0), shape: [0, 4] } }),
        type: RangeError,
        includes: ["a", "0"],
      },
      {
        name: "b of another shape",
        inputs: () => ({ ...small(), b: unitRows(new Rng(1), 2, 4) }),
        type: RangeError,
        includes: ["b", "2"],
      },
      {
        name: "an upstream that is not a number",
        inputs: small,
        upstream: "1",
        methods: ["backward"],
        type: TypeError,
        includes: ["upstream", '"1"'],
      },
      {
        name: "out for a number gradient",
        inputs: small,
        options: { out: { scale: unitRows(new Rng(1), 3, 4) } },
        type: TypeError,
        includes: ["options.out", '"scale"'],
      },
    ]);
  });
}

describe("blocked: no N x N matrix in WebAssembly memory", () => {
  // (N = 32,768 at D = 512 ran in 129 MiB of WebAssembly memory: docs/LOSSES.md; too slow for a test here.)
  it("clip and siglip forward at N = 8192, D = 4: memory stays below 16 MiB (S would be 256 MiB)", async () => {
    const { wasm } = await import("../cpu.ts");
    const { runtime } = await import("../src/wasm/runtime.ts");
    const n = 8192, d = 4, one = Float32Array.from({ length: n * d }, (_, k) => (k % d === k % 3 ? 1 : 0));
    const a = { data: one, shape: [n, d] as const };
    const c = wasm.clip.forward({ a, b: a, scale: 1 }), s = wasm.siglip.forward({ a, b: a, scale: 1, bias: 0 });
    assert.ok(Number.isFinite(c.loss) && Number.isFinite(s.loss));
    assert.ok(runtime().buffer.byteLength <= 16 * 2 ** 20, `wasm memory ${runtime().buffer.byteLength} bytes`);
  });
});

describe("types", () => {
  it("a number input's gradient is typed a number, the matrices' as their inputs' place", async () => {
    const { wasm } = await import("../cpu.ts");
    const a = { data: new Float32Array([1, 0, 0, 1]), shape: [2, 2] as const };
    const r = wasm.siglip.valueAndGrad({ a, b: a, scale: 2, bias: -1 });
    const scale: number = r.grads.scale, bias: number = r.grads.bias, ga: Float32Array = r.grads.a.data;
    const g = wasm.clip.backward({ a, b: a, scale: 2 });
    const s2: number = g.scale;
    assert.ok([scale, bias, ga[0], s2].every(Number.isFinite));
  });
});
