// Both WebAssembly builds against the float64 reference: the plain SIMD build (what
// JavaScriptCore / Bun runs by default) and the relaxed-SIMD build with fused
// multiply-add (what V8 / Deno runs by default), on the random agreement grid of every
// loss. Each test forces one build with useWasmVariant and restores the one in use
// afterwards, so the other test files see the engine's default build.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { runtime, useWasmVariant, type WasmVariant, wasmVariant } from "../src/wasm/runtime.ts";
import { backends, lossOf, missing, reference } from "./helpers/backends.ts";
import { allSpecs, arcfaceSpec, GRID, HEAD_GRID, headSpecs, withWidth } from "./helpers/specs.ts";
import { checkAgreement } from "./helpers/suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const original: WasmVariant = wasmVariant();
const wasmBackend = backends.find((b) => b.name === "wasm")!;
const variants = ["simd", "relaxed"] as const;

/** Whether a build compiles here (Bun validates relaxed SIMD; an older engine may not). */
function compiles(v: WasmVariant): boolean {
  try {
    useWasmVariant(v);
    runtime();
    return true;
  } catch {
    return false;
  } finally {
    useWasmVariant(original);
  }
}
const compiled = new Map(variants.map((v) => [v, compiles(v)]));

after(() => useWasmVariant(original));

describe("both WebAssembly builds agree with the float64 reference", () => {
  // The four margin losses on cosines (SPEC.md §2) share one kernel path, crossEntropy's with the
  // clamp and a per-row label logit computed on the host: arcface stands for them.
  for (const spec of [...allSpecs, arcfaceSpec]) {
    describe(spec.name, () => {
      // The reference results are computed once and shared by the two builds.
      const cache = new Map<string, { rg: Any; rvg: Any }>();
      for (const variant of variants) {
        const skip = !compiled.get(variant)
          ? `the ${variant} build does not compile on this engine`
          : missing(spec.name, [reference, wasmBackend]);
        it(`${variant} build, C in ${GRID.classes.join("/")}`, { skip }, async () => {
          useWasmVariant(variant);
          try {
            assert.equal(wasmVariant(), variant);
            assert.ok(lossOf(wasmBackend, spec.name));
            for (const c of GRID.classes) await checkAgreement(spec, wasmBackend, c, cache);
          } finally {
            useWasmVariant(original);
            if (variant === variants[variants.length - 1]) cache.clear();
          }
        });
      }
    });
  }
});

describe("both WebAssembly builds agree with the float64 reference on the margin heads", () => {
  for (const spec of headSpecs) {
    describe(spec.name, () => {
      // The reference results are computed once and shared by the two builds; one cache per width
      // (a problem's name, the cache key, does not say D).
      const caches = new Map<number, Map<string, { rg: Any; rvg: Any }>>();
      for (const variant of variants) {
        const skip = !compiled.get(variant)
          ? `the ${variant} build does not compile on this engine`
          : missing(spec.name, [reference, wasmBackend]);
        it(
          `${variant} build, D in ${spec.widths.join("/")}, C in ${HEAD_GRID.classes.join("/")}`,
          { skip },
          async () => {
            useWasmVariant(variant);
            try {
              assert.equal(wasmVariant(), variant);
              for (const d of spec.widths) {
                if (!caches.has(d)) caches.set(d, new Map());
                for (const c of HEAD_GRID.classes) {
                  await checkAgreement(withWidth(spec, d), wasmBackend, c, caches.get(d));
                }
              }
            } finally {
              useWasmVariant(original);
              if (variant === variants[variants.length - 1]) {
                caches.clear();
              }
            }
          },
        );
      }
    });
  }
});

it("the build in use is restored", () => {
  assert.equal(wasmVariant(), original);
});
