/**
 * WebGPU glue of the embedding heads (`marginHead`, `sphereface`, `lsoftmax`):
 * gpu/margin_head.wgsl (logit tiles), gpu/margin_head_mm.wgsl (gradient products) and
 * gpu/margin_head_rows.wgsl (per-row and per-class steps).
 *
 * As on the CPU (src/wasm/margin_head.ts) the [N, C] logits never exist:
 *  1. `cls`: b_j per class (and ||W_j||) as float32 pairs; `gather`: each row's label
 *     row W_y into Wy [N, D]; `stats` for GPU-resident inputs: each row's ||x_i||,
 *     ||W_y|| and x_i . W_y (as pairs), read back for the host's targets (`targetFrom`).
 *  2. `fwd`: one workgroup of 64 invocations per 64 x 64 tile of X W^T (tiled through
 *     workgroup memory, an 8 x 8 register block per invocation) writes the tile's (max,
 *     sum-exp) over the non-label classes of each row: [N, C/64, 2]; `combine` reduces
 *     them per row to a reference r_i and the sum S_i, read back: the host forms the
 *     loss in float64 (the label's logit T_i is the host's), 1 - p_y and lse_i - r_i.
 *  3. backward, per chunk of classes (a [N, chunk] block of du, chunk a multiple of 64,
 *     about max(D, 16 MiB / (4 N))): `grad` recomputes the chunk's logit tiles and writes
 *     du = dL/du; `dx` adds du b W_J into dX (two-float across chunks), `dw` writes the
 *     chunk's rows of dW from du^T a X. Every output element has one owner: no atomics.
 *  4. `fin_x`, `fin_w`: the gradient through the normalisations, and the label's own
 *     terms where a side is not normalised (in double-float32: they can nearly cancel).
 * Extra memory: O(N C/64 + N D + C D) (the du block is at most max(16 MiB, N D floats)).
 * W (with b and dW) is bound in windows of classes when it exceeds one storage binding.
 *
 * Heads whose logits can be large (x not normalised and max ||x|| (max ||W_j||) > 256,
 * as the CPU's "precise" mode) take the logits' dot products in double-float32.
 *
 * @module
 */
import type { Raw } from "../src/loss.ts";
import { type HeadProblem, maxNorm, PRECISE_ABOVE } from "../src/losses/margin_head.ts";
import { DeviceValues, onDevice } from "../src/validate.ts";
import { checkOut, F, type GpuContext, type KernelName, type Params } from "./context.ts";
import { MH } from "./generated.ts";

/** Row stride of the per-row values (gpu/margin_head.wgsl's row_v). */
const RS = 16;
/** Bytes of the du block the backward aims for (when larger than N * D floats). */
const BLOCK_BYTES = 1 << 24;
const EPS = 1e-12;
const TILE = 64;

/** A float64 value as a float32 pair hi + lo. */
function pair(out: Float32Array, at: number, v: number): void {
  const hi = Math.fround(v);
  out[at] = hi;
  out[at + 1] = v - hi;
}

