// physMoe (docs/LOSSES.md): lambdaScl physicsContrastive + iclMoe's L_dol + L_col +
// lambdaHier hierarchical(coarse, gated ensemble) + lambdaReg centerRegularization, in one
// call, with gradients w.r.t. features, coarse, expertLogits, gating and centers.
import { describe, it } from "node:test";
import { backends, lossOf, missing } from "./helpers/backends.ts";
import { assertGradClose, assertLossClose } from "./helpers/assert.ts";
import { commonOptionErrors, labelErrors, numberOptionErrors } from "./helpers/errors.ts";
import { randomLabels, randomMatrix, Rng } from "./helpers/random.ts";
import { physMoeSpec as spec, randomGating, randomGroups, randomRule, unitRows } from "./helpers/specs_moe.ts";
import { agreementSuite, errorSuite, existenceTest, fdSuite, fixtureSuite } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

function problem(rng: Rng, b: number, c: number, k: number, e: number, d: number) {
  return {
    features: unitRows(rng, b, d),
    coarse: randomMatrix(rng, b, k, 2),
    expertLogits: Array.from({ length: e }, () => randomMatrix(rng, b, c, 2)),
    gating: randomGating(rng, b, e),
    labels: randomLabels(rng, b, Math.min(c, 3)),
    rule: randomRule(rng, c),
    fineToCoarse: randomGroups(rng, c, k),
    centers: randomMatrix(rng, c, d),
  };
}

const small = () => problem(new Rng(5), 3, 4, 2, 2, 4);

