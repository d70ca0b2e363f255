"""DASH / blocked Shampoo for PyTorch, with the inverse roots from dashd.

``DashShampoo`` is a ``torch.optim.Optimizer`` implementing the step of DASH
(arXiv 2602.02016) and Distributed Shampoo: blocked Shampoo with Adam
grafting, decoupled weight decay and optional Nesterov momentum, whose
inverse fourth roots L^(-1/4), R^(-1/4) are computed by dashd (or, without a
daemon, in this process by the same library through :func:`dash.roots`).

The step, for a parameter W of 2 or more dimensions (reshaped to
``(shape[0], prod(shape[1:]))``) with gradient G, at step t:

* ``G̃ = β1·G̃ + (1−β1)·G`` (also Adam's first moment),
  ``V = β2·V + (1−β2)·G²`` (Adam's second moment);
* W is cut into ``block_size × block_size`` blocks (smaller blocks at the
  right and bottom edges); per block ``L = β2·L + (1−β2)·G Gᵀ`` and
  ``R = β2·R + (1−β2)·Gᵀ G`` (float32);
* every ``precondition_frequency`` steps (at t = 1, 1+f, 1+2f, ...) the
  statistics of every block are sent to dashd and the roots it computes are
  adopted as they arrive (``async_refresh=True``: the step never waits,
  unless the adopted roots are more than ``max_staleness`` steps old);
* per block ``P = L^(-1/p) · X · R^(-1/p)`` with X = G̃, or with Nesterov
  ``X = β1·G̃ + (1−β1)·G``; P is grafted onto Adam: rescaled to the Frobenius
  norm of the block's bias-corrected Adam update
  ``A = m̂ / (sqrt(v̂) + eps)`` (with Nesterov, m̂ is the Nesterov numerator
  above, bias-corrected);
* ``W ← W·(1 − lr·weight_decay) − lr·P``.

Until the first roots are adopted (and before ``start_preconditioning_step``)
the update is the Adam update A itself. Parameters of fewer than 2
dimensions get AdamW with the same hyper-parameters.

Layout in dashd: one stack per distinct block size, holding the L *and* R
factors of every block of every parameter that have that size (a full
128-block contributes its L and R to the 128-stack; an edge block of
128 × 37 contributes L to the 128-stack and R to the 37-stack).

Ridge: the library adds its ε (``eps`` option) as an absolute value, the
same for every block of a stack, while statistics of different layers differ
by orders of magnitude. The optimizer therefore adds a *relative* ridge
``matrix_eps · trace(L)/b · I`` to each factor as it copies it into the stack
(the stored statistics stay untouched), and passes ``matrix_eps`` as the
library's absolute ε as well, which only matters for all-zero blocks (it
keeps them finite). With the default ``matrix_eps = 1e-10`` the relative
ridge is below float32 resolution and changes nothing; raise it (1e-6 ..
1e-4) for statistics of low rank.

Fallback: if no daemon answers at construction, the roots are computed in
this process with :func:`dash.roots` (same options; one warning). If the
daemon goes away during training, the optimizer warns once, keeps the last
adopted roots (it does not switch to in-process computation: the trainer
chose a daemon so as not to spend its own CPU on roots), and tries to
reconnect, re-creating its stacks, at every refresh step.

The state (G̃, V, L, R, the current roots, the step and the step of the
adopted roots) lives in the standard per-parameter state dicts, so
``state_dict()`` / ``load_state_dict()`` round-trip it; the stacks are
re-created lazily at the next refresh.

Determinism: with ``async_refresh=False`` the daemon path and the in-process
path run the same library with the same options on the same stacked
statistics, so they give the same parameters.
"""

import math
import time
import warnings

import numpy as np
import torch

import dash as _dash

__all__ = ["DashShampoo"]


class _Block:
    """One block of a parameter: rows r0:r1, columns c0:c1; its L factor is
    entry ``li`` of the stack of size r1−r0, its R factor entry ``ri`` of the
    stack of size c1−c0."""

    __slots__ = ("r0", "r1", "c0", "c1", "li", "ri")

    def __init__(self, r0, r1, c0, c1):
        self.r0, self.r1, self.c0, self.c1 = r0, r1, c0, c1
        self.li = self.ri = -1


