/**
 * WebGPU glue of the embedding heads (`marginHead`, `sphereface`, `lsoftmax`):
 * src/webgpu/margin_head.wgsl (logit tiles), src/webgpu/margin_head_mm.wgsl (gradient products),
 * src/webgpu/margin_head_rows.wgsl (per-row and per-class steps) and src/webgpu/margin_head_label.wgsl
 * (the label's terms). A call is one submission and one readback (the row losses, and
 * the gradients of host inputs): every step between them runs on the GPU.
 *
 * As on the CPU (src/wasm/margin_head.ts) the [N, C] logits never exist:
 *  1. `cls`: b_j per class (and ||W_j||) as float32 pairs; `gather`: each row's label
 *     row W_y into Wy [N, D]; `label`: each row's ||x_i||, ||W_y||, x_i . W_y, and the
 *     label's logit T_i with its derivatives (src/webgpu/margin.wgsl, in float pairs).
 *  2. `fwd`: one workgroup of 64 invocations per 64 x 64 tile of X W^T (tiled through
 *     workgroup memory, an 8 x 8 register block per invocation) writes the tile's (max,
 *     sum-exp) over the non-label classes of each row: [N, C/64, 2]; `combine` reduces
 *     them per row to a reference r_i and the sum S_i; `finish` forms the row loss from
 *     T_i - r_i, 1 - p_y and lse_i - r_i, and the backward's per-row values.
 *  3. backward, per chunk of classes (a [N, chunk] block of du, chunk a multiple of 64,
 *     about max(D, 16 MiB / (4 N)), at most 32,768 rows of W): `grad` recomputes the chunk's
 *     logit tiles and writes du = dL/du; `dx` adds du b W_J into dX (two-float across chunks),
 *     `dw` writes the chunk's rows of dW from du^T a X (by ranges of 32,768 rows, the later
 *     adding). Every output element has one owner: no atomics. (Chunks and ranges keep each
 *     invocation within llvmpipe's loop budget: src/webgpu/loops.ts.)
 *  4. `fin_x`, `fin_w`: the gradient through the normalisations, and the label's own
 *     terms where a side is not normalised (in double-float32: they can nearly cancel).
 * Extra memory: O(N C/64 + N D + C D) (the du block is at most max(16 MiB, N D floats)).
 * W (with b and dW) is bound in windows of classes when it exceeds one storage binding.
 * Sub-centres (`subcenters` K > 1: W [C K, D]): the same steps over W's C K rows, with `pick`
 * (src/webgpu/margin_head_pick.wgsl) in place of `gather` and `fwd_sub` / `grad_sub`
 * (src/webgpu/margin_head_sub.wgsl: each class's largest sub-centre inside the logit tiles, which
 * hold whole classes) in place of `fwd` / `grad`; PartialFC's classes: the head over their rows.
 * The inter-class options (the filter, interTopK's first pass) and per-row margins:
 * src/webgpu/margin_head_inter.ts.
 *
 * As the CPU heads, the call is two phases over one layout (`openHead`): `encodeStats`
 * (`encodeRows`, steps 1, and `encodeTiles`, step 2 up to `combine`: per row the reference
 * r_i and the non-label sum S_i in `comb`) and `encodeGrads` (`finish` from `comb`, then
 * steps 3 and 4), recorded into one pass. A shard of classes (src/webgpu/sharded.ts) runs them
 * over its rows of W with local labels, and puts the merged statistics in between.
 *
 * Heads whose logits can be large (x not normalised and max ||x|| (max ||W_j||) > 256,
 * as the CPU's "precise" mode) take the logits' dot products in double-float32; the
 * bound is found on the GPU (`bound`), and the tile kernels of both modes are dispatched,
 * each running only in its own.
 *
 * @module
 */
