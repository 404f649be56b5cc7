/**
 * Inlines the WGSL kernels of `src/webgpu/` into `src/webgpu/generated.ts` with a hash of their
 * sources. Each kernel's source is `common.wgsl` followed by the kernel file, in which
 * every line `// #include "name.wgsl"` is replaced by that file (recursively); a file
 * that some file includes is a part, not a kernel.
 *
 * Each kernel family declares its own uniform struct, bound as `var<uniform> P: Name;`
 * (the row kernels' shared fields come from `row_params.wgsl`, included in each of their
 * structs). The struct's layout (4-byte scalars and `vec2<f32>` pairs, at WGSL's uniform
 * offsets) is read from the WGSL here and generated for the host, so the host writes
 * exactly the fields the shaders read.
 *
 *   deno task build          rebuild (also rebuilds the WebAssembly)
 *   deno run -A src/webgpu/build.ts --check   fail (exit 1) when the committed module is stale
 *
 * @module
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";

const dir = new URL(".", import.meta.url).pathname;
const target = join(dir, "generated.ts");
const files = readdirSync(dir).filter((f) => f.endsWith(".wgsl")).sort();
const text = (f: string) => readFileSync(join(dir, f), "utf8");
const INCLUDE = /^[ \t]*\/\/ #include "([\w.]+)"[ \t]*$/gm;

/** Files that some file includes: parts of kernels, not kernels. */
const parts = new Set(files.flatMap((f) => [...text(f).matchAll(INCLUDE)].map((m) => m[1])));
const kernels = files.filter((f) => f !== "common.wgsl" && !parts.has(f));

/** `f` with its includes expanded (`stack`: the files being expanded, to refuse cycles). */
function expand(f: string, stack: string[] = []): string {
  if (stack.includes(f)) throw new Error(`src/webgpu/${f}: included in a cycle (${[...stack, f].join(" -> ")})`);
  if (!files.includes(f)) throw new Error(`src/webgpu/${stack.at(-1)}: includes ${f}, which is not in src/webgpu/`);
  return text(f).replace(INCLUDE, (_, name: string) => expand(name, [...stack, f]).replace(/\n$/, ""));
}

/** The source of a kernel: common.wgsl, then the kernel with its includes. */
const source = (f: string) => `${text("common.wgsl")}\n// ---- ${f}\n${expand(f)}`;

/** A field's type: its size and alignment in bytes (WGSL's uniform layout). */
const TYPES: Record<string, number> = { u32: 4, i32: 4, f32: 4, "vec2<f32>": 8 };

/** A struct's layout: per field [offset in 4-byte slots, type], and its size in bytes (a multiple of 16). */
interface Layout {
  fields: [string, [number, string]][];
  bytes: number;
}

/** The layout of the uniform struct that kernel `f` binds as `P`. */
function layout(f: string, src: string): [string, Layout] {
  const name = src.match(/var<uniform>\s+P\s*:\s*(\w+)\s*;/)?.[1];
  if (!name) throw new Error(`src/webgpu/${f}: no uniform struct bound as \`var<uniform> P: Name;\``);
  const body = src.match(new RegExp(`struct ${name} \\{([^}]*)\\}`))?.[1];
  if (!body) throw new Error(`src/webgpu/${f}: struct ${name} not found`);
  const fields: Layout["fields"] = [];
  let at = 0;
  for (const line of body.split("\n")) {
    const m = line.replace(/\/\/.*$/, "").match(/^\s*(\w+)\s*:\s*([\w<>]+)\s*,?\s*$/);
    if (!m) continue;
    const size = TYPES[m[2]];
    if (!size) throw new Error(`${name}.${m[1]}: ${m[2]} is not one of ${Object.keys(TYPES).join(", ")}`);
    at = Math.ceil(at / size) * size;
    fields.push([m[1], [at / 4, m[2]]]);
    at += size;
  }
  return [name, { fields, bytes: Math.ceil(at / 16) * 16 }];
}

/** The prefixes of the flag bits the host reads from the shaders' declarations. */
const PREFIXES = ["F", "MH", "TG"];

