/**
 * The fixture subset of the test suite, table-driven over tests/fixtures/*.json: each
 * file runs through `fixtureSuite` (tests/helpers/suite.ts: forward, backward and
 * valueAndGrad of every case against PyTorch, on every backend of
 * tests/helpers/backends.ts). A file is matched to its loss by the `fixtures` field of a
 * spec in tests/helpers/specs*.ts, or else by its name (`triplet_margin.json` →
 * `tripletMargin`), with the gradient names and the kind of output read from the file;
 * a loss that is not exported yet is skipped with that reason.
 *
 * tests/runtimes/bundle.ts bundles this file for the runtimes under test, with the
 * library's imports pointing at the built package and the fixtures embedded.
 *
 * @module
 */
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { loadFixtureFile } from "../helpers/fixtures.ts";
import type { LossSpec } from "../helpers/specs.ts";
import { fixtureSuite } from "../helpers/suite.ts";
import { specModules } from "./spec_modules.ts";

const known = specModules.flatMap((m) => Object.values(m)).filter((s): s is LossSpec =>
  typeof s === "object" && s !== null && typeof (s as LossSpec).fixtures === "string"
);

/** A spec read off a fixture file, for a loss that no spec module knows yet. */
function specOf(file: string): LossSpec {
  const name = file.replace(/\.json$/, "").replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
  const first = loadFixtureFile(file).cases[0];
  const loss = first?.expected.loss;
  const unused = () => {
    throw new Error(`${name}: only the fixture suite runs here`);
  };
  return {
    name,
    fixtures: file,
    grads: Object.keys(first?.expected.grads ?? {}),
    // softmax-like transforms return an [N, C] output; a per-row loss is [N].
    matrixOutput: typeof loss === "object" && loss.shape.length === 2,
    random: unused,
    optionSets: unused,
  };
}

const dir = fileURLToPath(new URL("../fixtures/", import.meta.url));
for (const file of readdirSync(dir).filter((f) => f.endsWith(".json"))) {
  fixtureSuite(known.find((s) => s.fixtures === file) ?? specOf(file));
}
