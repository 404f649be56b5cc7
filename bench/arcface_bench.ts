/**
 * Benchmark of `arcface` (additive angular margin on cosines) against `crossEntropy` on
 * the same `[N, C]` array, per path of the WebAssembly backend: what does the margin cost
 * on top of the fused softmax cross-entropy? Also ArcFace as a user would write it in plain
 * TypeScript and in TensorFlow.js wasm ops, with their own cross-entropy for comparison.
 *
 * Runs unchanged under Deno and Bun:
 *
 * ```sh
 * deno run -A bench/arcface_bench.ts [--quick] [--json out.json]
 * bun bench/arcface_bench.ts [--quick] [--json out.json]
 * ```
 *
 * Method: see `harness.ts` (interleaved rounds, medians). The ratio arcface / crossEntropy
 * of a path is the median over rounds of the per-round ratio of the two (both run in every
 * round, so drift between rounds cancels).
 *
 * @module
 */
import process from "node:process";
import * as tf from "@tensorflow/tfjs";
import { alloc, js, type Matrix, wasm, type WasmMatrix } from "../cpu.ts";
import {
  type ArgSpec,
  type Cell as BaseCell,
  collectEnv,
  type Config as BaseConfig,
  configJson,
  type Contender as BaseContender,
  finishRun,
  fmtErr,
  fmtG,
  fmtRatio,
  fmtSamples,
  fmtSpread,
  fmtTimes,
  gradDiff,
  initTf,
  Measurer,
  methodLine,
  missing,
  mulberry32,
  now,
  pad,
  pairedRatio,
  parseArgs,
  printHeader,
  printMarkdown,
  relDiff,
  ROW_QUICK_TIMING,
  ROW_SHAPES,
  ROW_TIMING,
  sink,
  tfStatus,
} from "./harness.ts";
import { plainArcface, plainCrossEntropy, tfArcfaceLoss } from "./impls.ts";

// ---------------------------------------------------------------------------------------
// Command line

type Mode = "valueAndGrad" | "forward";
const MODES: readonly Mode[] = ["valueAndGrad", "forward"];

/** ArcFace's usual scale and margin (insightface). */
const SCALE = 64;
const MARGIN = 0.5;
/** The most the label's cosine is raised to: phi' has sqrt(1 - cos^2) in its denominator. */
const MAX_LABEL_COS = 0.99;

const ARGS: ArgSpec<Mode, readonly [number, number]> = {
  file: "arcface_bench.ts",
  modes: MODES,
  defaultModes: ["valueAndGrad"],
  shapes: ROW_SHAPES,
  dims: 2,
  timing: ROW_TIMING,
  quickTiming: ROW_QUICK_TIMING,
  help: {
    quick: "3 rounds, small time budgets; skips calls predicted to take > 1.5 s",
    shapes: "256x1000,64x100000",
    skip: "tfjs-wasm CE,plain TS CE",
  },
};

type Config = BaseConfig<Mode, readonly [number, number]>;

// ---------------------------------------------------------------------------------------
// Contenders

/** One shape's data and buffers. */
interface Ctx {
  n: number;
  c: number;
  /** Cosines, uniform in (-1, 1), the label's raised by 0.5 (at most `MAX_LABEL_COS`). */
  cos: Float32Array;
  labels: Int32Array;
  /** Preallocated ordinary gradient buffer (`out=`), shared by arcface and crossEntropy (each is checked at once). */
  out: Float32Array;
  /** Input and gradient in WebAssembly memory (`zero-copy`), or the error allocating them. */
  zx: WasmMatrix | null;
  zg: WasmMatrix | null;
  zError: string | null;
}

/** What a call produced; checked once against the reference, never retained. */
interface Out {
  loss?: number;
  grad?: { readonly data: Float32Array };
}

type Loss = "arcface" | "CE";
type Contender = BaseContender<Ctx, Mode, Out> & { loss: Loss; path: string };

const OPTIONS = { scale: SCALE, margin: MARGIN };

