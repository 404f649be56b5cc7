/**
 * The experiment: the data set, the two training methods (plain cross-entropy on one
 * head, physMoe on eight experts), training and per-shot evaluation.
 *
 * @module
 */
import { type Matrix, wasm } from "../../cpu.ts";
import type { PhysMoeOptions } from "../../mod.ts";
import { type DataConfig, type LongTailData, Rng, type Split } from "./data.ts";
import { Adam, type Forward, Model, type ModelConfig, type OutputGrads } from "./net.ts";

/** The data set: 230 fine classes in 7 groups, imbalance 100. */
export const DATA: DataConfig = {
  classes: 230,
  groups: 7,
  inputs: 32,
  maxPerClass: 200,
  imbalance: 100,
  testPerClass: 20,
  groupScale: 3,
  classScale: 1.5,
  noise: 0.4,
};

/** The network's sizes (the experts' count is the method's). */
export const NET: Omit<ModelConfig, "experts"> = {
  inputs: DATA.inputs,
  hidden: 128,
  features: 32,
  classes: DATA.classes,
  groups: DATA.groups,
};

/** Minibatch size. */
export const BATCH = 256;

/** Test accuracy groups by training samples per class (the thresholds of Liu et al. 2019, ImageNet-LT). */
export const SHOTS = [
  { name: "head", rule: "> 100", test: (n: number) => n > 100 },
  { name: "medium", rule: "20-100", test: (n: number) => n >= 20 && n <= 100 },
  { name: "tail", rule: "< 20", test: (n: number) => n < 20 },
] as const;

const mat = (data: Float32Array, rows: number, cols: number): Matrix => ({ data, shape: [rows, cols] });

/** One method: its network, its loss and gradients from a forward pass, and its prediction. */
export interface Method {
  name: string;
  experts: number;
  lr: number;
  loss(fw: Forward, labels: Int32Array, model: Model): { loss: number; grads: OutputGrads };
  predict(fw: Forward): Int32Array;
}

function argmaxRows(z: Float32Array, n: number, c: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let j = 1; j < c; j++) if (z[i * c + j] > z[i * c + best]) best = j;
    out[i] = best;
  }
  return out;
}

/**
 * Logit adjustment (Menon et al. 2021, "Long-tail learning via logit adjustment"; Ren et
 * al. 2020's balanced softmax at tau = 1): the loss sees `z + tau log prior`, a constant
 * shift (the gradient w.r.t. z is unchanged), while the prediction uses z itself, which
 * thereby learns the class-balanced posterior. tau = 0 is the plain loss.
 */
export function adjusted(z: Float32Array, n: number, logPrior: Float64Array, tau: number): Float32Array {
  if (tau === 0) return z;
  const c = logPrior.length, out = new Float32Array(z.length);
  for (let i = 0; i < n; i++) for (let j = 0; j < c; j++) out[i * c + j] = z[i * c + j] + tau * logPrior[j];
  return out;
}

/** The log of each class's share of the training set. */
export function logPrior(data: LongTailData): Float64Array {
  return Float64Array.from(data.counts, (n) => Math.log(n / data.train.n));
}

/** Cross-entropy on a single head (plain with tau = 0, logit-adjusted otherwise). */
export function crossEntropyMethod(data: LongTailData, lr: number, tau = 0): Method {
  const c = NET.classes, prior = logPrior(data);
  return {
    name: tau ? "CE + LA" : "CE",
    experts: 1,
    lr,
    loss(fw, labels) {
      const logits = mat(adjusted(fw.expertLogits[0], fw.n, prior, tau), fw.n, c);
      const r = wasm.crossEntropy.valueAndGrad({ logits, labels });
      return { loss: r.loss, grads: { expertLogits: [r.grads.logits.data] } };
    },
    predict: (fw) => argmaxRows(fw.expertLogits[0], fw.n, c),
  };
}

/**
 * The rule matrix from the group structure: 1 for a class with itself, `within` for two
 * classes of one group, 0 across groups.
 */
export function groupRule(fineToCoarse: Int32Array, within: number): Float32Array {
  const c = fineToCoarse.length, rule = new Float32Array(c * c);
  for (let i = 0; i < c; i++) {
    for (let j = 0; j < c; j++) rule[i * c + j] = i === j ? 1 : fineToCoarse[i] === fineToCoarse[j] ? within : 0;
  }
  return rule;
}

/** Settings of the physMoe method. */
export interface PhysMoeSettings {
  experts: number;
  lr: number;
  /** The logit adjustment of each expert (see `adjusted`). */
  tau: number[];
  /** Rule value of two classes of one group. */
  within: number;
  /** physMoe's options (tail experts, weights, gamma, ...). */
  options: PhysMoeOptions;
}

