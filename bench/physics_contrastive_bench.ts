/**
 * `physicsContrastive` (temperature 0.07, threshold 0.8; moe_data.ts) at B x D: `wasm`,
 * `wasm out=`, `js`, `plain TS`, `tfjs-wasm`, and the floor `head GEMM`: the margin head's
 * GEMM doing the same products (per chunk of 128 columns `S_J = F F_J^T`, then
 * `dX += S_J F_J`). GFLOP/s count 4 B² D per valueAndGrad (2 B² D forward), the GEMM's the
 * same; `head GEMM / wasm` is wasm's throughput over the GEMM's (target: at least 0.7).
 *
 * ```sh
 * deno run -A bench/physics_contrastive_bench.ts [--quick | --full] [--json out.json]
 * ```
 *
 * @module
 */
import { runtime } from "../src/wasm/runtime.ts";
import { type Contender, type Lib, lossCall, type Out, run, sink } from "./engine.ts";
import { initTf, plainPhysicsContrastive, tf, tfContrastiveMasks, tfMissing } from "./impls.ts";
import { tfPhysicsContrastiveLoss, tfRun, tfUse } from "./impls.ts";
import { type ContrastiveData, contrastiveData, FINE } from "./moe_data.ts";

const OPTIONS = { temperature: 0.07, threshold: 0.8 };
const CHUNK = 128;

type Ctx = ContrastiveData & { out: Float32Array; free: (() => void)[] };

function library(lib: Lib): Contender<Ctx>[] {
  const paths: [string, typeof lib.cpu.js][] = [["wasm", lib.cpu.wasm], ["wasm out=", lib.cpu.wasm]];
  if (!lib.tag) paths.push(["js", lib.cpu.js]);
  return paths.map(([name, backend]) => ({
    name,
    setup({ f, labels, rule, b, d, out }, mode) {
      if (name === "wasm out=" && mode === "forward") return "no gradient in forward";
      const opts = { ...OPTIONS, ...(name === "wasm out=" ? { out: { f: { data: out, shape: [b, d] } } } : {}) };
      const inputs = { f: { data: f, shape: [b, d] }, labels, rule: { data: rule, shape: [FINE, FINE] } };
      return { run: lossCall(backend.physicsContrastive, mode, inputs, opts, ["f"]) };
    },
  }));
}

const plain: Contender<Ctx> = {
  name: "plain TS",
  setup: ({ f, labels, rule, b, d }, mode) => ({
    run(): Out {
      const grad = mode === "forward" ? null : new Float32Array(b * d);
      const loss = plainPhysicsContrastive(
        [f, labels, rule],
        [FINE, b, d, OPTIONS.temperature, OPTIONS.threshold],
        grad,
      );
      sink.value += loss + (grad?.[0] ?? 0);
      return { loss, grads: grad ? [grad] : undefined };
    },
  }),
};

const tfjs: Contender<Ctx> = {
  name: "tfjs-wasm",
  enter: tfUse("wasm"),
  setup: ({ f, labels, rule, b, d }, mode) =>
    tfMissing("wasm") ?? {
      run: () =>
        tfRun((): Out => {
          const masks = tfContrastiveMasks(
            tf.tensor1d(labels, "int32"),
            tf.tensor2d(rule, [FINE, FINE]),
            OPTIONS.threshold,
          );
          const loss = (t: tf.Tensor) => tfPhysicsContrastiveLoss(t, masks, OPTIONS.temperature);
          const x = tf.tensor2d(f, [b, d]);
          if (mode === "forward") return { loss: loss(x).dataSync()[0] };
          const { value, grad } = tf.valueAndGrad(loss)(x);
          const g = grad.dataSync() as Float32Array;
          sink.value += g[0];
          return { loss: value.dataSync()[0], grads: [g] };
        }),
    },
};

/** The head's GEMM on F (B classes): per chunk J of 128 columns, S_J = F F_J^T into one [B, 128] block, then dX += S_J F_J. */
const gemm: Contender<Ctx> = {
  name: "head GEMM",
  floor: true,
  setup(ctx, mode) {
    if (mode !== "valueAndGrad") return "n/a";
    const { b, d, f } = ctx, rt = runtime();
    const [F, FT, S, dX] = [b * d, b * d, b * CHUNK, b * d].map((n) => rt.malloc(n * 4));
    ctx.free.push(() => [F, FT, S, dX].forEach((p) => rt.free(p)));
    rt.f32.set(f, F >>> 2);
    for (let j0 = 0; j0 < b; j0 += CHUNK) { // chunk J of F^T: [D, cols] at FT + j0 D, as the head lays out W^T
      const cols = Math.min(CHUNK, b - j0), base = (FT >>> 2) + j0 * d;
      for (let jj = 0; jj < cols; jj++) for (let q = 0; q < d; q++) rt.f32[base + q * cols + jj] = f[(j0 + jj) * d + q];
    }
    return {
      run() {
        for (let j0 = 0; j0 < b; j0 += CHUNK) {
          const cols = Math.min(CHUNK, b - j0);
          rt.k.gemm(S, cols, b, cols, d, F, d, 1, FT + j0 * d * 4, cols, 0);
          rt.k.gemm(dX, d, b, d, cols, S, cols, 1, F + j0 * d * 4, d, j0 > 0 ? 1 : 0);
        }
        sink.value += rt.f32[dX >>> 2];
      },
    };
  },
};

await run<Ctx>(async (_, libs) => {
  await initTf();
  const js = libs[0].cpu.js;
  return {
    name: "physics_contrastive",
    title: "physicsContrastive (temperature 0.07, threshold 0.8; 230 long-tailed classes, group rule) at B x D",
    modes: ["valueAndGrad", "forward"],
    defaultModes: ["valueAndGrad"],
    shapes: {
      default: [[256, 128], [1024, 128], [256, 1024]],
      quick: [[256, 128]],
      full: [[256, 128], [1024, 128], [4096, 128], [256, 1024]],
    },
    timing: {
      default: { rounds: 5, roundTime: 0.1, slowBudget: 3 },
      full: { rounds: 7, roundTime: 0.2, slowBudget: 12 },
    },
    work: ([b, d], mode) => (mode === "forward" ? 2 : 4) * b * b * d,
    unit: ["GFLOP/s", 1e9],
    library,
    contenders: [plain, tfjs, gemm],
    context: ([b, d]) => ({ ...contrastiveData(b, d, 2024), out: new Float32Array(b * d).fill(0), free: [] }),
    dispose: (ctx) => ctx.free.forEach((f) => f()),
    reference({ f, labels, rule, b, d }) {
      const r = js.physicsContrastive.valueAndGrad({
        f: { data: f, shape: [b, d] },
        labels,
        rule: { data: rule, shape: [FINE, FINE] },
      }, OPTIONS);
      return { loss: r.loss as number, grads: [r.grads.f.data] };
    },
    baseline: "wasm",
    pairs: [["head GEMM", "wasm out="]],
  };
});
