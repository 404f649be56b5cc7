/**
 * One `physMoe` value-and-gradient step at the seed's configuration (B = 256, D = 1024,
 * 230 classes in 7 groups, E = 8 experts, the upper half tail experts; moe_data.ts):
 * `wasm`, `wasm out=`, `js`, the parts composed by hand (`plain TS`) and in TF.js
 * (`tfjs-wasm`), `webgpu` with host or GPU-resident arrays; floors: each part alone on
 * wasm; memory in fresh processes. See bench/README.md.
 *
 * ```sh
 * deno run -A bench/phys_moe_bench.ts [--quick] [--json out.json] [--skip "webgpu*"]
 * ```
 *
 * @module
 */
import type { Matrix } from "../cpu.ts";
import type { Contender, Lib, Out, Shape } from "./engine.ts";
import { envNotes, lossCall, run, sink } from "./engine.ts";
import { type Gpu, gpuDevice, readback, upload } from "./gpu.ts";
import type { PlainMoeOptions } from "./impls.ts";
import { initTf, plainPhysMoe, tf, tfMissing, tfMoeConsts, tfPhysMoeLoss, tfRun, tfUse } from "./impls.ts";
import { type MoeData, moeData } from "./moe_data.ts";

/** The upper half of the experts are tail experts ([4, 5, 6, 7] for E = 8, the seed's); SPEC's defaults. */
const tailOf = (e: number) => Array.from({ length: e - (e >> 1) }, (_, i) => (e >> 1) + i);
const WEIGHTS = { gamma: 2, lambdaScl: 0.1, lambdaHier: 1, lambdaReg: 0.001, prototypeWeight: 0.5 };
const options = (e: number): PlainMoeOptions => ({
  tailExperts: tailOf(e),
  temperature: 0.07,
  threshold: 0.8,
  ...WEIGHTS,
});
const GRADS = ["features", "coarse", "expertLogits", "gating", "centers"];
type GpuMatrix = { buffer: GPUBuffer; shape: readonly number[] };

/** `fine`: the gated ensemble, the fine logits of the hierarchical part alone. */
type Ctx =
  & MoeData
  & { inputs: Record<string, Matrix | Matrix[] | Int32Array>; out: Record<string, Matrix | Matrix[]> }
  & {
    fine: Matrix;
    free: (() => void)[];
  };

function context([b, d, e]: Shape): Ctx {
  const m = moeData(b, d, e, 1234), { c, k } = m;
  const mat = (data: Float32Array, cols: number): Matrix => ({ data, shape: [data.length / cols, cols] });
  const zero = (x: Matrix) => mat(new Float32Array(x.data.length).fill(0), x.shape[1]);
  const fine = new Float32Array(b * c);
  for (let i = 0; i < b * c; i++) {
    for (let x = 0; x < e; x++) fine[i] += m.gating[(i / c | 0) * e + x] * m.expertLogits[x][i];
  }
  const diff: Record<string, Matrix | Matrix[]> = {
    features: mat(m.f, d),
    coarse: mat(m.coarse, k),
    expertLogits: m.expertLogits.map((z) => mat(z, c)),
    gating: mat(m.gating, e),
    centers: mat(m.centers, d),
  };
  const out = Object.fromEntries(GRADS.map((g) => [g, Array.isArray(diff[g]) ? diff[g].map(zero) : zero(diff[g])]));
  const inputs = { ...diff, labels: m.labels, rule: mat(m.rule, c), fineToCoarse: m.fineToCoarse };
  return { ...m, inputs, out, fine: mat(fine, c), free: [] };
}

/** Each part alone by its own loss: its inputs (and options) from physMoe's. */
const PARTS: [string, (c: Ctx, p: Record<string, unknown>) => [unknown, unknown?]][] = [
  ["physicsContrastive", (_, p) => [{ f: p.features, labels: p.labels, rule: p.rule }]],
  [
    "iclMoe",
    (c, p) => [{ expertLogits: p.expertLogits, gating: p.gating, labels: p.labels }, { tailExperts: tailOf(c.e) }],
  ],
  ["hierarchical", (c, p) => [{ coarse: p.coarse, fine: c.fine, labels: p.labels, fineToCoarse: p.fineToCoarse }]],
  ["centerRegularization", (_, p) => [{ f: p.features, centers: p.centers, labels: p.labels, rule: p.rule }]],
];

function library(lib: Lib): Contender<Ctx>[] {
  const step = (name: string, backend: typeof lib.cpu.js, out: boolean): Contender<Ctx> => ({
    name,
    setup: (ctx, mode) => {
      const opts = { tailExperts: tailOf(ctx.e), ...(out ? { out: ctx.out } : {}) };
      return { run: lossCall(backend.physMoe, mode, ctx.inputs, opts, GRADS) };
    },
  });
  const parts = PARTS.map(([name, args]): Contender<Ctx> => ({
    name: `wasm part: ${name}`,
    floor: true,
    setup: (ctx, mode) => {
      const [inputs, opts] = args(ctx, ctx.inputs);
      return { run: lossCall(lib.cpu.wasm[name as "iclMoe"], mode, inputs, opts, []) };
    },
  }));
  return [
    step("wasm", lib.cpu.wasm, false),
    step("wasm out=", lib.cpu.wasm, true),
    ...(lib.tag ? [] : [step("js", lib.cpu.js, false), ...parts]),
  ];
}

