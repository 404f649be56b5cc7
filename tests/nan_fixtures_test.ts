// NaN placement against PyTorch float64 (tests/fixtures/generate_gpunan.py, tests/fixtures/nan.json): on
// every backend (the float64 reference, WebAssembly, and WebGPU where the runtime has an adapter) a NaN
// logit or cosine (at a non-label and at the label column), a NaN row of W and a NaN entry of x give NaN
// exactly where torch does, in the loss ([N], reduction "none") and in the gradients, but for the two
// differences the generator's docstring records (torch.clamp passes no gradient to a NaN cosine; with
// K > 1 and a NaN x torch's gradient of the rows of W no row picks is NaN): those entries are skipped.
// tests/webgpu_nan_test.ts compares the backends with each other on more kernels and options.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { backends, lossOf } from "./helpers/backends.ts";
import { type ExpectedTensor, loadFixtures } from "./helpers/fixtures.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const CASES = loadFixtures("nan.json");
const LOSS: Record<string, string> = { ce: "crossEntropy", arcface: "arcface", cosface: "cosface", head: "marginHead" };

/** Where the values are NaN (N), finite (.) or infinite (I); "-" at the skipped entries. */
function where(a: ArrayLike<number>, skip: (k: number) => boolean = () => false): string {
  return Array.from(a, (x, k) => (skip(k) ? "-" : Number.isNaN(x) ? "N" : Number.isFinite(x) ? "." : "I")).join("");
}

const dense = (t: ExpectedTensor | ExpectedTensor[]) => (t as ExpectedTensor & { data: Float64Array }).data;

describe("NaN placement = PyTorch float64 (tests/fixtures/nan.json)", () => {
  for (const b of backends) {
    for (const c of CASES) {
      it(`${b.name}: ${c.name}`, async () => {
        const loss = lossOf(b, LOSS[c.name.split("_")[0]])!;
        const r: Any = await loss.valueAndGrad(c.inputs as Any, c.options as Any);
        const want = dense(c.expected.loss as ExpectedTensor);
        assert.ok(where(want).includes("N"), "torch: a NaN row (a case that tests)");
        assert.equal(where(r.loss), where(want), "loss");
        for (const [key, t] of Object.entries(c.expected.grads)) {
          const input = (c.inputs[key] as { data: Float32Array }).data;
          // (torch.clamp's gradient at a NaN cosine is 0; K > 1 with a NaN x: torch's W rows no row picks,
          // where the library's are finite)
          const skip = (k: number) =>
            (key === "cos" && Number.isNaN(input[k])) ||
            (key === "W" && c.name.startsWith("head_k3_nan_x") && !Number.isNaN(r.grads.W.data[k]));
          assert.equal(where(r.grads[key].data, skip), where(dense(t), skip), `grads.${key}`);
        }
      });
    }
  }
});
