/**
 * Builds the npm package in dist/npm/ (dist/ is gitignored), from the TypeScript sources:
 *
 * - `mod.js`, `cpu.js`, `edge.js`: ESM bundles by esbuild, sharing their code through
 *   chunks/ (so that one process has one WebAssembly instance whichever entries it
 *   imports), the WebAssembly inlined as base64 (no file to find, no fetch);
 * - `workerd/`: the same entries without the inline WebAssembly, for runtimes that
 *   refuse to compile it from bytes (Cloudflare Workers, Vercel Edge): there the module
 *   comes from `softmargin.wasm` (or `softmargin-relaxed.wasm`), shipped beside them;
 * - `types/`: declarations emitted by tsc from the sources;
 * - `package.json` (zero dependencies, `exports` with conditions, `files`,
 *   `sideEffects: false`), README.md and LICENSE.
 *
 *   deno task package          # = deno run -A scripts/package.ts; then: cd dist/npm && npm pack
 *
 * @module
 */
import * as esbuild from "esbuild";
import { WASM_MEMORY_FLAGS_AT, WASM_RELAXED, WASM_SIMD } from "../src/wasm/generated.ts";

const root = new URL("../", import.meta.url);
const dist = new URL("dist/npm/", root);
const path = (u: URL) => decodeURIComponent(u.pathname);

/** The package's entry points: export path → source file at the repository root. */
const ENTRIES = { ".": "mod", "./cpu": "cpu", "./edge": "edge", "./tfjs": "tfjs" } as const;

/** Runtimes that refuse to compile WebAssembly from bytes: they get the workerd build. */
const NO_COMPILE_CONDITIONS = ["workerd", "edge-light"];

const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));

await Deno.remove(dist, { recursive: true }).catch(() => {});
await Deno.mkdir(dist, { recursive: true });

// ---------------------------------------------------------------------------------- JavaScript

/**
 * The workerd build: src/wasm/generated.ts without its base64. Reading the inline module
 * (only done when no module was set with setWasmModule) throws a message saying what to do.
 */
const noInlineWasm: esbuild.Plugin = {
  name: "no-inline-wasm",
  setup(build) {
    build.onLoad({ filter: /[\\/]src[\\/]wasm[\\/]generated\.ts$/ }, () => ({
      loader: "js",
      contents: `const missing = { toString() { throw new Error(${
        JSON.stringify(
          "softmargin: this build (for workerd, Cloudflare Workers, Vercel Edge) has no inline WebAssembly, " +
            "since these runtimes refuse to compile it from bytes. Import the precompiled module and pass it first: " +
            'import wasmModule from "@softmargin/softmargin/softmargin.wasm"; ' +
            "setWasmModule(wasmModule) (or withWasmModule(wasmModule) from @softmargin/softmargin/edge).",
        )
      }); } };\nexport const WASM_SIMD = missing;\nexport const WASM_RELAXED = missing;\n` +
        `export const WASM_MEMORY_FLAGS_AT = ${WASM_MEMORY_FLAGS_AT};\n`,
    }));
  },
};

async function bundle(outdir: string, plugins: esbuild.Plugin[]): Promise<esbuild.Metafile> {
  const result = await esbuild.build({
    absWorkingDir: path(root),
    entryPoints: Object.values(ENTRIES).map((name) => ({ in: `${name}.ts`, out: name })),
    outdir: path(new URL(outdir, dist)),
    bundle: true,
    splitting: true,
    chunkNames: "chunks/[name]-[hash]",
    format: "esm",
    platform: "neutral",
    // ES2022: class fields and #private are native in Node 20, Bun, Deno and every browser with WebAssembly SIMD.
    target: "es2022",
    metafile: true,
    plugins,
    logLevel: "warning",
  });
  // Zero runtime dependencies: every input is one of the library's own files.
  for (const input of Object.keys(result.metafile.inputs)) {
    if (input.includes("node_modules") || input.startsWith("node:")) {
      throw new Error(`dist/npm/${outdir}: the bundle would depend on ${input}`);
    }
  }
  return result.metafile;
}

await bundle("./", []);
await bundle("./workerd/", [noInlineWasm]);
await esbuild.stop();

// ---------------------------------------------------------------------------------- WebAssembly

function decode(base64: string): Uint8Array {
  const bin = atob(base64);
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}
await Deno.writeFile(new URL("softmargin.wasm", dist), decode(WASM_SIMD));
await Deno.writeFile(new URL("softmargin-relaxed.wasm", dist), decode(WASM_RELAXED));

// ---------------------------------------------------------------------------------- declarations

const tsconfig = new URL("tsconfig.types.json", dist);
await Deno.writeTextFile(
  tsconfig,
  JSON.stringify({
    compilerOptions: {
      target: "es2022",
      module: "nodenext",
      moduleResolution: "nodenext",
      strict: true,
      declaration: true,
      emitDeclarationOnly: true,
      allowImportingTsExtensions: true,
      // esnext: Symbol.dispose (WasmMatrix); dom: the web globals the sources use, as Deno has them.
      lib: ["esnext", "dom"],
      types: [],
      rootDir: "../..",
      outDir: "types",
    },
    files: Object.values(ENTRIES).map((name) => `../../${name}.ts`),
  }),
);
const tsc = await new Deno.Command(path(new URL("node_modules/.bin/tsc", root)), {
  args: ["-p", path(tsconfig)],
  stdout: "inherit",
  stderr: "inherit",
}).output();
await Deno.remove(tsconfig);
if (!tsc.success) throw new Error("tsc failed to emit the declarations");