const plain: Contender<Ctx> = {
  name: "plain TS",
  setup: (ctx) => ({
    run(): Out {
      const r = plainPhysMoe(ctx, options(ctx.e));
      sink.value += r.loss + r.grads[0][0];
      return r;
    },
  }),
};

const tfjs: Contender<Ctx> = {
  name: "tfjs-wasm",
  enter: tfUse("wasm"),
  setup: (ctx) =>
    tfMissing("wasm") ?? {
      run: () =>
        tfRun((): Out => {
          const { d, c, k, e } = ctx,
            o = options(e),
            t2 = (a: Float32Array, cols: number) => tf.tensor2d(a, [a.length / cols, cols]);
          const xs = [
            t2(ctx.f, d),
            t2(ctx.coarse, k),
            ...ctx.expertLogits.map((z) => t2(z, c)),
            t2(ctx.gating, e),
            t2(ctx.centers, d),
          ];
          const labels = tf.tensor1d(ctx.labels, "int32"), map = tf.tensor1d(ctx.fineToCoarse, "int32");
          const consts = tfMoeConsts(labels, t2(ctx.rule, c), map, [c, k, o.threshold]);
          // iclMoe's collaboration target: the ensemble's softmax, outside the gradient.
          const gates = tf.split(xs[2 + e], e, 1),
            fine = tf.addN(xs.slice(2, 2 + e).map((z, i) => tf.mul(gates[i], z)));
          const target = { t: tf.softmax(fine), logT: tf.logSoftmax(fine) };
          const loss = (...t: tf.Tensor[]) => {
            const x = {
              features: t[0],
              coarse: t[1],
              expertLogits: t.slice(2, 2 + e),
              gating: t[2 + e],
              centers: t[3 + e],
            };
            return tfPhysMoeLoss(x, labels, consts, target, o);
          };
          const { value, grads } = tf.valueAndGrads(loss)(xs), g = grads.map((t) => t.dataSync() as Float32Array);
          sink.value += g[0][0];
          return { loss: value.dataSync()[0], grads: g };
        }),
    },
};

/** webgpu, awaited: host arrays, or the differentiable inputs in GPU buffers and the gradients left there. */
function webgpu(gpu: Gpu, lib: Lib, resident: boolean): Contender<Ctx> {
  let losses: ReturnType<typeof lib.mod.init> | null = null;
  return {
    name: resident ? "webgpu resident" : "webgpu",
    async setup(ctx, mode) {
      const l = await (losses ??= lib.mod.init({ backend: "webgpu", device: gpu.device })),
        opts = { tailExperts: tailOf(ctx.e) };
      if (!resident) return { run: lossCall(l.physMoe, mode, ctx.inputs, opts, GRADS) };
      const up = (m: Matrix | Matrix[]) => [m].flat().map((x) => upload(gpu.device, x.data, x.shape));
      const on = Object.fromEntries(GRADS.map((g) => [g, up(ctx.inputs[g] as Matrix)]));
      const inputs = {
        ...ctx.inputs,
        ...Object.fromEntries(GRADS.map((g) => [g, g === "expertLogits" ? on[g] : on[g][0]])),
      };
      let last: GpuMatrix[] = [];
      const drop = () => last.splice(0).forEach((m) => m.buffer.destroy());
      ctx.free.push(drop, () => Object.values(on).flat().forEach((m) => m.buffer.destroy()));
      return {
        async run(): Promise<Out> {
          drop();
          const r = await l.physMoe.valueAndGrad(inputs as never, opts),
            g = r.grads as unknown as Record<string, GpuMatrix>;
          const mine = last = GRADS.flatMap((k) => [g[k]].flat());
          const grads = async () => {
            const host = mine.map((m) => new Float32Array(m.shape[0] * m.shape[1]));
            await readback(gpu.device, mine.map((m) => m.buffer), host);
            return host;
          };
          sink.value += r.loss as number;
          return { loss: r.loss as number, grads };
        },
      };
    },
  };
}

await run<Ctx>(async (_, libs) => {
  await initTf();
  const gpu = await gpuDevice(), js = libs[0].cpu.js;
  envNotes.push(`WebGPU: ${typeof gpu === "string" ? gpu : gpu.label}`);
  return {
    name: "phys_moe",
    title: "physMoe: one valueAndGrad step (B x D x E; 230 classes in 7 groups, long-tailed labels, group rule)",
    modes: ["valueAndGrad"],
    shapes: { default: [[256, 1024, 8]], quick: [[64, 256, 8]] },
    timing: { default: { rounds: 5, roundTime: 0.2, warmupTime: 0.3, slowBudget: 4, skipAbove: 20 } },
    work: () => 1,
    library,
    contenders: [
      plain,
      tfjs,
      ...(typeof gpu === "string" ? [] : [webgpu(gpu, libs[0], false), webgpu(gpu, libs[0], true)]),
    ],
    context,
    dispose: (ctx) => ctx.free.forEach((f) => f()),
    reference(ctx) {
      const r = js.physMoe.valueAndGrad(ctx.inputs as never, { tailExperts: tailOf(ctx.e) });
      const g = r.grads as unknown as Record<string, Matrix | Matrix[]>;
      return { loss: r.loss as number, grads: GRADS.flatMap((k) => [g[k]].flat().map((m) => m.data)) };
    },
    baseline: "wasm",
    memory: { warm: [16, 32, 8], when: (_s, _m, name) => !name.startsWith("webgpu") },
  };
});
