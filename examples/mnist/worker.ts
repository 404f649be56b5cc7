/**
 * A worker of the demo: TensorFlow.js's wasm backend runs on one thread, so the demo
 * trains its runs in parallel workers, one per core. Each worker loads the digits and
 * TensorFlow.js once, then trains the runs it is sent and posts back progress and results.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import * as tf from "@tensorflow/tfjs";
import { setWasmPaths } from "@tensorflow/tfjs-backend-wasm";
import { type Digits, loadDigits, split } from "./data.ts";
import { run, type RunConfig } from "./train.ts";

/** What the demo sends a worker: a run, with the seed of the train/test split. */
export interface Job {
  id: number;
  cfg: RunConfig;
  splitSeed: number;
}

/** The worker's global scope, as far as it is used (typed here, not by a worker lib, so the demo checks as one program). */
const scope = globalThis as unknown as {
  onmessage: (e: MessageEvent<Job>) => void;
  postMessage(message: unknown): void;
};

let data: { train: Digits; test: Digits; seed: number } | undefined;
let ready: Promise<boolean> | undefined;

scope.onmessage = async (e: MessageEvent<Job>) => {
  const { id, cfg, splitSeed } = e.data;
  try {
    const backend = cfg.tfBackend ?? "wasm";
    ready ??= (() => {
      tf.enableProdMode();
      setWasmPaths(fileURLToPath(new URL("../../node_modules/@tensorflow/tfjs-backend-wasm/dist/", import.meta.url)));
      // (A specifier in a variable: only the webgpu runs load the package.)
      const webgpu = "@tensorflow/tfjs-backend-webgpu";
      return backend === "webgpu" ? import(webgpu).then(() => tf.setBackend(backend)) : tf.setBackend(backend);
    })();
    if (!(await ready)) {
      throw new Error(`TensorFlow.js's ${backend} backend did not load (run npm ci first; webgpu needs an adapter)`);
    }
    if (data?.seed !== splitSeed) data = { ...split(loadDigits(), 0.2, splitSeed), seed: splitSeed };
    const result = await run(cfg, data.train, data.test, (progress) => scope.postMessage({ id, progress }));
    scope.postMessage({ id, result, labels: data.test.labels });
  } catch (error) {
    scope.postMessage({ id, error: String((error as Error)?.stack ?? error) });
  }
};
