/**
 * A margin head (ArcFace margin) trained with its classes sharded over Web Workers, the
 * main thread acting as the collective: exactly the messages a model-parallel job would
 * send between machines (docs/SHARDING.md), here as `postMessage`s.
 *
 * Per step: the main thread embeds a batch (`x = u E`, E trained here), sends x and the
 * labels to every shard; each shard sends its statistics (3N floats); the main thread
 * merges them (`mergeShardStats`: the all-reduce) and sends the result back; each shard
 * sends its loss share and its share of x's gradient (N x D floats), and updates its own
 * rows of W; the main thread sums the shares (the second all-reduce) and updates E.
 * Step 0 is checked against the unsharded `marginHead` on the whole W.
 *
 * `deno run -A examples/sharded_head/main.ts [--shards P] [--steps S]` (`npm run example:sharded`).
 *
 * @module
 */
import { js, mergeShardStats, type ShardStats, wasm } from "../../cpu.ts";
import { type FromShard, HEAD, type ToShard } from "./protocol.ts";

const args = (globalThis as { Deno?: { args: string[] } }).Deno?.args ?? [];
const flag = (name: string, fallback: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const P = flag("--shards", 4), STEPS = flag("--steps", 80);
const [N, C, DIN, D, LR] = [128, 1000, 24, 32, 30];

/** mulberry32. */
function rng(seed: number): () => number {
  return () => {
    let t = (seed = (seed + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(12);
const normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
const randn = (len: number, s: number) => Float32Array.from({ length: len }, () => s * normal());

// Synthetic data: class prototypes in input space, samples near them.
const prototypes = randn(C * DIN, 1);
function batchOf(): { u: Float32Array; labels: Int32Array } {
  const labels = Int32Array.from({ length: N }, () => Math.floor(rand() * C));
  const u = new Float32Array(N * DIN);
  for (let i = 0; i < N; i++) {
    for (let k = 0; k < DIN; k++) u[i * DIN + k] = prototypes[labels[i] * DIN + k] + 0.3 * normal();
  }
  return { u, labels };
}

/** out = a [r, k] b [k, c]; with `ta`, a is [k, r] (a^T b). */
function matmul(a: Float32Array, b: Float32Array, r: number, k: number, c: number, ta = false): Float32Array {
  const out = new Float32Array(r * c);
  for (let i = 0; i < r; i++) {
    for (let q = 0; q < k; q++) {
      const v = ta ? a[q * r + i] : a[i * k + q];
      for (let j = 0; j < c; j++) out[i * c + j] += v * b[q * c + j];
    }
  }
  return out;
}

// The model: an embedding E [DIN, D] here, the head's W [C, D] over the shards (uneven sizes).
const E = randn(DIN * D, 1 / Math.sqrt(DIN));
const W0 = randn(C * D, 1);
const weights = Array.from({ length: P }, (_, k) => 1 + (k % 3));
const total = weights.reduce((s, w) => s + w, 0);
const sizes = weights.map((w) => Math.floor((C * w) / total));
sizes[P - 1] += C - sizes.reduce((s, x) => s + x, 0);
const offsets = sizes.map((_, k) => sizes.slice(0, k).reduce((s, x) => s + x, 0));

// The shards, and a promise per reply (one outstanding request per shard at a time).
const workers = sizes.map(() => new Worker(new URL("./worker.ts", import.meta.url), { type: "module" }));
const waiting: ((m: FromShard) => void)[] = [];
workers.forEach((w, k) => {
  w.onmessage = (e: MessageEvent<FromShard>) => {
    if (e.data.type === "error") throw new Error(`shard ${k}: ${e.data.error}`);
    waiting[k](e.data);
  };
});
const ask = (messages: ToShard[]) =>
  Promise.all(workers.map((w, k) => {
    const reply = new Promise<FromShard>((resolve) => (waiting[k] = resolve));
    w.postMessage(messages[k]);
    return reply;
  }));
workers.forEach((w, k) =>
  w.postMessage(
    {
      type: "init",
      offset: offsets[k],
      classes: C,
      W: W0.slice(offsets[k] * D, (offsets[k] + sizes[k]) * D),
      d: D,
      lr: LR,
    } satisfies ToShard,
  )
);

console.log(`marginHead (ArcFace s 16, m 0.3), N ${N}, D ${D}, C ${C} over ${P} shards [${sizes}]`);
let bytes = 0;
for (let step = 0; step < STEPS; step++) {
  const { u, labels } = batchOf();
  const x = matmul(u, E, N, DIN, D);
  // 1. Every shard's statistics, then the all-reduce (here: the main thread merges them).
  const stats = (await ask(workers.map(() => ({ type: "stats", x, n: N, labels })))).map((r) =>
    (r as { stats: ShardStats }).stats
  );
  const merged = mergeShardStats(stats);
  bytes += P * (3 * N + 5) * 8; // (and each shard's record: 5 floats)
  // 2. Every shard's loss share and x-gradient share; the second all-reduce sums them.
  const check = step === 0;
  const parts = (await ask(workers.map(() => ({ type: "finish", merged, sendW: check })))) as Extract<
    FromShard,
    { type: "finish" }
  >[];
  bytes += P * N * D * 4;
  const loss = parts.reduce((s, r) => s + r.loss, 0);
  // (summed in float64: the shares partly cancel)
  const sum64 = new Float64Array(N * D);
  for (const r of parts) for (let j = 0; j < sum64.length; j++) sum64[j] += r.gx[j];
  const gx = Float32Array.from(sum64);
  if (check) {
    // The same step unsharded, on the whole W.
    const want = wasm.marginHead.valueAndGrad(
      { x: { data: x, shape: [N, D] }, W: { data: W0, shape: [C, D] }, labels },
      HEAD,
    );
    const gW = new Float32Array(C * D);
    parts.forEach((r, k) => gW.set(r.gW!, offsets[k] * D));
    const rel = (a: Float32Array, b: Float32Array) => {
      let err = 0, scale = 0;
      for (let j = 0; j < a.length; j++) {
        [err, scale] = [Math.max(err, Math.abs(a[j] - b[j])), Math.max(scale, Math.abs(b[j]))];
      }
      return err / scale;
    };
    // Both are float32 results of float64-accumulated kernels: they agree to the unsharded
    // kernel's own rounding (the float64 reference shows which is closer).
    const exact = js.marginHead.valueAndGrad(
      { x: { data: x, shape: [N, D] }, W: { data: W0, shape: [C, D] }, labels },
      HEAD,
    );
    const lossRel = Math.abs(loss - want.loss) / Math.abs(want.loss);
    const [ex, eW] = [rel(gx, want.grads.x.data), rel(gW, want.grads.W.data)];
    console.log(
      `step 0, sharded against unsharded: loss ${lossRel.toExponential(1)}, grad x ${ex.toExponential(1)}, grad W ${
        eW.toExponential(1)
      } (relative to the largest element); against float64: sharded grad x ${
        rel(gx, exact.grads.x.data).toExponential(1)
      }, unsharded ${rel(want.grads.x.data, exact.grads.x.data).toExponential(1)}`,
    );
    if (!(Math.max(lossRel, ex, eW) <= 1e-5)) throw new Error("the sharded step differs from the unsharded one");
  }
  // The embedding's update from the summed x gradient: dE = u^T gx.
  const dE = matmul(u, gx, DIN, N, D, true);
  for (let j = 0; j < E.length; j++) E[j] -= LR * 0.05 * dE[j];
  if (step % 10 === 0 || step === STEPS - 1) console.log(`step ${String(step).padStart(3)}  loss ${loss.toFixed(4)}`);
}
console.log(
  `all-reduced per step: ${
    (bytes / STEPS / 1024).toFixed(1)
  } KiB (stats ${P} x (3N + 5) float64, x shares ${P} x N x D float32)`,
);
workers.forEach((w) => w.terminate());
