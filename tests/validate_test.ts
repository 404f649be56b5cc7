// The validation layer's input kinds (src/validate.ts) beyond matrices and labels: rank-n
// tensors, lists of matrices, integer vectors, host-only matrices and accepted keys; each
// bad value is a TypeError or RangeError naming the argument and the actual value.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as v from "../src/validate.ts";
import { assertThrowsNamed } from "./helpers/assert.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const m = (rows: number, cols: number) => ({ data: new Float32Array(rows * cols), shape: [rows, cols] });

describe("validation layer", () => {
  it("rank-n tensors: sizes, fixed dimensions, data length", async () => {
    assert.deepEqual(v.tensor("t", { data: new Float32Array(24), shape: [2, 3, 4] }, [2, undefined, 4]), [2, 3, 4]);
    await assertThrowsNamed(
      () => v.tensor("t", { data: new Float32Array(24), shape: [2, 12] }, [2, 3, 4]),
      TypeError,
      "t.shape",
      "2",
    );
    await assertThrowsNamed(
      () => v.tensor("t", { data: new Float32Array(23), shape: [2, 3, 4] }, [2, 3, 4]),
      RangeError,
      "t",
      "23",
    );
    await assertThrowsNamed(
      () => v.tensor("t", { data: new Float32Array(24), shape: [2, 3, 4] }, [2, 4, 3]),
      RangeError,
      "t.shape[1]",
      "3",
    );
    await assertThrowsNamed(
      () => v.tensor("t", { data: new Float64Array(24), shape: [2, 3, 4] }, [2, 3, 4]),
      TypeError,
      "t.data",
      "Float64Array",
    );
  });

  it("lists of matrices of one shape", async () => {
    assert.deepEqual(v.matrixList("e", [m(2, 3), m(2, 3)]), [2, 2, 3]);
    await assertThrowsNamed(() => v.matrixList("e", m(2, 3)), TypeError, "e", "Object");
    await assertThrowsNamed(() => v.matrixList("e", []), RangeError, "e", "0");
    await assertThrowsNamed(() => v.matrixList("e", [m(2, 3), m(3, 3)]), RangeError, "e[1].shape[0]", "3");
  });

  it("integer vectors in [0, bound), copied", async () => {
    const src = [0, 2, 1];
    const out = v.integers("g", src, 3, 3);
    assert.deepEqual([...out], src);
    assert.ok(out instanceof Int32Array);
    await assertThrowsNamed(() => v.integers("g", [0, 3, 1], 3, 3), RangeError, "g[1]", "3");
    await assertThrowsNamed(() => v.integers("g", [0, 1.5, 1], 3, 3), RangeError, "g[1]", "1.5");
    await assertThrowsNamed(() => v.integers("g", [0, 1], 3, 3), RangeError, "g", "2");
    await assertThrowsNamed(() => v.integers("g", "012" as Any, 3, 3), TypeError, "g", '"012"');
  });

  it("sizes: a wrong type is a TypeError, a value out of range a RangeError", async () => {
    assert.equal(v.size("n", 3), 3);
    await assertThrowsNamed(() => v.size("n", "3"), TypeError, "n", '"3"');
    await assertThrowsNamed(() => v.size("n", -1), RangeError, "n", "-1");
    await assertThrowsNamed(() => v.size("n", 1.5), RangeError, "n", "1.5");
    await assertThrowsNamed(
      () => v.matrix("m", { data: new Float32Array(4), shape: ["2", 2] }),
      TypeError,
      "m.shape[0]",
    );
  });

  it("upstream gradients: numbers, finite, one per row for reduction none", async () => {
    assert.equal(v.upstream(undefined), 1);
    assert.equal(v.upstream(-2), -2);
    assert.deepEqual([...v.upstream([1, -2], 2)], [1, -2]);
    assert.deepEqual([...v.upstream(undefined, 2)], [1, 1]);
    await assertThrowsNamed(() => v.upstream(NaN), RangeError, "upstream", "NaN");
    await assertThrowsNamed(() => v.upstream([1]), TypeError, "upstream", "array");
    await assertThrowsNamed(() => v.upstream(["1", "x"], 2), TypeError, "upstream[0]", '"1"');
    await assertThrowsNamed(() => v.upstream([1, Infinity], 2), RangeError, "upstream[1]", "Infinity");
    await assertThrowsNamed(() => v.upstream([1, 2, 3], 2), RangeError, "upstream", "3");
    await assertThrowsNamed(() => v.upstream(1, 2), TypeError, "upstream", "1");
  });

  it("host-only matrices refuse GPU buffers; accepted keys name the unknown one", async () => {
    const gpu = { buffer: { mapAsync() {}, size: 64 }, shape: [2, 2] };
    await assertThrowsNamed(() => v.hostMatrix("rule", gpu), TypeError, "rule", "GPUBuffer");
    assert.deepEqual(v.hostMatrix("rule", m(2, 2)).slice(0, 2), [2, 2]);
    await assertThrowsNamed(() => v.keys("options of x", { a: 1, b: 2 }, ["a"]), TypeError, "options of x", '"b"', "a");
    await assertThrowsNamed(() => v.required("k", undefined), TypeError, "k", "undefined");
  });
});
