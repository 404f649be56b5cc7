/**
 * WebAssembly glue of `physicsContrastive`: the B x B logits S = f f^T / tau by the heads'
 * GEMM (`assembly/gemm.ts`), upper blocks only (S is symmetric), the rows of the loss and
 * their coefficients A (`assembly/physics_contrastive.ts`), then the gradient (A + A^T) f
 * by the same GEMM.
 *
 * @module
 */
import type { Raw } from "../loss.ts";
import type { ContrastiveProblem } from "../losses/physics_contrastive.ts";
import { Frame, NONE } from "./frame.ts";

/** Rows per block of the triangular product (the diagonal blocks are computed whole). */
const BLOCK = 32;

/**
 * Logits larger than this (`max ||f_i||^2 / tau`, e.g. unit features at tau below 1/64)
 * are taken again in float64 ("precise"): a float32 dot product's rounding, times 1/tau,
 * would move them by more than SPEC allows where two of them nearly tie.
 */
const PRECISE_ABOVE = 64;

/** `physicsContrastive` on the WebAssembly backend. */
export function contrastive(p: ContrastiveProblem): Raw {
  const { b, d } = p;
  const invTau = 1 / p.temperature;
  const f = new Frame();
  const F = f.input(p.f), labels = f.input(p.labels), rule = f.input(p.rule);
  const valid = f.input(p.valid), positives = f.input(p.positives), scales = f.input(p.grad ? p.scales : null);
  const G = p.grad ? f.output(p.out?.data ?? null, b * d) : NONE;
  const FT = f.scratch(b * d * 4), S = f.scratch(b * b * 4), rows = f.scratch(b * 8);
  const w = f.scratch(b * 4), pm = f.scratch(b * 4), off = f.scratch(b * 8), ones = f.scratch(b * 4);
  const scale64 = f.scratch(b * 8);
  f.place();
  const k = f.rt.k, at = f.ptr(S);
  k.transpose(f.ptr(F), b, d, f.ptr(FT));
  for (let i0 = 0; i0 < b; i0 += BLOCK) {
    const r = Math.min(BLOCK, b - i0);
    k.gemm(at + (i0 * b + i0) * 4, b, r, b - i0, d, f.ptr(F) + i0 * d * 4, d, 1, f.ptr(FT) + i0 * 4, b, 0);
  }
  k.mirror(at, b);
  const dots = new Float32Array(f.rt.buffer, at, b * b);
  let largest = 0;
  for (let i = 0; i < b; i++) largest = Math.max(largest, dots[i * b + i]);
  let scale = invTau;
  if (largest * invTau > PRECISE_ABOVE) {
    // S_ij = f_i . f_j / tau - off_i in float64 (off_i: the float32 logits' row maximum),
    // rounded to float32 only once small where it matters.
    k.contrastive_max(
      at,
      b,
      f.ptr(labels),
      f.ptr(rule),
      p.k,
      p.threshold,
      invTau,
      f.ptr(valid),
      f.ptr(off),
      f.ptr(w),
      f.ptr(pm),
    );
    f.f32(ones).fill(1);
    new Float64Array(f.rt.buffer, f.ptr(scale64), b).fill(invTau);
    k.dots64(at, f.ptr(F), b, f.ptr(F), b, d, f.ptr(off), f.ptr(ones), f.ptr(scale64));
    scale = 1;
  }
  k.contrastive_rows(
    at,
    b,
    f.ptr(labels),
    f.ptr(rule),
    p.k,
    p.threshold,
    scale,
    f.ptr(valid),
    f.ptr(positives),
    f.ptr(scales),
    invTau,
    f.ptr(rows),
    f.ptr(w),
    f.ptr(pm),
  );
  if (!p.grad) return { rows: [f.f64(rows, b)], grads: {} };
  k.symmetrize(at, b);
  k.gemm(f.ptr(G), d, b, d, b, at, b, 1, f.ptr(F), d, 0);
  return { rows: [f.f64(rows, b)], grads: { f: f.take(G) } };
}
