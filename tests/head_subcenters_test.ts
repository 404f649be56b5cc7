// marginHead's sub-centres (options.subcenters K: W [C*K, D], the class cosine the largest of its K
// rows') and PartialFC's classes (the input classes [S]: only those classes' rows of W take part,
// grads.W [S*K, D]), SPEC.md section 7, docs/LOSSES.md: PyTorch float64 fixtures from
// tests/fixtures/generate_head_subcenters.py (PML's SubCenterArcFaceLoss, insightface's PartialFC),
// finite differences, agreement of the backends (the wasm one on one thread and on threads),
// identities, the class-sharded form and the named errors.

import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { js } from "../cpu.ts";
import { assertGradClose, assertLossClose, assertUnchanged, snapshot } from "./helpers/assert.ts";
import { type FixtureCase, loadFixtures } from "./helpers/fixtures.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const FILE = "heads/subcenters.json";
/** The CPU backends (the WebGPU head's sub-centres are tested with its own kernels). */
const CPU = [{ name: "js", losses: js as Any }];

/** The raw JSON cases (for the fields beside the generic format: state and nextState). */
const raws: Any[] = JSON.parse(readFileSync(new URL(`./fixtures/${FILE}`, import.meta.url), "utf8")).cases;

function inputsOf(fc: FixtureCase, raw: Any): Record<string, Any> {
  return raw.state ? { ...fc.inputs, state: raw.state } : { ...fc.inputs };
}

describe("marginHead subcenters and classes: PyTorch fixtures (tests/fixtures/generate_head_subcenters.py)", () => {
  const cases = loadFixtures(FILE);
  for (const b of CPU) {
    describe(b.name, () => {
      cases.forEach((fc, k) => {
        it(fc.name, () => {
          const inputs = inputsOf(fc, raws[k]);
          const snap = snapshot({ inputs, options: fc.options });
          const label = `${b.name} ${fc.name}`;
          const r = b.losses.marginHead.forward(inputs, fc.options);
          assertLossClose(r.loss, fc.expected.loss, `${label} loss`);
          for (const [part, v] of Object.entries(fc.expected.parts ?? {})) {
            assertLossClose(r[part], v, `${label} part ${part}`);
          }
          if (raws[k].nextState) {
            for (const [key, v] of Object.entries(raws[k].nextState as Record<string, number>)) {
              assertLossClose(r.state[key], v, `${label} state.${key}`, 1e-12);
            }
          }
          const g = b.losses.marginHead.backward(inputs, fc.options, fc.upstream);
          for (const key of ["x", "W"]) {
            assertGradClose(g[key].data, fc.expected.grads[key] as Any, `${label} grads.${key}`);
          }
          assertUnchanged(snap, { inputs, options: fc.options });
        });
      });
    });
  }
});