function libraryContender(loss: Loss, path: "wasm" | "wasm out=" | "wasm zero-copy"): Contender {
  return {
    name: `${loss} ${path}`,
    loss,
    path,
    make(ctx, mode) {
      const { n, c } = ctx;
      let x: Matrix = { data: ctx.cos, shape: [n, c] };
      let out: Matrix | null = null;
      if (path === "wasm out=") {
        if (mode === "forward") return "no gradient in forward (same call as `wasm`)";
        out = { data: ctx.out, shape: [n, c] };
      } else if (path === "wasm zero-copy") {
        if (!ctx.zx || !ctx.zg) return `alloc failed: ${ctx.zError}`;
        x = ctx.zx;
        if (mode !== "forward") out = ctx.zg;
      }
      if (loss === "arcface") {
        const inputs = { cos: x, labels: ctx.labels };
        const options = out ? { ...OPTIONS, out: { cos: out } } : OPTIONS;
        return {
          run: mode === "forward"
            ? (): Out => {
              const l = wasm.arcface.forward(inputs, options).loss as number;
              sink.value += l;
              return { loss: l };
            }
            : (): Out => {
              const r = wasm.arcface.valueAndGrad(inputs, options);
              sink.value += (r.loss as number) + r.grads.cos.data[0];
              return { loss: r.loss as number, grad: r.grads.cos };
            },
        };
      }
      const inputs = { logits: x, labels: ctx.labels };
      const options = out ? { out: { logits: out } } : undefined;
      return {
        run: mode === "forward"
          ? (): Out => {
            const l = wasm.crossEntropy.forward(inputs, options).loss as number;
            sink.value += l;
            return { loss: l };
          }
          : (): Out => {
            const r = wasm.crossEntropy.valueAndGrad(inputs, options);
            sink.value += (r.loss as number) + r.grads.logits.data[0];
            return { loss: r.loss as number, grad: r.grads.logits };
          },
      };
    },
  };
}

function plainContender(loss: Loss): Contender {
  return {
    name: `${loss} plain TS`,
    loss,
    path: "plain TS",
    make(ctx, mode) {
      const { n, c, cos, labels } = ctx;
      return {
        run(): Out {
          const grad = mode === "forward" ? null : new Float32Array(n * c);
          const l = loss === "arcface"
            ? plainArcface(cos, labels, n, c, SCALE, MARGIN, grad)
            : plainCrossEntropy(cos, labels, n, c, grad);
          sink.value += l + (grad ? grad[0] : 0);
          return grad ? { loss: l, grad: { data: grad } } : { loss: l };
        },
      };
    },
  };
}

function tfContender(loss: Loss): Contender {
  return {
    name: `${loss} tfjs-wasm`,
    loss,
    path: "tfjs-wasm",
    tfBackend: "wasm",
    make(ctx, mode) {
      if (tfStatus.wasm) return `backend unavailable: ${tfStatus.wasm}`;
      const { n, c, cos, labels } = ctx;
      return {
        run(): Out {
          let last: Out = {};
          tf.tidy(() => {
            // The user's inputs are a Float32Array and integer labels, as for our API.
            const z = tf.tensor2d(cos, [n, c]);
            // Default (int32) one-hot: TF.js 4.22's wasm OneHot kernel gets dtype "float32" wrong.
            const onehot = tf.oneHot(tf.tensor1d(labels, "int32"), c);
            const f = loss === "arcface"
              ? (t: tf.Tensor) => tfArcfaceLoss(t, onehot, tf.cast(onehot, "float32"), SCALE, MARGIN)
              : (t: tf.Tensor) => tf.losses.softmaxCrossEntropy(onehot, t, undefined, 0, tf.Reduction.MEAN);
            if (mode === "forward") {
              const l = f(z).dataSync()[0];
              sink.value += l;
              last = { loss: l };
            } else {
              const { value, grad } = tf.valueAndGrad(f)(z);
              const l = value.dataSync()[0];
              const g = grad.dataSync() as Float32Array;
              sink.value += l + g[0];
              last = { loss: l, grad: { data: g } };
            }
          });
          return last;
        },
      };
    },
  };
}

const PATHS = ["wasm", "wasm out=", "wasm zero-copy", "plain TS", "tfjs-wasm"] as const;

const CONTENDERS: Contender[] = [
  ...(["wasm", "wasm out=", "wasm zero-copy"] as const).flatMap((p) => [
    libraryContender("arcface", p),
    libraryContender("CE", p),
  ]),
  plainContender("arcface"),
  plainContender("CE"),
  tfContender("arcface"),
  tfContender("CE"),
];

// ---------------------------------------------------------------------------------------
// Measurement

interface Cell extends BaseCell {
  shape: [number, number];
  mode: Mode;
  gLogitsPerSec: number | null;
}

function newCell(ctx: Ctx, mode: Mode, k: Contender): Cell {
  return {
    shape: [ctx.n, ctx.c],
    mode,
    contender: k.name,
    floor: false,
    seconds: null,
    gLogitsPerSec: null,
    spread: null,
    samples: 0,
    callsPerSample: 0,
    sampleSeconds: [],
    warmup: false,
  };
}

