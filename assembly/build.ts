/**
 * Compiles `assembly/` to SIMD WebAssembly, two modules from two entry points:
 *
 * - `assembly/index.ts` (the library's kernels) into `src/wasm/generated.ts`;
 * - `assembly/testing.ts` (test-only wrappers of the math, never shipped) into
 *   `tests/helpers/wasm_testing.generated.ts`.
 *
 * Each generated file holds the module base64-inlined in both builds (plain SIMD and
 * relaxed SIMD), the TypeScript interface of its exports, generated from the
 * `export function name(arg: type, ...): ret` signatures of the files the entry
 * re-exports (and checked against the compiled module's exports), and a hash of the
 * sources it is built from (the entry and the files it imports), the compiler's
 * version and the settings.
 *
 *   deno task build          rebuild
 *   deno task build --check  fail (exit 1) when a committed module is stale
 *
 * @module
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { tmpdir } from "node:os";

const root = new URL("..", import.meta.url).pathname;
// The memory is imported (env.memory), so that one module serves one thread (a plain memory) and
// a pool of threads (one shared memory): see SHARED below.
const FLAGS = [
  "-O3",
  "--runtime",
  "stub",
  "--noAssert",
  "--enable",
  "simd",
  "--importMemory",
  "--initialMemory",
  "1",
  "--maximumMemory",
  "65536",
];
/**
 * The same module for a shared memory (threads): it differs from the plain build only in
 * the memory import's limits flag (1: has a maximum; 3: shared, with a maximum), which
 * the build checks byte for byte, so the generated file carries one module per variant
 * and the offset of that flag (`WASM_MEMORY_FLAGS_AT`), and the runtime sets it to 3.
 */
const SHARED = ["--sharedMemory", "--enable", "threads"];
/** Two builds of the same sources: plain SIMD, and with relaxed SIMD's fused multiply-add. */
const VARIANTS = { simd: [], relaxed: ["--enable", "relaxed-simd"] } as const;

/** One module: its entry point, the file it is written to, and what the file says it is. */
interface Target {
  entry: string;
  out: string;
  /** Name of the generated interface of its exports. */
  iface: string;
  what: string;
  /** Whether the module also runs on a shared memory (checked, and the flag's offset emitted). */
  shared: boolean;
}

const TARGETS: Target[] = [
  { entry: "assembly/index.ts", out: "src/wasm/generated.ts", iface: "Exports", what: "The kernels", shared: true },
  {
    entry: "assembly/testing.ts",
    out: "tests/helpers/wasm_testing.generated.ts",
    iface: "TestingExports",
    what: "The test build (tests only: the math of assembly/math.ts behind array wrappers)",
    shared: false,
  },
];

const read = (file: string) => readFileSync(join(root, file), "utf8");

/** The modules a file imports or re-exports (`from "./name"`), as paths from the root. */
function imports(file: string): string[] {
  return [...read(file).matchAll(/\bfrom\s+"\.\/([\w/]+)"/g)].map((m) => `assembly/${m[1]}.ts`);
}

/** The entry and every file it reaches through imports, sorted. */
function closure(entry: string): string[] {
  const seen = new Set<string>();
  const visit = (f: string) => {
    if (seen.has(f)) return;
    if (!existsSync(join(root, f))) throw new Error(`${f} (imported) does not exist`);
    seen.add(f);
    imports(f).forEach(visit);
  };
  visit(entry);
  return [...seen].sort();
}

function sourceHash(t: Target): string {
  const h = createHash("sha256");
  const asc = JSON.parse(read("node_modules/assemblyscript/package.json")).version;
  h.update(`asc ${asc}\n${FLAGS.join(" ")}\n${SHARED.join(" ")}\n${JSON.stringify(VARIANTS)}\n`);
  for (const f of closure(t.entry)) h.update(`${f}\n`).update(read(f));
  return h.digest("hex");
}

/** AssemblyScript's value types as the JavaScript API passes them. */
const JS_TYPES: Record<string, string> = {
  i32: "number",
  u32: "number",
  isize: "number",
  usize: "number",
  f32: "number",
  f64: "number",
  void: "void",
};

