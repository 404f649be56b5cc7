/**
 * The WebGPU backend against the WebAssembly one, `valueAndGrad`, every call awaited:
 * `CE`, `arcface` (N x C), `head` (marginHead), `head3` (marginHead with `subcenters: 3`: C/3 classes of
 * 3 rows over the same rows of W), `headTopK` (marginHead with `interTopK: 5`, the inputs of `head`), `lce`
 * (linearCrossEntropy with a softcap and a
 * z-loss; both N x D x C) and the metric staples `ntXent`, `triplet` (tripletMargin, mining "all") and
 * `proxyAnchor` (B x D x C x K: B rows of D, C proxies, labels cycling over K classes) on `wasm out=`, `webgpu
 * resident` (inputs and `out` in GPU buffers) and `webgpu host` (host arrays), with the
 * floors `empty round trip`, `upload alone`, `readback alone`; the crossover where webgpu
 * host is as fast as wasm, beside what `init({ backend: "auto" })` decides. Bun has no
 * WebGPU: this file says so and exits 0 (`--require-gpu`: 1, also on a software adapter).
 * See bench/README.md.
 *
 * ```sh
 * deno run -A bench/webgpu_bench.ts [--quick | --full] [--json out.json] [--require-gpu]
 * ```
 *
 * @module
 */
import process from "node:process";
import type { Matrix } from "../cpu.ts";
import type { Cell, Contender, Lib, Out, Shape } from "./engine.ts";
import { envNotes, fmt, labelsOf, lossCall, mulberry32, run, uniform } from "./engine.ts";
import { type Gpu, gpuBuffer, gpuDevice, readback, stagingFor, upload } from "./gpu.ts";

const ARC = { scale: 64, margin: 0.5 };
const CALLS = {
  CE: { loss: "crossEntropy", keys: ["logits"], opts: {} },
  arcface: { loss: "arcface", keys: ["cos"], opts: ARC },
  head: { loss: "marginHead", keys: ["x", "W"], opts: { kind: "arcface", ...ARC } },
  // (sub-center ArcFace: C/3 classes of 3 rows over the same rows of W)
  head3: { loss: "marginHead", keys: ["x", "W"], opts: { kind: "arcface", ...ARC, subcenters: 3 } },
  // (wespeaker's inter-top-k penalty: a first pass over W for each row's top 5)
  headTopK: { loss: "marginHead", keys: ["x", "W"], opts: { kind: "arcface", ...ARC, interTopK: 5 } },
  ntXent: { loss: "ntXent", keys: ["f"], opts: {} },
  triplet: { loss: "tripletMargin", keys: ["f"], opts: {} },
  proxyAnchor: { loss: "proxyAnchor", keys: ["f", "proxies"], opts: {} },
  lce: { loss: "linearCrossEntropy", keys: ["x", "W"], opts: { softcap: 30, zLoss: 1e-4 } },
} as const;
/** The groups of the metric staples (B x D x C x K shapes). */
const METRIC = ["ntXent", "triplet", "proxyAnchor"];
type Group = keyof typeof CALLS;
type Host = { inputs: Record<string, Matrix | Int32Array>; out: Matrix[] };

/** `host`: per group of this shape, the host inputs and `out` arrays. */
type Ctx = { shape: Shape; host: Partial<Record<Group, Host>>; free: (() => void)[] };

function context(s: Shape): Ctx {
  const rand = mulberry32(s.reduce((a, b) => a + b, 7));
  const m = (data: Float32Array, cols: number): Matrix => ({ data, shape: [data.length / cols, cols] });
  const zeros = (x: Matrix) => m(new Float32Array(x.data.length).fill(0), x.shape[1]);
  if (s.length === 4) {
    const [b, d, c, k] = s, f = m(uniform(rand, b * d), d), proxies = m(uniform(rand, c * d), d);
    const labels = Int32Array.from({ length: b }, (_, i) => i % k), one = { inputs: { f, labels }, out: [zeros(f)] };
    const proxyAnchor = { inputs: { f, proxies, labels }, out: [zeros(f), zeros(proxies)] };
    return { shape: s, host: { ntXent: one, triplet: one, proxyAnchor }, free: [] };
  }
  if (s.length === 3) {
    const [n, d, c] = s, x = m(uniform(rand, n * d), d), W = m(uniform(rand, c * d), d);
    const head = { inputs: { x, W, labels: labelsOf(rand, n, c) }, out: [zeros(x), zeros(W)] };
    const c3 = Math.floor(c / 3), W3 = m(W.data.subarray(0, 3 * c3 * d), d);
    const labels3 = head.inputs.labels.map((y) => Math.min(Math.floor(y / 3), c3 - 1));
    const head3 = { inputs: { x, W: W3, labels: labels3 }, out: [zeros(x), zeros(W3)] };
    return { shape: s, host: { head, head3, headTopK: head, lce: head }, free: [] };
  }
  const [n, c] = s, labels = labelsOf(rand, n, c), logits = m(uniform(rand, n * c, 3), c);
  const cos = m(uniform(rand, n * c), c);
  for (let i = 0; i < n; i++) cos.data[i * c + labels[i]] = Math.min(cos.data[i * c + labels[i]] + 0.5, 0.99);
  const CE = { inputs: { logits, labels }, out: [zeros(logits)] },
    arcface = { inputs: { cos, labels }, out: [zeros(cos)] };
  return { shape: s, host: { CE, arcface }, free: [] };
}

