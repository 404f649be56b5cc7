/**
 * Bundles the fixture suite (tests/runtimes/fixture_suite.ts) for a runtime under test:
 * the library's imports (`mod.ts`, `cpu.ts`) point at the built package — by name,
 * or by URL — and never at its sources (the build fails if a library file would be
 * bundled); the PyTorch fixtures are embedded (shims/fs.ts); for browsers, `node:test`
 * and `node:assert/strict` are replaced by shims/test.ts and shims/assert.ts.
 *
 * @module
 */
import * as esbuild from "esbuild";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root: the folder above this file with deno.json (also when bundled into node_modules/.cache). */
export const ROOT: string = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "deno.json"))) {
    if (dirname(dir) === dir) throw new Error("tests/runtimes: no deno.json above this file");
    dir = dirname(dir);
  }
  return dir;
})();
const here = (f: string) => join(ROOT, "tests/runtimes", f);

/** How a bundle reaches the package and which shims it needs. */
export interface SuiteTarget {
  /** `node`: Node, Bun and Deno (node:test, node:assert are theirs); `browser`: the shims. */
  platform: "node" | "browser";
  /** The specifiers the bundle imports the package's main and CPU entries by. */
  main: string;
  cpu: string;
  /** Replace `globalThis.process` by undefined (Deno without --allow-env: backends.ts reads an env var). */
  noProcess?: boolean;
}

/** The embedded fixtures: base name → JSON text. */
function fixtures(): Record<string, string> {
  const dir = join(ROOT, "tests/fixtures");
  return Object.fromEntries(
    readdirSync(dir).filter((f) => f.endsWith(".json")).map((f) => [f, readFileSync(join(dir, f), "utf8")]),
  );
}

/** The fixture files and their case counts (what a full run covers, per backend). */
export function fixtureCases(): Record<string, number> {
  return Object.fromEntries(
    Object.entries(fixtures()).map(([f, text]) => [f, (JSON.parse(text).cases as unknown[]).length]),
  );
}

function packageUnderTest(target: SuiteTarget): esbuild.Plugin {
  const redirect: Record<string, esbuild.OnResolveResult> = {
    [join(ROOT, "mod.ts")]: { path: target.main, external: true },
    [join(ROOT, "cpu.ts")]: { path: target.cpu, external: true },
    [join(ROOT, "src/backend.ts")]: { path: here("shims/find_adapter.ts") },
  };
  const node: Record<string, string> = { "node:fs": here("shims/fs.ts") };
  if (target.platform === "browser") {
    Object.assign(node, {
      "node:test": here("shims/test.ts"),
      "node:assert/strict": here("shims/assert.ts"),
      "node:url": here("shims/url.ts"),
    });
  }
  const helpers = join(ROOT, "tests/helpers");
  const specs = readdirSync(helpers).filter((f) => /^specs.*\.ts$/.test(f)).sort();
  return {
    name: "package-under-test",
    setup(build) {
      build.onResolve({ filter: /^node:/ }, (a) => node[a.path] ? { path: node[a.path] } : undefined);
      build.onResolve({ filter: /\.ts$/ }, (a) => {
        const path = resolve(a.resolveDir, a.path);
        if (path === here("spec_modules.ts")) return { path, namespace: "spec-modules" };
        return redirect[path];
      });
      // Static imports of every spec module, in place of spec_modules.ts's directory listing.
      build.onLoad({ filter: /.*/, namespace: "spec-modules" }, () => ({
        resolveDir: helpers,
        loader: "ts",
        contents: specs.map((f, i) => `import * as m${i} from "./${f}";`).join("\n") +
          `\nexport const specModules = [${specs.map((_, i) => `m${i}`).join(", ")}];\n`,
      }));
    },
  };
}

/** Writes the suite bundle for `target` to `outfile`; returns the bundled files (all under tests/). */
export async function bundleSuite(
  target: SuiteTarget,
  outfile: string,
  entry = "fixture_suite.ts",
): Promise<string[]> {
  const result = await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: [here(entry)],
    outfile,
    bundle: true,
    format: "esm",
    platform: target.platform,
    target: "es2022",
    metafile: true,
    define: {
      FIXTURES: JSON.stringify(fixtures()),
      ...(target.noProcess ? { "globalThis.process": "undefined" } : {}),
    },
    plugins: [packageUnderTest(target)],
    logLevel: "warning",
  });
  const inputs = Object.keys(result.metafile.inputs).filter((i) => !/^(spec-modules:|<define:)/.test(i));
  const outside = inputs.filter((i) => !resolve(ROOT, i).startsWith(join(ROOT, "tests") + "/"));
  if (outside.length) throw new Error(`the suite bundle would contain files outside tests/: ${outside.join(", ")}`);
  return inputs.map((i) => relative(ROOT, resolve(ROOT, i)));
}
