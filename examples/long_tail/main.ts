/**
 * Long-tailed classification with physMoe against plain cross-entropy: trains each on the
 * same synthetic data and prints their accuracy on head, medium and tail classes.
 *
 * `npx -y deno@2.9.6 run examples/long_tail/main.ts [--epochs N] [--seed S] [--tau T]`
 * (no permissions needed; also `npx -y bun@1.4.4 examples/long_tail/main.ts`). Defaults:
 * 8 epochs, seed 1, tau 1. `--tau` is the logit adjustment of "CE + LA" and of physMoe's
 * experts; `--tau 0` trains physMoe without it (and drops the "CE + LA" row).
 *
 * @module
 */
import { longTail } from "./data.ts";
import {
  crossEntropyMethod,
  DATA,
  evaluate,
  type Method,
  physMoeMethod,
  type Progress,
  SHOTS,
  train,
} from "./train.ts";

// ---------------------------------------------------------------- command line
const runtime = globalThis as {
  Deno?: { args: string[]; stderr: { writeSync(b: Uint8Array): number; isTerminal(): boolean } };
  process?: { argv: string[]; stderr: { write(s: string): boolean; isTTY?: boolean } };
};
const argv = runtime.Deno?.args ?? runtime.process?.argv.slice(2) ?? [];
const FLAGS = ["--epochs", "--seed", "--tau"];
for (let i = 0; i < argv.length; i += 2) {
  if (!FLAGS.includes(argv[i])) throw new TypeError(`Unknown argument ${argv[i]}: expected one of ${FLAGS.join(", ")}`);
}

function flag(name: string, fallback: number, integer = true): number {
  const i = argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(argv[i + 1]);
  if (integer ? !Number.isInteger(v) || v < 1 : !(v >= 0)) {
    const expected = integer ? "a positive integer" : "a number >= 0";
    throw new RangeError(`Expected --${name} to be ${expected}, got ${argv[i + 1]}`);
  }
  return v;
}
const EPOCHS = flag("epochs", 8), SEED = flag("seed", 1);
const TAU = flag("tau", 1, false);

// ---------------------------------------------------------------- progress bar (stderr)
const tty = runtime.Deno ? runtime.Deno.stderr.isTerminal() : Boolean(runtime.process?.stderr.isTTY);
const encoder = new TextEncoder();
function status(s: string): void {
  if (runtime.Deno) runtime.Deno.stderr.writeSync(encoder.encode(s));
  else runtime.process?.stderr.write(s);
}
/** A bar redrawn in place on a terminal; one line per epoch otherwise. */
function progressBar(label: string) {
  return (p: Progress) => {
    const width = 24, filled = Math.round((width * p.step) / p.steps);
    const line = `${label.padEnd(12)} epoch ${String(p.epoch).padStart(2)}/${EPOCHS} ` +
      `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ` +
      `loss ${p.loss.toFixed(3).padStart(7)}  ${
        Math.round(p.examplesPerSecond).toLocaleString("en-US").padStart(6)
      } ex/s`;
    if (tty) status(`\r${line}${p.step === p.steps && p.epoch === EPOCHS ? "\n" : ""}`);
    else if (p.step === p.steps) status(`${line}\n`);
  };
}

// ---------------------------------------------------------------- the run
const data = longTail(DATA, SEED);
const { classes: C, groups: K } = DATA;
console.log(
  `${C} classes in ${K} groups, imbalance ${DATA.imbalance}: ${data.train.n} training samples ` +
    `(${data.counts[0]} down to ${data.counts[C - 1]} per class), a balanced test set of ${data.test.n} ` +
    `(${DATA.testPerClass} per class); seed ${SEED}, ${EPOCHS} epochs`,
);
console.log(
  SHOTS.map((s) => `${s.name}: ${data.counts.filter(s.test).length} classes (${s.rule} training samples)`).join(", "),
);

const methods: Method[] = [
  crossEntropyMethod(data, 0.06),
  ...(TAU ? [crossEntropyMethod(data, 0.06, TAU)] : []),
  physMoeMethod(data, {
    experts: 8,
    lr: 0.06,
    tau: Array(8).fill(TAU),
    within: 0.5,
    options: { tailExperts: [4, 5, 6, 7] }, // physMoe's defaults otherwise
  }),
];
const rows = methods.map((method) => {
  const { model, seconds } = train(method, data, EPOCHS, SEED + 1, progressBar(method.name));
  return [method.name, ...evaluate(method, model, data).map((a) => a.toFixed(1)), seconds.toFixed(1)];
});

// ---------------------------------------------------------------- summary table
const header = ["method", ...SHOTS.map((s) => s.name), "all", "train s"];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (cells: string[]) =>
  `| ${cells.map((c, i) => i ? c.padStart(widths[i]) : c.padEnd(widths[i])).join(" | ")} |`;
console.log(`\nTop-1 accuracy (%) on the balanced test set:\n`);
console.log(line(header));
console.log(`| ${widths.map((w, i) => i ? "-".repeat(w - 1) + ":" : "-".repeat(w)).join(" | ")} |`);
for (const r of rows) console.log(line(r));