/** One exported function: its name, parameters, result and doc comment. */
interface Signature {
  name: string;
  params: [string, string][];
  ret: string;
  doc: string;
}

/** The signature of `export function name(...)` in `file`. */
function signature(file: string, name: string): Signature {
  const src = read(file);
  const re = new RegExp(`(/\\*\\*(?:(?!\\*/)[\\s\\S])*\\*/\\s*)?export function ${name}\\s*\\(([^)]*)\\)\\s*:\\s*(\\w+)`);
  const m = src.match(re);
  if (!m) throw new Error(`${file}: no \`export function ${name}(...): type\``);
  const type = (t: string, what: string) => {
    const js = JS_TYPES[t];
    if (!js) throw new Error(`${file}: ${name}'s ${what} has type ${t}; expected one of ${Object.keys(JS_TYPES)}`);
    return js;
  };
  const params = m[2].split(",").map((p) => p.trim()).filter(Boolean).map((p): [string, string] => {
    const pm = p.match(/^(\w+)\s*:\s*(\w+)$/);
    if (!pm) throw new Error(`${file}: ${name}'s parameter \`${p}\` is not \`name: type\``);
    return [pm[1], type(pm[2], `parameter ${pm[1]}`)];
  });
  if (params.some(([, t]) => t === "void")) throw new Error(`${file}: ${name} has a void parameter`);
  return { name, params, ret: type(m[3], "result"), doc: (m[1] ?? "").trim() };
}

/** The functions an entry exports: its re-exports (`export { a, b } from "./file"`) and its own. */
function exported(entry: string): Signature[] {
  const src = read(entry);
  const out: Signature[] = [];
  for (const m of src.matchAll(/^export\s*\{([^}]*)\}\s*from\s*"\.\/([\w/]+)"/gm)) {
    for (const name of m[1].split(",").map((s) => s.trim()).filter(Boolean)) {
      if (!/^\w+$/.test(name)) throw new Error(`${entry}: re-export \`${name}\` is not a plain name`);
      out.push(signature(`assembly/${m[2]}.ts`, name));
    }
  }
  for (const m of src.matchAll(/^export function (\w+)/gm)) out.push(signature(entry, m[1]));
  return out;
}

/** The TypeScript interface of an entry's exports. */
function renderInterface(t: Target, sigs: Signature[]): string {
  const doc = (d: string) => (d ? `  ${d.replace(/\n\s*/g, "\n   ")}\n` : "");
  const members = sigs.map((s) =>
    `${doc(s.doc)}  ${s.name}(${s.params.map(([n, ty]) => `${n}: ${ty}`).join(", ")}): ${s.ret};`
  );
  return `/**
 * What the module exports (pointers are byte offsets into its memory): generated from the
 * \`export function\` signatures of ${t.entry} and the files it re-exports.
 */
export interface ${t.iface} {
  /** The module's memory. */
  memory: WebAssembly.Memory;
${members.join("\n")}
}`;
}

/** Checks the compiled module against the parsed signatures: the same names and arities. */
function verify(t: Target, bytes: Uint8Array, sigs: Signature[]): void {
  const module = new WebAssembly.Module(bytes as BufferSource);
  const stubs: Record<string, Record<string, WebAssembly.ImportValue>> = {};
  for (const i of WebAssembly.Module.imports(module)) {
    (stubs[i.module] ??= {})[i.name] = i.kind === "memory" ? new WebAssembly.Memory({ initial: 1, maximum: 65536 }) : () => {};
  }
  const exports = new WebAssembly.Instance(module, stubs).exports as Record<string, unknown>;
  const want = ["memory", ...sigs.map((s) => s.name)].sort().join(", ");
  const got = Object.keys(exports).sort().join(", ");
  if (want !== got) throw new Error(`${t.entry}: the module exports ${got}; the sources declare ${want}`);
  for (const s of sigs) {
    const arity = (exports[s.name] as (...a: unknown[]) => unknown).length;
    if (arity !== s.params.length) throw new Error(`${t.entry}: ${s.name} takes ${arity} arguments, declared ${s.params.length}`);
  }
}

