/**
 * `softmargin/tfjs` on TensorFlow.js's `webgpu` backend (SPEC §10): a loss runs on the
 * GPU inside TF.js's step, sharing TF.js's `GPUDevice` (one softmargin GPU context per
 * device), through the synchronous GPU form of the loss (`Losses.sync`): its float
 * inputs are taken from TF.js's buffers (`tensor.dataToGPU()`, which also submits
 * TF.js's pending commands first; a tensor TF.js still holds on the CPU is uploaded),
 * and the loss and gradients become TF.js tensors over buffers TF.js owns (a copy of
 * this library's, which is then destroyed): no buffer is mapped, so a training step
 * (`optimizer.minimize`) makes no readback.
 *
 * @module
 */
import type { GpuMatrix } from "../types.ts";
import { bindLosses, type GpuSyncLosses } from "../losses/mod.ts";
import { GpuContext, webgpuKernels, webgpuPath } from "../webgpu/mod.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/** What the adapter needs of a TF.js tensor on the webgpu backend. */
interface GpuTensor {
  readonly shape: number[];
  readonly dtype: string;
  readonly rank: number;
  dataSync(): ArrayLike<number>;
  dataToGPU(): { tensorRef: { dispose(): void }; buffer: GPUBuffer };
}

/** The losses whose gradients are per row (each row's gradient is its own loss's): `"none"` runs for them. */
export const PER_ROW: ReadonlySet<string> = new Set([
  "crossEntropy",
  "focal",
  "softCrossEntropy",
  "klDiv",
  "distillation",
  "arcface",
  "cosface",
  "normface",
  "combinedMargin",
]);

/** The synchronous GPU losses of each device (one context per device, rebuilt if it was disposed). */
const onDevice = new WeakMap<GPUDevice, { ctx: GpuContext; losses: GpuSyncLosses }>();

/** The synchronous GPU losses on `device`. */
export function lossesOn(device: GPUDevice): GpuSyncLosses {
  let held = onDevice.get(device);
  if (!held || held.ctx.disposed) {
    const ctx = GpuContext.of(device);
    const kernels = webgpuKernels(ctx);
    held = { ctx, losses: bindLosses(kernels, false, webgpuPath(ctx, kernels)).sync };
    onDevice.set(device, held);
  }
  return held.losses;
}

/** A differentiable tensor of the call: input `key` (element `index` of a list input, else -1). */
export interface GpuSlot {
  key: string;
  index: number;
  tensor: { readonly shape: number[] };
}

/**
 * The loss `name` of TF.js tensors on TF.js's webgpu backend, as a tensor (a scalar, or one
 * value per row with `reduction: "none"`), with its gradients w.r.t. the tensors of `diff`
 * through `tf.customGrad`: the loss and the gradients are computed in one recorded GPU call
 * while a gradient is being recorded (scaled by `dy` on the GPU by TF.js), the loss alone
 * otherwise. `keep` (the adapter's `onResult`) receives the result's parts (its next state, ...):
 * each GPU matrix as a tensor TF.js owns, kept (`tf.keep`) for the caller to dispose; without it
 * their buffers are destroyed.
 */
export function webgpuValue(
  tf: Any,
  name: string,
  inputs: Record<string, unknown>,
  options: Record<string, unknown>,
  diff: GpuSlot[],
  numbers: readonly string[] = [],
  keep?: (parts: Record<string, unknown>) => void,
): unknown {
  const device: GPUDevice | undefined = tf.backend()?.device;
  if (!device || typeof device.createCommandEncoder !== "function") {
    throw new Error(`softmargin/tfjs: ${name}: TensorFlow.js's webgpu backend has no GPUDevice (tf.backend().device)`);
  }
  const reduced = options.reduction !== "none";
  if (!reduced && diff.length > 0 && !PER_ROW.has(name)) {
    throw new RangeError(
      `Expected a reduced ${name} on TensorFlow.js's webgpu backend (its gradient is not per row), got reduction "none"`,
    );
  }
  const loss = (lossesOn(device) as unknown as Record<string, Any>)[name];
  const isTensor = (v: unknown): v is GpuTensor => v instanceof tf.Tensor;
  /**
   * `r`'s GPU matrix as a TF.js tensor of `shape` over a buffer TF.js owns (a copy; `m`'s buffer is
   * destroyed). TF.js reads a tensor made from a buffer whole, so a buffer larger than the tensor
   * (a scalar's 16 bytes) is taken whole and sliced on the GPU: `loss.dataSync()` is one value.
   */
  const tensorOf = (m: GpuMatrix, shape: number[]) => {
    const size = shape.reduce((a, b) => a * b, 1), whole = m.buffer.size / 4;
    const t = tf.tensor({ buffer: m.buffer }, whole === size ? shape : [whole], "float32");
    m.buffer.destroy();
    if (whole === size) return t;
    const exact = tf.tidy(() => tf.reshape(tf.slice(t, [0], [size]), shape));
    t.dispose();
    return exact;
  };
  /** `r`'s parts to `keep` as kept tensors (a state `[1, k]` as it is, a part `[1, 1]` a scalar, `[N, 1]` `[N]`), else destroyed. */
  const takeParts = (r: Record<string, unknown>) => {
    const parts: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(r)) {
      if (k === "loss" || k === "grads") continue;
      const m = v as GpuMatrix | undefined;
      if (!m?.buffer) parts[k] = v;
      else if (!keep) m.buffer.destroy();
      else {
        const shape = k === "state" ? [...m.shape] : m.shape[0] === 1 && reduced ? [] : [m.shape[0]];
        parts[k] = tf.keep(tensorOf(m, shape));
      }
    }
    keep?.(parts);
  };
  const run = (save?: (tensors: unknown[]) => void) => {
    const { gpu, release } = gpuInputs(device, inputs, isTensor, numbers);
    try {
      const n = rowsOf(gpu);
      if (diff.length === 0 || !save) {
        const r = loss.forward(gpu, options);
        takeParts(r);
        return { value: tensorOf(r.loss, reduced ? [] : [r.loss.shape[0]]), grads: [] };
      }
      const r = loss.valueAndGrad(gpu, options);
      takeParts(r);
      const grads = diff.map(({ key, index, tensor }) => {
        const g = index < 0 ? r.grads[key] : r.grads[key][index];
        return tensorOf(g, [...tensor.shape]);
      });
      // The gradients of inputs given as plain values (clip's scale as a number): not returned, destroyed.
      for (const [key, g] of Object.entries(r.grads as Record<string, GpuMatrix | GpuMatrix[]>)) {
        [g].flat().forEach((m, index) => {
          const taken = diff.some((s) => s.key === key && (s.index < 0 || s.index === index));
          if (!taken) m.buffer.destroy();
        });
      }
      save(grads);
      return { value: tensorOf(r.loss, reduced ? [] : [n]), grads };
    } finally {
      release();
    }
  };
  // (Asked here: inside tf.customGrad's forward function the tape reads as off.)
  const tape = tf.engine().isTapeOn();
  if (diff.length === 0 || !tape) return run().value;
  const f = tf.customGrad((...args: unknown[]) => {
    const save = args[args.length - 1] as (tensors: unknown[]) => void;
    const { value } = run(save);
    return {
      value,
      gradFunc: (dy: Any, saved: Any[]) => {
        if (!saved || saved.length === 0) {
          throw new Error(`softmargin/tfjs: ${name}: no gradient was recorded (the tape was off)`);
        }
        // A reduced loss: each gradient times the scalar dy; per row: row i's times dy_i.
        return saved.map((g) => (reduced ? tf.mul(g, dy) : tf.mul(g, tf.reshape(dy, [dy.shape[0], 1]))));
      },
    };
  });
  return f(...diff.map((s) => s.tensor));
}

