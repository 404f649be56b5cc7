// A consumer of the public types, as a Node project writes it: tests/runtimes/main.ts
// type-checks it with tsc against the installed tarball, with @types/node and without
// any WebGPU types (no `dom` lib, no @webgpu/types). Each annotation is checked.
import { type CrossEntropyOptions, init, type Losses } from "@softmargin/softmargin";
import { alloc, js, type Matrix, sphereFaceLambda, wasm } from "@softmargin/softmargin/cpu";
import { type SyncLosses, withWasmModule } from "@softmargin/softmargin/edge";

const logits: Matrix = { data: new Float32Array([2, 1, 0.1, 0.5, 2.5, 0.3]), shape: [2, 3] };
const labels = [0, 1];
const options = { labelSmoothing: 0.1, reduction: "mean" } as const satisfies CrossEntropyOptions;

const mean: number = wasm.crossEntropy.valueAndGrad({ logits, labels }, options).loss;
const grad: Float32Array = wasm.crossEntropy.backward({ logits, labels }, options).logits.data;
const rows: Float32Array = js.focal.forward({ logits, labels }, { reduction: "none" }).loss;
const margin: number = wasm.arcface.forward({ cos: logits, labels }, { scale: 30, margin: 0.5, reduction: "sum" }).loss;
const { kl, ce } = js.distillation.forward({ student: logits, teacher: logits, labels });
const top1: number = wasm.accuracy.compute({ logits, labels }, { k: 1 });
const lambda: number = sphereFaceLambda(100);

// @ts-expect-error: an option's name is checked (it is labelSmoothing)
wasm.crossEntropy.forward({ logits, labels }, { label_smoothing: 0.1 });
// @ts-expect-error: a loss result is not a Promise on the synchronous backends
wasm.crossEntropy.forward({ logits, labels }).then;

const losses: Losses = await init({ backend: "wasm" });
const asyncLoss: number = (await losses.cosface.forward({ cos: logits, labels })).loss;

const x = alloc([2, 3]);
x.data.set(logits.data);
const zeroCopy: number = wasm.crossEntropy.forward({ logits: x, labels }).loss;
x.free();

const edge: (module: WebAssembly.Module) => SyncLosses = withWasmModule;

console.log(mean, grad, rows, margin, kl, ce, top1, lambda, asyncLoss, zeroCopy, edge, losses.backend);
