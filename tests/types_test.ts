// The result types follow the call (issue "Core v2", defect 4): `loss` is a number for a
// reduced loss and a Float32Array for `reduction: "none"`; gradients are `Matrix` for host
// inputs and `GpuMatrix` (`{ buffer, shape }`) for GPU-resident ones. The assertions are
// the type checker's (this file fails `deno check` when a type is wrong, and each
// `@ts-expect-error` fails when the line it marks stops being an error); the test bodies
// run them on the CPU so that the file is also an ordinary test.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { GpuMatrix, Losses, Matrix, Tensor } from "../mod.ts";
import { js, wasm } from "../cpu.ts";

const logits = { data: new Float32Array([2, 1, 0.1, 0.5, 2.5, 0.3]), shape: [2, 3] as const };
const labels = [0, 1];

describe("result types", () => {
  it("a reduced loss is a number, reduction none a Float32Array", () => {
    const mean: number = wasm.crossEntropy.forward({ logits, labels }).loss;
    const sum: number = wasm.crossEntropy.forward({ logits, labels }, { reduction: "sum", labelSmoothing: 0.1 }).loss;
    const rows: Float32Array = wasm.crossEntropy.valueAndGrad({ logits, labels }, { reduction: "none" }).loss;
    // Options without a reduction: the default, a number.
    const smooth: number = wasm.crossEntropy.forward({ logits, labels }, { labelSmoothing: 0.1 }).loss;
    const scaled: number = js.arcface.forward({ cos: logits, labels }, { scale: 30 }).loss;
    assert.equal(typeof smooth + typeof scaled, "numbernumber");
    const batch: number = js.klDiv.forward({ logInput: logits, target: logits }, { reduction: "batchmean" }).loss;
    // @ts-expect-error: reduction "none" is not a number
    const wrong: number = wasm.focal.forward({ logits, labels }, { reduction: "none" }).loss;
    assert.equal(typeof mean, "number");
    assert.equal(typeof sum, "number");
    assert.ok(rows instanceof Float32Array);
    assert.equal(typeof batch, "number");
    assert.ok((wrong as unknown) instanceof Float32Array);
  });

  it("a reduction known only at run time gives number | Float32Array", () => {
    const reduction = ["mean", "none"][Math.floor(Math.random() * 2)] as "mean" | "none";
    const loss: number | Float32Array = wasm.crossEntropy.forward({ logits, labels }, { reduction }).loss;
    // @ts-expect-error: may be a Float32Array
    const n: number = loss;
    assert.ok(typeof n === "number" || (n as unknown) instanceof Float32Array);
  });

  it("host inputs give Matrix gradients", () => {
    const { grads } = wasm.crossEntropy.valueAndGrad({ logits, labels });
    const g: Matrix = grads.logits;
    const data: Float32Array = g.data;
    // @ts-expect-error: a host gradient has no buffer
    g.buffer;
    const head = js.marginHead.backward({ x: logits, W: { data: new Float32Array(3), shape: [1, 3] }, labels: [0, 0] });
    const gw: Float32Array = head.W.data;
    assert.equal(data.length, 6);
    assert.equal(gw.length, 3);
  });

  it("parts are typed members of the result", () => {
    const student = logits, teacher = logits;
    const r = wasm.distillation.forward({ student, teacher, labels });
    const kl: number = r.kl, ce: number = r.ce, loss: number = r.loss;
    assert.ok(Number.isFinite(kl + ce + loss));
  });

  it("a metric is computed, without gradients", () => {
    const acc: number = wasm.accuracy.compute({ logits, labels }, { k: 1 });
    // @ts-expect-error: metrics have no backward
    wasm.accuracy.backward;
    assert.equal(acc, 1);
  });
});

// GPU-resident inputs: gradients are GpuMatrix (checked by the type checker only; the
// webgpu tests run such calls).
export async function gpuTypes(losses: Losses, buffer: GPUBuffer, either: Tensor): Promise<void> {
  const cos = { buffer, shape: [2, 3] as const };
  const { loss, grads } = await losses.arcface.valueAndGrad({ cos, labels });
  const n: number = loss;
  const g: GpuMatrix = grads.cos;
  const b: GPUBuffer = g.buffer;
  // @ts-expect-error: a GPU gradient has no data
  grads.cos.data;
  const head = await losses.marginHead.backward({ x: { buffer, shape: [2, 3] }, W: { buffer, shape: [4, 3] }, labels });
  const w: GpuMatrix = head.W;
  const maybe = await losses.crossEntropy.backward({ logits: either, labels });
  const t: Tensor = maybe.logits;
  // @ts-expect-error: a Tensor input may be on either side
  const m: Matrix = maybe.logits;
  const soft = await losses.softmax.forward({ x: cos });
  const out: GpuMatrix = soft.output;
  // linearCrossEntropy's bias gradient: a GPU matrix with GPU-resident inputs, a Float32Array on the host.
  const x = { buffer, shape: [2, 3] as const }, W = { buffer, shape: [4, 3] as const };
  const lce = await losses.linearCrossEntropy.valueAndGrad({ x, W, bias: { buffer, shape: [4, 1] }, labels });
  const gb: GpuMatrix | undefined = lce.grads.bias;
  // @ts-expect-error: a GPU gradient is not a Float32Array
  const hb: Float32Array | undefined = lce.grads.bias;
  const host = { data: new Float32Array(6), shape: [2, 3] as const },
    hW = { data: new Float32Array(12), shape: [4, 3] as const };
  const onHost = await losses.linearCrossEntropy.backward({ x: host, W: hW, bias: new Float32Array(4), labels });
  const vb: Float32Array | undefined = onHost.bias, vw: Matrix = onHost.W;
  // @ts-expect-error: a host gradient is not on the GPU
  const gpuB: GpuMatrix | undefined = onHost.bias;
  void [n, b, w, t, m, out, gb, hb, vb, vw, gpuB];
}