/**
 * The declarations as a consumer's tsc reads them: relative imports end in `.js`
 * (`moduleResolution: nodenext` maps them to the `.d.ts`; older compilers reject `.ts`).
 */
function rewriteSpecifiers(text: string): string {
  return text.replace(/((?:from|import)\s*\(?\s*["'])(\.{1,2}\/[^"']*)\.ts(["'])/g, "$1$2.js$3");
}

async function* walk(dir: URL): AsyncGenerator<URL> {
  for await (const e of Deno.readDir(dir)) {
    const u = new URL(e.name + (e.isDirectory ? "/" : ""), dir);
    if (e.isDirectory) yield* walk(u);
    else yield u;
  }
}

/**
 * Web platform types a Node consumer may lack (TypeScript's `dom` lib is where they
 * live; @types/node 20 has neither WebGPU nor the WebAssembly namespace, and lib
 * es2022 has no Symbol.dispose): every such interface the declarations name is also
 * declared, empty, in web-fallback.d.ts, which the files naming them reference. An empty
 * interface merges with the real one where the consumer has it (the `dom` or `esnext`
 * lib, @webgpu/types, @types/node), so theirs wins; the build checks that each name is
 * an interface there (a type alias would clash).
 */
const FALLBACK = "web-fallback.d.ts";
const webgpuTypes = await Deno.readTextFile(new URL("node_modules/@webgpu/types/dist/index.d.ts", root));
const WASM_INTERFACES = ["Module", "Memory", "Instance", "Table", "Global"]; // interfaces in lib.dom and @types/node
const gpu = new Set<string>(), wasm = new Set<string>();
let dispose = false;

const types = new URL("types/", dist);
for await (const file of walk(types)) {
  if (!file.pathname.endsWith(".d.ts")) continue;
  let text = rewriteSpecifiers(await Deno.readTextFile(file));
  const code = text.replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, ""); // names in comments do not count
  const gpuHere = [...code.matchAll(/\bGPU[A-Z]\w*\b/g)].map((m) => m[0]);
  const wasmHere = [...code.matchAll(/\bWebAssembly\.(\w+)/g)].map((m) => m[1]);
  const disposeHere = /\bSymbol\.dispose\b/.test(code);
  gpuHere.forEach((n) => gpu.add(n));
  wasmHere.forEach((n) => wasm.add(n));
  dispose ||= disposeHere;
  if (gpuHere.length || wasmHere.length || disposeHere) {
    const depth = file.pathname.slice(types.pathname.length).split("/").length - 1;
    text = `/// <reference path="${"../".repeat(depth) || "./"}${FALLBACK}" />\n${text}`;
  }
  await Deno.writeTextFile(file, text);
}
for (const name of gpu) {
  if (!new RegExp(`^interface ${name}\\b`, "m").test(webgpuTypes)) {
    throw new Error(`${name}: not an interface in @webgpu/types, so an empty fallback would clash with it`);
  }
}
for (const name of wasm) {
  if (!WASM_INTERFACES.includes(name)) throw new Error(`WebAssembly.${name}: no fallback known to merge`);
}
const interfaces = (names: Set<string>, indent: string) =>
  [...names].sort().map((n) => `${indent}interface ${n} {}\n`).join("");
await Deno.writeTextFile(
  new URL(FALLBACK, types),
  "// The web platform interfaces softmargin's declarations name, empty: they let a consumer without those\n" +
    "// types (Node) type-check, and merge with the real declarations (dom lib, @webgpu/types) where present.\n" +
    "declare global {\n" + interfaces(gpu, "  ") +
    (wasm.size ? `  namespace WebAssembly {\n${interfaces(wasm, "    ")}  }\n` : "") +
    (dispose ? "  interface SymbolConstructor {\n    readonly dispose: unique symbol;\n  }\n" : "") +
    "}\nexport {};\n",
);

// ---------------------------------------------------------------------------------- package.json

const exportsMap: Record<string, unknown> = {};
for (const [key, name] of Object.entries(ENTRIES)) {
  const edge = Object.fromEntries(NO_COMPILE_CONDITIONS.map((c) => [c, `./workerd/${name}.js`]));
  exportsMap[key] = { types: `./types/${name}.d.ts`, ...edge, default: `./${name}.js` };
}
exportsMap["./softmargin.wasm"] = "./softmargin.wasm";
exportsMap["./softmargin-relaxed.wasm"] = "./softmargin-relaxed.wasm";
exportsMap["./package.json"] = "./package.json";

const pkg = {
  name: config.name,
  version: config.version,
  description:
    "Loss functions for classifiers and embedding models (softmax cross-entropy family, ArcFace, CosFace and other " +
    "margin losses) on WebGPU, WebAssembly SIMD and a float64 reference.",
  license: config.license,
  type: "module",
  exports: exportsMap,
  types: "./types/mod.d.ts",
  files: ["*.js", "chunks/", "workerd/", "types/", "*.wasm", "README.md", "LICENSE"],
  sideEffects: false,
  engines: { node: ">=20" },
  keywords: ["loss", "cross-entropy", "arcface", "cosface", "webgpu", "webassembly", "simd", "machine-learning"],
};
await Deno.writeTextFile(new URL("package.json", dist), JSON.stringify(pkg, null, 2) + "\n");
for (const f of ["README.md", "LICENSE"]) await Deno.copyFile(new URL(f, root), new URL(f, dist));

let bytes = 0;
for await (const f of walk(dist)) bytes += (await Deno.stat(f)).size;
console.log(`dist/npm/: ${config.name}@${config.version}, ${(bytes / 1024).toFixed(0)} KiB unpacked`);
