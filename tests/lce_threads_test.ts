// linearCrossEntropy on threads (issue 21 item 2, src/wasm/linear_cross_entropy.ts): each thread
// streams its range of the vocabulary through its own slab buffers (the calling thread feeding W's
// rows and copying the gradient's out where they are ordinary arrays), so threads take O(threads x
// slab) more WebAssembly memory than one thread, not W and its gradient whole. The results equal one
// thread's: grads.W and grads.bias the same values here (each class's chunk is computed by one thread
// with the same kernels; only the float64 row statistics are merged in another order), the loss
// within 1e-12, grads.x within SPEC's bound (its float32 partial sums are grouped per range).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { alloc } from "../cpu.ts";
import { init, type Losses } from "../mod.ts";
import { assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { randomLabels, randomMatrix, randomVector, Rng } from "./helpers/random.ts";
import { poolsInUse } from "../src/wasm/pool.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/** A random problem: x [n, d], W [v, d], bias [v], labels with some ignored. */
function problem(rng: Rng, n: number, d: number, v: number) {
  return {
    x: randomMatrix(rng, n, d),
    W: randomMatrix(rng, v, d, 1),
    bias: randomVector(rng, v, -1, 1),
    labels: randomLabels(rng, n, v, 0.2),
  };
}

/** Max |a - b| over max |b|. */
function relDiff(a: Float32Array, b: Float32Array): number {
  let top = 0, err = 0;
  b.forEach((g, i) => [top, err] = [Math.max(top, Math.abs(g)), Math.max(err, Math.abs(a[i] - g))]);
  return top ? err / top : err;
}

/** Threads' gradients against one thread's: W and bias the same values, x within SPEC's bound. */
function sameGrads(got: Any, want: Any, label: string): void {
  assert.equal(relDiff(got.W.data, want.W.data), 0, `${label}: grads.W as on one thread`);
  if (want.bias) assert.equal(relDiff(got.bias, want.bias), 0, `${label}: grads.bias as on one thread`);
  assertGradClose(got.x, want.x.data, `${label} grads.x`);
}

/** Runs `f` with one-thread and two-thread instances (the two-thread pool started first: one shared memory). */
async function withBoth(f: (one: Losses, two: Losses) => Promise<void>): Promise<void> {
  const two = await init({ backend: "wasm", threads: 2 }), one = await init({ backend: "wasm", threads: 1 });
  try {
    assert.equal(two.threads, 2, two.note);
    await f(one, two);
  } finally {
    [one, two].forEach((l) => l.dispose());
  }
}

describe("linearCrossEntropy on threads: W streamed per thread", () => {
  const cases: [string, [number, number, number], Any, boolean][] = [
    // one row block, two ranges
    ["one block, options", [64, 64, 2100], { labelSmoothing: 0.1, softcap: 20, zLoss: 1e-3 }, true],
    // three row blocks of 368 rows (the float32 pair), two ranges
    ["three blocks, weights", [1100, 48, 520], { weight: "random", zLoss: 1e-3 }, true],
    ["no bias, sum", [300, 40, 1500], { reduction: "sum", labelSmoothing: 0.05 }, false],
  ];
  for (const [name, [n, d, v], opts, bias] of cases) {
    it(`${name} (${n}x${d}x${v}): as one thread, ordinary arrays and alloc tensors`, async () => {
      await withBoth(async (one, two) => {
        const rng = new Rng(n + v);
        const p: Any = problem(rng, n, d, v);
        if (!bias) delete p.bias;
        const o = opts.weight ? { ...opts, weight: randomVector(rng, v, 0.5, 1.5) } : opts;
        const want: Any = await (one as Any).linearCrossEntropy.valueAndGrad(p, o);
        const pl = poolsInUse().get(2)!, runs = pl.runs;
        const got: Any = await (two as Any).linearCrossEntropy.valueAndGrad(p, o);
        assert.ok(pl.runs > runs, "ran on the pool");
        assertLossClose(got.loss, want.loss, "loss", 1e-12);
        for (const k of ["z", "accuracy"]) assertLossClose(got[k], want[k], `part ${k}`, 1e-12);
        sameGrads(got.grads, want.grads, name);
        // W and the gradient buffers in WebAssembly memory: used in place, the same values.
        using W = alloc([v, d]), gx = alloc([n, d]), gW = alloc([v, d]);
        W.data.set(p.W.data);
        const inPlace: Any = await (two as Any).linearCrossEntropy.valueAndGrad({ ...p, W }, {
          ...o,
          out: { x: gx, W: gW },
        });
        assert.equal(inPlace.loss, got.loss, "loss in place");
        assert.deepEqual(gx.data, got.grads.x.data, "grads.x in place");
        assert.deepEqual(gW.data, got.grads.W.data, "grads.W in place");
      });
    });
  }

  it("small problems on a 2-thread instance run on one thread (one block, row blocks, forward): the same bits", async () => {
    await withBoth(async (one, two) => {
      const rng = new Rng(5);
      for (const [n, d, v] of [[8, 16, 300], [700, 4, 40]]) {
        const p: Any = problem(rng, n, d, v), o = { labelSmoothing: 0.1 };
        const pl = poolsInUse().get(2)!, runs = pl.runs;
        const got: Any = await (two as Any).linearCrossEntropy.valueAndGrad(p, o);
        const loss: Any = (await (two as Any).linearCrossEntropy.forward(p, o)).loss;
        assert.equal(pl.runs, runs, `${n}x${d}x${v}: no parallel run`);
        const want: Any = await (one as Any).linearCrossEntropy.valueAndGrad(p, o);
        assert.equal(got.loss, want.loss);
        assert.equal(loss, want.loss);
        assert.deepEqual(got.grads.x.data, want.grads.x.data);
        assert.deepEqual(got.grads.W.data, want.grads.W.data);
        assert.deepEqual(got.grads.bias, want.grads.bias);
      }
    });
  });

  it("reduction none with a per-row upstream, and classes: as one thread", async () => {
    await withBoth(async (one, two) => {
      const rng = new Rng(77), n = 1100, d = 48, v = 900;
      const p: Any = problem(rng, n, d, v);
      const up = randomVector(rng, n, -2, 2), o = { reduction: "none", labelSmoothing: 0.1 };
      const want: Any = await (one as Any).linearCrossEntropy.backward(p, o, up);
      const got: Any = await (two as Any).linearCrossEntropy.backward(p, o, up);
      sameGrads(got, want, "none");
      // classes: 700 of the 900 (every non-ignored label among them)
      const keep = new Set(Array.from(p.labels as Int32Array).filter((y) => y >= 0));
      for (let j = 0; keep.size < 700; j++) keep.add(j);
      const classes = Int32Array.from([...keep].sort((a, b) => a - b));
      const q = { ...p, classes };
      const a: Any = await (one as Any).linearCrossEntropy.valueAndGrad(q, { zLoss: 1e-3 });
      const b: Any = await (two as Any).linearCrossEntropy.valueAndGrad(q, { zLoss: 1e-3 });
      assertLossClose(b.loss, a.loss, "classes loss", 1e-12);
      sameGrads(b.grads, a.grads, "classes");
    });
  });

  it("many rounds (600x128x20000, two row blocks): WebAssembly memory O(threads x slab) over one thread's", {
    timeout: 120_000,
  }, async () => {
    await withBoth(async (one, two) => {
      // W is 10 MB; a thread's round takes 1,024 classes (~10 rounds a phase). One thread holds lo
      // (the pair's low half, V D floats) and a block's logits; the old threaded path held W, hi and
      // lo (2 V D floats more).
      const rng = new Rng(20000), n = 600, d = 128, v = 20000;
      const p: Any = problem(rng, n, d, v);
      const pl = poolsInUse().get(2)!, rt = pl.rt;
      const malloc = rt.malloc.bind(rt);
      let peak = 0;
      rt.malloc = (bytes: number) => {
        const at = malloc(bytes);
        peak = Math.max(peak, rt.stats().used);
        return at;
      };
      try {
        const peakOf = async (l: Losses) => {
          peak = rt.stats().used;
          const r: Any = await (l as Any).linearCrossEntropy.valueAndGrad(p);
          return [peak, r] as const;
        };
        const [p1, want] = await peakOf(one);
        const runs = pl.runs;
        const [p2, got] = await peakOf(two);
        assert.ok(pl.runs - runs > 20, `ran in rounds (${pl.runs - runs} parallel calls)`);
        const extra = p2 - p1, vd = v * d * 4;
        // (measured 3.9 MB: each thread's four 0.5 MiB slab buffers and its rows' scratch; the old path 2 V D floats)
        assert.ok(extra < vd / 2, `threads took ${extra} bytes more than one thread, W is ${vd} bytes`);
        assertLossClose(got.loss, want.loss, "loss", 1e-12);
        sameGrads(got.grads, want.grads, "many rounds");
      } finally {
        rt.malloc = malloc;
      }
    });
  });
});