class DashShampoo(torch.optim.Optimizer):
    """Blocked Shampoo (DASH) with Adam grafting; roots from dashd.

    See the module documentation for the algorithm and the fallbacks.

    Attributes for monitoring: ``refreshes`` (root sets adopted so far),
    ``generation`` (the generation of the last adopted daemon result),
    ``in_process`` (roots are computed in this process), ``connected``
    (a daemon connection is up), ``last_info`` (the last RefreshInfo or
    list of per-stack infos).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
                 weight_decay=0.0, block_size=128, root=4,
                 precondition_frequency=10, start_preconditioning_step=1,
                 matrix_eps=1e-10, nesterov=False, async_refresh=True,
                 max_staleness=None, socket_path=None, method="ndb",
                 max_steps=10):
        if lr < 0.0:
            raise ValueError("invalid lr %r" % (lr,))
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError("invalid betas %r" % (betas,))
        if eps < 0.0 or weight_decay < 0.0 or matrix_eps < 0.0:
            raise ValueError("eps, weight_decay and matrix_eps must be >= 0")
        if int(block_size) < 1 or int(precondition_frequency) < 1:
            raise ValueError("block_size and precondition_frequency must "
                             "be >= 1")
        if max_staleness is not None and max_staleness < 0:
            raise ValueError("max_staleness must be None or >= 0")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps,
                        weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)
        self.block_size = int(block_size)
        self.root = int(root)
        self.precondition_frequency = int(precondition_frequency)
        self.start_preconditioning_step = int(start_preconditioning_step)
        self.matrix_eps = float(matrix_eps)
        self.async_refresh = bool(async_refresh)
        self.max_staleness = max_staleness
        self.socket_path = socket_path
        self.method = method
        self.max_steps = int(max_steps)

        self.refreshes = 0
        self.generation = None
        # For reports: time spent in calls to the daemon, and the age of
        # the roots used, summed over the steps that had roots.
        self.wait_ms = 0.0
        self._adopted_sizes = set()  # stacks adopted since the last refresh
        self._staleness_sum = 0
        self._staleness_steps = 0
        self.last_info = None
        self._layout = None          # param -> [_Block], size -> count
        self._stacks = None          # size -> dash Stack
        self._client = None
        self._pending_step = None    # step of the stats sent, not adopted
        self._warned_disconnect = False
        self.in_process = False
        try:
            self._client = _dash.Client(socket_path=socket_path)
        except _dash.DisconnectedError as e:
            self.in_process = True
            warnings.warn("DashShampoo: no dashd reachable (%s); computing "
                          "the inverse roots in this process" % (e,),
                          RuntimeWarning, stacklevel=2)

    # ----------------------------------------------------------- layout --

    def _matrix_params(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() >= 2:
                    yield p

    def _build_layout(self):
        b = self.block_size
        blocks = {}
        counts = {}
        for p in self._matrix_params():
            m = p.shape[0]
            n = p.numel() // m
            bl = []
            for r0 in range(0, m, b):
                r1 = min(r0 + b, m)
                for c0 in range(0, n, b):
                    c1 = min(c0 + b, n)
                    blk = _Block(r0, r1, c0, c1)
                    blk.li = counts.get(r1 - r0, 0)
                    counts[r1 - r0] = blk.li + 1
                    blk.ri = counts.get(c1 - c0, 0)
                    counts[c1 - c0] = blk.ri + 1
                    bl.append(blk)
            blocks[p] = bl
        self._layout = (blocks, counts)

    def _init_state(self, p):
        st = self.state[p]
        st["step"] = 0
        st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        st["exp_avg_sq"] = torch.zeros_like(p,
                                            memory_format=torch.preserve_format)
        if p.dim() >= 2:
            blocks = self._layout[0][p]
            kw = dict(dtype=torch.float32, device=p.device)
            st["L"] = [torch.zeros(k.r1 - k.r0, k.r1 - k.r0, **kw)
                       for k in blocks]
            st["R"] = [torch.zeros(k.c1 - k.c0, k.c1 - k.c0, **kw)
                       for k in blocks]
            st["L_root"] = [torch.eye(k.r1 - k.r0, **kw) for k in blocks]
            st["R_root"] = [torch.eye(k.c1 - k.c0, **kw) for k in blocks]
            st["roots_step"] = -1    # step of the adopted roots; -1: none

    # ------------------------------------------------------- the stacks --

    def _options(self):
        return dict(root=self.root, method=self.method, scaling="pi",
                    max_steps=self.max_steps, tol=1e-3, eps=self.matrix_eps,
                    fallback="diverged")

    def _fill(self, size, out):
        """Writes the (ridged) statistics of every factor of ``size`` into
        the float32 torch tensor ``out`` of shape (count, size, size)."""
        blocks = self._layout[0]
        for p, bl in blocks.items():
            st = self.state.get(p, {})
            if "L" not in st:
                for blk in bl:
                    if blk.r1 - blk.r0 == size:
                        out[blk.li].zero_()
                    if blk.c1 - blk.c0 == size:
                        out[blk.ri].zero_()
                continue
            for k, blk in enumerate(bl):
                if blk.r1 - blk.r0 == size:
                    self._ridged(st["L"][k], out[blk.li])
                if blk.c1 - blk.c0 == size:
                    self._ridged(st["R"][k], out[blk.ri])

    def _ridged(self, f, dst):
        dst.copy_(f)
        if self.matrix_eps > 0.0:
            ridge = self.matrix_eps * float(torch.trace(f)) / f.shape[0]
            if ridge > 0.0:
                dst.diagonal().add_(ridge)

    def _adopt(self, size, result, step):
        """Copies the roots of stack ``size`` (numpy or torch, (N,b,b)) into
        the root tensors; ``step`` is the step of their statistics."""
        res = torch.as_tensor(np.array(result, dtype=np.float32, copy=True))
        blocks = self._layout[0]
        for p, bl in blocks.items():
            st = self.state.get(p, {})
            if "L_root" not in st:
                continue
            for k, blk in enumerate(bl):
                if blk.r1 - blk.r0 == size:
                    st["L_root"][k].copy_(res[blk.li])
                if blk.c1 - blk.c0 == size:
                    st["R_root"][k].copy_(res[blk.ri])
                st["roots_step"] = max(st["roots_step"], step)

    def _open_stacks(self):
        counts = self._layout[1]
        stacks = {}
        try:
            for size in sorted(counts):
                stacks[size] = self._client.create_stack(
                    counts[size], size, precision="fp32", **self._options())
        except BaseException:
            for s in stacks.values():
                try:
                    s.close()
                except Exception:
                    pass
            raise
        self._stacks = stacks

    def _drop_connection(self, err):
        if not self._warned_disconnect:
            self._warned_disconnect = True
            warnings.warn("DashShampoo: lost dashd (%s); keeping the last "
                          "roots and retrying every %d steps"
                          % (err, self.precondition_frequency),
                          RuntimeWarning, stacklevel=3)
        self._close_connection()

    def _close_stacks(self):
        for s in (self._stacks or {}).values():
            try:
                s.close()
            except Exception:
                pass
        self._stacks = None

    def _close_connection(self):
        self._close_stacks()
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass
        self._client = None
        self._pending_step = None

    @property
    def connected(self):
        return self._client is not None

    def _refresh(self, step):
        """Sends the statistics (daemon) or computes the roots (in
        process)."""
        counts = self._layout[1]
        if not counts:
            return
        if self.in_process:
            infos = []
            for size in sorted(counts):
                buf = torch.empty(counts[size], size, size,
                                  dtype=torch.float32)
                self._fill(size, buf)
                x, info = _dash.roots(buf.numpy(), threads=0,
                                      **self._options())
                self._adopt(size, x, step)
                infos.append(info)
            self.refreshes += 1
            self.last_info = infos
            return
        t0 = time.perf_counter()
        try:
            if self._client is None:
                self._client = _dash.Client(socket_path=self.socket_path)
            if self._stacks is None:
                self._open_stacks()
            for size, s in self._stacks.items():
                self._fill(size, torch.from_numpy(s.stats))
            for s in self._stacks.values():
                s.step(step)
            self._pending_step = step
            self._adopted_sizes = set()
            if not self.async_refresh:
                self._poll(step, wait=True)
        except _dash.DisconnectedError as e:
            self._drop_connection(e)
        finally:
            self.wait_ms += 1e3 * (time.perf_counter() - t0)

    def _poll(self, step, wait):
        """Adopts what each stack has finished. Stacks adopt on their own:
        every block's roots come from one consistent snapshot of its own
        statistics, so waiting for the slowest stack would only stall the
        trainer while the daemon computes the others."""
        if self._stacks is None or self._pending_step is None:
            return
        for size, s in self._stacks.items():
            if size in self._adopted_sizes:
                continue
            info = s.sync(timeout_ms=-1 if wait else 0)
            if info.adopted:
                self._adopt(size, s.result, info.step)
                self._adopted_sizes.add(size)
                self.generation = info.generation
                self.last_info = info
        if len(self._adopted_sizes) == len(self._stacks):
            self._pending_step = None
            self._adopted_sizes = set()
            self.refreshes += 1

    # ------------------------------------------------------------- step --

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._layout is None:
            self._build_layout()

        # Statistics and moments.
        t = None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("DashShampoo does not support sparse "
                                       "gradients")
                st = self.state[p]
                if len(st) == 0:
                    self._init_state(p)
                st["step"] += 1
                t = st["step"] if t is None else max(t, st["step"])
                g = p.grad
                st["exp_avg"].mul_(beta1).add_(g, alpha=1 - beta1)
                st["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                if p.dim() >= 2:
                    g2 = g.reshape(p.shape[0], -1).float()
                    for k, blk in enumerate(self._layout[0][p]):
                        gb = g2[blk.r0:blk.r1, blk.c0:blk.c1]
                        st["L"][k].mul_(beta2).addmm_(gb, gb.t(),
                                                      alpha=1 - beta2)
                        st["R"][k].mul_(beta2).addmm_(gb.t(), gb,
                                                      alpha=1 - beta2)
        if t is None:
            return loss

        # Roots: refresh, adopt, bound the staleness.
        if (t - 1) % self.precondition_frequency == 0:
            self._refresh(t)
        if not self.in_process and self._stacks is not None:
            t0 = time.perf_counter()
            try:
                self._poll(t, wait=False)
                if (self.max_staleness is not None
                        and self._pending_step is not None
                        and t - self._roots_step() > self.max_staleness):
                    self._poll(t, wait=True)
            except _dash.DisconnectedError as e:
                self._drop_connection(e)
            finally:
                self.wait_ms += 1e3 * (time.perf_counter() - t0)
        if self._roots_step() >= 0:
            self._staleness_sum += t - self._roots_step()
            self._staleness_steps += 1

        # Updates.
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            eps, wd = group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                step = st["step"]
                g = p.grad
                if group["nesterov"]:
                    m = st["exp_avg"].mul(beta1).add_(g, alpha=1 - beta1)
                else:
                    m = st["exp_avg"]
                bc1 = 1 - beta1 ** step
                bc2 = 1 - beta2 ** step
                adam = (m / bc1).div_((st["exp_avg_sq"] / bc2).sqrt_().add_(eps))
                if (p.dim() >= 2 and st["roots_step"] >= 0
                        and step >= self.start_preconditioning_step):
                    upd = self._precondition(p, st, m, adam)
                else:
                    upd = adam
                if wd != 0.0:
                    p.mul_(1 - lr * wd)
                p.add_(upd.reshape(p.shape), alpha=-lr)
        return loss

    def _roots_step(self):
        for p in self._matrix_params():
            if p in self.state and "roots_step" in self.state[p]:
                return self.state[p]["roots_step"]
        return -1

    def _precondition(self, p, st, m, adam):
        m2 = m.reshape(p.shape[0], -1).float()
        a2 = adam.reshape(p.shape[0], -1)
        out = torch.empty_like(a2)
        for k, blk in enumerate(self._layout[0][p]):
            rs, cs = slice(blk.r0, blk.r1), slice(blk.c0, blk.c1)
            pb = st["L_root"][k] @ m2[rs, cs] @ st["R_root"][k]
            ab = a2[rs, cs]
            pn = float(torch.linalg.norm(pb))
            an = float(torch.linalg.norm(ab))
            if pn > 0.0 and math.isfinite(pn):
                out[rs, cs] = pb.mul_(an / pn).to(out.dtype)
            else:
                out[rs, cs] = ab
        return out

    # ------------------------------------------------------ persistence --

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        # Stacks and layout are rebuilt lazily; a refresh sent before the
        # load belongs to other statistics.
        self._close_stacks()
        self._pending_step = None
        self._layout = None
        self._build_layout()

    def stats(self):
        """What a training report wants: refreshes adopted, milliseconds
        spent in calls to the daemon, and the mean age in steps of the
        roots used."""
        mean = (self._staleness_sum / self._staleness_steps
                if self._staleness_steps else None)
        return {"refreshes": self.refreshes, "wait_ms": self.wait_ms,
                "mean_staleness": mean}

    def close(self):
        """Closes the stacks and the daemon connection."""
        self._close_connection()

    def __del__(self):
        try:
            self._close_connection()
        except Exception:
            pass
