// centerLoss (docs/LOSSES.md): mean_i ||x_i - c_{y_i}||^2, gradients w.r.t. x and the
// centres; centerUpdate (Wen et al. 2016), a pure state function.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { centerUpdate } from "../mod.ts";
import { backends, lossOf, missing } from "./helpers/backends.ts";
import { assertThrowsNamed, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { commonOptionErrors, labelErrors, matrixErrors } from "./helpers/errors.ts";
import { randomLabels, randomMatrix, Rng } from "./helpers/random.ts";
import { centerLossSpec as spec } from "./helpers/specs_moe.ts";
import { agreementSuite, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const small = () => ({
  x: randomMatrix(new Rng(3), 3, 4, 1),
  centers: randomMatrix(new Rng(4), 4, 4, 1),
  labels: [0, 3, 1],
});

describe("centerLoss", () => {
  existenceTest(spec);
  fixtureSuite(spec);
  agreementSuite(spec);
  fdSuite(spec, () => {
    const rng = new Rng(11);
    const p = { x: randomMatrix(rng, 5, 3, 1), centers: randomMatrix(rng, 4, 3, 1), labels: randomLabels(rng, 5, 4) };
    return [
      { name: "mean", inputs: p },
      { name: "sum, upstream 2.5", inputs: p, options: { reduction: "sum" }, upstream: 2.5 },
      // Per-row losses come back in float32: a looser tolerance (tests/helpers/numeric.ts).
      {
        name: "none",
        inputs: p,
        options: { reduction: "none" },
        upstream: Float32Array.of(1, -2, 0.5, 3, 1),
        atol: 2e-5,
      },
    ];
  });

  describe("identities", () => {
    for (const b of backends) {
      it(`${b.name}: the test's own formula, and a class with no samples gets a zero gradient`, {
        skip: missing("centerLoss", [b]),
      }, async () => {
        const loss = lossOf(b, "centerLoss")!;
        const x = { data: new Float32Array([1, 2, 3, 4]), shape: [2, 2] };
        const centers = { data: new Float32Array([0, 0, 1, 1, 5, 5]), shape: [3, 2] };
        const r = await loss.valueAndGrad({ x, centers, labels: [1, 1] });
        // rows: (0^2 + 1^2) = 1 and (2^2 + 3^2) = 13; mean 7
        assert.equal(r.loss, 7);
        assert.deepEqual([...r.grads.x.data], [0, 1, 2, 3]); // 2 (x - c) / 2
        assert.deepEqual([...r.grads.centers.data], [0, 0, -2, -4, 0, 0]);
      });
    }
  });

  errorSuite(spec, [
    ...matrixErrors(small, "x", true, "x"),
    ...matrixErrors(small, "centers", false, "x").filter((e) => !e.name.includes("rows")),
    ...labelErrors(small).filter((e) => !e.name.includes("ignoreIndex")),
    ...commonOptionErrors(small, "x"),
  ]);
});

describe("centerUpdate", () => {
  it("moves each present class by alpha * sum(c - x) / (1 + n), keeps the others, changes no input", () => {
    const centers = { data: new Float32Array([0, 0, 1, 1, 2, 2]), shape: [3, 2] as const };
    const x = { data: new Float32Array([1, 0, 3, 0, 4, 4]), shape: [3, 2] as const };
    const all = { centers, x };
    const snap = snapshot(all);
    const out = centerUpdate(centers, x, [0, 0, 1], { alpha: 0.5 });
    assertUnchanged(snap, all);
    // class 0: n = 2, sum(c - x) = (-4, 0) -> c - 0.5 * (-4, 0) / 3; class 1: n = 1, (1 - 4, 1 - 4) -> 1 + 0.75; class 2 kept
    const want = [0.5 * 4 / 3, 0, 1 + 0.75, 1 + 0.75, 2, 2];
    out.data.forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-6, `[${i}] ${v} vs ${want[i]}`));
    assert.notEqual(out.data, centers.data);
  });

  it("rejects bad input with named errors", async () => {
    const centers = { data: new Float32Array(4), shape: [2, 2] as const };
    const x = { data: new Float32Array(2), shape: [1, 2] as const };
    await assertThrowsNamed(() => centerUpdate(centers, x, [2]), RangeError, "labels[0]", "2");
    await assertThrowsNamed(() => centerUpdate(centers, x, [0], { alpha: 2 }), RangeError, "options.alpha", "2");
    await assertThrowsNamed(() => centerUpdate(centers, x, [0], { lr: 1 } as Any), TypeError, '"lr"', "alpha");
    await assertThrowsNamed(
      () => centerUpdate(centers, { data: new Float32Array(3), shape: [1, 3] }, [0]),
      RangeError,
      "x.shape[1]",
      "3",
    );
  });
});