import { columns, type Raw } from "../kernels/core.ts";
import { type HeadProblem, headRows, PRECISE_ABOVE } from "../kernels/head.ts";
import { DeviceValues, onDevice } from "../validate.ts";
import { checkOut, F, type GpuContext, type KernelName, type Params } from "./context.ts";
import { MH } from "./generated.ts";
import { targetParams } from "./margin.ts";
import { faceUniforms, stateSize, stateValues } from "./face_margin.ts";
import { INTER_PIPELINES, interParams, openInter } from "./margin_head_inter.ts";
import { checkLoops, GEMM_DEPTH, LOOP_BUDGET, topKWindow } from "./loops.ts";

/** Bytes of the du block the backward aims for (when larger than N * D floats). */
const BLOCK_BYTES = 1 << 24;
const TILE = 64;

/**
 * Checks a head's problem against the device's limits and lays out the call: its buffers
 * (temporaries go to `keep`), pipelines and dispatcher, shared by the two phases.
 */
export function openHead(ctx: GpuContext, p: HeadProblem, keep: (b: GPUBuffer) => GPUBuffer, leave = false) {
  const { n, d } = p;
  // Sub-centres (src/webgpu/margin_head_sub.wgsl): c counts W's rows, K per class, `per` classes a tile.
  const K = p.subcenters ?? 1, c = p.c * K, per = Math.floor(TILE / K);
  if (K > TILE) {
    throw new RangeError(
      `Expected options.subcenters to be at most ${TILE} on the WebGPU backend (a class's sub-centres in one tile), got ${K}`,
    );
  }
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
  const rowTiles = Math.ceil(n / TILE), unit = TILE * K;
  // W (with b, dW) is bound in windows of classes that fit one binding, each a multiple
  // of 64 classes (so its offset, a multiple of 256 bytes, is aligned).
  const window = Math.min(Math.ceil(c / unit) * unit, Math.floor(ctx.maxBinding / Math.max(16, d * 4) / unit) * unit);
  if (window < unit) {
    throw tooLarge(
      `${unit} rows of W [${c}, ${d}] of float32`,
      unit * d * 4,
      "one WebGPU storage binding",
      ctx.maxBinding,
    );
  }
  /** The windows of classes [j0, j0 + cols) of at most `size` classes (rows of W). */
  const windows = (size: number) =>
    Array.from({ length: Math.ceil(c / size) }, (_, k) => ({ j0: k * size, cols: Math.min(size, c - k * size) }));
  // The forward's tiles (per classes each) by window: the window's first (t0) and count.
  let classTiles = 0;
  const wins = windows(window).map((w) => {
    const tiles = Math.ceil(w.cols / K / per);
    return { ...w, t0: (classTiles += tiles) - tiles, tiles };
  });
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
  // (and at most GEMM_DEPTH rows of W: dx's product goes through the chunk's rows in one invocation,
  // src/webgpu/loops.ts)
  const chunk = Math.min(
    window,
    Math.max(unit, Math.floor(Math.min(budget / (n * 4), GEMM_DEPTH) / unit) * unit),
  );
  if (p.grad && n * chunk * 4 > ctx.maxBinding) {
    throw tooLarge(
      `a block of the gradient of 64 classes of ${K} rows (x [${n}, ${d}])`,
      n * chunk * 4,
      "one WebGPU storage binding",
      ctx.maxBinding,
    );
  }
  const X = onDevice(p.x) ? p.x.buffer : keep(ctx.upload(p.x));
  const W = onDevice(p.W) ? p.W.buffer : keep(ctx.upload(p.W));
  const labels = keep(ctx.upload(p.labels));
  // Per row MH.RS values, then max ||x_i|| and max ||W_j|| (the precise mode's gate), then
  // (K > 1) each label's chosen row of W.
  const rowBytes = (n * MH.RS + MH.SUB_AT + n) * 4;
  const rowV = keep(ctx.buffer(rowBytes));
  const bcls = keep(ctx.buffer(c * 16));
  const wy = keep(ctx.buffer(n * d * 4));
  const parts = keep(ctx.buffer(n * classTiles * 8));
  const comb = keep(ctx.buffer(n * 8));
  const losses = keep(ctx.buffer(n * 4));
  const scales = p.grad ? keep(ctx.upload(Float32Array.from(p.scales))) : null;
  const bind = (buffer: GPUBuffer, bytes: number, offset = 0): GPUBufferBinding => ({ buffer, offset, size: bytes });
  const xB = bind(X, n * d * 4), labelsB = bind(labels, n * 4), wyB = bind(wy, n * d * 4);
  const rowVB = bind(rowV, rowBytes), partsB = bind(parts, n * classTiles * 8), combB = bind(comb, n * 8);
  const scalesB = scales && bind(scales, n * 4), lossesB = bind(losses, n * 4);
  // W's, b's and dW's rows of a window.
  const wWin = (j0: number, cols: number) => bind(W, cols * d * 4, j0 * d * 4);
  const bWin = (j0: number, cols: number) => bind(bcls, cols * 16, j0 * 16);
  // Heads whose logits can be large take the dot products in float pairs where
  // max ||x|| max ||W_j|| > PRECISE_ABOVE (as the CPU): both modes' entries are
  // dispatched, and each runs only where the bound (found on the GPU) says.
  const gated = !p.normX && !p.clamp && p.scale === 1;
  // (marginHead's inter-class options and per-row margins: src/webgpu/margin_head_inter.ts)
  const inter = interParams(p);
  const flags = (p.normX ? MH.NORMX : 0) | (p.normW ? MH.NORMW : 0) | (p.clamp ? F.CLAMP : 0) |
    (p.grad ? F.GRAD : 0) | (gated ? MH.GATED : 0) | (p.face ? MH.NT : 0) | inter.flags;
  const base: Params<"margin_head"> = {
    n,
    c,
    d,
    flags,
    scale: p.scale,
    bound: PRECISE_ABOVE,
    subs: K,
    ...(p.face ? faceUniforms(p.face) : targetParams(p.spec)),
    // (the face kinds: the non-label cosines' clip, AdaFace's [-1 + eps, 1 - eps])
    nt_lo: p.nonTarget?.lo ?? -1,
    nt_hi: p.nonTarget?.hi ?? 1,
    ...inter.fields,
  };

  // One dispatch per block of at most maxGroups x maxGroups workgroups, each with
  // its own parameters (a_off, b_off: the block's first workgroup, after params' own;
  // every head kernel binds src/webgpu/margin_head_params.wgsl's struct).
  const dispatch = (
    pass: GPUComputePassEncoder,
    pipeline: GPUComputePipeline,
    params: Params<"margin_head">,
    resources: (GPUBufferBinding | null)[],
    gx: number,
    gy = 1,
  ) => {
    pass.setPipeline(pipeline);
    const g = ctx.maxGroups;
    for (let bx = 0; bx < gx; bx += g) {
      for (let by = 0; by < gy; by += g) {
        const offsets = { a_off: (params.a_off ?? 0) + bx, b_off: (params.b_off ?? 0) + by };
        const u = keep(ctx.params("margin_head", { ...base, ...params, ...offsets }));
        pass.setBindGroup(0, ctx.bind(pipeline, u, resources));
        pass.dispatchWorkgroups(Math.min(g, gx - bx), Math.min(g, gy - by));
      }
    }
  };
  const pipes = (kernel: KernelName, bindings: string, entries: string[]) =>
    entries.map((e) => ctx.pipelineNow(kernel, bindings, e));
  const [[cls, gather, combine, finX, finW], [label, bound, finish], fwd, grad, [mmX, mmW]] = HEAD_PIPELINES(gated, K)
    .map(([kernel, bindings, entries]) => pipes(kernel, bindings, entries));
  const [pick] = K > 1 ? pipes(...PICK_PIPELINE) : [];
  const [faceRows, facePost] = p.face ? pipes(...FACE_PIPELINES) : [];
  const topk = inter.flags & MH.TOPK ? pipes(...INTER_PIPELINES) : null;

  // Rows by label (CSR) for fin_w's label terms (a label of no class here, as a shard's
  // label on another shard, has none).
  const here = (i: number) => p.labels[i] >= 0 && p.labels[i] < c;
  const nLab = new Uint32Array(c + 1);
  for (let i = 0; i < n; i++) if (here(i)) nLab[p.labels[i] + 1]++;
  for (let j = 0; j < c; j++) nLab[j + 1] += nLab[j];
  const csr = new Uint32Array(c + 1 + n);
  csr.set(nLab);
  const fill = nLab.slice(0, c);
  for (let i = 0; i < n; i++) if (here(i)) csr[c + 1 + fill[p.labels[i]]++] = i;
  const csrB = bind(keep(ctx.upload(csr)), csr.byteLength);
  // What one invocation of a head kernel still loops over (src/webgpu/loops.ts): the label's sub-centres'
  // dot products (pick, a workgroup per row: K times ceil(D / 256) and a reduction; dw's product goes by ranges
  // of rows). fin_w (W not normalised) goes through the rows labelled j for each of its `finCols` columns of dW_j:
  // D split into blocks that keep within it.
  const perSub = Math.ceil(d / 256) + 10;
  if (K > 1) checkLoops(ctx, (K + 2) * perSub, `subcenters (${K}) + 2 times ceil(D / 256) + 10 (D = ${d})`);
  // (the logit tiles go through D in one invocation: as linearCrossEntropy's, float pairs where `gated`)
  checkLoops(ctx, (gated ? 6.5 : 3.2) * d, `D (${d}) for marginHead's logits`);
  let most = 0;
  for (let j = 0; j < c; j++) most = Math.max(most, nLab[j + 1] - nLab[j]);
  const finCols = p.normW ? d : Math.max(1, Math.min(d, Math.floor(LOOP_BUDGET / (most + 2))));

  const outBuffer = (out: typeof p.outX, rows: number) => {
    const given = (out as { buffer?: GPUBuffer } | null)?.buffer;
    if (given) return given;
    const b = ctx.buffer(rows * d * 4);
    return resident ? b : keep(b);
  };
  const dX = p.grad ? outBuffer(p.outX, n) : null, dW = p.grad ? outBuffer(p.outW, c) : null;
  const dXlo = p.grad ? keep(ctx.buffer(n * d * 4)) : null;
  const du = p.grad ? keep(ctx.buffer(n * chunk * 4)) : null;
  const interBuffers = openInter(ctx, p, keep, chunk, du);
  // The face kinds: their state input, their rows' values (fout: src/webgpu/margin_head_face.wgsl) and,
  // recorded, the next state.
  const face = p.face
    ? {
      st: p.face.state === null
        ? null
        : { buffer: onDevice(p.face.state) ? p.face.state.buffer : keep(ctx.upload(stateValues(p.face)!)) },
      fout: keep(ctx.buffer((8 + 4 * n) * 4)),
      // (`leave`: results left on the GPU, a recorded call's)
      stOut: stateSize(p.face) > 0 && leave ? ctx.buffer(stateSize(p.face) * 4) : null,
    }
    : null;
  // What comes back: the row losses (the face kinds' values), and the gradients of host inputs.
  const reads: [GPUBuffer, number][] = [face ? [face.fout, (8 + 4 * n) * 4] : [losses, n * 4]];
  if (dX && dW && !resident) reads.push([dX, n * d * 4], [dW, c * d * 4]);

  const groups = (count: number) => Math.ceil(count / 64);
  return {
    n,
    c,
    d,
    window,
    chunk,
    K,
    per,
    rowTiles,
    classTiles,
    wins,
    windows,
    rowV,
    rowBytes,
    groups,
    flags,
    gated,
    resident,
    X,
    W,
    labels,
    wy,
    comb,
    dX,
    dW,
    dXlo,
    du,
    reads,
    losses,
    bind,
    xB,
    labelsB,
    wyB,
    rowVB,
    partsB,
    combB,
    scalesB,
    lossesB,
    csrB,
    wWin,
    bWin,
    dispatch,
    cls,
    gather,
    pick,
    combine,
    finX,
    finW,
    finCols,
    label,
    bound,
    finish,
    fwd,
    grad,
    mmX,
    mmW,
    faceRows,
    facePost,
    face,
    topk,
    inter: interBuffers,
    problem: p,
  };
}