/**
 * The constants the shaders declare (`const F_NAME: u32 = Nu;`), by prefix, so the host's
 * flags and enumerations are the shaders' own.
 */
function flags(): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = Object.fromEntries(PREFIXES.map((p) => [p, {}]));
  for (const f of files) {
    for (const m of text(f).matchAll(/^const ([A-Z]+)_(\w+): u32 = (\d+)u;/gm)) {
      const [, prefix, name, value] = m;
      if (!PREFIXES.includes(prefix)) continue;
      if (out[prefix][name] !== undefined && out[prefix][name] !== Number(value)) {
        throw new Error(`src/webgpu/${f}: ${prefix}_${name} is ${value} here and ${out[prefix][name]} elsewhere`);
      }
      out[prefix][name] = Number(value);
    }
  }
  return out;
}

function render(hash: string): string {
  const structs = new Map<string, Layout>();
  const uses: [string, string][] = [];
  const shaders = kernels.map((f) => {
    const name = f.replace(/\.wgsl$/, "");
    const src = source(f);
    const [struct, l] = layout(f, src);
    const seen = structs.get(struct);
    if (seen && JSON.stringify(seen) !== JSON.stringify(l)) {
      throw new Error(`src/webgpu/${f}: struct ${struct} differs`);
    }
    structs.set(struct, l);
    uses.push([name, struct]);
    return `  ${name}: ${JSON.stringify(src)},`;
  });
  const { F, MH, TG } = flags();
  const params = [...structs].map(([s, l]) => `  ${s}: ${JSON.stringify(Object.fromEntries(l.fields))},`);
  const bytes = Object.fromEntries([...structs].map(([s, l]) => [s, l.bytes]));
  return `// @generated by src/webgpu/build.ts from src/webgpu/*.wgsl. Do not edit: run \`deno task build\`.
// source-hash: ${hash}
/**
 * Each uniform struct's fields (src/webgpu/*.wgsl), in order: [offset in 4-byte slots, type]. A
 * \`vec2<f32>\` field holds a float64 value as a float32 pair (hi, lo).
 */
export const PARAMS = {
${params.join("\n")}
} as const;
/** Bytes of each uniform struct, rounded up to 16. */
export const PARAMS_BYTES = ${JSON.stringify(bytes)} as const;
/** The uniform struct each kernel binds as \`P\`. */
export const KERNEL_PARAMS = ${JSON.stringify(Object.fromEntries(uses))} as const;
/** The row kernels' \`F_*\` flag bits (src/webgpu/common.wgsl). */
export const F = ${JSON.stringify(F)} as const;
/** The heads' own \`MH_*\` flag bits and their per-row stride \`RS\` (src/webgpu/margin_head_params.wgsl). */
export const MH = ${JSON.stringify(MH)} as const;
/** The label targets' \`TG_*\` kinds and branches (src/webgpu/margin.wgsl). */
export const TG = ${JSON.stringify(TG)} as const;
/** Each kernel's WGSL: src/webgpu/common.wgsl, then the kernel's file with its includes. */
export const SHADERS = {
${shaders.join("\n")}
} as const;
`;
}

const h = createHash("sha256");
for (const f of files) h.update(`${f}\n`).update(text(f));
const hash = h.digest("hex");

if (Deno.args.includes("--check")) {
  let committed = "";
  try {
    committed = readFileSync(target, "utf8");
  } catch { /* missing counts as stale */ }
  const recorded = committed.match(/^\/\/ source-hash: ([0-9a-f]+)$/m)?.[1];
  if (recorded !== hash || committed !== render(hash)) {
    console.error(
      `src/webgpu/generated.ts is stale (source-hash ${
        recorded ?? "missing"
      }, sources ${hash}): run \`deno task build\``,
    );
    Deno.exit(1);
  }
  console.log(`src/webgpu/generated.ts is up to date (${hash.slice(0, 12)})`);
} else {
  writeFileSync(target, render(hash));
  console.log(`wrote src/webgpu/generated.ts (${hash.slice(0, 12)})`);
}
