// The uniform struct of the embedding heads' kernels (src/webgpu/margin_head*.wgsl), their
// flags and the layout of their per-row values row_v.

struct HeadParams {
  n: u32,       // rows (embeddings)
  c: u32,       // classes
  d: u32,       // embedding width
  row0: u32,    // grad, dx, dw: the chunk's first class
  a_off: u32,   // this block's first workgroup along x (rows or classes) ...
  b_off: u32,   // ... and along y
  g_off: u32,   // the first class of the window of W (and bcls, dW) bound
  k: u32,       // classes in the window or chunk; class tiles per row (combine)
  rs_out: u32,  // fwd: class tiles per row of parts; fin_w: columns per block (grid y: the blocks)
  subs: u32,    // sub-centres K per class (marginHead's subcenters; src/webgpu/margin_head_sub.wgsl)
  flags: u32,   // MH_* below, F_CLAMP, F_GRAD
  zero: u32,    // always 0 (src/webgpu/common.wgsl's `zero`)
  scale: f32,   // logit scale s
  bound: f32,   // with MH_GATED: the dot products are precise above max ||x|| max ||W_j|| > bound
  nt_lo: f32,   // MH_NT: the clamp of the non-label cosines [nt_lo, nt_hi] (AdaFace's clip)
  nt_hi: f32,
  nt_cut: f32,  // MH_INTER: non-label cosines above it become 0 (interclassFilteringThreshold; inf: off)
  nt_a: f32,    // MH_TOPK: a hard non-label's logit s (a x + b x^2 + g sqrt(1 - x^2)) (interTopK)
  nt_b: f32,
  nt_g: f32,
  nt_k: u32,    // MH_TOPK: k, the hard non-labels per row (0: every one, k >= C - 1)
  r0: u32,      // dw: the first row of this dispatch's range of rows (the later ranges add) ...
  rn: u32,      // ... and its rows (src/webgpu/loops.ts's GEMM_DEPTH)
  // #include "margin_params.wgsl"
  // #include "face_params.wgsl"
}
@group(0) @binding(0) var<uniform> P: HeadParams;

const MH_NORMX: u32 = 64u;      // x is normalised
const MH_NORMW: u32 = 128u;     // W is normalised
const MH_LABEL: u32 = 256u;     // grad: store the label's du (W normalised)
const MH_SKIP_LABEL: u32 = 512u; // dx: leave the label's du out (fin_x adds its term)
const MH_GATED: u32 = 1024u;    // fwd / fwd_p, grad / grad_p: run only in the mode the bound picks
const MH_NT: u32 = 2048u;       // the face kinds (src/webgpu/margin_head_face.wgsl): the non-label transform
// (with MH_NT) marginHead's inter-class options (src/webgpu/margin_head_topk.wgsl): the filter nt_cut ...
const MH_INTER: u32 = 16384u;
const MH_TOPK: u32 = 32768u;    // ... and interTopK's hard non-labels (row_v 27, 28)
const MH_ROWM: u32 = 65536u;    // label: a margin per row (src/webgpu/margin_head_label.wgsl's row_tg)

// row_v [N, MH_RS], per row (pairs hi, lo at two slots), then at N MH_RS: max ||x_i||, max ||W_j||:
//   0 a_i = 1/max(||x_i||, 1e-12) (1 when x is not normalised)   1 r_i, the row's reference
//   2 l_i = lse_i - r_i   3 g_i = s_i s   4 du_iy (W normalised)
//   5 fw, 7 fx: fin_x's label term fw W_y + fx x_i (x not normalised)
//   9 hx, 11 hw: fin_w's label term hx x_i + hw W_y (W not normalised)
//   13 T (the label's logit), 15 dT/du, 17 dT/d||x||, 19 dT/d||W_y||, 21 ||x_i||, 23 ||W_y||
//   25 u_iy (MH_NT), 27 the hard non-labels' threshold (MH_NT; CurricularFace's, else FLT_MAX;
//   MH_TOPK: the row's k-th largest), 28 (MH_TOPK) the last class taken at it, as a float32 (-1: none);
//   and at N MH_RS + 2: CurricularFace's t' (MH_NT); at N MH_RS + MH_SUB_AT + i (subs > 1) the row of W
//   of row i's label's chosen sub-centre (bitcast u32; src/webgpu/margin_head_pick.wgsl)
const MH_RS: u32 = 29u;
const MH_SUB_AT: u32 = 4u;
