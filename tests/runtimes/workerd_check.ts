/**
 * workerd (Cloudflare's runtime, through miniflare): the example worker of
 * examples/cloudflare-worker/, bundled as wrangler bundles it (export conditions
 * `workerd`, `worker`, `browser`; each `.wasm` import a compiled module) against the
 * installed tarball, computes crossEntropy and ArcFace with their gradients, which are
 * compared with the float64 reference (SPEC's bound) — once with `softmargin.wasm` and
 * once with the relaxed-SIMD `softmargin-relaxed.wasm`. Also: workerd refuses to compile
 * WebAssembly from bytes, the package's workerd build says what to do when no module
 * was given, and the example type-checks.
 *
 * @module
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { before, describe, it } from "node:test";
import * as esbuild from "esbuild";
import { Miniflare } from "miniflare";
import { js } from "../../cpu.ts";
import { assertGradClose, assertLossClose } from "../helpers/assert.ts";
import { randomLabels, randomMatrix, Rng } from "../helpers/random.ts";
import { ROOT } from "./bundle.ts";
import { exec, mustRun, type Package } from "./harness.ts";

const COMPATIBILITY_DATE = "2026-04-01";

/** A worker bundled as wrangler does: its source, and the `.wasm` modules it imports. */
interface Worker {
  script: string;
  wasm: Record<string, Uint8Array>;
}

/** Bundles `entry` against the installed package; `.wasm` imports become compiled modules (renamed by `rename`). */
async function bundleWorker(
  pkg: Package,
  entry: string | { contents: string },
  rename: Record<string, string> = {},
): Promise<Worker> {
  const wasm: Record<string, Uint8Array> = {};
  const result = await esbuild.build({
    ...(typeof entry === "string"
      ? { entryPoints: [entry] }
      : { stdin: { contents: entry.contents, resolveDir: pkg.project, loader: "ts" } }),
    bundle: true,
    write: false,
    format: "esm",
    platform: "neutral",
    conditions: ["workerd", "worker", "browser"],
    nodePaths: [join(pkg.project, "node_modules")],
    target: "es2022",
    logLevel: "warning",
    plugins: [{
      name: "compiled-wasm",
      setup(build) {
        build.onResolve({ filter: /\.wasm$/ }, async (a) => {
          if (a.pluginData === "resolving") return undefined;
          const found = await build.resolve(a.path, {
            kind: a.kind,
            resolveDir: a.resolveDir,
            pluginData: "resolving",
          });
          if (found.errors.length) return { errors: found.errors };
          const name = basename(found.path);
          wasm[name] = readFileSync(join(found.path, "..", rename[name] ?? name));
          return { path: `./${name}`, external: true };
        });
      },
    }],
  });
  return { script: result.outputFiles[0].text, wasm };
}

/** A miniflare instance running `worker`. */
function start(worker: Worker): Miniflare {
  return new Miniflare({
    compatibilityDate: COMPATIBILITY_DATE,
    modules: [
      { type: "ESModule", path: "worker.js", contents: worker.script },
      ...Object.entries(worker.wasm).map(([path, contents]) => ({ type: "CompiledWasm" as const, path, contents })),
    ],
  });
}

/** The problems sent to the worker: both losses, small and large C, options, ignored rows. */
function problems(): {
  loss: "crossEntropy" | "arcface";
  shape: [number, number];
  options: object;
  labels: number[];
  data: number[];
}[] {
  const rng = new Rng(20261);
  const make = (loss: "crossEntropy" | "arcface", n: number, c: number, options: object, ignore = 0) => ({
    loss,
    shape: [n, c] as [number, number],
    options,
    labels: [...randomLabels(rng, n, c, ignore)],
    data: [...randomMatrix(rng, n, c, loss === "arcface" ? 1 : 4).data],
  });
  return [
    make("crossEntropy", 8, 10, {}),
    make("crossEntropy", 6, 1003, { labelSmoothing: 0.1 }, 0.3),
    make("arcface", 8, 10, {}),
    make("arcface", 5, 517, { scale: 30, margin: 0.3, easyMargin: true }, 0.2),
  ];
}