function makeCtx(n: number, c: number, seed: number): Ctx {
  const rand = mulberry32(seed);
  const cos = new Float32Array(n * c);
  for (let i = 0; i < cos.length; i++) cos[i] = rand() * 2 - 1;
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = Math.floor(rand() * c);
    const at = i * c + labels[i];
    cos[at] = Math.min(cos[at] + 0.5, MAX_LABEL_COS);
  }
  const out = new Float32Array(n * c).fill(0); // touch the pages once, as a reused buffer would be
  let zx: WasmMatrix | null = null, zg: WasmMatrix | null = null, zError: string | null = null;
  try {
    zx = alloc([n, c]);
    zx.data.set(cos);
    zg = alloc([n, c]);
  } catch (e) {
    zx?.free();
    zx = null;
    zError = String(e);
  }
  return { n, c, cos, labels, out, zx, zg, zError };
}

function freeCtx(ctx: Ctx): void {
  ctx.zx?.free();
  ctx.zg?.free();
}

interface Ref {
  loss: number;
  grad: Float32Array;
}

/** The float64 reference backend's results for this shape, per loss (computed once per shape, before timing). */
function references(ctx: Ctx): Record<Loss, Ref> {
  const { n, c, cos, labels } = ctx;
  const a = js.arcface.valueAndGrad({ cos: { data: cos, shape: [n, c] }, labels }, OPTIONS);
  const e = js.crossEntropy.valueAndGrad({ logits: { data: cos, shape: [n, c] }, labels });
  return {
    arcface: { loss: a.loss as number, grad: a.grads.cos.data },
    CE: { loss: e.loss as number, grad: e.grads.logits.data },
  };
}

const measurer = new Measurer();

async function measureCell(cfg: Config, ctx: Ctx, mode: Mode, refs: Record<Loss, Ref>): Promise<Cell[]> {
  const size = ctx.n * ctx.c;
  const cells = await measurer.measure(cfg, ctx, mode, {
    contenders: CONTENDERS,
    newCell: (k) => newCell(ctx, mode, k as Contender),
    units: size,
    check: (cell, o, k) => {
      const ref = refs[(k as Contender).loss];
      cell.lossRelDiff = relDiff(o.loss, ref.loss);
      if (mode !== "forward") cell.gradRelDiff = o.grad ? gradDiff(o.grad.data, ref.grad) : Infinity;
    },
  });
  for (const cell of cells) if (cell.seconds !== null) cell.gLogitsPerSec = size / cell.seconds / 1e9;
  return cells;
}

// ---------------------------------------------------------------------------------------
// Output

/** The ratio arcface / crossEntropy in time that we aim to stay under. */
const TARGET = 1.3;

function find(cells: Cell[], name: string): Cell | undefined {
  return cells.find((x) => x.contender === name);
}

function printCell(cells: Cell[]): void {
  const { shape: [n, c], mode } = cells[0];
  console.log(`\n## ${n} x ${c} (${((n * c) / 1e6).toFixed(2)} M cosines), ${mode}`);
  const head = pad("contender", 21) + pad("G logits/s", 11, true) + pad("ns/logit", 10, true) +
    pad("spread", 8, true) + pad("samples", 9, true) + pad("arc/CE", 9, true) + pad("(of medians)", 13, true) +
    pad("vs plain TS", 13, true) + pad("vs tfjs-wasm", 13, true) + "   loss err  grad err";
  console.log(head);
  console.log("-".repeat(head.length));
  for (const x of cells) {
    if (x.error || x.note) {
      console.log(pad(x.contender, 21) + pad(x.error ? `FAILED: ${x.error}` : x.note!, 60, true));
      continue;
    }
    const k = CONTENDERS.find((k) => k.name === x.contender)!;
    const ce = k.loss === "arcface" ? find(cells, `CE ${k.path}`) : undefined;
    const vs = (path: string) => fmtRatio(x.gLogitsPerSec, find(cells, `${k.loss} ${path}`)?.gLogitsPerSec ?? null);
    console.log(
      pad(x.contender, 21) + pad(fmtG(x.gLogitsPerSec), 11, true) +
        pad(x.seconds === null ? "-" : ((x.seconds / (n * c)) * 1e9).toFixed(2), 10, true) +
        pad(fmtSpread(x), 8, true) + pad(fmtSamples(x), 9, true) +
        pad(ce ? fmtTimes(pairedRatio(x, ce)) : "", 9, true) +
        pad(ce ? fmtRatio(x.seconds, ce.seconds ?? null) : "", 13, true) +
        pad(vs("plain TS"), 13, true) + pad(vs("tfjs-wasm"), 13, true) +
        `   ${pad(fmtErr(x.lossRelDiff), 9)} ${fmtErr(x.gradRelDiff)}`,
    );
  }
  const ratios = (["wasm", "wasm out=", "wasm zero-copy"] as const).map((p) =>
    `${p} ${fmtTimes(pairedRatio(find(cells, `arcface ${p}`), find(cells, `CE ${p}`)))}`
  );
  console.log(`headline: arcface/CE time ${ratios.join(", ")} (target <= ${TARGET})`);
}

