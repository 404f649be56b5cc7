/**
 * A Cloudflare Worker that computes a loss and its gradient with softmargin's
 * WebAssembly SIMD backend. Workers refuse to compile WebAssembly from bytes, so the
 * module comes precompiled from the package's `softmargin.wasm` (wrangler imports a
 * `.wasm` file as a `WebAssembly.Module`) and is handed to `withWasmModule`.
 *
 *   POST / {"loss": "crossEntropy", "data": [...], "shape": [N, C], "labels": [...], "options": {...}}
 *   → {"loss": number, "grad": number[]}   (`"loss": "arcface"`: data are the cosines)
 *
 * @module
 */
import wasmModule from "@softmargin/softmargin/softmargin.wasm";
import { type Matrix, withWasmModule } from "@softmargin/softmargin/edge";
import type { ArcfaceOptions, CrossEntropyOptions } from "@softmargin/softmargin";

const losses = withWasmModule(wasmModule);

/** What a request carries. */
interface Problem {
  loss: "crossEntropy" | "arcface";
  data: number[];
  shape: [number, number];
  labels: number[];
  options?: Record<string, unknown>;
}

/** The loss and its gradient (flat, row-major), the options as given (validated by softmargin). */
function compute(p: Problem): { loss: number; grad: number[] } {
  const matrix: Matrix = { data: Float32Array.from(p.data), shape: p.shape };
  // Options come from JSON: softmargin checks them (an unknown key is a TypeError).
  if (p.loss === "crossEntropy") {
    const options = { ...p.options as CrossEntropyOptions, reduction: "mean" } as const;
    const { loss, grads } = losses.crossEntropy.valueAndGrad({ logits: matrix, labels: p.labels }, options);
    return { loss, grad: Array.from(grads.logits.data) };
  }
  if (p.loss === "arcface") {
    const options = { ...p.options as ArcfaceOptions, reduction: "mean" } as const;
    const { loss, grads } = losses.arcface.valueAndGrad({ cos: matrix, labels: p.labels }, options);
    return { loss, grad: Array.from(grads.cos.data) };
  }
  throw new TypeError(`Expected loss to be "crossEntropy" or "arcface", got ${JSON.stringify(p.loss)}`);
}

export default {
  async fetch(request: Request): Promise<Response> {
    if (request.method !== "POST") {
      return new Response('POST {"loss", "data", "shape", "labels", "options"}\n', { status: 405 });
    }
    try {
      return Response.json(compute(await request.json()));
    } catch (e) {
      // softmargin's TypeError / RangeError name the bad argument: a client error.
      const status = e instanceof TypeError || e instanceof RangeError || e instanceof SyntaxError ? 400 : 500;
      return Response.json({ error: `${(e as Error).name}: ${(e as Error).message}` }, { status });
    }
  },
};