/**
 * `p` over W's rows of PartialFC's classes (`rows`, K rows each): gathered on the host, or, W on the
 * GPU, copied into a temporary in `enc` (one copy per run of consecutive classes).
 */
function sampled(ctx: GpuContext, p: HeadProblem, enc: GPUCommandEncoder, keep: (b: GPUBuffer) => GPUBuffer) {
  const rows = p.rows;
  if (!rows) return p;
  if (!onDevice(p.W)) return { ...p, W: headRows(p, p.W), rows: null };
  const K = p.subcenters ?? 1, span = K * p.d * 4, out = keep(ctx.buffer(Math.max(16, rows.length * span)));
  for (let a = 0, b = 1; a < rows.length; a = b++) {
    while (b < rows.length && rows[b] === rows[b - 1] + 1) b++;
    enc.copyBufferToBuffer(p.W.buffer, rows[a] * span, out, a * span, (b - a) * span);
  }
  return { ...p, W: new DeviceValues(out, [rows.length * K, p.d]) as unknown as Float32Array, rows: null };
}

/** One head call on the GPU, laid out by {@linkcode openHead}. */
export type HeadSession = ReturnType<typeof openHead>;

/**
 * The interTopK pass of src/webgpu/margin_head_inter.ts (after the label's terms, before the logit tiles): each row's
 * threshold and tie into row_v.
 */
