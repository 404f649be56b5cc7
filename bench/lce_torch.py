"""PyTorch CPU beside bench/lce_bench.ts: F.linear + F.cross_entropy, forward and backward
(gradients w.r.t. x and W), float32, 2 threads, the same shapes; prints seconds per call (median
of the rounds). What a PyTorch user runs for linearCrossEntropy's defaults.

    /usr/bin/python3 bench/lce_torch.py 1024x1024x32000 256x2048x128256
"""
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)


def one(n, d, v, rounds=3):
    g = torch.Generator().manual_seed(v + d)
    x = (torch.rand(n, d, generator=g) * 2 - 1).requires_grad_()
    W = ((torch.rand(v, d, generator=g) * 2 - 1) * 0.05).requires_grad_()
    y = torch.randint(0, v, (n,), generator=g)
    times = []
    for _ in range(rounds + 1):
        t = time.perf_counter()
        loss = F.cross_entropy(F.linear(x, W), y)
        gx, gW = torch.autograd.grad(loss, [x, W])
        times.append(time.perf_counter() - t)
    times = sorted(times[1:])
    return times[len(times) // 2], loss.item()


if __name__ == "__main__":
    print("torch", torch.__version__, "threads", torch.get_num_threads())
    for s in sys.argv[1:]:
        n, d, v = map(int, s.split("x"))
        sec, loss = one(n, d, v)
        print("%s: %.3f s per call (loss %.6f)" % (s, sec, loss))
