/**
 * The runtime tests (issue 10): the npm package built by scripts/package.ts, packed with
 * `npm pack` and installed into a fresh temporary project, run by each runtime a user
 * has — Node and Bun (the fixture suite on both CPU backends, tsc on consumer files, the
 * WebGPU backend through Dawn where it gives an adapter), Deno (a URL import with only
 * `--allow-import`; `deno publish --dry-run`, `deno doc --lint`), Chromium (deno_check.ts,
 * browser_check.ts, workerd_check.ts hold the rest; tfjs_webgpu_check.ts runs softmargin/tfjs on TF.js's
 * webgpu backend in Chromium). Run by tests/runtimes/run.sh under
 * Node (`node --test`); every check fails on any mismatch.
 *
 * @module
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { bundleSuite, ROOT } from "./bundle.ts";
import {
  assertSuite,
  BUN,
  countBun,
  countNodeTap,
  DENO,
  exec,
  expectedTests,
  mustRun,
  type Package,
  skipReasons,
  tail,
  tempDir,
} from "./harness.ts";
import { browserChecks } from "./browser_check.ts";
import { denoChecks } from "./deno_check.ts";
import { workerdChecks } from "./workerd_check.ts";
import { tfjsWebgpuChecks } from "./tfjs_webgpu_check.ts";

/** The `webgpu` package (Dawn for Node) that the Node WebGPU check installs. */
const WEBGPU_NPM = "webgpu@0.6.2";
/** The WebGPU types a consumer may add (the version package-lock.json has). */
const WEBGPU_TYPES = "@webgpu/types@0.1.74";

const pkg = {} as Package;

