  // The label target's fields (src/webgpu/margin.wgsl), included in the structs of the kernels
  // that evaluate it. The pairs carry the host's float64 constants.
  tg: u32,          // TG_NONE, TG_COS, TG_ANGLE, TG_SPHERE or TG_LSOFTMAX
  tg_branch: u32,   // TG_B_NONE, TG_B_THRESHOLD (ArcFace) or TG_B_EASY (easyMargin)
  tg_const: u32,    // 1: marginGrad "constant" (d phi / d cos taken as 1)
  tg_m: u32,        // SphereFace's and L-Softmax's integer margin m
  tg_m1: vec2<f32>, // phi = cos(m1 theta + m2) - m3
  tg_m2: vec2<f32>,
  tg_m3: vec2<f32>,
  tg_cm: vec2<f32>, // cos(m2)
  tg_sm: vec2<f32>, // sin(m2)
  tg_th: vec2<f32>, // TG_B_THRESHOLD: phi where cos > tg_th = cos(pi - m2) ...
  tg_mm: vec2<f32>, // ... else cos - tg_mm, tg_mm = m2 sin(pi - m2)
  tg_a: vec2<f32>,  // SphereFace's lambda, L-Softmax's beta
  tg_inv: vec2<f32>,// 1 / (1 + tg_a)
