/**
 * Deno, as a user imports the library from a URL and from JSR: the repository served
 * over HTTP on 127.0.0.1, the fixture suite importing `http://127.0.0.1:PORT/mod.ts` and
 * `/cpu.ts` and run with `--allow-import=127.0.0.1:PORT` and nothing else (no read, net
 * or env permission: the WebAssembly is inlined and the fixtures are embedded in the
 * suite); `deno publish --dry-run` (JSR's slow-types rules included) and `deno doc --lint`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { bundleSuite, ROOT } from "./bundle.ts";
import { assertSuite, countDeno, DENO, exec, mustRun, type Package, serve, tail } from "./harness.ts";

/** Registers the Deno checks. */
export function denoChecks(pkg: Package): void {
  describe("Deno", () => {
    it("imports mod.ts from http://127.0.0.1 with only --allow-import: the fixture suite, js and wasm", {
      timeout: 180_000,
    }, async () => {
      const version = (await mustRun([...DENO, "--version"])).output.split("\n")[0];
      const server = await serve([{ prefix: "/", dir: ROOT }]);
      try {
        const dir = join(pkg.work, "deno");
        mkdirSync(dir);
        await bundleSuite(
          { platform: "node", main: `${server.origin}/mod.ts`, cpu: `${server.origin}/cpu.ts`, noProcess: true },
          join(dir, "fixtures_test.mjs"),
        );
        // A fresh module cache: every module really comes over HTTP.
        const env = { DENO_DIR: join(dir, "cache") };
        const base = ["test", "--no-config", "--no-lock", "--no-prompt"];
        const denied = await exec([...DENO, ...base, "fixtures_test.mjs"], { cwd: dir, env });
        assert.notEqual(denied.code, 0, "importing from 127.0.0.1 without --allow-import must be refused");
        assert.match(denied.output, /--allow-import/, tail(denied.output));

        const allow = `--allow-import=127.0.0.1:${server.port}`;
        const r = await exec([...DENO, ...base, allow, "fixtures_test.mjs"], { cwd: dir, env, timeoutMs: 170_000 });
        assertSuite(`${version} (${allow})`, countDeno(r.output), 2, r.output);
        assert.equal(r.code, 0, tail(r.output));
        for (const path of ["/mod.ts", "/cpu.ts", "/src/wasm/generated.ts"]) {
          assert.ok(server.served.includes(path), `Deno never fetched ${path}`);
        }
        assert.ok(!server.served.some((p) => p.endsWith(".wasm") || p.startsWith("/tests/")), "only library modules");
        console.log(`  ${new Set(server.served).size} modules over HTTP`);
      } finally {
        await server.close();
      }
    });

    it("deno publish --dry-run (JSR, slow types) and deno doc --lint pass", { timeout: 120_000 }, async () => {
      const publish = await exec([...DENO, "publish", "--dry-run", "--allow-dirty"], { cwd: ROOT });
      assert.equal(publish.code, 0, tail(publish.output));
      assert.match(publish.output, /Dry run complete/);
      const doc = await exec([...DENO, "doc", "--lint", "mod.ts", "cpu.ts", "edge.ts"], { cwd: ROOT });
      assert.equal(doc.code, 0, tail(doc.output));
    });
  });
}