before(async () => {
  pkg.work = tempDir("runtimes");
  await mustRun([...DENO, "run", "-A", "scripts/package.ts"], { cwd: ROOT, timeoutMs: 120_000 });
  const packed = await mustRun(["npm", "pack", "--json", "--pack-destination", pkg.work], {
    cwd: join(ROOT, "dist/npm"),
  });
  const info = JSON.parse(packed.output.slice(packed.output.indexOf("[")))[0];
  pkg.tarball = join(pkg.work, info.filename);
  pkg.files = (info.files as { path: string }[]).map((f) => f.path).sort();
  mkdirSync(join(pkg.work, "unpacked"));
  await mustRun(["tar", "xzf", pkg.tarball, "-C", join(pkg.work, "unpacked")]);
  pkg.unpacked = join(pkg.work, "unpacked/package");
  pkg.project = join(pkg.work, "project");
  mkdirSync(pkg.project);
  writeFileSync(join(pkg.project, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
  await mustRun(
    ["npm", "install", "--no-audit", "--no-fund", "--prefer-offline", pkg.tarball, "@types/node@20", WEBGPU_TYPES],
    { cwd: pkg.project, timeoutMs: 120_000 },
  );
  await bundleSuite(
    { platform: "node", main: "@softmargin/softmargin", cpu: "@softmargin/softmargin/cpu" },
    join(pkg.project, "fixtures_test.mjs"),
  );
});

describe("npm package", () => {
  it("is ESM with zero dependencies, sideEffects false, and ships what its exports name", () => {
    const manifest = JSON.parse(readFileSync(join(pkg.unpacked, "package.json"), "utf8"));
    assert.equal(manifest.type, "module");
    assert.equal(manifest.sideEffects, false);
    for (const k of ["dependencies", "peerDependencies", "optionalDependencies"]) {
      assert.equal(manifest[k], undefined, `package.json has ${k}`);
    }
    const targets = (v: unknown): string[] =>
      typeof v === "string" ? [v.replace(/^\.\//, "")] : Object.values(v as object).flatMap(targets);
    for (const t of targets(manifest.exports)) {
      assert.ok(pkg.files.includes(t), `exports name ${t}, which the tarball lacks`);
    }
    for (const e of [".", "./cpu", "./edge"]) {
      assert.deepEqual(Object.keys(manifest.exports[e]), ["types", "workerd", "edge-light", "default"], e);
    }
    const sources = pkg.files.filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"));
    assert.deepEqual(sources, [], "no TypeScript sources in the tarball");
    // The installed project holds the package and the type packages asked for, nothing the package pulled in.
    const installed = readdirSync(join(pkg.project, "node_modules")).filter((d) => !d.startsWith("."));
    assert.deepEqual(installed.sort(), ["@softmargin", "@types", "@webgpu", "undici-types"]);
    console.log(`tarball: ${pkg.files.length} files; ${pkg.files.filter((f) => f.endsWith(".wasm")).join(", ")}`);
  });

  it(`Node ${process.version}: the fixture suite from the tarball, js and wasm`, { timeout: 120_000 }, async () => {
    const r = await exec(["node", "--test", "--test-reporter=tap", "fixtures_test.mjs"], { cwd: pkg.project });
    for (const s of skipReasons(r.output)) console.log(`  skipped: ${s}`);
    assertSuite(`Node ${process.version}`, countNodeTap(r.output), 2, r.output);
    assert.equal(r.code, 0, tail(r.output));
  });

  it("Bun: the same fixture suite from the tarball, js and wasm", { timeout: 120_000 }, async () => {
    const version = await mustRun([...BUN, "--version"]);
    const r = await exec([...BUN, "test", "./fixtures_test.mjs"], { cwd: pkg.project });
    assertSuite(`Bun ${version.output.trim()}`, countBun(r.output), 2, r.output);
    assert.equal(r.code, 0, tail(r.output));
  });

  it("Node and Bun: init({ threads: 2 }) runs on 2 threads (node:worker_threads), as one thread, and exits", {
    timeout: 120_000,
  }, async () => {
    copyFileSync(join(ROOT, "tests/runtimes/threads_check.mjs"), join(pkg.project, "threads_check.mjs"));
    const script =
      'import { init } from "@softmargin/softmargin"; import { alloc } from "@softmargin/softmargin/cpu"; ' +
      'import { threadsCheck } from "./threads_check.mjs"; ' +
      "console.log(JSON.stringify(await threadsCheck(init, alloc)));";
    writeFileSync(join(pkg.project, "threads_main.mjs"), script);
    for (const [name, cmd] of [["Node", ["node"]], ["Bun", BUN]] as const) {
      // The process must exit by itself: the workers are unreferenced.
      const r = await exec([...cmd, "threads_main.mjs"], { cwd: pkg.project, timeoutMs: 60_000 });
      assert.equal(r.code, 0, `${name}: ${tail(r.output)}`);
      const t = JSON.parse(r.output.trim().split("\n").pop()!);
      console.log(`  ${name}: ${t.note}; head within ${t.headLoss.toExponential(1)} / ${t.headGrad.toExponential(1)}`);
      assert.equal(t.threads, 2, `${name}: ${t.note}`);
      assert.ok(t.sameBits, `${name}: crossEntropy on 2 threads, the same bits as on one`);
      assert.ok(t.headLoss < 1e-6 && t.headGrad < 1e-5, `${name}: marginHead on 2 threads ${t.headLoss} ${t.headGrad}`);
    }
  });

  it("tsc: consumers type-check, with and without WebGPU types", { timeout: 120_000 }, async () => {
    const dir = join(pkg.project, "consumer");
    mkdirSync(dir, { recursive: true });
    for (const f of ["cpu.ts", "gpu.ts"]) copyFileSync(join(ROOT, "tests/runtimes/consumer", f), join(dir, f));
    const webgpuTypes = "../node_modules/@webgpu/types/dist/index.d.ts";
    const base = {
      target: "es2022",
      module: "nodenext",
      moduleResolution: "nodenext",
      strict: true,
      noEmit: true,
      skipLibCheck: false,
      noUnusedLocals: true,
    };
    const configs: Record<string, { compilerOptions: object; files: string[] }> = {
      // Node, CPU entries and the main one, no WebGPU types at all.
      node: { compilerOptions: { ...base, lib: ["es2022"], types: ["node"] }, files: ["cpu.ts"] },
      // Node with @webgpu/types: the real GPU types merge with the package's fallbacks. (skipLibCheck:
      // @webgpu/types itself needs the dom lib; gpu.ts, using GPUBuffer's members, is still checked.)
      "node-webgpu": {
        compilerOptions: { ...base, lib: ["es2022"], types: ["node"], skipLibCheck: true },
        files: ["cpu.ts", "gpu.ts", webgpuTypes],
      },
      // A browser project: TypeScript's dom lib has WebGPU.
      browser: { compilerOptions: { ...base, lib: ["es2022", "dom"], types: [] }, files: ["gpu.ts"] },
    };
    const tsc = join(ROOT, "node_modules/.bin/tsc");
    const version = (await mustRun([tsc, "--version"])).output.trim();
    for (const [name, config] of Object.entries(configs)) {
      writeFileSync(join(dir, `tsconfig.${name}.json`), JSON.stringify(config));
      const r = await exec([tsc, "-p", `tsconfig.${name}.json`], { cwd: dir });
      assert.equal(r.code, 0, `${version}, ${name}: ${r.output}`);
    }
    console.log(`${version}: ${Object.keys(configs).join(", ")} consumers type-check`);
  });

  it(`Node + ${WEBGPU_NPM} (Dawn): the fixture suite on WebGPU where an adapter appears`, {
    timeout: 240_000,
  }, async () => {
    const dir = join(pkg.work, "node-webgpu");
    mkdirSync(dir);
    writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "gpu-consumer", private: true, type: "module" }));
    await mustRun(["npm", "install", "--no-audit", "--no-fund", "--prefer-offline", pkg.tarball, WEBGPU_NPM], {
      cwd: dir,
      timeoutMs: 180_000,
    });
    copyFileSync(join(pkg.project, "fixtures_test.mjs"), join(dir, "fixtures_test.mjs"));
    copyFileSync(join(ROOT, "tests/runtimes/node_webgpu.mjs"), join(dir, "node_webgpu.mjs"));
    // EGL without a display: Dawn's OpenGL ES backend then finds Mesa's llvmpipe.
    const env = { EGL_PLATFORM: "surfaceless" };
    const probe = await exec(["node", "--import", "./node_webgpu.mjs", "-e", ""], { cwd: dir, env });
    const found = probe.output.match(/^softmargin-webgpu: (.*)$/m)?.[1] ?? `no report:\n${tail(probe.output)}`;
    console.log(`  Dawn: ${found}`);
    if (!found.startsWith("adapter")) return; // recorded above: Node has no WebGPU here
    const r = await exec(["node", "--import", "./node_webgpu.mjs", "--test-reporter=tap", "fixtures_test.mjs"], {
      cwd: dir,
      env: { ...env, SOFTMARGIN_SUITE_WEBGPU: "1" },
      timeoutMs: 200_000,
    });
    // Every case must pass here too. (Until session 8, 21 hard-label cases of C >= 1000 and three multiSimilarity
    // cases came out wrong on Dawn's OpenGL ES backend only: its workgroupBarrier is GLSL barrier() alone, after
    // which Mesa's llvmpipe let the workgroup reductions' read of their result happen too late; src/webgpu/common.wgsl.)
    const failed = [...r.output.matchAll(/^\s*not ok \d+ - (.+)$/gm)].map((m) => m[1])
      .filter((n) => !/^(matches PyTorch|js|wasm|webgpu)\b/.test(n));
    if (failed.length) console.log(`  failures (${failed.length}): ${failed.join(", ")}`);
    const c = countNodeTap(r.output);
    console.log(`Node ${process.version} + Dawn: ${c.passed} passed, ${c.failed} failed, ${c.skipped} skipped`);
    assert.deepEqual(failed, [], tail(r.output));
    assert.equal(c.failed, 0, tail(r.output));
    assert.equal(c.passed + c.failed + c.skipped, expectedTests(3), "every case on js, wasm and webgpu");
  });
});

denoChecks(pkg);
browserChecks(pkg);
tfjsWebgpuChecks();
workerdChecks(pkg);

after(() => {
  if (process.env.SOFTMARGIN_KEEP) console.log(`kept ${pkg.work}`);
  else if (pkg.work) rmSync(pkg.work, { recursive: true, force: true });
});
