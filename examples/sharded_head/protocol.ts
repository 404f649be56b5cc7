/**
 * The messages between the main thread (the "collective": it all-reduces what the
 * shards send) and the shard workers of the example. Nothing else crosses: a worker holds
 * only its rows of W, as a machine of a model-parallel job would.
 *
 * @module
 */
import type { MarginHeadOptions, ShardStats } from "../../mod.ts";

/** The head's options every shard uses (with its own offset). */
export const HEAD = { kind: "arcface", scale: 16, margin: 0.3 } as const satisfies MarginHeadOptions;

/** Main -> worker. */
export type ToShard =
  /** The shard's classes [offset, offset + rows of W) of `classes`, its rows of W, the learning rate. */
  | { type: "init"; offset: number; classes: number; W: Float32Array; d: number; lr: number }
  /** Step 1 of a training step: the batch (x replicated on every shard, global labels). */
  | { type: "stats"; x: Float32Array; n: number; labels: Int32Array }
  /** Step 2: every shard's statistics merged (the all-reduce); `sendW`: also return dW (the check). */
  | { type: "finish"; merged: ShardStats; sendW: boolean };

/** Worker -> main. */
export type FromShard =
  | { type: "stats"; stats: ShardStats }
  /** The shard's loss share, its share of x's gradient [N, D] (to be summed), and (check step) its dW. */
  | { type: "finish"; loss: number; gx: Float32Array; gW?: Float32Array }
  | { type: "error"; error: string };