function encodeTopK(s: HeadSession, pass: GPUComputePassEncoder): void {
  const top = s.inter.top;
  if (!top || !s.topk) return;
  const [cos, scan, rows] = s.topk;
  const { n, dispatch, groups, labelsB, rowVB } = s;
  const listB = s.bind(top.list, top.list.size);
  if (top.block) {
    // (windows of whole tiles of classes, within the chunk's block, that each invocation of the scan can go
    // through within llvmpipe's loop budget: src/webgpu/loops.ts)
    const { K, chunk, problem } = s;
    for (const { j0, cols } of s.windows(Math.min(chunk, topKWindow(K, problem.interTopK ?? 0, 64) * K))) {
      const win = { row0: j0, g_off: j0, k: cols }, blockB = s.bind(top.block, n * cols * 4);
      const res = [s.xB, s.wWin(j0, cols), labelsB, rowVB, s.bWin(j0, cols), blockB, listB];
      dispatch(pass, cos, win, res, s.rowTiles, Math.ceil(cols / 64));
      dispatch(pass, scan, win, [null, null, labelsB, rowVB, null, blockB, listB], groups(n));
    }
  }
  dispatch(pass, rows, {}, [null, null, labelsB, rowVB, null, null, listB], groups(n));
}

/** The head's pipelines: per kernel, its bindings and entry points (the float-pair modes when `gated`). */
const HEAD_PIPELINES = (gated: boolean, K = 1): [KernelName, string, string[]][] => {
  const ROWS = "rrrrrww", LABEL = "rrrrrrww", TILES = "rrrrrw", MM = "rrrrrrww";
  const modes = K > 1 ? ["_sub"] : gated ? ["", "_p"] : [""];
  return [
    ["margin_head_rows", ROWS, ["cls", "gather", "combine", "fin_x", "fin_w"]],
    ["margin_head_label", LABEL, ["label", "bound", "finish"]],
    ["margin_head", TILES, modes.map((m) => `fwd${m}`)],
    ["margin_head", TILES, modes.map((m) => `grad${m}`)],
    ["margin_head_mm", MM, ["dx", "dw"]],
  ];
};