/** The inputs' float arrays: what the transfer floors move. */
const parts = (ctx: Ctx) =>
  Object.values(Object.values(ctx.host)[0]!.inputs).flatMap((v) => (v instanceof Int32Array ? [] : [v.data]));

function library(gpu: Gpu, lib: Lib): Contender<Ctx>[] {
  const dev = gpu.device;
  let inits: Promise<Record<string, unknown>>[] | null = null; // made on first use (a memory probe makes its own)
  const init = (o: Parameters<typeof lib.mod.init>[0]) =>
    lib.mod.init(o) as unknown as Promise<Record<string, unknown>>;
  const losses = (i: number) => (inits ??= [init({ backend: "wasm" }), init({ backend: "webgpu", device: dev })])[i];
  return (Object.keys(CALLS) as Group[]).flatMap((g) =>
    (["wasm out=", "webgpu resident", "webgpu host"] as const).map((path): Contender<Ctx> => ({
      name: `${g} ${path}`,
      group: g,
      ratioTo: `${g} wasm out=`,
      async setup(ctx, mode) {
        const h = ctx.host[g], { loss, keys, opts } = CALLS[g];
        if (!h) return "n/a";
        const l = (await losses(path === "wasm out=" ? 0 : 1))[loss],
          out = (o: unknown[]) => ({ ...opts, out: Object.fromEntries(keys.map((k, i) => [k, o[i]])) });
        if (path !== "webgpu resident") return { run: lossCall(l, mode, h.inputs, out(h.out), keys) };
        const owned: GPUBuffer[] = [];
        const up = (m: Matrix) => {
          const g = upload(dev, m.data, m.shape);
          return owned.push(g.buffer), g;
        };
        const inputs = Object.fromEntries(
          Object.entries(h.inputs).map(([k, v]) => [k, v instanceof Int32Array ? v : up(v)]),
        );
        const outs = h.out.map(up), call = lossCall(l, mode, inputs, out(outs), []);
        ctx.free.push(() => owned.forEach((b) => b.destroy()));
        const grads = async () => {
          const back = h.out.map((o) => new Float32Array(o.data.length));
          await readback(dev, outs.map((o) => o.buffer), back);
          return back;
        };
        return { run: async (): Promise<Out> => ({ loss: (await call()).loss, grads }) };
      },
    }))
  );
}

function floors({ device: dev }: Gpu): Contender<Ctx>[] {
  const buffers = (ctx: Ctx) => {
    const bufs = parts(ctx).map((p) => gpuBuffer(dev, p.byteLength));
    ctx.free.push(() => bufs.forEach((b) => b.destroy()));
    return bufs;
  };
  const done = () => dev.queue.onSubmittedWorkDone();
  return [
    { name: "empty round trip", floor: true, setup: () => ({ run: () => (dev.queue.submit([]), done()) }) },
    {
      name: "upload alone",
      floor: true,
      setup(ctx) {
        const p = parts(ctx) as Float32Array<ArrayBuffer>[], bufs = buffers(ctx);
        return { run: () => (p.forEach((a, i) => dev.queue.writeBuffer(bufs[i], 0, a)), done()) };
      },
    },
    {
      name: "readback alone",
      floor: true,
      setup(ctx) {
        const back = parts(ctx).map((p) => new Float32Array(p.length)), bufs = buffers(ctx);
        const staging = stagingFor(dev, back);
        ctx.free.push(() => staging.destroy());
        return { run: () => readback(dev, bufs, back, staging) };
      },
    },
  ];
}

