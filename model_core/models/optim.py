"""Adagrad with momentum, for dense and sparse gradients (GRU4Rec's optimiser).

Per parameter: ``acc += g**2``; ``step = g / sqrt(acc + eps)``; with ``momentum > 0``
``mom = momentum * mom - lr * step`` and ``p += mom``, else ``p -= lr * step``. A sparse
gradient (an embedding built with ``sparse=True``) updates only the rows it touches, so
the rows of items absent from a batch keep their accumulators and momentum unchanged
(Hidasi & Karatzoglou, 2018, train GRU4Rec this way).
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class AdagradM(Optimizer):
    def __init__(self, params, lr: float = 0.05, momentum: float = 0.0, eps: float = 1e-6) -> None:
        if lr <= 0.0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        if momentum < 0.0 or momentum >= 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if eps <= 0.0:
            raise ValueError(f"eps must be > 0, got {eps}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "eps": eps})

    def _state(self, p: torch.Tensor, momentum: float) -> dict:
        st = self.state[p]
        if not st:
            st["acc"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if momentum > 0:
                st["mom"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return st

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu, eps = group["lr"], group["momentum"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                st = self._state(p, mu)
                if g.is_sparse:
                    g = g.coalesce()  # unique rows: the update is not linear in g
                    rows, vals = g.indices()[0], g.values()
                    # index_select, not rows[...] indexing, and the square root in place on
                    # the gathered copy: the same values, a third less time per step
                    acc = st["acc"].index_select(0, rows) + vals * vals
                    st["acc"].index_copy_(0, rows, acc)
                    upd = vals / acc.add_(eps).sqrt_()
                    if mu > 0:
                        m = st["mom"].index_select(0, rows).mul_(mu).add_(upd, alpha=-lr)
                        st["mom"].index_copy_(0, rows, m)
                        p.index_add_(0, rows, m)
                    else:
                        p.index_add_(0, rows, upd, alpha=-lr)
                else:
                    st["acc"].addcmul_(g, g)
                    denom = st["acc"].add(eps).sqrt_()
                    if mu > 0:
                        st["mom"].mul_(mu).addcdiv_(g, denom, value=-lr)
                        p.add_(st["mom"])
                    else:
                        p.addcdiv_(g, denom, value=-lr)
        return loss
