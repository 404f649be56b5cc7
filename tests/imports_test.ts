// The layering of the library's source files, from their import statements (type imports
// included): no import cycle; no library file imports an entry file (mod.ts, cpu.ts, edge.ts,
// tfjs.ts); the kernel contract (src/kernels/) imports nothing above it; no backend
// (src/reference/, src/wasm/, src/webgpu/) imports a loss module (src/losses/) or the binding
// layer (src/loss.ts). Runs unchanged under Deno and Bun.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const entries = readdirSync(root).filter((f) => f.endsWith(".ts"));

function walk(dir: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(`${dir}/${e.name}`) : e.name.endsWith(".ts") ? [`${dir}/${e.name}`] : []
  );
}

/** Every relative module specifier of a file: import/export ... from, bare imports, import(). */
export function specifiers(text: string): string[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const found = [
    ...code.matchAll(/\b(?:import|export)\b[^;"'`]*?\bfrom\s*["']([^"']+)["']/g),
    ...code.matchAll(/\bimport\s*["']([^"']+)["']/g),
    ...code.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g),
  ];
  return found.map((m) => m[1]).filter((s) => s.startsWith("."));
}

/** The import graph of the library's files (src/ and the entry files), by path from the root. */
export function graph(files: string[]): Map<string, string[]> {
  const edges = new Map<string, string[]>();
  for (const f of files) {
    const text = readFileSync(join(root, f), "utf8");
    const to = specifiers(text).map((s) => relative(root, normalize(join(root, dirname(f), s))));
    edges.set(f, [...new Set(to.filter((t) => t.endsWith(".ts") && existsSync(join(root, t))))]);
  }
  return edges;
}

/** The strongly connected components of more than one file (Tarjan), and self-imports. */
export function cycles(edges: Map<string, string[]>): string[][] {
  let index = 0;
  const idx = new Map<string, number>(), low = new Map<string, number>(), stack: string[] = [], on = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index), low.set(v, index++), stack.push(v), on.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!idx.has(w)) visit(w), low.set(v, Math.min(low.get(v)!, low.get(w)!));
      else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do (w = stack.pop()!, on.delete(w), comp.push(w)); while (w !== v);
      if (comp.length > 1 || edges.get(v)?.includes(v)) out.push(comp.sort());
    }
  };
  for (const v of edges.keys()) if (!idx.has(v)) visit(v);
  return out;
}

const library = [...entries, ...walk("src").filter((f) => !f.endsWith("/build.ts"))];
const edges = graph(library);
const imports = [...edges].flatMap(([from, tos]) => tos.map((to) => [from, to] as const));

test("the checker finds a cycle, an entry import and type-only imports (it can fail)", () => {
  assert.deepEqual(specifiers(`import type { A } from "./a.ts";\nexport * from "./b.ts";\nimport "./c.ts";`), [
    "./a.ts",
    "./b.ts",
    "./c.ts",
  ]);
  const g = new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a"]], ["d", ["a"]]]);
  assert.deepEqual(cycles(g), [["a", "b", "c"]]);
});

test("the library's files import each other without a cycle", () => {
  assert.ok(edges.size > 50, `expected the library's files, got ${edges.size}`);
  assert.deepEqual(cycles(edges), []);
});

test("no library file imports an entry file", () => {
  assert.deepEqual(imports.filter(([from, to]) => from.startsWith("src/") && entries.includes(to)), []);
});

test("the kernel contract (src/kernels/) imports nothing above it", () => {
  const below = (to: string) => to.startsWith("src/kernels/") || to === "src/types.ts" || to === "src/validate.ts";
  assert.deepEqual(imports.filter(([from, to]) => from.startsWith("src/kernels/") && !below(to)), []);
});

test("no backend imports a loss module or the binding layer", () => {
  const backend = (f: string) => /^src\/(reference|wasm|webgpu)\//.test(f);
  const above = (f: string) => f.startsWith("src/losses/") || f === "src/loss.ts" || f === "src/backend.ts";
  assert.deepEqual(imports.filter(([from, to]) => backend(from) && above(to)), []);
});