function printSummary(all: Cell[], cfg: Config): void {
  const shapes = cfg.shapes.map(([n, c]) => `${n}x${c}`);
  for (const mode of cfg.modes) {
    const cells = all.filter((x) => x.mode === mode);
    if (cells.length === 0) continue;
    const at = (name: string, [n, c]: readonly [number, number]) =>
      cells.find((x) => x.contender === name && x.shape[0] === n && x.shape[1] === c);
    console.log(`\n### ${mode}, G logits/s (median)\n`);
    const rows: string[][] = [];
    for (const k of CONTENDERS) {
      const row = cfg.shapes.map((s) => missing(at(k.name, s)) ?? fmtG(at(k.name, s)!.gLogitsPerSec));
      if (row.every((v) => v === "n/a")) continue;
      rows.push([k.name, ...row]);
    }
    printMarkdown(["contender", ...shapes], rows);

    console.log(`\n### ${mode}, time of arcface / time of crossEntropy (paired median; target <= ${TARGET})\n`);
    printMarkdown(
      ["path", ...shapes],
      PATHS.filter((p) => cfg.shapes.some((s) => at(`arcface ${p}`, s)?.seconds != null)).map((p) => [
        p,
        ...cfg.shapes.map((s) => fmtTimes(pairedRatio(at(`arcface ${p}`, s), at(`CE ${p}`, s)))),
      ]),
    );

    console.log(`\n### ${mode}, ArcFace speed-ups (ratio of medians)\n`);
    const speedup = (a: string, b: string) =>
      cfg.shapes.map((s) => fmtRatio(at(a, s)?.gLogitsPerSec ?? null, at(b, s)?.gLogitsPerSec ?? null));
    printMarkdown(["ratio", ...shapes], [
      ["*arcface wasm / plain TS*", ...speedup("arcface wasm", "arcface plain TS")],
      ["*arcface wasm / tfjs-wasm*", ...speedup("arcface wasm", "arcface tfjs-wasm")],
      ["*arcface zero-copy / plain TS*", ...speedup("arcface wasm zero-copy", "arcface plain TS")],
      ["*arcface zero-copy / tfjs-wasm*", ...speedup("arcface wasm zero-copy", "arcface tfjs-wasm")],
    ]);
  }
}

// ---------------------------------------------------------------------------------------
// Main

async function main(): Promise<number> {
  const cfg: Config = parseArgs(process.argv.slice(2), ARGS);
  await initTf();
  const env = await collectEnv();
  printHeader(
    `# softmargin arcface vs crossEntropy benchmark (s = ${SCALE}, m = ${MARGIN}, mean reduction; cosines ~ ` +
      `U(-1, 1), the label's + 0.5 (at most ${MAX_LABEL_COS}); crossEntropy gets the same array as logits)`,
    env,
  );
  console.log(
    methodLine(
      cfg,
      "arc/CE: median over rounds of the per-round time ratio of arcface and crossEntropy on the same path " +
        "((of medians): ratio of the medians). Errors vs the float64 reference (js.arcface / js.crossEntropy): " +
        "|loss - ref| / |ref| and max|grad - ref| / max|ref|.",
    ),
  );

  const all: Cell[] = [];
  const t0 = now();
  for (const [i, [n, c]] of cfg.shapes.entries()) {
    const ctx = makeCtx(n, c, 4321 + i);
    const refs = references(ctx); // before any timing
    for (const mode of cfg.modes) {
      const cells = await measureCell(cfg, ctx, mode, refs);
      printCell(cells);
      all.push(...cells);
    }
    freeCtx(ctx);
  }
  console.log(`\n# Summary (${env.runtime} ${env.version}, ${env.cpu}, ${env.date.slice(0, 10)})`);
  printSummary(all, cfg);

  const { failed, broken } = finishRun(
    all,
    t0,
    env,
    cfg,
    { config: configJson(cfg), results: all },
    (x) => `${x.shape.join("x")} ${x.mode}`,
  );
  // A wrong result or a failure of one of ours fails the run; a failing third party is reported above.
  const ours = (x: Cell) => CONTENDERS.find((k) => k.name === x.contender)?.path.startsWith("wasm") ?? false;
  return broken.some(ours) || failed.some(ours) ? 1 : 0;
}

process.exitCode = await main();