describe("physMoe", () => {
  existenceTest(spec);
  fixtureSuite(spec);
  agreementSuite(spec);
  // The collaboration target (the ensemble) is a constant, which finite differences
  // cannot see: they check the inputs it does not depend on; the composition test below
  // checks the rest against the parts.
  fdSuite(spec, () => {
    const p = problem(new Rng(18), 6, 5, 2, 3, 3);
    return [
      {
        name: "features, coarse, centers",
        inputs: p,
        options: { tailExperts: [1], lambdaReg: 0.5 },
        wrt: ["features", "coarse", "centers"],
        h: 2 ** -9,
      },
      {
        name: "without contrast, upstream 2",
        inputs: p,
        options: { contrast: false },
        upstream: 2,
        wrt: ["coarse", "centers"],
      },
    ];
  });

  describe("is the weighted sum of its parts, computed by their own losses", () => {
    for (const b of backends) {
      const names = ["physMoe", "physicsContrastive", "iclMoe", "hierarchical", "centerRegularization"];
      it(b.name, { skip: missing(names, [b]) }, async () => {
        const [moe, scl, icl, hier, reg] = names.map((n) => lossOf(b, n)!);
        const p = problem(new Rng(81), 9, 6, 3, 3, 5);
        const o = { tailExperts: [2], lambdaScl: 0.3, lambdaHier: 0.7, lambdaReg: 0.2, temperature: 0.5, gamma: 1.5 };
        const r = await moe.valueAndGrad(p, o);
        const [B, C, E] = [9, 6, 3];
        const fine = new Float32Array(B * C);
        for (let i = 0; i < B; i++) {
          for (let j = 0; j < C; j++) {
            let s = 0;
            for (let e = 0; e < E; e++) s += p.gating.data[i * E + e] * p.expertLogits[e].data[i * C + j];
            fine[i * C + j] = s;
          }
        }
        const s = await scl.valueAndGrad({ f: p.features, labels: p.labels, rule: p.rule }, { temperature: 0.5 });
        const m = await icl.valueAndGrad(
          { expertLogits: p.expertLogits, gating: p.gating, labels: p.labels },
          { tailExperts: [2], gamma: 1.5 },
        );
        const h = await hier.valueAndGrad({
          coarse: p.coarse,
          fine: { data: fine, shape: [B, C] },
          labels: p.labels,
          fineToCoarse: p.fineToCoarse,
        });
        const g = await reg.valueAndGrad({ f: p.features, centers: p.centers, labels: p.labels, rule: p.rule });
        for (const [k, v] of [["scl", s.loss], ["dol", m.dol], ["col", m.col], ["hier", h.loss], ["reg", g.loss]]) {
          assertLossClose((r as Any)[k as string], v as number, k as string);
        }
        const total = 0.3 * (s.loss as number) + (m.loss as number) + 0.7 * (h.loss as number) +
          0.2 * (g.loss as number);
        assertLossClose(r.loss as number, total, "loss");
        const features = s.grads.f.data.map((x: number, i: number) => 0.3 * x + 0.2 * g.grads.f.data[i]);
        assertGradClose(r.grads.features, features, "grads.features");
        assertGradClose(r.grads.coarse, h.grads.coarse.data.map((x: number) => 0.7 * x), "grads.coarse");
        assertGradClose(r.grads.centers, g.grads.centers.data.map((x: number) => 0.2 * x), "grads.centers");
        for (let e = 0; e < E; e++) {
          const want = m.grads.expertLogits[e].data.map((x: number, i: number) =>
            x + 0.7 * p.gating.data[Math.floor(i / C) * E + e] * h.grads.fine.data[i]
          );
          assertGradClose(r.grads.expertLogits[e], want, `grads.expertLogits[${e}]`);
        }
        const gating = new Float32Array(B * E);
        for (let i = 0; i < B; i++) {
          for (let e = 0; e < E; e++) {
            let dot = 0;
            for (let j = 0; j < C; j++) dot += p.expertLogits[e].data[i * C + j] * 0.7 * h.grads.fine.data[i * C + j];
            gating[i * E + e] = dot;
          }
        }
        assertGradClose(r.grads.gating, gating, "grads.gating");
        const off = await moe.forward(p, { ...o, contrast: false });
        assertLossClose(off.loss as number, total - 0.3 * (s.loss as number), "without contrast");
        assertLossClose(off.scl as number, 0, "scl without contrast");
      });
    }
  });

  errorSuite(spec, [
    ...labelErrors(small).filter((e) => !e.name.includes("ignoreIndex") && !e.name.includes(">= C")),
    {
      name: "features with other rows",
      inputs: () => ({ ...small(), features: unitRows(new Rng(1), 2, 4) }),
      type: RangeError,
      includes: ["2"],
    },
    {
      name: "coarse with other rows",
      inputs: () => ({ ...small(), coarse: randomMatrix(new Rng(1), 2, 2) }),
      type: RangeError,
      includes: ["coarse.shape[0]", "2"],
    },
    {
      name: "centers of another width",
      inputs: () => ({ ...small(), centers: randomMatrix(new Rng(1), 4, 3) }),
      type: RangeError,
      includes: ["centers.shape[1]", "3"],
    },
    {
      name: "rule of another size",
      inputs: () => ({ ...small(), rule: randomRule(new Rng(1), 3) }),
      type: RangeError,
      includes: ["rule.shape[0]", "3"],
    },
    {
      name: "fineToCoarse out of range",
      inputs: () => ({ ...small(), fineToCoarse: [0, 1, 2, 0] }),
      type: RangeError,
      includes: ["fineToCoarse[2]", "2"],
    },
    {
      name: "gating of the wrong shape",
      inputs: () => ({ ...small(), gating: randomGating(new Rng(1), 3, 3) }),
      type: RangeError,
      includes: ["gating.shape[1]", "3"],
    },
    ...numberOptionErrors(small, "lambdaScl", [NaN, "1"]),
    ...numberOptionErrors(small, "temperature", [0, -1]),
    {
      name: "temperature checked without contrast",
      inputs: small,
      options: { contrast: false, temperature: -1 },
      type: RangeError,
      includes: ["options.temperature", "-1"],
    },
    {
      name: "contrast not a boolean",
      inputs: small,
      options: { contrast: 1 },
      type: TypeError,
      includes: ["options.contrast", "1"],
    },
    ...commonOptionErrors(small, "features", false),
  ]);
});