function compile(t: Target, extra: readonly string[], sigs: Signature[]): Uint8Array {
  const dir = mkdtempSync(join(tmpdir(), "softmargin-"));
  try {
    const out = join(dir, "module.wasm");
    execFileSync(join(root, "node_modules/.bin/asc"), [join(root, t.entry), "--outFile", out, ...FLAGS, ...extra], {
      cwd: root,
      stdio: ["ignore", "inherit", "inherit"],
    });
    const bytes = new Uint8Array(readFileSync(out));
    if (!extra.includes(SHARED[0])) verify(t, bytes, sigs);
    return bytes;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The offset of the one byte in which `shared` (the build for a shared memory) differs
 * from `plain`: the memory import's limits flag, 1 in `plain` and 3 in `shared`.
 */
function memoryFlagOffset(plain: Uint8Array, shared: Uint8Array): number {
  const diff = [...plain.keys()].filter((i) => plain[i] !== shared[i]);
  if (plain.length !== shared.length || diff.length !== 1 || plain[diff[0]] !== 1 || shared[diff[0]] !== 3) {
    throw new Error(
      `the shared-memory build differs from the plain one in ${diff.length} bytes (lengths ${plain.length}, ` +
        `${shared.length}); expected exactly the memory import's limits flag, 1 -> 3`,
    );
  }
  return diff[0];
}

function render(t: Target, hash: string): string {
  const sigs = exported(t.entry);
  const lit = (bytes: Uint8Array) =>
    (Buffer.from(bytes).toString("base64").match(/.{1,100}/g) ?? []).map((l) => `  "${l}"`).join(" +\n");
  const simd = compile(t, VARIANTS.simd, sigs), relaxed = compile(t, VARIANTS.relaxed, sigs);
  let shared = "";
  if (t.shared) {
    const at = memoryFlagOffset(simd, compile(t, [...VARIANTS.simd, ...SHARED], sigs));
    if (memoryFlagOffset(relaxed, compile(t, [...VARIANTS.relaxed, ...SHARED], sigs)) !== at) {
      throw new Error("the memory import's limits flag is at different offsets in the two variants");
    }
    shared = `/**
 * The offset, in both modules, of the memory import's limits flag: 1 (a maximum) as built,
 * 3 (shared, with a maximum) for a shared memory; the modules built with \`--sharedMemory\`
 * differ from these in this byte only (checked by the build).
 */
export const WASM_MEMORY_FLAGS_AT = ${at};
`;
  }
  return `// @generated by assembly/build.ts from ${t.entry} and the files it imports. Do not edit: run \`deno task build\`.
// source-hash: ${hash}
${renderInterface(t, sigs)}
/** ${t.what}, compiled with SIMD, base64-encoded. */
export const WASM_SIMD: string =
${lit(simd)};
/** The same, compiled with relaxed SIMD (fused multiply-add), base64-encoded. */
export const WASM_RELAXED: string =
${lit(relaxed)};
${shared}`;
}

let stale = false;
for (const t of TARGETS) {
  const hash = sourceHash(t);
  if (Deno.args.includes("--check")) {
    let committed = "";
    try {
      committed = read(t.out);
    } catch { /* missing counts as stale */ }
    const recorded = committed.match(/^\/\/ source-hash: ([0-9a-f]+)$/m)?.[1];
    if (recorded !== hash) {
      console.error(`${t.out} is stale (source-hash ${recorded ?? "missing"}, sources ${hash}): run \`deno task build\``);
      stale = true;
    } else if (committed !== render(t, hash)) {
      console.error(`${t.out} does not match a fresh build of ${t.entry}: run \`deno task build\``);
      stale = true;
    } else {
      console.log(`${t.out} is up to date (${hash.slice(0, 12)})`);
    }
  } else {
    writeFileSync(join(root, t.out), render(t, hash));
    console.log(`wrote ${t.out} (${hash.slice(0, 12)})`);
  }
}
if (stale) Deno.exit(1);