/**
 * physMoe on the gated experts, the coarse head, the features and the centres. With the
 * same tau for every expert, the gated ensemble (gating rows sum to 1) is the adjusted
 * ensemble `sum_e g_e z_e + tau log prior`, so the hierarchical term is adjusted too.
 */
export function physMoeMethod(data: LongTailData, s: PhysMoeSettings): Method {
  const { classes: c, groups: k, features: d } = NET, e = s.experts;
  const rule = mat(groupRule(data.fineToCoarse, s.within), c, c), prior = logPrior(data);
  return {
    name: s.tau.some((t) => t !== 0) ? "physMoe + LA" : "physMoe",
    experts: e,
    lr: s.lr,
    loss(fw, labels, model) {
      const n = fw.n;
      const r = wasm.physMoe.valueAndGrad({
        features: mat(fw.f, n, d),
        coarse: mat(fw.coarse!, n, k),
        expertLogits: fw.expertLogits.map((z, j) => mat(adjusted(z, n, prior, s.tau[j]), n, c)),
        gating: mat(fw.gating!, n, e),
        labels,
        rule,
        fineToCoarse: data.fineToCoarse,
        centers: mat(model.centers, c, d),
      }, s.options);
      model.gCenters.set(r.grads.centers.data);
      return {
        loss: r.loss,
        grads: {
          features: r.grads.features.data,
          expertLogits: r.grads.expertLogits.map((g) => g.data),
          gating: r.grads.gating.data,
          coarse: r.grads.coarse.data,
        },
      };
    },
    predict(fw) {
      // The gated ensemble of the unadjusted expert logits.
      const { n, gating } = fw, fine = new Float32Array(n * c);
      fw.expertLogits.forEach((z, j) => {
        for (let i = 0; i < n; i++) for (let l = 0; l < c; l++) fine[i * c + l] += gating![i * e + j] * z[i * c + l];
      });
      return argmaxRows(fine, n, c);
    },
  };
}

/** Rows `order[start .. start + n)` of a split. */
function batch(split: Split, order: Int32Array, start: number, n: number) {
  const d = NET.inputs, x = new Float32Array(n * d), labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const r = order[start + i];
    x.set(split.x.subarray(r * d, (r + 1) * d), i * d);
    labels[i] = split.labels[r];
  }
  return { x, labels };
}

/** What `train` reports after every step. */
export interface Progress {
  epoch: number;
  step: number;
  steps: number;
  /** Mean loss of the epoch so far. */
  loss: number;
  examplesPerSecond: number;
}

/** Trains a fresh model with a method: `epochs` passes over the shuffled training set. */
export function train(
  method: Method,
  data: LongTailData,
  epochs: number,
  seed: number,
  onProgress: (p: Progress) => void = () => {},
): { model: Model; seconds: number } {
  const rng = new Rng(seed);
  const model = new Model({ ...NET, experts: method.experts }, rng);
  const adam = new Adam(model.params(), method.lr);
  const n = data.train.n, steps = Math.ceil(n / BATCH), t0 = performance.now();
  for (let epoch = 1; epoch <= epochs; epoch++) {
    const order = rng.permutation(n), start = performance.now();
    let sum = 0;
    for (let step = 0; step < steps; step++) {
      const rows = Math.min(BATCH, n - step * BATCH);
      const { x, labels } = batch(data.train, order, step * BATCH, rows);
      const fw = model.forward(x, rows);
      const { loss, grads } = method.loss(fw, labels, model);
      model.backward(fw, grads);
      adam.step();
      sum += loss;
      const seconds = (performance.now() - start) / 1000;
      onProgress({
        epoch,
        step: step + 1,
        steps,
        loss: sum / (step + 1),
        examplesPerSecond: (step * BATCH + rows) / seconds,
      });
    }
  }
  return { model, seconds: (performance.now() - t0) / 1000 };
}

/** Top-1 accuracy (%) on the test set for each of SHOTS, then overall. */
export function evaluate(method: Method, model: Model, data: LongTailData): number[] {
  const { x, labels, n } = data.test, predicted = method.predict(model.forward(x, n));
  const hits = [0, 0, 0, 0], totals = [0, 0, 0, 0];
  for (let i = 0; i < n; i++) {
    const g = SHOTS.findIndex((s) => s.test(data.counts[labels[i]]));
    const hit = predicted[i] === labels[i] ? 1 : 0;
    hits[g] += hit, totals[g]++, hits[3] += hit, totals[3]++;
  }
  return hits.map((h, i) => (100 * h) / totals[i]);
}