/** Where `CE webgpu host` takes as long as `CE wasm out=`, over the N x C shapes of 1000 logits and more. */
function crossover(cells: Cell[]): string {
  const t = (name: string, s: number[]) =>
    cells.find((x) => x.contender === name && x.shape.join() === s.join())?.seconds;
  const p = cells.filter((x) => x.contender === "CE wasm out=" && x.shape.length === 2)
    .map((x) => ({ n: x.shape[0] * x.shape[1], w: x.seconds!, g: t("CE webgpu host", x.shape)! }))
    .filter((x) => x.n >= 1000 && x.w && x.g).sort((a, b) => a.n - b.n);
  if (p.length < 2) return "too few sizes measured";
  const r = p.map((x) => Math.log(x.g / x.w)), i = r.findIndex((v) => v <= 0);
  if (i === 0) return `none needed: webgpu host is as fast as wasm at ${p[0].n} logits already`;
  if (i > 0) return `~${fmt(p[i - 1].n * (p[i].n / p[i - 1].n) ** (r[i - 1] / (r[i - 1] - r[i])))} logits (log-log)`;
  const mean = (v: number[]) => v.reduce((s, x) => s + x) / v.length, mx = mean(p.map((x) => x.n));
  const fit = (ys: number[]) => { // least squares t = a + b n
    const b = mean(p.map((x, k) => (x.n - mx) * (ys[k] - mean(ys)))) / mean(p.map((x) => (x.n - mx) ** 2));
    return { a: mean(ys) - b * mx, b };
  };
  const [w, g] = [fit(p.map((x) => x.w)), fit(p.map((x) => x.g))], ns = (b: number) => `${fmt(b * 1e9)} ns/logit`;
  const per = `webgpu host ${ns(g.b)}, wasm ${ns(w.b)}`;
  return g.b < w.b
    ? `~${fmt((g.a - w.a) / (w.b - g.b))} logits (linear fits beyond the sizes: ${per})`
    : `none (${per})`;
}

const ROWS: Shape[] = [[256, 1000], [4096, 1000], [1024, 32000], [64, 100000]];
const LATENCY: Shape[] = [[1, 8], [1, 1000], [8, 1000], [32, 1000], [128, 1000], [1024, 1000]];

await run<Ctx>(async (flags, libs) => {
  const gpu = await gpuDevice();
  if (typeof gpu === "string" || (gpu.software && flags.has("--require-gpu"))) {
    console.log(typeof gpu === "string" ? `no WebGPU adapter: ${gpu}` : `--require-gpu: ${gpu.label} is software`);
    process.exit(flags.has("--require-gpu") ? 1 : 0);
  }
  const auto = (await libs[0].mod.init({ backend: "auto", device: gpu.device })).note;
  const { maxStorageBufferBindingSize: binding, maxBufferSize: buffer } = gpu.limits;
  envNotes.push(
    `adapter: ${gpu.label}; limits: binding ${binding}, buffer ${buffer}`,
    `"auto" with this device: ${auto}`,
  );
  const wasm = libs[0].cpu.wasm, js = libs[0].cpu.js;
  return {
    name: "webgpu",
    title: `webgpu against wasm, valueAndGrad, awaited [${gpu.label}]`,
    modes: ["valueAndGrad"],
    shapes: {
      default: [[1, 8], [32, 1000], ROWS[0], [1024, 1000], ROWS[3], [256, 512, 1000], [512, 128, 1000, 64]],
      quick: [[1, 8], [1024, 1000], [256, 512, 1000], [64, 32, 100, 16]],
      full: [...LATENCY, ...ROWS, [256, 512, 10000], [512, 128, 1000, 64], [1024, 128, 10000, 128]],
    },
    timing: {
      default: { rounds: 5, roundTime: 0.06, slowBudget: 3, skipAbove: 20 },
      quick: { skipAbove: 6 },
      full: { rounds: 7, roundTime: 0.1, slowBudget: 5, minSamples: 3 },
    },
    flags: { "--require-gpu": "exit 1 without a hardware adapter" },
    work: (s) => (s.length === 4 ? s[0] * s[0] * s[1] : s[0] * s[s.length - 1]),
    library: (lib) => library(gpu, lib),
    contenders: floors(gpu),
    context,
    dispose: (ctx) => ctx.free.forEach((f) => f()),
    reference(ctx, group) {
      const h = ctx.host[group as Group]!, { loss, keys, opts } = CALLS[group as Group];
      const ref = group.startsWith("head") || group === "lce" || METRIC.includes(group) ? wasm : js;
      return lossCall(ref[loss], "valueAndGrad", h.inputs, opts, keys)() as Out;
    },
    baseline: "CE wasm out=",
    after(cells) {
      const x = crossover(cells);
      console.log(`\ncrossover [${gpu.label}]: ${x}\n"auto" with this device: ${auto}`);
      return { adapter: gpu.label, crossover: x, auto };
    },
  };
});
