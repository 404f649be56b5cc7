// The WebAssembly thread pools (src/wasm/pool.ts, init({ threads })): row losses split by
// rows are bit-identical to one thread; heads split by classes agree with one thread and
// with the float64 reference within SPEC's bound, and are deterministic; zero-copy inputs
// and out buffers work on the shared memory; without shared memory init says why and
// runs on one thread; bad thread counts are named errors. Threads are per instance: each
// runs on the count it was created with whatever others asked for (checked by the work its
// pool ran, and timed), instances of one count share a pool, and dispose gives it back.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { init, type Losses } from "../mod.ts";
import { alloc } from "../cpu.ts";
import { type Pool, poolsInUse } from "../src/wasm/pool.ts";
import { useWasmVariant, wasmVariant } from "../src/wasm/runtime.ts";
import { assertGradClose, assertLossClose, assertThrowsNamed, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { logSoftmaxOf, randomLabels, randomMatrix, randomProbabilities, Rng } from "./helpers/random.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const isDeno = typeof (globalThis as Any).Deno !== "undefined";
const isBun = typeof (globalThis as Any).Bun !== "undefined";
const THREADS = 3;

/** The running pool of `threads` threads (it must be running). */
function poolOf(threads: number): Pool {
  const p = poolsInUse().get(threads);
  assert.ok(p, `a pool of ${threads} threads runs`);
  return p;
}

/** Parallel calls run so far by every running pool: what one-thread work must not add to. */
const dispatched = () => [...poolsInUse().values()].reduce((s, p) => s + p.runs, 0);

/** Every float of two results equal (the same bits), with the first difference named. */
function assertSame(a: Any, b: Any, label: string): void {
  assert.equal(typeof a, typeof b, label);
  if (typeof a === "number") return assert.ok(Object.is(a, b), `${label}: ${a} != ${b}`);
  if (a instanceof Float32Array) {
    const i = a.findIndex((v, k) => !Object.is(v, b[k]));
    return assert.equal(i, -1, `${label}[${i}]: ${a[i]} != ${b[i]}`);
  }
  for (const key of Object.keys(a)) assertSame(a[key], b[key], `${label}.${key}`);
}

async function pair(): Promise<[Losses, () => Promise<Losses>]> {
  const one = await init({ backend: "wasm", threads: 1 });
  return [one, () => init({ backend: "wasm", threads: THREADS })];
}

describe("WebAssembly threads", () => {
  it("init takes a thread count and says how many threads run", async () => {
    const l = await init({ backend: "wasm", threads: THREADS });
    assert.equal(l.threads, THREADS, l.note);
    assert.match(l.note, new RegExp(`${THREADS} threads`));
    const one = await init({ backend: "wasm", threads: 1 });
    assert.equal(one.threads, 1);
    assert.equal((await init({ backend: "js", threads: THREADS })).threads, 1);
    await assertThrowsNamed(() => init({ threads: 0 }), RangeError, "options.threads", "0");
    await assertThrowsNamed(() => init({ threads: 1.5 }), TypeError, "options.threads", "1.5");
    await assertThrowsNamed(() => init({ threads: "2" as Any }), TypeError, "options.threads", '"2"');
  });

  // 601 rows x 700 classes: above the threshold for 3 threads, split 200/200/201. Row losses
  // split when their matrices live in WebAssembly memory: inputs and out buffers from alloc.
  const n = 601, c = 700;
  const rng = new Rng(12);
  const logits = randomMatrix(rng, n, c, 4), labels = randomLabels(rng, n, c, 0.1);
  const target = randomProbabilities(rng, n, c, true), teacher = randomMatrix(rng, n, c, 3);
  const cos = { data: logits.data.map((v) => v / 8), shape: logits.shape }, logInput = logSoftmaxOf(logits);
  const weight = Float32Array.from({ length: c }, () => 0.5 + rng.next());
  const hard = labels.map((y) => Math.max(y, 0));
  type Row = [name: string, inputs: Record<string, Any>, options: Any, grads: string[], method?: "forward"];
  const rows: Row[] = [
    ["crossEntropy", { logits, labels }, { labelSmoothing: 0.1, weight }, ["logits"]],
    // softcap: each thread caps its rows into its own scratch row
    ["crossEntropy", { logits, labels }, { softcap: 3, zLoss: 0.01, reduction: "none" }, ["logits"]],
    ["focal", { logits, labels }, { gamma: 2 }, ["logits"]],
    ["arcface", { cos, labels }, {}, ["cos"]],
    ["softCrossEntropy", { logits, target }, {}, ["logits", "target"]],
    ["klDiv", { logInput, target }, {}, ["logInput", "target"]],
    ["distillation", { student: logits, teacher, labels: hard }, {}, ["student"]],
    ["logSoftmax", { x: logits }, {}, ["output"], "forward"],
  ];
  /** The row loss on `l` with every matrix (inputs, out buffers) in WebAssembly memory; the results copied. */
  const onAlloc = async (l: Any, [name, inputs, options, grads, method]: Row) => {
    const held: Any[] = [];
    const mem = (m: Any) => {
      const a = alloc(m.shape);
      a.data.set(m.data);
      held.push(a);
      return a;
    };
    const ins = Object.fromEntries(Object.entries(inputs).map(([k, m]) => [k, m.data ? mem(m) : m]));
    const out = Object.fromEntries(grads.map((k) => [k, mem({ shape: [n, c], data: new Float32Array(n * c) })]));
    try {
      const r =
        await (method ? l[name].forward(ins, { ...options, out }) : l[name].valueAndGrad(ins, { ...options, out }));
      return { loss: r.loss ?? 0, out: Object.fromEntries(grads.map((k) => [k, out[k].data.slice()])) };
    } finally {
      held.forEach((a) => a.free());
    }
  };
  for (const row of rows) {
    it(`${[row[0], ...Object.keys(row[2])].join(" ")}: the same bits on ${THREADS} threads as on one`, async () => {
      const [one, many] = await pair();
      const snap = snapshot(row[1]);
      const a = await onAlloc(one, row);
      const l = await many(), runs = poolOf(THREADS).runs;
      const b = await onAlloc(l, row);
      assert.ok(poolOf(THREADS).runs > runs, "ran on the pool");
      assertSame(b, a, row[0]);
      assertUnchanged(snap, row[1]);
    });
  }

  // Matrices in WebAssembly memory split from 2^15 elements a thread (src/wasm/stream.ts), ordinary arrays
  // from 2^17: 100 x 700 (70,000 elements) runs on two of the pool's threads, in place, the same bits.
  it("crossEntropy 100 x 700 on alloc'd matrices: split (2^15 elements a thread), the same bits as one thread", async () => {
    const [one, many] = await pair();
    const sn = 100, sr = new Rng(5), x = randomMatrix(sr, sn, c, 4), y = randomLabels(sr, sn, c, 0.1);
    const run = async (l: Any) => {
      using a = alloc([sn, c]), g = alloc([sn, c]);
      a.data.set(x.data);
      const r = await l.crossEntropy.valueAndGrad({ logits: a, labels: y }, { out: { logits: g } });
      return { loss: r.loss, out: { logits: g.data.slice() } };
    };
    const want = await run(one), l = await many(), runs = poolOf(THREADS).runs;
    assertSame(await run(l), want, "crossEntropy");
    assert.ok(poolOf(THREADS).runs > runs, "ran on the pool");
  });

  // Ordinary arrays: 3000 x 700 (8.4 MB a matrix), pipelined in blocks of at most 374 rows on 2 workers.
  const pn = 3000, pr = new Rng(31);
  const plogits = randomMatrix(pr, pn, c, 4), plabels = randomLabels(pr, pn, c, 0.1);
  const ptarget = randomProbabilities(pr, pn, c, true), pteacher = randomMatrix(pr, pn, c, 3);
  const plain: Row[] = [
    ["crossEntropy", { logits: plogits, labels: plabels }, { labelSmoothing: 0.1 }, ["logits"]],
    ["softCrossEntropy", { logits: plogits, target: ptarget }, {}, ["logits", "target"]],
    ["distillation", { student: plogits, teacher: pteacher, labels: plabels.map((y) => Math.max(y, 0)) }, {}, [
      "student",
    ]],
    ["logSoftmax", { x: plogits }, {}, ["output"], "forward"],
  ];
  for (const [name, inputs, options, grads, method] of plain) {
    for (const withOut of [false, true]) {
      it(
        `${name} on ordinary arrays${withOut ? " with out=" : ""}: pipelined on the pool, the same bits as one thread`,
        {
          timeout: 120_000,
        },
        async () => {
          const [one, many] = await pair();
          const snap = snapshot(inputs);
          const call = (l: Any) => {
            const out = withOut
              ? Object.fromEntries(grads.map((k) => [k, { data: new Float32Array(pn * c), shape: [pn, c] }]))
              : {};
            const opts = withOut ? { ...options, out } : options;
            const r = method ? l[name].forward(inputs, opts) : l[name].valueAndGrad(inputs, opts);
            return withOut ? { loss: r.loss ?? 0, out: Object.fromEntries(grads.map((k) => [k, out[k].data])) } : r;
          };
          const a = await call(one);
          const l = await many(), runs = poolOf(THREADS).runs;
          const b = await call(l);
          // How many rounds depends on the timing (the caller computes rows until the workers are done).
          assert.ok(poolOf(THREADS).runs > runs, "ran on the pool");
          assertSame(b, a, name);
          assertUnchanged(snap, inputs);
        },
      );
    }
  }

  // The pipeline's split (workers from the front, the calling thread from the back, blocks
  // shrinking with the rows left) at shapes where a block or the caller's chunk is one row,
  // and on 2 threads (one worker) as on THREADS, softcap's per-thread scratch included.
  for (const [sn, sc] of [[2, 150_000], [7, 40_000], [513, 600]]) {
    it(`crossEntropy ${sn} x ${sc} on ordinary arrays: split between the workers and the caller, the same bits`, async () => {
      const sr = new Rng(sn), slogits = randomMatrix(sr, sn, sc, 4), slabels = randomLabels(sr, sn, sc, 0.1);
      const one = await init({ backend: "wasm", threads: 1 });
      for (const t of [2, THREADS]) {
        for (const options of [{}, { softcap: 3, reduction: "none" }] as Any[]) {
          const a = one.crossEntropy.valueAndGrad({ logits: slogits, labels: slabels }, options);
          const l = await init({ backend: "wasm", threads: t }), runs = poolOf(t).runs;
          const b = await l.crossEntropy.valueAndGrad({ logits: slogits, labels: slabels }, options);
          assert.ok(poolOf(t).runs > runs, `ran on the pool of ${t}`);
          assertSame(b, await a, `${sn} x ${sc} on ${t} threads`);
          l.dispose();
        }
      }
    });
  }

  // Copies to and from the shared memory where the two addresses disagree modulo 8 (an odd row
  // length, arrays at an odd float): V8 copies those byte by byte, so Runtime.copy stages them.
  it("crossEntropy 513 x 601 with logits and out= at odd floats: the same bits on 2 threads, inputs unchanged", async () => {
    const r = new Rng(601), n = 513, c = 601, m = randomMatrix(r, n, c, 4), labels = randomLabels(r, n, c, 0.1);
    const at = (data: Float32Array, k: number) => {
      const wide = new Float32Array(data.length + k);
      wide.set(data, k);
      return { data: wide.subarray(k), shape: [n, c] as [number, number] };
    };
    const one = await init({ backend: "wasm", threads: 1 });
    const a = await one.crossEntropy.valueAndGrad({ logits: m, labels });
    const l = await init({ backend: "wasm", threads: 2 });
    for (const [k, j] of [[1, 0], [1, 1], [0, 1], [3, 2]]) {
      const logits = at(m.data, k), out = at(new Float32Array(n * c), j), snap = snapshot({ logits, labels });
      const runs = poolOf(2).runs;
      assertSame(await l.crossEntropy.valueAndGrad({ logits, labels }), a, `logits at float ${k}`);
      const b = await l.crossEntropy.valueAndGrad({ logits, labels }, { out: { logits: out } });
      assert.equal(b.grads.logits, out);
      assertSame(b, a, `logits at float ${k}, out= at float ${j}`);
      assert.ok(poolOf(2).runs >= runs + 2, "ran on the pool");
      assertUnchanged(snap, { logits, labels });
    }
    l.dispose();
  });

  it("a worker's trap: the call throws, the queue stays in order, and the pool runs the next call", async () => {
    const l = await init({ backend: "wasm", threads: 2 }), p = poolOf(2);
    const bad: number[] = [], good: number[] = [];
    p.recorder(bad).softmax_rows(0xffff_fff0, 0xffff_fff0, 1, 1000, 0); // past the end of memory: a trap
    p.post(0, bad);
    p.post(0, good); // queued behind the failing one
    assert.throws(() => p.settle(), /WebAssembly abort in a worker thread/);
    p.settle(); // the failure was reported once
    const r = new Rng(3), m = randomMatrix(r, 600, 700), labels = randomLabels(r, 600, 700, 0);
    const one = await init({ backend: "wasm", threads: 1 });
    assertSame(
      await l.crossEntropy.valueAndGrad({ logits: m, labels }),
      await one.crossEntropy.valueAndGrad({ logits: m, labels }),
      "after",
    );
    l.dispose();
  });

  it("Runtime.copy: every offset pair modulo 8 between a plain array and the shared memory, both ways", async () => {
    const l = await init({ backend: "wasm", threads: 2 });
    const rt = poolOf(2).rt, at = rt.malloc(1 << 20), len = 300_001;
    const plain = new Uint8Array(len + 16).map((_, i) => (i * 7 + 3) & 255);
    for (let i = 0; i < 8; i++) {
      for (let j = 0; j < 8; j++) {
        const shared = new Uint8Array(rt.buffer, at + j, len);
        shared.fill(0);
        rt.copy(shared, plain.subarray(i, i + len));
        assert.deepEqual(shared, plain.subarray(i, i + len), `plain at ${i} into shared at ${j}`);
        const back = new Uint8Array(len + 16);
        rt.copy(back.subarray(j, j + len), new Uint8Array(rt.buffer, at + i, len));
        assert.deepEqual(
          back.subarray(j, j + len),
          new Uint8Array(rt.buffer, at + i, len),
          `shared at ${i} into plain at ${j}`,
        );
      }
    }
    rt.free(at);
    l.dispose();
  });

  // Heads: 64 x 64 x 3100 (25 chunks of 128 classes over 3 threads), ignored rows.
  const hn = 64, hd = 64, hc = 3100;
  const hr = new Rng(7);
  const x = randomMatrix(hr, hn, hd), W = randomMatrix(hr, hc, hd), hl = randomLabels(hr, hn, hc, 0.15);
  const heads: [string, Any][] = [["marginHead", { margin: 0.5 }], ["sphereface", {}], ["lsoftmax", {}]];
  for (const [name, opts] of heads) {
    it(`${name}: on ${THREADS} threads as on one and as the float64 reference, and deterministic`, async () => {
      const [one, many] = await pair();
      const snap = snapshot({ x, W, hl });
      const a = await (one as Any)[name].valueAndGrad({ x, W, labels: hl }, opts);
      const l = await many(), runs = poolOf(THREADS).runs;
      const b = await (l as Any)[name].valueAndGrad({ x, W, labels: hl }, opts);
      assert.equal(poolOf(THREADS).runs, runs + 2, "both phases ran on the pool");
      const again = await (l as Any)[name].valueAndGrad({ x, W, labels: hl }, opts);
      assertSame(again, b, `${name} twice`);
      const ref = await ((await init({ backend: "js" })) as Any)[name].valueAndGrad({ x, W, labels: hl }, opts);
      for (const [got, label] of [[b, "threads"], [a, "one thread"]] as const) {
        assertLossClose(got.loss, ref.loss, `${name} ${label} loss`);
        assertGradClose(got.grads.x, ref.grads.x.data, `${name} ${label} dx`);
        assertGradClose(got.grads.W, ref.grads.W.data, `${name} ${label} dW`);
      }
      assertUnchanged(snap, { x, W, hl });
    });
  }

  it("marginHead on threads with W, x and the out buffers in WebAssembly memory", async () => {
    const [one, many] = await pair();
    const want = await one.marginHead.valueAndGrad({ x, W, labels: hl });
    const l = await many();
    using wx = alloc([hn, hd]), ww = alloc([hc, hd]), gx = alloc([hn, hd]), gw = alloc([hc, hd]);
    wx.data.set(x.data);
    ww.data.set(W.data);
    const got = await l.marginHead.valueAndGrad({ x: wx, W: ww, labels: hl }, { out: { x: gx, W: gw } });
    assertLossClose(got.loss, want.loss, "loss");
    assertGradClose(gx, want.grads.x.data, "dx in out");
    assertGradClose(gw, want.grads.W.data, "dW in out");
    const host = await l.marginHead.valueAndGrad({ x, W, labels: hl });
    assertSame(gw.data, host.grads.W.data, "dW: in place as copied");
  });

  it(
    "marginHead on threads streams W: many rounds, the same bits from ordinary arrays as in place, memory O(threads x slab)",
    {
      timeout: 120_000,
    },
    async () => {
      // 8 x 512 x 20000: W is 41 MB; a round takes 256 classes per thread (26 rounds a phase on 3 threads). The
      // arena (the high-water mark of every call so far) stays under W's size, where copying W and dW took twice it.
      const sn = 8, sd = 512, sc = 20000, sr = new Rng(21);
      const sx = randomMatrix(sr, sn, sd), sW = randomMatrix(sr, sc, sd), sl = randomLabels(sr, sn, sc, 0.1);
      const [one, many] = await pair();
      const want = await one.marginHead.valueAndGrad({ x: sx, W: sW, labels: sl }, { margin: 0.5 });
      const l = await many(), P = poolOf(THREADS), runs = P.runs;
      const got = await l.marginHead.valueAndGrad({ x: sx, W: sW, labels: sl }, { margin: 0.5 });
      assert.ok(P.runs - runs > 20, `ran in rounds (${P.runs - runs} parallel calls)`);
      const arena = P.rt.stats().arena;
      assert.ok(arena < sc * sd * 4, `the arena holds ${arena} bytes, against ${sc * sd * 4} bytes of W`);
      assertLossClose(got.loss, want.loss, "loss");
      assertGradClose(got.grads.x, want.grads.x.data, "dx");
      assertGradClose(got.grads.W, want.grads.W.data, "dW");
      using wW = alloc([sc, sd]), gx = alloc([sn, sd]), gw = alloc([sc, sd]);
      wW.data.set(sW.data);
      const inPlace = await l.marginHead.valueAndGrad({ x: sx, W: wW, labels: sl }, {
        margin: 0.5,
        out: { x: gx, W: gw },
      });
      assertSame(inPlace.loss, got.loss, "loss in place");
      assertSame(gx.data, got.grads.x.data, "dx in place");
      assertSame(gw.data, got.grads.W.data, "dW in place");
    },
  );

  it("a runtime replaced under a pool (useWasmVariant) stops it: its instance runs right on one thread, and says so", async () => {
    const [one, many] = await pair();
    const want = await one.marginHead.valueAndGrad({ x, W, labels: hl });
    const l = await many(), P = poolOf(THREADS), runs = P.runs;
    useWasmVariant(wasmVariant()); // a fresh instance on a plain memory; the pool's workers hold the old one
    const got = await l.marginHead.valueAndGrad({ x, W, labels: hl });
    assertSame(got, want, "marginHead after the runtime changed");
    assert.equal(P.runs, runs, "the stopped pool ran nothing");
    assert.notEqual(P.closed, null, "the pool was stopped");
    assert.equal(poolsInUse().get(THREADS), undefined);
    assert.equal(l.threads, 1);
    assert.match(l.note, /one thread: the WebAssembly module was replaced/);
    const again = await many();
    assert.equal(again.threads, THREADS, again.note);
    assert.notEqual(poolOf(THREADS), P, "a new pool on the new memory");
  });

  it("without shared memory init runs on one thread and says why", { skip: !isDeno && "needs Deno" }, () => {
    const mod = fileURLToPath(new URL("../mod.ts", import.meta.url));
    const script = `
      delete globalThis.SharedArrayBuffer;
      const { init } = await import(${JSON.stringify(mod)});
      const l = await init({ backend: "wasm", threads: 4 });
      const logits = { data: new Float32Array(600 * 600).fill(1), shape: [600, 600] };
      const { loss } = await l.crossEntropy.forward({ logits, labels: new Int32Array(600) });
      console.log(JSON.stringify({ threads: l.threads, note: l.note, loss }));`;
    const r = spawnSync((globalThis as Any).Deno.execPath(), ["eval", "--quiet", script], {
      encoding: "utf8",
      env: { ...process.env, NO_COLOR: "1" },
    });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split("\n").pop()!);
    assert.equal(out.threads, 1);
    assert.match(out.note, /one thread: no shared memory/);
    assert.ok(Math.abs(out.loss - Math.log(600)) < 1e-5, String(out.loss));
  });
});

