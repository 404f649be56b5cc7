/**
 * Finite-difference gradient checks, in float64 around float32 inputs.
 *
 * The library takes `Float32Array`s, so a perturbed input is rounded to float32:
 * the step actually taken is `fround(x + h) - fround(x - h)`, and that is what the
 * difference is divided by. Central differences at `h` and `h/2` are combined by
 * Richardson extrapolation, `(4 D(h/2) - D(h)) / 3`, which cancels the `h^2` term:
 * with smooth inputs of scale ~1 and `h = 2^-6` the truncation error is ~1e-9, well
 * below the float32 rounding of the analytic gradient (~6e-8 relative). The float64
 * reference returns reduced losses in float64, so the differences themselves are
 * exact to ~1e-14; per-row (`"none"`) losses and softmax outputs come back in
 * float32 and need a looser tolerance (see `gradCheck`).
 *
 * @module
 */
import assert from "node:assert/strict";
import type { AnyLoss } from "./backends.ts";
import { where } from "./assert.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

/** Central difference of `f` at `x[i]` with step `h` (float32-rounded perturbations). */
async function central(
  f: (x: Float32Array) => Promise<number>,
  x: Float32Array,
  i: number,
  h: number,
): Promise<number> {
  const x0 = x[i];
  const xp = Math.fround(x0 + h);
  const xm = Math.fround(x0 - h);
  x[i] = xp;
  const fp = await f(x);
  x[i] = xm;
  const fm = await f(x);
  x[i] = x0;
  return (fp - fm) / (xp - xm);
}

/**
 * The numerical gradient of the scalar `f` w.r.t. every element of `x` (or those in
 * `indices`), by Richardson-extrapolated central differences. `x` is modified during
 * the call and restored afterwards.
 */
export async function numericGradient(
  f: (x: Float32Array) => Promise<number>,
  x: Float32Array,
  h = 2 ** -6,
  indices?: readonly number[],
): Promise<Float64Array> {
  const g = new Float64Array(x.length);
  const at = indices ?? Array.from({ length: x.length }, (_, i) => i);
  for (const i of at) {
    const d1 = await central(f, x, i, h);
    const d2 = await central(f, x, i, h / 2);
    g[i] = (4 * d2 - d1) / 3;
  }
  return g;
}

/** A deep copy of an inputs object whose matrices get fresh `Float32Array`s (so they can be perturbed). */
function cloneInputs(inputs: Record<string, Any>): Record<string, Any> {
  const out: Record<string, Any> = {};
  for (const [k, v] of Object.entries(inputs)) {
    const isMatrix = (m: Any) => m && typeof m === "object" && "data" in m && "shape" in m;
    if (isMatrix(v)) {
      out[k] = { data: v.data.slice(), shape: [...v.shape] };
    } else if (ArrayBuffer.isView(v)) out[k] = (v as Float32Array).slice();
    else if (Array.isArray(v)) out[k] = v.map((m) => (isMatrix(m) ? { data: m.data.slice(), shape: [...m.shape] } : m));
    else out[k] = v;
  }
  return out;
}

/** The scalar whose gradient `backward(inputs, options, upstream)` is: upstream . value. */
function scalarize(r: { loss?: number | Float32Array; output?: { data: Float32Array } }, upstream: Any): number {
  if (r.output !== undefined) {
    // softmax / logSoftmax: sum(U * output)
    const u = upstream.data as Float32Array;
    let s = 0;
    for (let i = 0; i < u.length; i++) s += u[i] * r.output.data[i];
    return s;
  }
  if (typeof r.loss === "number") return (upstream ?? 1) * r.loss;
  const rows = r.loss as Float32Array;
  let s = 0;
  for (let i = 0; i < rows.length; i++) s += (upstream ? upstream[i] : 1) * rows[i];
  return s;
}

/** Options of `gradCheck`. */
export interface GradCheck {
  loss: AnyLoss;
  inputs: Record<string, Any>;
  options?: Record<string, Any>;
  /** The differentiable inputs to check. */
  wrt: readonly string[];
  /** As for `backward`: a number, one value per row (`"none"`), or a matrix (softmax). */
  upstream?: Any;
  h?: number;
  /** Allowed error: `atol * max(1, max|numeric|) + rtol * |numeric|`. */
  atol?: number;
  rtol?: number;
  label?: string;
  /** Replace the analytic gradient before comparing (used to prove the check can fail). */
  corrupt?: (name: string, grad: Float32Array) => void;
}

/**
 * Compares `backward` against finite differences of `forward` for every element of
 * every input in `wrt`. Fails naming the input and the worst element.
 */
export async function gradCheck(c: GradCheck): Promise<{ worst: number }> {
  const { loss, options, wrt, upstream, h = 2 ** -6, atol = 5e-7, rtol = 1e-6, label = "gradCheck" } = c;
  const inputs = cloneInputs(c.inputs);
  const analytic = await loss.backward(inputs, options, upstream);
  let worstOverall = 0;
  // A list input (expert logits) is checked matrix by matrix, as `name[k]`.
  const entries = wrt.flatMap((name) =>
    Array.isArray(analytic[name])
      ? (analytic[name] as Any[]).map((g, k) => [`${name}[${k}]`, g, inputs[name][k].data] as const)
      : [[name, analytic[name], inputs[name]?.data] as const]
  );
  for (const [name, g, x] of entries) {
    assert.ok(g && g.data instanceof Float32Array, `${label}: backward returned no gradient for ${name}`);
    const a = (g.data as Float32Array).slice();
    c.corrupt?.(name, a);
    const f = async (_: Float32Array) => scalarize(await loss.forward(inputs, options), upstream);
    const num = await numericGradient(f, x as Float32Array, h);
    let scale = 1;
    for (let i = 0; i < num.length; i++) scale = Math.max(scale, Math.abs(num[i]));
    let worst = -1, worstRatio = -1;
    for (let i = 0; i < num.length; i++) {
      const allowed = atol * scale + rtol * Math.abs(num[i]);
      const ratio = Math.abs(a[i] - num[i]) / allowed;
      if (!(ratio <= worstRatio)) [worst, worstRatio] = [i, Number.isNaN(ratio) ? Infinity : ratio];
    }
    worstOverall = Math.max(worstOverall, worstRatio);
    if (worstRatio > 1) {
      assert.fail(
        `${label}: d/d${name}${where(worst, g.shape)}: backward gives ${a[worst]}, finite differences ${num[worst]} ` +
          `(error ${Math.abs(a[worst] - num[worst]).toExponential(3)}, ${worstRatio.toFixed(2)}x the allowed ` +
          `${atol} * ${scale.toPrecision(3)} + ${rtol} * |fd|)`,
      );
    }
  }
  return { worst: worstOverall };
}
