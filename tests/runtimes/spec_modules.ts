/**
 * Every spec module of the shared suites (tests/helpers/specs*.ts), loaded by name so
 * that a new one needs no edit here. tests/runtimes/bundle.ts replaces this module with
 * static imports of the same files.
 *
 * @module
 */
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";

const dir = new URL("../helpers/", import.meta.url);

/** The modules' exports. */
export const specModules: Record<string, unknown>[] = await Promise.all(
  readdirSync(fileURLToPath(dir)).filter((f) => /^specs.*\.ts$/.test(f)).sort().map((f) =>
    import(new URL(f, dir).href)
  ),
);