/** Sub-centres' gather of the label's chosen row (src/webgpu/margin_head_pick.wgsl). */
const PICK_PIPELINE: [KernelName, string, string[]] = ["margin_head_pick", "rrrrww", ["pick"]];

/** The face kinds' pipelines (src/webgpu/margin_head_face.wgsl). */
const FACE_PIPELINES: [KernelName, string, string[]] = ["margin_head_face", "rrrrrwww", ["face_rows", "face_post"]];

/** Compiles the head's pipelines asynchronously (before a call that awaits, so that {@linkcode openHead} finds them). */
export async function compileHead(ctx: GpuContext): Promise<void> {
  await Promise.all(
    [...HEAD_PIPELINES(true), ...HEAD_PIPELINES(false, 2).slice(2, 4), FACE_PIPELINES, PICK_PIPELINE, INTER_PIPELINES]
      .flatMap(([kernel, bindings, entries]) => entries.map((e) => ctx.pipeline(kernel, bindings, e))),
  );
}

/**
 * Phase 1 over the head's classes: {@linkcode encodeRows}, then each (row, class tile)'s
 * (max, sum-exp) over the non-label classes and, per row, their combination: the
 * reference r_i and S_i = sum_{j != y} e^(z_ij - r_i) in `comb` [N, 2].
 */