describe("WebAssembly threads per instance", () => {
  // 64 x 256 x 8000: 1.3e8 multiply-adds a pass, a head that splits over 2 threads.
  const r = new Rng(5);
  const tn = 64, td = 256, tc = 8000;
  const tx = randomMatrix(r, tn, td), tW = randomMatrix(r, tc, td), tl = randomLabels(r, tn, tc, 0.05);
  const big = (l: Losses) => l.marginHead.valueAndGrad({ x: tx, W: tW, labels: tl }, { margin: 0.5 });
  // The small head of the tests above (64 x 64 x 3100): also splits over 2 threads.
  const hn = 64, hd = 64, hc = 3100;
  const hr = new Rng(8);
  const x = randomMatrix(hr, hn, hd), W = randomMatrix(hr, hc, hd), hl = randomLabels(hr, hn, hc, 0.15);
  const small = (l: Losses) => l.marginHead.valueAndGrad({ x, W, labels: hl });
  const wasmOn = (threads: number) => init({ backend: "wasm", threads });

  it("1 and 2 threads in one process: each instance runs on its own count (the work its pool ran, its time)", async () => {
    const a = await wasmOn(1), b = await wasmOn(2);
    const late = await wasmOn(1); // asked for after b, and b keeps its 2 threads
    try {
      for (const l of [a, late]) {
        assert.equal(l.threads, 1);
        assert.equal(l.note, "wasm: asked for; one thread");
      }
      assert.equal(b.threads, 2, b.note);
      assert.equal(b.note, "wasm: asked for; 2 threads");
      const P = poolOf(2);
      const ms: Record<"a" | "b", number[]> = { a: [], b: [] };
      const results: Record<"a" | "b", Any> = { a: null, b: null };
      for (let round = 0; round < 6; round++) { // round 0 warms up (memory grows for the threaded copies of W)
        for (const [name, l] of [["a", round % 2 ? late : a], ["b", b]] as const) {
          const before = dispatched(), runs = P.runs, t0 = performance.now();
          results[name] = await big(l);
          if (round > 0) ms[name].push(performance.now() - t0);
          // (the head streams W in rounds: one parallel call per round, both phases the same count)
          if (name === "b") assert.ok(P.runs >= runs + 2 && (P.runs - runs) % 2 === 0, "b ran both phases on its pool");
          else assert.equal(dispatched(), before, "the 1-thread instance gave no pool any work");
        }
      }
      assertLossClose(results.b.loss, results.a.loss, "loss on 2 threads");
      assertGradClose(results.b.grads.x, results.a.grads.x.data, "dx on 2 threads");
      assertGradClose(results.b.grads.W, results.a.grads.W.data, "dW on 2 threads");
      const [minA, minB] = [Math.min(...ms.a), Math.min(...ms.b)];
      const median = (t: number[]) => [...t].sort((u, v) => u - v)[t.length >> 1];
      console.log(
        `marginHead ${tn}x${td}x${tc}, interleaved, min / median ms: 1 thread ${minA.toFixed(1)} / ` +
          `${median(ms.a).toFixed(1)}, 2 threads ${minB.toFixed(1)} / ${median(ms.b).toFixed(1)} ` +
          `(1 / 2 threads at the minimum: ${(minA / minB).toFixed(2)}x)`,
      );
      // The times are reported, not compared closely: on this VM's 2 noisy cores 2 threads measured 0.57x to 1.6x
      // of one thread's speed at this size. The bound only catches a gross slowdown of the threaded path.
      assert.ok(minB < 4 * minA, `2 threads ${minB.toFixed(1)} ms against 1 thread ${minA.toFixed(1)} ms`);
    } finally {
      [a, b, late].forEach((l) => l.dispose());
    }
  });

  it("instances of one count share a pool; dispose gives it back, the last one stops its workers", async () => {
    assert.equal(poolsInUse().get(2), undefined, "no pool of 2 threads left by the tests before");
    const b1 = await wasmOn(2), b2 = await wasmOn(2);
    const P = poolOf(2);
    assert.equal(P.users, 2);
    const want = await small(b1);
    b1.dispose();
    b1.dispose(); // idempotent: b2's share stays
    assert.equal(P.users, 1);
    assert.equal(P.closed, null, "the pool runs on for b2");
    assert.equal(poolOf(2), P);
    await assert.rejects(small(b1), (e: Error) => e.constructor === Error && /disposed/.test(e.message));
    const runs = P.runs;
    assertSame(await small(b2), want, "b2 on the shared pool");
    assert.equal(P.runs, runs + 2);
    b2.dispose();
    assert.equal(P.users, 0);
    assert.notEqual(P.closed, null, "the last instance's dispose stops the pool");
    assert.equal(poolsInUse().get(2), undefined);
    await assert.rejects(small(b2), /disposed/);
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      P.closed,
      new Promise((_, no) => (timer = setTimeout(() => no(new Error("workers")), 10_000))),
    ]);
    clearTimeout(timer);
    // A new instance gets a new pool; instances made at once share one.
    const [c1, c2] = await Promise.all([wasmOn(2), wasmOn(2)]);
    assert.notEqual(poolOf(2), P);
    assert.equal(poolOf(2).users, 2);
    assertSame(await small(c1), want, "on a new pool");
    c1.dispose();
    c2.dispose();
    assert.equal(poolsInUse().get(2), undefined);
    // One thread, and the js backend: dispose makes the calls throw too.
    for (const l of [await wasmOn(1), await init({ backend: "js" })]) {
      l.dispose();
      await assert.rejects(small(l), /This Losses instance was disposed/);
    }
  });

  it("a process that disposes its instances stops their workers and exits by itself", {
    skip: !isDeno && !isBun && "needs Deno or Bun (the script imports TypeScript)",
  }, () => {
    const at = (f: string) => JSON.stringify(fileURLToPath(new URL(f, import.meta.url)));
    const script = `
      const { init } = await import(${at("../mod.ts")});
      const { poolsInUse } = await import(${at("../src/wasm/pool.ts")});
      const ls = [];
      for (const threads of [1, 2, 2]) ls.push(await init({ backend: "wasm", threads }));
      const x = { data: new Float32Array(64 * 64).map((_, i) => Math.sin(i)), shape: [64, 64] };
      const W = { data: new Float32Array(3100 * 64).map((_, i) => Math.cos(i)), shape: [3100, 64] };
      const labels = Int32Array.from({ length: 64 }, (_, i) => i * 37);
      const losses = [];
      for (const l of ls) losses.push((await l.marginHead.valueAndGrad({ x, W, labels })).loss);
      const P = poolsInUse().get(2), runs = P.runs;
      ls.forEach((l) => l.dispose());
      await P.closed;
      console.log(JSON.stringify({ threads: ls.map((l) => l.threads), running: poolsInUse().size, runs, losses }));`;
    const argv = isDeno
      ? [(globalThis as Any).Deno.execPath(), "eval", "--quiet", script]
      : [process.execPath, "-e", script];
    const r = spawnSync(argv[0], argv.slice(1), {
      encoding: "utf8",
      timeout: 60_000,
      env: { ...process.env, NO_COLOR: "1" },
    });
    assert.equal(r.status, 0, `exit ${r.status} ${r.signal ?? ""}: ${r.stderr}`);
    const out = JSON.parse(r.stdout.trim().split("\n").pop()!);
    assert.deepEqual(out.threads, [1, 2, 2]);
    assert.equal(out.running, 0, "no pool runs after every instance was disposed");
    assert.equal(out.runs, 4, "both 2-thread instances ran their heads on the one pool");
    for (const loss of out.losses.slice(1)) assert.ok(Math.abs(loss - out.losses[0]) < 1e-6 * Math.abs(out.losses[0]));
  });
});
