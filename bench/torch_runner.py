"""PyTorch beside the benchmarks: a persistent process that bench/torch.ts drives over stdin/stdout.

Each request is one JSON line; each reply one JSON line. Requests:

  {"op": "setup", "case": NAME, "mode": MODE, "threads": T, "inputs": {KEY: {"file", "shape", "dtype"}},
   "options": {...}}                      -> {"loss": float}      (one call, to check the value)
  {"op": "time", "reps": K}               -> {"seconds": float, "loss": float}  (K calls, timed here)
  {"op": "info"}                          -> {"torch": version, "blas": ..., "threads": ...}

The inputs are raw little-endian files written by the caller (float32 / int32). The cases run in
float32 as users train: MODE "valueAndGrad" (forward + backward, gradients of every float input),
"forward" (under no_grad). Timing happens here, so the pipe's latency is not in the figures.
"""
import json, math, sys, time

import numpy as np
import torch
import torch.nn.functional as F


def arcface_logits(cos, labels, scale, margin):
    c = cos.clamp(-1, 1)
    cy = c.gather(1, labels[:, None])
    sin = (1 - cy * cy).clamp_min(0).sqrt()
    phi = cy * math.cos(margin) - sin * math.sin(margin)
    th, mm = math.cos(math.pi - margin), math.sin(math.pi - margin) * margin
    phi = torch.where(cy > th, phi, cy - mm)
    return scale * c.scatter(1, labels[:, None], phi)


def case_cross_entropy(t, o):
    return F.cross_entropy(t["logits"], t["labels"], label_smoothing=o.get("labelSmoothing", 0.0))


def case_margin_head(t, o):
    xn = F.normalize(t["x"], dim=1)
    wn = F.normalize(t["W"], dim=1)
    logits = arcface_logits(xn @ wn.T, t["labels"], o.get("scale", 64.0), o.get("margin", 0.5))
    return F.cross_entropy(logits, t["labels"])


def case_linear_cross_entropy(t, o):
    return F.cross_entropy(F.linear(t["x"], t["W"], t.get("bias")), t["labels"],
                           label_smoothing=o.get("labelSmoothing", 0.0))


def case_clip(t, o):
    logits = o["scale"] * t["a"] @ t["b"].T
    target = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def case_siglip(t, o):
    n = t["a"].shape[0]
    z = 2 * torch.eye(n) - 1
    logits = o["scale"] * t["a"] @ t["b"].T + o["bias"]
    return -F.logsigmoid(z * logits).sum() / n


CASES = {"crossEntropy": case_cross_entropy, "marginHead": case_margin_head,
         "linearCrossEntropy": case_linear_cross_entropy, "clip": case_clip, "siglip": case_siglip}


def load(spec):
    data = np.fromfile(spec["file"], dtype=np.float32 if spec["dtype"] == "float32" else np.int32)
    t = torch.from_numpy(data.reshape(spec["shape"]))
    return t.long() if spec["dtype"] == "int32" else t


def main():
    state = {}
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "info":
                cfg = torch.__config__.show()
                blas = [p.split("=")[1] for p in cfg.replace(",", " ").split() if p.startswith("BLAS_INFO=")]
                lib = "?"
                for line in open("/proc/self/maps"):
                    if "blas" in line and ".so" in line:
                        lib = line.split()[-1]
                        break
                capability = [l.split(":")[1].strip() for l in cfg.splitlines() if "CPU capability" in l]
                model = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
                reply = {"torch": torch.__version__, "blas": f"{blas[0] if blas else '?'}: {lib}",
                         "cpu": f"{model[0] if model else '?'}, {capability[0] if capability else '?'} kernels"}
            elif req["op"] == "setup":
                torch.set_num_threads(req["threads"])
                t = {k: load(s) for k, s in req["inputs"].items()}
                fn, o, grad = CASES[req["case"]], req.get("options", {}), req["mode"] == "valueAndGrad"
                leaves = [v for v in t.values() if v.is_floating_point()]

                def call():
                    if not grad:
                        with torch.no_grad():
                            return fn(t, o).item()
                    for v in leaves:
                        v.requires_grad_(True)
                        v.grad = None
                    loss = fn(t, o)
                    loss.backward()
                    return loss.item()

                state = {"call": call}
                reply = {"loss": call()}
            elif req["op"] == "time":
                call, t0 = state["call"], time.perf_counter()
                for _ in range(req["reps"]):
                    loss = call()
                reply = {"seconds": time.perf_counter() - t0, "loss": loss}
            else:
                reply = {"error": f"unknown op {req['op']}"}
        except Exception as e:  # the benchmark reports it as the contender's failure
            reply = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
