"""The device-side step guard (pyro_vae.training.guard): a bad step changes nothing."""

from __future__ import annotations

import pytest
import torch

from pyro_vae.training.guard import StepGuard, fused_adam


@pytest.mark.parametrize("fused", [True, False])
def test_guard_makes_a_bad_step_a_no_op(fused: bool) -> None:
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5))
    opt = fused_adam([p], 0.1) if fused else torch.optim.SGD([p], lr=0.1, momentum=0.9)
    assert bool(opt.defaults.get("fused")) == fused
    guard = StepGuard(opt, "skip")
    for value in (1.0, float("nan"), 2.0, float("inf")):
        before_p = p.detach().clone()
        before_state = {k: v.clone() for k, v in opt.state[p].items()} if p in opt.state else {}
        loss = (p * value).sum()
        opt.zero_grad()
        loss.backward()
        guard.step(guard.check(loss))
        if value != value or value == float("inf"):
            assert torch.equal(p.detach(), before_p)
            for k, v in before_state.items():
                assert torch.equal(opt.state[p][k], v)
        else:
            assert not torch.equal(p.detach(), before_p)
    assert guard.poll() == (2, 2)
