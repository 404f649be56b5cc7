/**
 * One shard of the example's margin head: it holds rows [offset, offset + Cs) of W, and
 * per step computes its statistics, then (given the merged ones) its loss share, its
 * share of x's gradient and its dW, which it applies to its rows of W itself (SGD).
 *
 * @module
 */
import { wasm } from "../../cpu.ts";
import { type FromShard, HEAD, type ToShard } from "./protocol.ts";

const scope = globalThis as unknown as {
  onmessage: (e: MessageEvent<ToShard>) => void;
  postMessage(message: FromShard, transfer?: Transferable[]): void;
};

let shard: { offset: number; classes: number; W: Float32Array; d: number; lr: number } | undefined;
let batch: { x: { data: Float32Array; shape: [number, number] }; labels: Int32Array } | undefined;

scope.onmessage = (e: MessageEvent<ToShard>) => {
  try {
    const m = e.data;
    if (m.type === "init") {
      shard = { offset: m.offset, classes: m.classes, W: m.W, d: m.d, lr: m.lr };
      return;
    }
    if (!shard) throw new Error("shard not initialised");
    const W = { data: shard.W, shape: [shard.W.length / shard.d, shard.d] as [number, number] };
    const options = { ...HEAD, offset: shard.offset, classes: shard.classes };
    if (m.type === "stats") {
      batch = { x: { data: m.x, shape: [m.n, shard.d] }, labels: m.labels };
      const stats = wasm.sharded.marginHead.stats({ x: batch.x, W, labels: batch.labels }, options);
      scope.postMessage({ type: "stats", stats });
      return;
    }
    if (!batch) throw new Error("finish before stats");
    const { loss, grads } = wasm.sharded.marginHead.finish({ x: batch.x, W, labels: batch.labels }, m.merged, options);
    const gW = m.sendW ? grads.W.data.slice() : undefined;
    for (let k = 0; k < shard.W.length; k++) shard.W[k] -= shard.lr * grads.W.data[k];
    scope.postMessage({ type: "finish", loss: loss as number, gx: grads.x.data, gW });
  } catch (error) {
    scope.postMessage({ type: "error", error: String((error as Error)?.stack ?? error) });
  }
};
