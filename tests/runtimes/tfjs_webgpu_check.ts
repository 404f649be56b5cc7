/**
 * softmargin/tfjs on TensorFlow.js's webgpu backend in headless Chromium (issue 20, SPEC §10):
 * tests/tfjs_webgpu_test.ts — every loss the adapter offers against the adapter on TF.js's
 * cpu backend, zero maps a call and a training step, flat memory over many steps — bundled
 * by esbuild for the browser (`node:test` and `node:assert/strict` by the shims, the library
 * from its sources, TF.js and its webgpu backend from node_modules) and run in a page of
 * Debian's chromium on SwiftShader's Vulkan adapter. TF.js's `dataSync` on webgpu returns
 * zeros in Chromium with `--enable-unsafe-webgpu` alone; it needs the SwiftShader flags below.
 *
 * @module
 */
import assert from "node:assert/strict";
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import * as esbuild from "esbuild";
import { chromium } from "playwright-core";
import { ROOT } from "./bundle.ts";
import { CHROMIUM, FLAGS, visit } from "./browser_check.ts";
import { serve, tempDir } from "./harness.ts";

/** WebGPU on SwiftShader's Vulkan device (what makes TF.js's readbacks correct in headless Chromium). */
const SWIFTSHADER = [
  "--use-angle=swiftshader",
  "--enable-unsafe-swiftshader",
  "--enable-features=Vulkan",
  "--use-vulkan=swiftshader",
];

/**
 * The tests of tests/tfjs_webgpu_test.ts that the page skips, to keep CI short (a minute and a
 * half on SwiftShader): those that "every loss the adapter offers" covers against TF.js's cpu
 * backend (they compare the same losses with the float64 reference). The leak test runs 20 steps.
 */
const SKIPPED = ["arcface, focal and marginHead", "clip and siglip"];

/** The page: runs the bundle and leaves each test's outcome in globalThis.SOFTMARGIN_REPORT. */
const PAGE = `
try {
  globalThis.SOFTMARGIN_TFJS_STEPS = 20;
  const { run } = await import("./suite.js");
  const skipped = ${JSON.stringify(SKIPPED)};
  const results = await run(undefined, (name) => !skipped.some((s) => name.includes(s)));
  globalThis.SOFTMARGIN_REPORT = { results, userAgent: navigator.userAgent };
} catch (e) {
  globalThis.SOFTMARGIN_REPORT = { error: String(e && e.stack || e) };
}
`;

interface Report {
  results?: { name: string; status: "passed" | "failed" | "skipped"; ms: number; error?: string }[];
  userAgent?: string;
  error?: string;
}

const skipped = (name: string) => SKIPPED.some((s) => name.includes(s));

/** The shims of node:test and node:assert/strict. */
const shims: esbuild.Plugin = {
  name: "node-shims",
  setup(build) {
    const to: Record<string, string> = {
      "node:test": join(ROOT, "tests/runtimes/shims/test.ts"),
      "node:assert/strict": join(ROOT, "tests/runtimes/shims/assert.ts"),
    };
    build.onResolve({ filter: /^node:/ }, (a) => to[a.path] ? { path: to[a.path] } : undefined);
  },
};

/** Registers the check. */
export function tfjsWebgpuChecks(): void {
  describe("Chromium: softmargin/tfjs on TF.js's webgpu backend (SwiftShader)", () => {
    it(
      "tests/tfjs_webgpu_test.ts in a page: every test passes (but two that another covers)",
      { timeout: 300_000 },
      async () => {
        assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing (apt-get install chromium)`);
        const dir = tempDir("tfjs-webgpu");
        await esbuild.build({
          entryPoints: [join(ROOT, "tests/runtimes/tfjs_webgpu_suite.ts")],
          bundle: true,
          format: "esm",
          platform: "browser",
          target: "es2022",
          outfile: join(dir, "suite.js"),
          plugins: [shims],
          logLevel: "error",
        });
        writeFileSync(
          join(dir, "page.html"),
          '<!doctype html><meta charset="utf-8"><script type="module" src="page.js"></script>',
        );
        writeFileSync(join(dir, "page.js"), PAGE);
        const server = await serve([{ prefix: "/", dir }]);
        const browser = await chromium.launch({
          executablePath: CHROMIUM,
          headless: true,
          args: [...FLAGS, ...SWIFTSHADER],
        });
        try {
          const t0 = Date.now();
          const { report, console: messages } = await visit<Report>(browser, `${server.origin}/page.html`, 400_000);
          assert.equal(report.error, undefined, `${report.error}\n${messages.join("\n")}`);
          const results = report.results!;
          for (const r of results) console.log(`  ${r.status} ${r.name} (${(r.ms / 1000).toFixed(1)} s)`);
          console.log(`  ${results.length} tests in ${((Date.now() - t0) / 1000).toFixed(0)} s, ${report.userAgent}`);
          const bad = results.filter((r) => r.status === "failed" || (r.status === "skipped") !== skipped(r.name));
          assert.deepEqual(bad.map((r) => `${r.name}: ${r.status} ${r.error ?? ""}`), [], "every test passes");
          assert.ok(results.filter((r) => r.status === "passed").length >= 6, `${results.length} tests ran`);
        } finally {
          await browser.close();
          await server.close();
          if (!process.env.SOFTMARGIN_KEEP) rmSync(dir, { recursive: true, force: true });
        }
      },
    );
  });
}