export function encodeStats(s: HeadSession, pass: GPUComputePassEncoder): void {
  encodeRows(s, pass);
  encodeTiles(s, pass);
}

/** Per class b_j, per row W_y (`wy`, cleared first), the label's terms in `rowV` (and interTopK's rows). */
export function encodeRows(s: HeadSession, pass: GPUComputePassEncoder): void {
  const { n, wins, groups, dispatch, xB, wyB, labelsB, rowVB, wWin, bWin } = s;
  // Per class b_j (and ||W_j||); per row its label's row of W (Wy), then the label's
  // terms and (gated) the norms' bound.
  for (const { j0, cols } of wins) {
    const win = { g_off: j0, k: cols };
    dispatch(pass, s.cls, win, [null, wWin(j0, cols), null, null, null, bWin(j0, cols), null], groups(cols));
    if (s.pick) dispatch(pass, s.pick, win, [xB, wWin(j0, cols), labelsB, bWin(j0, cols), wyB, rowVB], n);
    else dispatch(pass, s.gather, win, [null, wWin(j0, cols), labelsB, null, null, null, wyB], groups(n));
  }
  dispatch(pass, s.label, {}, [xB, wyB, labelsB, null, s.inter.rowm, null, rowVB, null], groups(n));
  if (s.face && s.faceRows) {
    const foutB = s.bind(s.face.fout, (8 + 4 * n) * 4);
    dispatch(pass, s.faceRows, {}, [xB, labelsB, s.face.st, null, null, rowVB, foutB, null], 1);
  }
  if (s.gated) {
    for (const { j0, cols } of wins) {
      dispatch(pass, s.bound, { g_off: j0, k: cols }, [null, null, null, null, null, bWin(j0, cols), rowVB, null], 1);
    }
  }
  encodeTopK(s, pass);
}

/** The tile partials, then per row (r_i, S_i) into `comb`. */
export function encodeTiles(s: HeadSession, pass: GPUComputePassEncoder): void {
  const { n, wins, groups, dispatch, xB, labelsB, rowVB, partsB, combB, wWin, bWin } = s;
  for (const { j0, cols, t0, tiles } of wins) {
    const params = { g_off: j0, k: cols, b_off: t0, row0: t0, rs_out: s.classTiles };
    const res = [xB, wWin(j0, cols), labelsB, rowVB, bWin(j0, cols), partsB];
    for (const f of s.fwd) dispatch(pass, f, params, res, s.rowTiles, tiles);
  }
  dispatch(pass, s.combine, { k: s.classTiles }, [null, null, null, null, partsB, null, combB], groups(n));
}