/** The number of rows of the first GPU matrix of `inputs` (the loss's N with `"none"`). */
function rowsOf(inputs: Record<string, unknown>): number {
  for (const v of Object.values(inputs)) {
    const m = (Array.isArray(v) ? v[0] : v) as GpuMatrix | undefined;
    if (m?.buffer && m.shape) return m.shape[0];
  }
  return 0;
}

/**
 * The call's inputs for the GPU form: float tensors of rank 2 as GPU matrices of TF.js's
 * buffers (`dataToGPU`, a copy TF.js pools, after TF.js's pending commands are submitted)
 * or, for a tensor TF.js holds on the CPU, an upload of its values; integer and rank-1
 * tensors (labels) on the host. `release` gives the buffers back once the call is submitted.
 */
function gpuInputs(
  device: GPUDevice,
  inputs: Record<string, unknown>,
  isTensor: (v: unknown) => v is GpuTensor,
  numbers: readonly string[],
): { gpu: Record<string, unknown>; release(): void } {
  const refs: { dispose(): void }[] = [], temps: GPUBuffer[] = [];
  const one = (name: string, t: GpuTensor): unknown => {
    if (t.rank !== 1 && t.rank !== 2) {
      throw new RangeError(`Expected inputs.${name} to be a tf.Tensor of rank 1 or 2, got shape [${t.shape}]`);
    }
    if (t.dtype === "int32" || t.rank === 1) {
      // Labels and other integers: on the host (validated there); a tensor TF.js holds on the CPU reads at no cost.
      const d = t.dataSync();
      if (t.rank === 1) return t.dtype === "int32" ? Int32Array.from(d) : Array.from(d);
      return { data: Int32Array.from(d), shape: [t.shape[0], t.shape[1]] };
    }
    const shape = [t.shape[0], t.shape[1]] as const;
    try {
      const { tensorRef, buffer } = t.dataToGPU();
      refs.push(tensorRef);
      return { buffer, shape };
    } catch (e) {
      if (!/not on GPU/.test((e as Error).message)) throw e;
      // On the CPU (a fresh tensor, a small op TF.js ran there): its values, uploaded.
      const data = Float32Array.from(t.dataSync());
      const buffer = device.createBuffer({ size: Math.max(16, data.byteLength), usage: 0x80 | 0x04 | 0x08 });
      device.queue.writeBuffer(buffer, 0, data);
      temps.push(buffer);
      return { buffer, shape };
    }
  };
  const gpu: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(inputs)) {
    gpu[k] = isTensor(v) && numbers.includes(k)
      ? scalarValue(k, v)
      : isTensor(v)
      ? one(k, v)
      : Array.isArray(v) && v.length > 0 && v.every(isTensor)
      ? v.map((t, i) => one(`${k}[${i}]`, t))
      : v;
  }
  return {
    gpu,
    release: () => {
      for (const r of refs) r.dispose();
      for (const b of temps) b.destroy();
    },
  };
}

/**
 * A number input given as a tensor of one value (`tf.scalar`, a `tf.variable` of shape [] or
 * [1]): its value (on TF.js's webgpu backend a readback of that one value; pass a number to
 * avoid it).
 */
export function scalarValue(
  name: string,
  t: { readonly shape: number[]; readonly rank: number; dataSync(): ArrayLike<number> },
): number {
  const d = t.dataSync();
  if (d.length !== 1 || t.rank > 1) {
    throw new RangeError(`Expected inputs.${name} to be a number or a scalar tf.Tensor, got shape [${t.shape}]`);
  }
  return d[0];
}
