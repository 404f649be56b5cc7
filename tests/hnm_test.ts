// Hard-negative mining (docs/LOSSES.md): the pure state functions (hnmInit,
// hnmUpdatePrototypes, hnmUpdateConfusion, hnmDecay, hnmHardNegatives), replayed step by
// step against PyTorch rounds, and the hnmContrastive loss.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as mod from "../mod.ts";
import { assertLossClose, assertThrowsNamed, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { backends, lossOf, missing } from "./helpers/backends.ts";
import { commonOptionErrors, labelErrors, matrixErrors, numberOptionErrors } from "./helpers/errors.ts";
import { type HnmExpectedState, loadFixtures, loadHnmRounds, roundedState } from "./helpers/fixtures.ts";
import { randomLabels, randomMatrix, Rng } from "./helpers/random.ts";
import { hnmContrastiveSpec as spec } from "./helpers/specs_moe.ts";
import { agreementSuite, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

function assertState(got: mod.HnmState, want: HnmExpectedState, label: string): void {
  assertLossClose(got.prototypes.data, want.prototypes.data, `${label} prototypes`);
  assertLossClose(got.confusion.data, want.confusion.data, `${label} confusion`);
}

describe("hard-negative-mining state", () => {
  for (const round of loadHnmRounds()) {
    it(`replays the PyTorch round ${round.name} step by step, changing no input`, async () => {
      let state: mod.HnmState | null = null;
      for (const step of round.steps) {
        const prev = state, before = state && snapshot(state);
        switch (step.op) {
          case "hnmInit":
            state = mod.hnmInit(step.args.C, step.args.D);
            break;
          case "hnmUpdatePrototypes":
            state = mod.hnmUpdatePrototypes(state!, step.args.f as Any, step.args.labels, step.options);
            break;
          case "hnmUpdateConfusion":
            state = mod.hnmUpdateConfusion(state!, step.args.labels, step.args.predicted);
            break;
          case "hnmDecay":
            state = mod.hnmDecay(state!, step.options);
            break;
          case "hnmHardNegatives": {
            const hard = mod.hnmHardNegatives(state!, step.args.labels, step.args.k);
            assert.deepEqual([...hard.shape], [...step.hard.shape], "hard shape");
            assert.deepEqual(
              [...hard.data],
              [...step.hard.data],
              `${round.name} hard negatives (ties to the smaller index)`,
            );
            continue;
          }
          case "hnmContrastive": {
            const loss = lossOf(backends[0], "hnmContrastive")!;
            const r = await loss.forward(step.case.inputs, step.case.options);
            assertLossClose(r.loss as number, step.case.expected.loss as number, `${round.name} contrastive`);
            continue;
          }
        }
        if (before) assertUnchanged(before, prev, `${round.name} ${step.op}: the previous state `);
        if ("state" in step) {
          assertState(state!, step.state, `${round.name} ${step.op}`);
          state = roundedState(step.state) as Any; // the next step starts from PyTorch's state, in float32
        }
      }
    });
  }

  it("a class absent from the batch keeps its prototype; momentum 1 keeps everything", () => {
    const s = mod.hnmUpdatePrototypes(mod.hnmInit(3, 2), { data: new Float32Array([1, 1, 2, 2]), shape: [2, 2] }, [
      0,
      0,
    ]);
    assert.deepEqual([...s.prototypes.data].map((x) => +x.toFixed(6)), [0.15, 0.15, 0, 0, 0, 0]);
    const same = mod.hnmUpdatePrototypes(s, { data: new Float32Array([5, 5]), shape: [1, 2] }, [1], { momentum: 1 });
    assert.deepEqual([...same.prototypes.data], [...s.prototypes.data]);
  });

  it("rejects bad input with named errors", async () => {
    const s = mod.hnmInit(4, 2);
    await assertThrowsNamed(() => mod.hnmInit(0, 2), RangeError, "classes", "0");
    await assertThrowsNamed(() => mod.hnmInit(2.5, 2), RangeError, "classes", "2.5");
    await assertThrowsNamed(() => mod.hnmHardNegatives(s, [0], 4), RangeError, "k", "4");
    await assertThrowsNamed(() => mod.hnmHardNegatives(s, [4], 1), RangeError, "labels[0]", "4");
    await assertThrowsNamed(() => mod.hnmUpdateConfusion(s, [0, 1], [1]), RangeError, "predicted", "1");
    await assertThrowsNamed(() => mod.hnmDecay(s, { momentum: 2 }), RangeError, "options.momentum", "2");
    await assertThrowsNamed(() => mod.hnmDecay(s, { rate: 1 } as Any), TypeError, '"rate"', "momentum");
    await assertThrowsNamed(() => mod.hnmDecay({} as Any), TypeError, "state.prototypes", "undefined");
  });
});

describe("centerUpdate matches PyTorch", () => {
  for (const fc of loadFixtures("center_update.json")) {
    it(fc.name, () => {
      const { centers, x, labels } = fc.inputs as Any;
      const got = mod.centerUpdate(centers, x, labels, fc.options);
      assertLossClose(got.data, fc.expected.loss as Any, fc.name);
    });
  }
});

const small = () => ({
  f: randomMatrix(new Rng(1), 3, 4),
  prototypes: randomMatrix(new Rng(2), 4, 4),
  labels: [0, 3, 1],
  hard: { data: Int32Array.of(1, 2, 0), shape: [3, 1] },
});

describe("hnmContrastive", () => {
  existenceTest(spec);
  fixtureSuite(spec);
  agreementSuite(spec);
  fdSuite(spec, () => {
    const rng = new Rng(19);
    const p = {
      f: randomMatrix(rng, 5, 3),
      prototypes: randomMatrix(rng, 4, 3),
      labels: randomLabels(rng, 5, 4),
      hard: { data: Int32Array.from({ length: 10 }, () => rng.int(4)), shape: [5, 2] },
    };
    return [{ name: "temperature 0.5", inputs: p, options: { temperature: 0.5 } }, {
      name: "sum, upstream 2",
      inputs: p,
      options: { temperature: 1, reduction: "sum" },
      upstream: 2,
    }];
  });

  describe("edge cases", () => {
    for (const b of backends) {
      it(
        `${b.name}: temperature 1e-4 and a zero prototype stay finite`,
        { skip: missing("hnmContrastive", [b]) },
        async () => {
          const loss = lossOf(b, "hnmContrastive")!;
          const p = small();
          p.prototypes.data.fill(0, 4, 8);
          const r = await loss.valueAndGrad(p, { temperature: 1e-4 });
          assert.ok(Number.isFinite(r.loss as number) && r.grads.f.data.every(Number.isFinite));
        },
      );
    }
  });

  errorSuite(spec, [
    ...matrixErrors(small, "f", true, "f"),
    ...labelErrors(small).filter((e) => !e.name.includes("ignoreIndex")),
    {
      name: "hard not a matrix",
      inputs: () => ({ ...small(), hard: [1, 2, 0] }),
      type: TypeError,
      includes: ["hard.shape"],
    },
    {
      name: "hard class out of range",
      inputs: () => ({ ...small(), hard: { data: [1, 4, 0], shape: [3, 1] } }),
      type: RangeError,
      includes: ["hard.data[1]", "4"],
    },
    {
      name: "hard with other rows",
      inputs: () => ({ ...small(), hard: { data: [1, 2], shape: [2, 1] } }),
      type: RangeError,
      includes: ["hard.shape[0]", "2"],
    },
    ...numberOptionErrors(small, "temperature", [0, -1, NaN]),
    ...commonOptionErrors(small, "f"),
  ]);
});