/**
 * Phase 2, given every class's (r_i, S_i) in `comb`: the row losses and the backward's
 * per-row values, then per chunk of classes du and its products into dX and dW, and the
 * gradients through the normalisations.
 */
export function encodeGrads(s: HeadSession, pass: GPUComputePassEncoder): void {
  const { n, d, groups, dispatch, xB, wyB, labelsB, rowVB, combB, scalesB, lossesB, wWin, bWin, flags } = s;
  dispatch(pass, s.finish, {}, [null, null, labelsB, scalesB, combB, null, rowVB, lossesB], groups(n));
  const { dX, dW, dXlo, du } = s;
  if (!dX || !dW || !dXlo || !du) return;
  const dXB = s.bind(dX, n * d * 4), dXloB = s.bind(dXlo, n * d * 4);
  const dWin = (j0: number, cols: number) => s.bind(dW, cols * d * 4, j0 * d * 4);
  const dTiles = Math.ceil(d / TILE);
  const p = s.problem;
  // Backward per chunk of classes: du, then its products into dX and dW.
  for (const { j0, cols } of s.windows(s.chunk)) {
    const tiles = Math.ceil(cols / TILE);
    const duB = s.bind(du, n * cols * 4), win = { row0: j0, g_off: j0, k: cols };
    const res = [xB, wWin(j0, cols), labelsB, rowVB, bWin(j0, cols)];
    for (const g of s.grad) {
      const logitTiles = Math.ceil(cols / s.K / s.per); // (tiles of whole classes)
      dispatch(pass, g, { ...win, flags: flags | (p.normW ? MH.LABEL : 0) }, [...res, duB], s.rowTiles, logitTiles);
    }
    const mm = [duB, ...res];
    const flagsX = flags | (p.normW && !p.normX ? MH.SKIP_LABEL : 0);
    dispatch(pass, s.mmX, { ...win, flags: flagsX }, [...mm, dXB, dXloB], s.rowTiles, dTiles);
    // (by ranges of rows, src/webgpu/loops.ts; one where N = 0, writing the zeros)
    for (let r0 = 0; r0 === 0 || r0 < s.n; r0 += GEMM_DEPTH) {
      dispatch(
        pass,
        s.mmW,
        { ...win, r0, rn: Math.min(GEMM_DEPTH, s.n - r0) },
        [...mm, dWin(j0, cols), null],
        tiles,
        dTiles,
      );
    }
  }
  dispatch(pass, s.finX, {}, [xB, wyB, labelsB, rowVB, dXloB, null, dXB], groups(n));
  for (const { j0, cols } of s.wins) {
    const res = [xB, wWin(j0, cols), labelsB, rowVB, s.csrB, bWin(j0, cols), dWin(j0, cols)];
    dispatch(pass, s.finW, { g_off: j0, k: cols, rs_out: s.finCols }, res, groups(cols), Math.ceil(s.d / s.finCols));
  }
}

/** Records both phases of a head (the gradient buffers cleared first) into `enc`. */
function encodeHead(s: HeadSession, enc: GPUCommandEncoder): void {
  const { n, d } = s;
  enc.clearBuffer(s.wy, 0, n * d * 4);
  if (s.dX && s.dXlo) {
    enc.clearBuffer(s.dX, 0, n * d * 4);
    enc.clearBuffer(s.dXlo, 0, n * d * 4);
  }
  const pass = enc.beginComputePass();
  encodeStats(s, pass);
  encodeGrads(s, pass);
  if (s.face && s.facePost) {
    // The face kinds: the row losses into fout, MagFace's gradient through ||x_i||.
    const res = [s.xB, s.labelsB, s.face.st, s.lossesB, s.scalesB, s.rowVB, s.bind(s.face.fout, (8 + 4 * n) * 4)];
    s.dispatch(pass, s.facePost, {}, [...res, s.dX && s.bind(s.dX, n * d * 4)], s.groups(n * d));
  }
  pass.end();
  if (s.face?.stOut) enc.copyBufferToBuffer(s.face.fout, 16, s.face.stOut, 0, s.face.stOut.size);
}

