/**
 * One step of a class-sharded loss on the WebAssembly backend, its classes split into P
 * even shards: `stats` on every shard, `mergeShardStats`, `finish` on every shard (what a
 * caller runs, the transport left out): `crossEntropy` at N x C x P and `marginHead` (kind
 * `"arcface"`) at N x D x C x P. With `--baseline DIR` (a tree before issue 19's checked
 * statistics) the ratio "this tree / the baseline" is the cost of the shards' records and
 * their checks, and `records alone` (the 2P records a step computes: one per `stats` and per
 * `finish`, each a hash of the labels, of 4096 values of x for the head, and of the options)
 * is that cost paired with the step itself. The summed loss shares are checked against the
 * unsharded float64 loss.
 *
 * ```sh
 * deno run -A bench/sharded_bench.ts [--quick] [--baseline DIR] [--json out.json]
 * ```
 *
 * @module
 */
import type { Contender, Lib, Shape } from "./engine.ts";
import { labelsOf, mulberry32, run, sink, uniform } from "./engine.ts";
import { shardRecord } from "../src/kernels/shards.ts";

const HEAD = { kind: "arcface", scale: 64, margin: 0.5 } as const;

type M = { data: Float32Array; shape: [number, number] };
/** A shape's shards' inputs (P of them, even sizes) and the whole inputs (for the reference). */
type Ctx = { head: boolean; classes: number; shards: Record<string, unknown>[]; whole: Record<string, unknown> };

function context(s: Shape): Ctx {
  const head = s.length === 4, [n, d, c, p] = head ? s : [s[0], 0, s[1], s[2]];
  const rand = mulberry32(n + c), labels = labelsOf(rand, n, c), cs = c / p;
  if (!Number.isInteger(cs)) throw new RangeError(`Expected C (${c}) to be a multiple of P (${p})`);
  if (head) {
    const x: M = { data: uniform(rand, n * d), shape: [n, d] }, W = uniform(rand, c * d);
    const shards = Array.from({ length: p }, (_, k) => ({
      x,
      W: { data: W.slice(k * cs * d, (k + 1) * cs * d), shape: [cs, d] },
      labels,
    }));
    return { head, classes: c, shards, whole: { x, W: { data: W, shape: [c, d] }, labels } };
  }
  const z = uniform(rand, n * c, 4);
  const shards = Array.from({ length: p }, (_, k) => {
    const data = new Float32Array(n * cs);
    for (let i = 0; i < n; i++) data.set(z.subarray(i * c + k * cs, i * c + (k + 1) * cs), i * cs);
    return { logits: { data, shape: [n, cs] }, labels };
  });
  return { head, classes: c, shards, whole: { logits: { data: z, shape: [n, c] }, labels } };
}

// deno-lint-ignore no-explicit-any
type Any = any;

/** One sharded step of `name` on `lib`'s wasm backend: the summed loss shares. */
function step(lib: Lib, name: "crossEntropy" | "marginHead", ctx: Ctx) {
  const loss = (lib.cpu.wasm as Any).sharded[name], extra = name === "marginHead" ? HEAD : {};
  const options = ctx.shards.map((_, k) => ({
    ...extra,
    offset: (k * ctx.classes) / ctx.shards.length,
    classes: ctx.classes,
  }));
  return () => {
    const merged = lib.cpu.mergeShardStats(ctx.shards.map((s, k) => loss.stats(s, options[k])));
    let total = 0;
    ctx.shards.forEach((s, k) => (total += loss.finish(s, merged, options[k]).loss as number));
    sink.value += total;
    return { loss: total };
  };
}

/** The records of a step: 2P of them (`stats` and `finish` on every shard), as `src/losses/sharded.ts` makes them. */
const records: Contender<Ctx> = {
  name: "records alone",
  floor: true,
  setup: (ctx) => ({
    run() {
      const p = ctx.shards.length, cs = ctx.classes / p, labels = ctx.whole.labels as Int32Array;
      const x = ctx.head ? [(ctx.whole.x as M).data] : [];
      const agreed = ctx.head ? ["marginHead", "mean", 64, { kind: "margin" }] : ["crossEntropy", "mean", null, 0];
      for (let k = 0; k < 2 * p; k++) {
        sink.value += shardRecord((k % p) * cs, ((k % p) + 1) * cs, ctx.classes, labels, x, agreed)[3];
      }
    },
  }),
};

function library(lib: Lib): Contender<Ctx>[] {
  return (["crossEntropy", "marginHead"] as const).map((name) => ({
    name: `${name} sharded`,
    group: name,
    setup: (ctx) => ((name === "marginHead") === ctx.head ? { run: step(lib, name, ctx) } : "n/a"),
  }));
}

await run<Ctx>((_flags, libs) => ({
  name: "sharded",
  title:
    "A class-sharded step (stats, merge, finish over P shards) on wasm: crossEntropy N x C x P, marginHead N x D x C x P",
  modes: ["step"],
  shapes: {
    default: [[1024, 8000, 4], [4096, 1000, 8], [256, 256, 8000, 4], [1024, 128, 2000, 8]],
    quick: [[1024, 8000, 4], [256, 256, 8000, 4]],
  },
  work: (s) => s.slice(0, -1).reduce((a, b) => a * b, 1),
  contenders: [records],
  library,
  context,
  reference(ctx: Ctx, group: string) {
    const js = libs[0].cpu.js as Any;
    return { loss: js[group].forward(ctx.whole, group === "marginHead" ? HEAD : {}).loss };
  },
  baseline: "crossEntropy sharded",
  pairs: [["records alone", "crossEntropy sharded"], ["records alone", "marginHead sharded"]],
  memory: { when: () => false },
}));
