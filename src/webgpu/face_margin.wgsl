// The per-row work of the face margin losses (adaface, curricularFace, magface; SPEC §7) on
// GPU-resident cosines, so that a call needs no round trip to the host (the math:
// src/webgpu/face_rows.wgsl). Its glue is src/webgpu/face_margin.ts; the cross-entropy itself
// is src/webgpu/cross_entropy.wgsl's (F_HOST_TG: the targets in row_in; F_NT: the non-target
// transform).
//   rows: one workgroup: the batch statistic and the next state, into fout[0..4) (pairs) and
//         fout[4..6) (float32); then each labelled row's label logit and its derivative into
//         row_in's columns 2, 3; CurricularFace's t' into column 1 (the hard non-targets' a,
//         added to nt_a) and its threshold into column 4; MagFace's g_i, d g_i / d norm_i and
//         d z_y / d norm_i into fout.
//   post: one workgroup, after the cross-entropy: each row's loss (rows' column 0) into fout,
//         and MagFace's norms gradient s_i ((p_y - 1) d z_y / d norm + lambda d g / d norm).
// fout: [0, 4) the state (mean, std or t, 0) as pairs, [4, 6) the same as float32, then per row i
// at 8 + 4 i: (loss, g, dg, dzy).

struct FaceParams {
  n: u32,
  c: u32,
  flags: u32,     // F_GRAD
  rs: u32,        // stride of row_in and rows (6)
  zero: u32,      // always 0 (src/webgpu/common.wgsl's `zero`)
  scale: f32,
  // #include "face_params.wgsl"
  // #include "margin_params.wgsl"
}
@group(0) @binding(0) var<uniform> P: FaceParams;

// #include "margin.wgsl"
// #include "face_rows.wgsl"

@group(0) @binding(1) var<storage, read> cosv: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> norms: array<f32>;
@group(0) @binding(4) var<storage, read> st: array<f32>;
@group(0) @binding(5) var<storage, read_write> row_in: array<f32>;
@group(0) @binding(6) var<storage, read_write> fout: array<f32>;
@group(0) @binding(7) var<storage, read> rows_ce: array<f32>;
@group(0) @binding(8) var<storage, read_write> gn: array<f32>;

fn label_cos(i: u32) -> vec2<f32> { return df(cosv[i * P.c + u32(labels[i])]); }

fn face_stat(i: u32) -> vec2<f32> {
  if (P.face == K_ADA) { return df(norms[i]); }
  return label_cos(i);
}

fn put(i: u32, t: Tg) {
  row_in[i * P.rs + 2u] = t.v.x + t.v.y;
  row_in[i * P.rs + 3u] = t.d.x + t.d.y;
}

@compute @workgroup_size(WG)
fn rows(@builtin(local_invocation_index) t: u32) {
  zero = P.zero;
  let n = P.n;
  let s = next_state(n, t);
  put_state(s, t);
  for (var i = t; i < n; i += WG) {
    put_mag(i, df(0.0), df(0.0), df(0.0));
    if (P.face == K_CURRICULAR) { row_in[i * P.rs + 1u] = s.a.x + s.a.y; }
    if (labels[i] < 0) { continue; }
    let u = label_cos(i);
    if (P.face == K_ADA) {
      put(i, ada_target(u, df(norms[i]), s));
    } else if (P.face == K_CURRICULAR) {
      put(i, margin_target(u));
      let thr = hard_threshold(u);
      row_in[i * P.rs + 4u] = thr.x + thr.y;
    } else {
      let m = mag_target(u, df(norms[i]));
      put(i, m.t);
      put_mag(i, m.g, m.dg, m.dz);
    }
  }
}

@compute @workgroup_size(WG)
fn post(@builtin(local_invocation_index) t: u32) {
  for (var i = t; i < P.n; i += WG) {
    let o = 8u + 4u * i;
    let ce = rows_ce[i * P.rs];
    fout[o] = ce;
    if (P.face == K_MAG && (P.flags & F_GRAD) != 0u) {
      gn[i] = row_in[i * P.rs] * ((exp(-ce) - 1.0) * fout[o + 3u] + P.lambda * fout[o + 2u]);
    }
  }
}