/** A head's rows (the face kinds: losses and magface's g, and the next state) from `values`, its first read. */
function sessionRows(s: HeadSession, values: Float32Array): Pick<Raw, "rows" | "outputs"> {
  if (!s.face) return { rows: columns(values, s.n, 1) };
  const [ce, g] = columns(values, s.n, 4, 8);
  const k = stateSize(s.problem.face!);
  const state = s.face.stOut
    ? new DeviceValues(s.face.stOut, [1, k]) as unknown as Float32Array
    : Float64Array.from({ length: k }, (_, q) => values[2 * q] + values[2 * q + 1]) as unknown as Float32Array;
  return { rows: [ce, g], outputs: k > 0 ? { state } : {} };
}

/** A head's GPU-resident gradients (`DeviceValues`). */
const gpuGrads = (s: HeadSession): Record<string, Float32Array> =>
  s.dX && s.dW
    ? {
      x: new DeviceValues(s.dX, [s.n, s.d]) as unknown as Float32Array,
      W: new DeviceValues(s.dW, [s.c, s.d]) as unknown as Float32Array,
    }
    : {};

/**
 * Row losses and gradients of an embedding head on the GPU: both phases in one
 * submission whose row losses (and host gradients) are read back, or, inside a recorded
 * call (`readback: false`), recorded with everything left on the GPU.
 */
export function head(ctx: GpuContext, p: HeadProblem): Raw | Promise<Raw> {
  ctx.check();
  if (ctx.recording) {
    const keep = (b: GPUBuffer) => ctx.temp(b);
    const s = openHead(ctx, sampled(ctx, p, ctx.recording.enc, keep), keep, true);
    encodeHead(s, ctx.recording.enc);
    const [first, bytes] = s.reads[0];
    return {
      ...sessionRows(s, new DeviceValues(first, [bytes / 4, 1]) as unknown as Float32Array),
      grads: gpuGrads(s),
    };
  }
  return readHead(ctx, p);
}

async function readHead(ctx: GpuContext, p: HeadProblem): Promise<Raw> {
  await compileHead(ctx);
  const temps: GPUBuffer[] = [];
  const keep = (b: GPUBuffer) => (temps.push(b), b);
  try {
    const [s, stagings] = ctx.record(undefined, (enc) => {
      const s = openHead(ctx, sampled(ctx, p, enc, keep), keep);
      const stagings = s.reads.map(([, bytes]) => keep(ctx.staging(bytes)));
      encodeHead(s, enc);
      s.reads.forEach(([b, bytes], k) => enc.copyBufferToBuffer(b, 0, stagings[k], 0, bytes));
      return [s, stagings] as const;
    });
    const [rows, gx, gW] = (await ctx.readAll(stagings.map((b, k) => [b, s.reads[k][1]]))).map((b) =>
      new Float32Array(b)
    );
    await ctx.settled();
    ctx.check();
    const out = { ...sessionRows(s, rows), grads: {} as Record<string, Float32Array> };
    if (!s.dX || !s.dW) return out;
    if (s.resident) out.grads = gpuGrads(s);
    else {
      out.grads.x = p.outX?.data ? (p.outX.data.set(gx), p.outX.data) : gx;
      out.grads.W = p.outW?.data ? (p.outW.data.set(gW), p.outW.data) : gW;
    }
    return out;
  } finally {
    for (const b of temps) b.destroy();
  }
}
