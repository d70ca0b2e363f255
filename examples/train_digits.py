#!/usr/bin/python3
"""Trains a small network on scikit-learn's bundled digits (no download)
three ways — AdamW, DashShampoo computing its roots in process, and
DashShampoo refreshing its roots through dashd — and prints a table.

    /usr/bin/python3 examples/train_digits.py [--socket PATH] [--steps N]
        [--plot FILE.png]

With no --socket the libdash default is used ($DASHD_SOCKET, ...). The
test split is only evaluated, never tuned on.
"""

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "bindings", "python"))
import dash  # noqa: E402
from dash.optim import DashShampoo  # noqa: E402


def data(seed=0):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    to = lambda a, t: torch.from_numpy(a).to(t)  # noqa: E731
    return (to(x[:split], torch.float32), to(y[:split], torch.long),
            to(x[split:], torch.float32), to(y[split:], torch.long))


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 10))


def run(name, make_opt, steps, batch, xtr, ytr, xte, yte):
    net = model()
    opt = make_opt(net.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(1)
    losses, step_ms = [], []
    for step in range(steps):
        idx = torch.randint(0, len(xtr), (batch,), generator=g)
        loss = loss_fn(net(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        t0 = time.perf_counter()
        opt.step()
        step_ms.append(1e3 * (time.perf_counter() - t0))
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            print("  %-22s step %4d  loss %.4f" % (name, step, loss.item()),
                  flush=True)
    with torch.no_grad():
        train_loss = loss_fn(net(xtr), ytr).item()
        acc = (net(xte).argmax(1) == yte).float().mean().item()
    stats = getattr(opt, "stats", lambda: {})()
    return {"name": name, "losses": losses, "train_loss": train_loss,
            "test_acc": acc, "step_ms": float(np.mean(step_ms)), **stats}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--socket", help="dashd's socket (default: libdash's)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--plot", help="save the loss curves to this PNG")
    args = ap.parse_args()
    xtr, ytr, xte, yte = data()
    socket = args.socket or dash.default_socket_path()
    nowhere = os.path.join("/nonexistent", "dashd.sock")

    runs = []
    print("AdamW")
    runs.append(run("AdamW", lambda p: torch.optim.AdamW(p, lr=args.lr),
                    args.steps, args.batch, xtr, ytr, xte, yte))
    print("DashShampoo, roots in process")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs.append(run("DashShampoo in process",
                        lambda p: DashShampoo(p, lr=args.lr,
                                              socket_path=nowhere),
                        args.steps, args.batch, xtr, ytr, xte, yte))
    print("DashShampoo through dashd at %s" % socket)
    runs.append(run("DashShampoo via dashd",
                    lambda p: DashShampoo(p, lr=args.lr, socket_path=socket),
                    args.steps, args.batch, xtr, ytr, xte, yte))

    cols = ("optimizer", "train loss", "test acc", "step ms", "wait ms",
            "refreshes", "staleness")
    print()
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in runs:
        fmt = lambda k, f: (f % r[k]) if k in r and r[k] is not None else "-"  # noqa: E731,E501
        print("| %s | %.4f | %.3f | %.2f | %s | %s | %s |" % (
            r["name"], r["train_loss"], r["test_acc"], r["step_ms"],
            fmt("wait_ms", "%.1f"), fmt("refreshes", "%d"),
            fmt("mean_staleness", "%.1f")))
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4))
        for r in runs:
            k = 10
            smooth = np.convolve(r["losses"], np.ones(k) / k, mode="valid")
            ax.plot(np.arange(len(smooth)) + k - 1, smooth, label=r["name"])
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (mean of 10 steps)")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print("loss curves saved to %s" % args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