/** Registers the workerd checks. */
export function workerdChecks(pkg: Package): void {
  describe("workerd (miniflare)", () => {
    let version = "";
    before(async () => {
      const bin = join(ROOT, "node_modules/.bin/workerd");
      version = (await mustRun([bin, "--version"])).output.trim();
      console.log(
        `  ${version}, miniflare ${
          JSON.parse(readFileSync(join(ROOT, "node_modules/miniflare/package.json"), "utf8")).version
        }`,
      );
    });

    for (const wasmFile of ["softmargin.wasm", "softmargin-relaxed.wasm"]) {
      it(`the example worker (${wasmFile}): crossEntropy and ArcFace with gradients match the reference`, {
        timeout: 120_000,
      }, async () => {
        const worker = await bundleWorker(pkg, join(ROOT, "examples/cloudflare-worker/src/worker.ts"), {
          "softmargin.wasm": wasmFile,
        });
        assert.ok(!worker.script.includes('WASM_SIMD = "'), "the workerd build carries no inline WebAssembly");
        const mf = start(worker);
        try {
          for (const p of problems()) {
            const label = `${p.loss} [${p.shape}] ${JSON.stringify(p.options)}`;
            const res = await mf.dispatchFetch("http://worker/", { method: "POST", body: JSON.stringify(p) });
            const body = await res.json() as { loss: number; grad: number[]; error?: string };
            assert.equal(res.status, 200, `${label}: ${body.error}`);
            const matrix = { data: Float32Array.from(p.data), shape: p.shape };
            const options = { ...p.options, reduction: "mean" as const };
            const ref = p.loss === "crossEntropy"
              ? js.crossEntropy.valueAndGrad({ logits: matrix, labels: p.labels }, options)
              : js.arcface.valueAndGrad({ cos: matrix, labels: p.labels }, options);
            const refGrad = "logits" in ref.grads ? ref.grads.logits.data : ref.grads.cos.data;
            assertLossClose(body.loss, ref.loss, `${label} loss`);
            assertGradClose(body.grad, refGrad, `${label} gradient`);
          }
          const bad = await mf.dispatchFetch("http://worker/", {
            method: "POST",
            body: JSON.stringify({ ...problems()[0], options: { label_smoothing: 0.1 } }),
          });
          assert.equal(bad.status, 400, "an unknown option is the client's error");
          assert.match(((await bad.json()) as { error: string }).error, /TypeError: .*label_smoothing/);
        } finally {
          await mf.dispose();
        }
      });
    }

    it("refuses to compile WebAssembly from bytes; the workerd build then says what to import", {
      timeout: 60_000,
    }, async () => {
      const worker = await bundleWorker(pkg, {
        contents: `
          import { wasm } from "@softmargin/softmargin/cpu";
          const attempt = (f) => { try { f(); return "ran"; } catch (e) { return e.name + ": " + e.message; } };
          export default {
            async fetch() {
              const bytes = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]);
              const logits = { data: new Float32Array(6), shape: [2, 3] };
              return Response.json({
                fromBytes: attempt(() => new WebAssembly.Module(bytes)),
                withoutModule: attempt(() => wasm.crossEntropy.forward({ logits, labels: [0, 1] })),
              });
            },
          };`,
      });
      const mf = start(worker);
      try {
        const r = await (await mf.dispatchFetch("http://worker/")).json() as Record<string, string>;
        console.log(`  ${version}: new WebAssembly.Module(bytes) → ${r.fromBytes}`);
        assert.match(r.fromBytes, /Wasm code generation disallowed by embedder/);
        assert.match(r.withoutModule, /setWasmModule|withWasmModule/);
      } finally {
        await mf.dispose();
      }
    });

    it("the example type-checks against the installed package (tsc, lib webworker)", { timeout: 60_000 }, async () => {
      const dir = join(pkg.project, "worker");
      mkdirSync(dir, { recursive: true });
      for (const f of ["worker.ts", "wasm.d.ts"]) {
        copyFileSync(join(ROOT, "examples/cloudflare-worker/src", f), join(dir, f));
      }
      writeFileSync(
        join(dir, "tsconfig.json"),
        JSON.stringify({
          compilerOptions: {
            target: "es2022",
            module: "nodenext",
            moduleResolution: "nodenext",
            strict: true,
            noEmit: true,
            lib: ["es2022", "webworker"],
            types: [],
          },
          files: ["worker.ts", "wasm.d.ts"],
        }),
      );
      const r = await exec([join(ROOT, "node_modules/.bin/tsc"), "-p", "."], { cwd: dir });
      assert.equal(r.code, 0, r.output);
    });
  });
}