/** Row losses and gradients of an embedding head on the GPU. */
export async function head(ctx: GpuContext, p: HeadProblem): Promise<Raw> {
  ctx.check();
  const { n, c, d } = p;
  await ctx.checkFinite(p.x, p.W);
  const resident = onDevice(p.x) || onDevice(p.W);
  checkOut("x", p.outX as { buffer?: unknown } | null, resident);
  checkOut("W", p.outW as { buffer?: unknown } | null, resident);
  const tooLarge = (what: string, bytes: number, limit: string, max: number) =>
    new RangeError(`Expected ${what} (${bytes} bytes) to fit ${limit} (${max} bytes)`);
  if (n * d * 4 > ctx.maxBinding) {
    throw tooLarge(`x [${n}, ${d}] of float32`, n * d * 4, "one WebGPU storage binding", ctx.maxBinding);
  }
  if (c * d * 4 > ctx.maxBuffer) {
    throw tooLarge(`W [${c}, ${d}] of float32`, c * d * 4, "one WebGPU buffer", ctx.maxBuffer);
  }
  const rowTiles = Math.ceil(n / TILE), classTiles = Math.ceil(c / TILE);
  // W (with b, dW) is bound in windows of classes that fit one binding, each a multiple
  // of 64 classes (so its offset, a multiple of 256 bytes, is aligned).
  const window = Math.min(classTiles * TILE, Math.floor(ctx.maxBinding / Math.max(16, d * 4) / TILE) * TILE);
  if (window < TILE) {
    throw tooLarge(`64 rows of W [${c}, ${d}] of float32`, TILE * d * 4, "one WebGPU storage binding", ctx.maxBinding);
  }
  if (n * classTiles * 8 > ctx.maxBinding) {
    throw tooLarge(
      `N * ceil(C / 64) (max, sum) pairs of float32 (x [${n}, ${d}], W [${c}, ${d}])`,
      n * classTiles * 8,
      "one WebGPU storage binding",
      ctx.maxBinding,
    );
  }
  // Classes per backward chunk: a multiple of 64 within the window, [N, chunk] floats
  // within the larger of BLOCK_BYTES and x itself (and one binding).
  const budget = Math.min(ctx.maxBinding, Math.max(BLOCK_BYTES, n * d * 4));
  const chunk = Math.min(window, Math.max(TILE, Math.floor(budget / (n * 4 * TILE)) * TILE));
  if (p.grad && n * chunk * 4 > ctx.maxBinding) {
    throw tooLarge(
      `a block of the gradient of 64 classes (x [${n}, ${d}])`,
      n * chunk * 4,
      "one WebGPU storage binding",
      ctx.maxBinding,
    );
  }
  /** The windows of classes [j0, j0 + cols) of at most `size` classes. */
  const windows = (size: number) =>
    Array.from({ length: Math.ceil(c / size) }, (_, k) => ({ j0: k * size, cols: Math.min(size, c - k * size) }));

  const temps: GPUBuffer[] = [];
  const keep = (b: GPUBuffer) => (temps.push(b), b);
  try {
    const X = onDevice(p.x) ? p.x.buffer : keep(ctx.upload(p.x));
    const W = onDevice(p.W) ? p.W.buffer : keep(ctx.upload(p.W));
    const labels = keep(ctx.upload(p.labels));
    const rowV = keep(ctx.buffer(n * RS * 4));
    const bcls = keep(ctx.buffer(c * 16));
    const wy = keep(ctx.buffer(n * d * 4));
    const bind = (buffer: GPUBuffer, bytes: number, offset = 0): GPUBufferBinding => ({ buffer, offset, size: bytes });
    const xB = bind(X, n * d * 4), labelsB = bind(labels, n * 4), wyB = bind(wy, n * d * 4);
    const rowVB = bind(rowV, n * RS * 4);
    // W's, b's and dW's rows of a window.
    const wWin = (j0: number, cols: number) => bind(W, cols * d * 4, j0 * d * 4);
    const bWin = (j0: number, cols: number) => bind(bcls, cols * 16, j0 * 16);
    const flags = (p.normX ? MH.NORMX : 0) | (p.normW ? MH.NORMW : 0) | (p.clamp ? F.CLAMP : 0);
    const base: Params = { n, c, d, flags, scale: p.scale, rs_in: RS };

    // One dispatch per block of at most maxGroups x maxGroups workgroups, each with
    // its own Params (a_off, b_off: the block's first workgroup, after params' own).
    const dispatch = (
      pass: GPUComputePassEncoder,
      pipeline: GPUComputePipeline,
      params: Params,
      resources: (GPUBufferBinding | null)[],
      gx: number,
      gy = 1,
    ) => {
      pass.setPipeline(pipeline);
      const g = ctx.maxGroups;
      for (let bx = 0; bx < gx; bx += g) {
        for (let by = 0; by < gy; by += g) {
          const offsets = { a_off: (params.a_off ?? 0) + bx, b_off: (params.b_off ?? 0) + by, h_off: 0 };
          const u = keep(ctx.params({ ...base, ...params, ...offsets }));
          pass.setBindGroup(0, ctx.bind(pipeline, u, resources));
          pass.dispatchWorkgroups(Math.min(g, gx - bx), Math.min(g, gy - by));
        }
      }
    };
    const pipe = (kernel: KernelName, bindings: string, entry: string) => ctx.pipeline(kernel, bindings, entry);
    const ROWS = "rrrrrww", TILES = "rrrrrw", MM = "rrrrrrww";
    const [cls, gather, stats, combine, finX, finW] = await Promise.all(
      ["cls", "gather", "stats", "combine", "fin_x", "fin_w"].map((e) => pipe("margin_head_rows", ROWS, e)),
    );

    // Per class b_j (and ||W_j||); per row its label's row of W (Wy, for the targets of
    // GPU-resident inputs and fin_x's label terms).
    const wins = windows(window);
    const groups = (count: number) => Math.ceil(count / 64);
    await ctx.submit((enc) => {
      enc.clearBuffer(wy, 0, n * d * 4);
      const pass = enc.beginComputePass();
      for (const { j0, cols } of wins) {
        const win = { g_off: j0, k: cols };
        dispatch(pass, cls, win, [null, wWin(j0, cols), null, null, null, bWin(j0, cols), null], groups(cols));
        dispatch(pass, gather, win, [null, wWin(j0, cols), labelsB, null, null, null, wyB], groups(n));
      }
      pass.end();
    });

    // Targets of GPU-resident inputs: per row ||x_i||^2, ||W_y||^2, x_i . W_y as pairs.
    let { target, nx, nw } = p;
    if (target.length === 0) {
      const out = keep(ctx.buffer(n * 24));
      const staging = keep(ctx.staging(n * 24));
      await ctx.submit((enc) => {
        const pass = enc.beginComputePass();
        dispatch(pass, stats, {}, [xB, wyB, labelsB, null, null, null, bind(out, n * 24)], groups(n));
        pass.end();
        enc.copyBufferToBuffer(out, 0, staging, 0, n * 24);
      });
      const s = new Float32Array(await ctx.read(staging, 0, n * 24));
      const sum = (k: number) => s[k] + s[k + 1];
      ({ target, nx, nw } = p.targetFrom((i) => [
        Math.sqrt(Math.max(0, sum(6 * i))),
        Math.sqrt(Math.max(0, sum(6 * i + 2))),
        sum(6 * i + 4),
      ]));
    }

    // The CPU's precise-mode bound.
    let precise = false;
    if (!p.normX && !p.clamp && p.scale === 1) {
      let bx = 0;
      if (onDevice(p.x)) { for (let i = 0; i < n; i++) bx = Math.max(bx, nx[i]); }
      else bx = maxNorm(p.x, n, d);
      let bw = 1;
      if (!p.normW) {
        if (onDevice(p.W)) {
          const norms = new Float32Array(await ctx.readMatrix({ buffer: bcls, shape: [c, 4] }));
          bw = 0;
          for (let j = 0; j < c; j++) bw = Math.max(bw, norms[4 * j + 2] + norms[4 * j + 3]);
        } else {
          bw = maxNorm(p.W, c, d);
        }
      }
      precise = bx * bw > PRECISE_ABOVE;
    }

    // Forward: tile partials, then per row (r_i, S_i).
    const a = new Float64Array(n);
    const rv = new Float32Array(n * RS);
    for (let i = 0; i < n; i++) {
      a[i] = p.normX ? 1 / Math.max(nx[i], EPS) : 1;
      rv[i * RS] = a[i];
    }
    ctx.device.queue.writeBuffer(rowV, 0, rv);
    const parts = keep(ctx.buffer(n * classTiles * 8));
    const comb = keep(ctx.buffer(n * 8));
    const combStaging = keep(ctx.staging(n * 8));
    const [fwd, grad] = await Promise.all([
      pipe("margin_head", TILES, precise ? "fwd_p" : "fwd"),
      pipe("margin_head", TILES, precise ? "grad_p" : "grad"),
    ]);
    await ctx.submit((enc) => {
      const pass = enc.beginComputePass();
      const partsB = bind(parts, n * classTiles * 8);
      for (const { j0, cols } of wins) {
        const params = { g_off: j0, k: cols, b_off: j0 / TILE, rs_out: classTiles };
        const res = [xB, wWin(j0, cols), labelsB, rowVB, bWin(j0, cols), partsB];
        dispatch(pass, fwd, params, res, rowTiles, Math.ceil(cols / TILE));
      }
      const combB = bind(comb, n * 8);
      dispatch(pass, combine, { k: classTiles }, [null, null, null, null, partsB, null, combB], groups(n));
      pass.end();
      enc.copyBufferToBuffer(comb, 0, combStaging, 0, n * 8);
    });
    const rs = new Float32Array(await ctx.read(combStaging, 0, n * 8));

    // The loss in float64 relative to r_i: t = T_i - r_i, S_i the other classes' sum.
    const rows = new Float64Array(n), om = new Float64Array(n), lse = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      if (p.labels[i] < 0) continue;
      const S = rs[2 * i + 1];
      if (S === 0) continue;
      const t = target[4 * i] - rs[2 * i], ey = Math.exp(t);
      rows[i] = t < -700 ? -t + Math.log(S) : Math.log1p(S / ey);
      lse[i] = t + rows[i];
      om[i] = S / (S + ey);
    }
    if (!p.grad) return { rows: [rows], grads: {} };

    // Backward per-row values: r_i, l_i = lse_i - r_i, g_i = s_i s, du_iy, and the label's
    // own terms where a side is not normalised (the CPU's float64 additions).
    const nLab = new Uint32Array(c + 1);
    for (let i = 0; i < n; i++) {
      const y = p.labels[i];
      const base = i * RS;
      if (y < 0) continue;
      nLab[y + 1]++;
      const si = p.scales[i], dzy = -si * om[i];
      const [, t1, t2, t3] = target.subarray(4 * i, 4 * i + 4);
      rv[base + 1] = rs[2 * i];
      rv[base + 2] = lse[i];
      rv[base + 3] = si * p.scale;
      rv[base + 4] = dzy * t1;
      if (!p.normX) {
        const by = p.normW ? 1 / Math.max(nw[i], EPS) : 1;
        pair(rv, base + 5, dzy * t1 * by);
        pair(rv, base + 7, nx[i] > 0 ? (dzy * t2) / nx[i] : 0);
      }
      if (!p.normW) {
        pair(rv, base + 9, dzy * t1 * a[i]);
        pair(rv, base + 11, nw[i] > 0 ? (dzy * t3) / nw[i] : 0);
      }
    }
    ctx.device.queue.writeBuffer(rowV, 0, rv);
    // Rows by label (CSR) for fin_w's label terms.
    for (let j = 0; j < c; j++) nLab[j + 1] += nLab[j];
    const csr = new Uint32Array(c + 1 + n);
    csr.set(nLab);
    const fill = nLab.slice(0, c);
    for (let i = 0; i < n; i++) if (p.labels[i] >= 0) csr[c + 1 + fill[p.labels[i]]++] = i;
    const csrB = bind(keep(ctx.upload(csr)), csr.byteLength);

    const outBuffer = (out: typeof p.outX, rows: number) => {
      const given = (out as { buffer?: GPUBuffer } | null)?.buffer;
      if (given) return given;
      const b = ctx.buffer(rows * d * 4);
      return resident ? b : keep(b);
    };
    const dX = outBuffer(p.outX, n), dW = outBuffer(p.outW, c);
    const dWin = (j0: number, cols: number) => bind(dW, cols * d * 4, j0 * d * 4);
    const dXlo = keep(ctx.buffer(n * d * 4));
    const du = keep(ctx.buffer(n * chunk * 4));
    const [mmX, mmW] = await Promise.all([pipe("margin_head_mm", MM, "dx"), pipe("margin_head_mm", MM, "dw")]);
    const dXB = bind(dX, n * d * 4), dXloB = bind(dXlo, n * d * 4);
    const dTiles = Math.ceil(d / TILE);
    const stagingX = resident ? null : keep(ctx.staging(n * d * 4));
    const stagingW = resident ? null : keep(ctx.staging(c * d * 4));
    await ctx.submit((enc) => {
      enc.clearBuffer(dX, 0, n * d * 4);
      enc.clearBuffer(dXlo, 0, n * d * 4);
      const pass = enc.beginComputePass();
      for (const { j0, cols } of windows(chunk)) {
        const tiles = Math.ceil(cols / TILE);
        const duB = bind(du, n * cols * 4), win = { row0: j0, g_off: j0, k: cols };
        const res = [xB, wWin(j0, cols), labelsB, rowVB, bWin(j0, cols)];
        dispatch(pass, grad, { ...win, flags: flags | (p.normW ? MH.LABEL : 0) }, [...res, duB], rowTiles, tiles);
        const mm = [duB, ...res];
        const flagsX = flags | (p.normW && !p.normX ? MH.SKIP_LABEL : 0);
        dispatch(pass, mmX, { ...win, flags: flagsX }, [...mm, dXB, dXloB], rowTiles, dTiles);
        dispatch(pass, mmW, win, [...mm, dWin(j0, cols), null], tiles, dTiles);
      }
      dispatch(pass, finX, {}, [xB, wyB, labelsB, rowVB, dXloB, null, dXB], groups(n));
      for (const { j0, cols } of wins) {
        const res = [xB, wWin(j0, cols), labelsB, rowVB, csrB, bWin(j0, cols), dWin(j0, cols)];
        dispatch(pass, finW, { g_off: j0, k: cols }, res, groups(cols));
      }
      pass.end();
      if (stagingX && stagingW) {
        enc.copyBufferToBuffer(dX, 0, stagingX, 0, n * d * 4);
        enc.copyBufferToBuffer(dW, 0, stagingW, 0, c * d * 4);
      }
    });
    let gx: Float32Array, gW: Float32Array;
    if (stagingX && stagingW) {
      gx = p.outX?.data ?? new Float32Array(n * d);
      gW = p.outW?.data ?? new Float32Array(c * d);
      gx.set(new Float32Array(await ctx.read(stagingX, 0, n * d * 4)));
      gW.set(new Float32Array(await ctx.read(stagingW, 0, c * d * 4)));
    } else {
      gx = new DeviceValues(dX, [n, d]) as unknown as Float32Array;
      gW = new DeviceValues(dW, [c, d]) as unknown as Float32Array;
    }
    ctx.check();
    return { rows: [rows], grads: { x: gx, W: gW } };
  } finally {
    for (const b of temps) b.destroy();
  }
}
