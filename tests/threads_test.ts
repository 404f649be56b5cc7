// The WebAssembly thread pool (src/wasm/pool.ts, init({ threads })): row losses split by
// rows are bit-identical to one thread; heads split by classes agree with one thread and
// with the float64 reference within SPEC's bound, and are deterministic; zero-copy inputs
// and out buffers work on the shared memory; without shared memory init says why and
// runs on one thread; bad thread counts are named errors.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { init, type Losses } from "../mod.ts";
import { alloc } from "../cpu.ts";
import { pool } from "../src/wasm/pool.ts";
import { useWasmVariant, wasmVariant } from "../src/wasm/runtime.ts";
import { assertGradClose, assertLossClose, assertThrowsNamed, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { logSoftmaxOf, randomLabels, randomMatrix, randomProbabilities, Rng } from "./helpers/random.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const isDeno = typeof (globalThis as Any).Deno !== "undefined";
const THREADS = 3;

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
    ["focal", { logits, labels }, { gamma: 2 }, ["logits"]],
    ["arcface", { cos, labels }, {}, ["cos"]],
    ["softCrossEntropy", { logits, target }, {}, ["logits", "target"]],
    ["klDiv", { logInput, target }, {}, ["logInput", "target"]],
    ["distillation", { student: logits, teacher, labels: hard }, {}, ["student"]],
    ["logSoftmax", { x: logits }, {}, ["output"], "forward"],
  ];
  /** The row loss on `l` with every matrix (inputs, out buffers) in WebAssembly memory; the results copied. */
  const onAlloc = (l: Any, [name, inputs, options, grads, method]: Row) => {
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
      const r = method ? l[name].forward(ins, { ...options, out }) : l[name].valueAndGrad(ins, { ...options, out });
      return { loss: r.loss ?? 0, out: Object.fromEntries(grads.map((k) => [k, out[k].data.slice()])) };
    } finally {
      held.forEach((a) => a.free());
    }
  };
  for (const row of rows) {
    it(`${row[0]}: the same bits on ${THREADS} threads as on one`, async () => {
      const [one, many] = await pair();
      const snap = snapshot(row[1]);
      const a = onAlloc(one, row);
      const l = await many(), runs = pool()!.runs;
      const b = onAlloc(l, row);
      assert.ok(pool()!.runs > runs, "ran on the pool");
      assertSame(b, a, row[0]);
      assertUnchanged(snap, row[1]);
    });
  }

  it("a row loss on ordinary arrays stays on one thread (copying them whole would cost more)", async () => {
    const l = await init({ backend: "wasm", threads: THREADS }), runs = pool()!.runs;
    const got = await l.crossEntropy.valueAndGrad({ logits, labels });
    assert.equal(pool()!.runs, runs);
    const one = await (await init({ backend: "wasm", threads: 1 })).crossEntropy.valueAndGrad({ logits, labels });
    assertSame(got, one, "crossEntropy");
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
      const l = await many(), runs = pool()!.runs;
      const b = await (l as Any)[name].valueAndGrad({ x, W, labels: hl }, opts);
      assert.equal(pool()!.runs, runs + 2, "both phases ran on the pool");
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

  it("a runtime replaced under the pool (useWasmVariant) stops it: the next call runs right on one thread", async () => {
    const [one, many] = await pair();
    const want = await one.distillation.valueAndGrad({
      student: logits,
      teacher,
      labels: labels.map((y) => Math.max(y, 0)),
    });
    await many();
    useWasmVariant(wasmVariant()); // a fresh instance on a plain memory; the pool's workers hold the old one
    const got = await one.distillation.valueAndGrad({
      student: logits,
      teacher,
      labels: labels.map((y) => Math.max(y, 0)),
    });
    assert.equal(pool(), null);
    assertSame(got, want, "distillation after the runtime changed");
    assert.equal((await many()).threads, THREADS);
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
