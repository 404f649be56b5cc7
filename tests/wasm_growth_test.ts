// WebAssembly-resident inputs and out buffers survive memory growth in the middle of a
// call. Growing WebAssembly memory detaches every view of the old buffer; a call places
// its scratch arena (which may grow memory) after its inputs were read into the prepared
// problem, so a kernel that read an input's view after that read a detached array (the
// heads threw "Cannot perform Construct on a detached ArrayBuffer" on their first call,
// and a view re-made with the detached view's length, 0, lost the values). Each test
// starts a fresh instance (no arena yet), places the problem, takes every free byte of
// memory so that placing the arena must grow it, and compares the call with the float64
// reference, on every loss and each way of holding the matrices.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { alloc, wasm } from "../cpu.ts";
import { runtime, useWasmVariant, wasmVariant } from "../src/wasm/runtime.ts";
import {
  assertMatches,
  call,
  cases,
  isMetric,
  type OutPlace,
  outs,
  type Place,
  place,
  reference,
} from "./helpers/wasm_cases.ts";

/** Takes every free block of memory, so the next allocation must grow it; returns the blocks. */
function takeFreeMemory(): number[] {
  const rt = runtime();
  const taken: number[] = [];
  for (let s = rt.stats(); s.freeBlocks > 0; s = rt.stats()) taken.push(rt.malloc(s.largestFree));
  return taken;
}

after(() => useWasmVariant(wasmVariant()));

const PATHS: [Place, OutPlace][] = [["alloc", "fresh"], ["alloc", "alloc"], ["host", "alloc"], ["view", "fresh"]];

describe("WebAssembly memory growing during a call", () => {
  for (const cs of cases()) {
    for (const [inputsAt, outAt] of PATHS) {
      if (isMetric(cs) && outAt !== "fresh") continue;
      it(`${cs.spec.name}: inputs ${inputsAt}, gradients ${outAt}`, () => {
        useWasmVariant(wasmVariant()); // a fresh instance: its arena is not placed yet
        const rt = runtime();
        const placed = place(cs, inputsAt), o = outs(cs, outAt);
        const taken = takeFreeMemory();
        try {
          assert.equal(rt.stats().free, 0);
          const before = rt.stats().bytes;
          // The transforms' valueAndGrad runs twice (VJP, then output) and the second run would
          // read a plain matrix's view that the first one's growth detached: one run for views.
          const method = inputsAt === "view" && cs.spec.matrixOutput ? "forward" : "valueAndGrad";
          const want = reference(cs, method);
          const got = call(wasm, cs, placed, o.out, method);
          // Only a call with nothing to lay out (softmax with every matrix in memory) needs no arena.
          assert.ok(rt.stats().bytes > before || rt.stats().arena === 0, "memory grew during the call");
          assertMatches(got, want, "first call");
          // A plain matrix holding a view of the old memory is detached now: only alloc'd ones are called again.
          if (inputsAt !== "view") assertMatches(call(wasm, cs, placed, o.out, method), want, "second call");
        } finally {
          taken.forEach((p) => rt.free(p));
          placed.free();
          o.free();
        }
      });
    }
  }

  it("marginHead: the issue's problem (x [256, 512], W [20000, 512] allocated, then the first call)", () => {
    useWasmVariant(wasmVariant());
    const [n, d, c] = [256, 512, 20000];
    const x = alloc([n, d]), W = alloc([c, d]);
    try {
      for (let i = 0; i < n * d; i++) x.data[i] = Math.sin(i);
      for (let i = 0; i < c * d; i++) W.data[i] = Math.cos(0.7 * i);
      const labels = Int32Array.from({ length: n }, (_, i) => (i * 7919) % c);
      const before = runtime().stats().bytes;
      const first = wasm.marginHead.valueAndGrad({ x, W, labels }, { reduction: "none" });
      assert.ok(runtime().stats().bytes > before, "memory grew during the call");
      const rows = (first.loss as Float32Array).slice(), gx = first.grads.x.data.slice();
      const host = wasm.marginHead.valueAndGrad(
        { x: { data: x.data.slice(), shape: [n, d] }, W: { data: W.data.slice(), shape: [c, d] }, labels },
        { reduction: "none" },
      );
      // The same kernels on the same values: the zero-copy call equals the host-array one.
      assert.deepEqual(rows, host.loss);
      assert.deepEqual(gx, host.grads.x.data);
      assert.deepEqual(first.grads.W.data, host.grads.W.data);
    } finally {
      x.free();
      W.free();
    }
  });
});
