r"""Which term of the ELBO went non-finite first, and where: the report on a bad step.

The training loss is a Monte Carlo estimate of :math:`-\mathrm{ELBO}`, a sum over sites,

.. math::

    \mathrm{ELBO}(x) = \sum_{\text{observed } s} \log p(x_s \mid z)
        - \sum_{\text{latent } s} \bigl(\log q(z_s \mid x) - \log p(z_s)\bigr),

the reconstruction of each observed site and the (Monte Carlo) KL of each latent site.
:func:`explain_step` recomputes one step on a given batch and walks through these in the
order the program computes them: for each latent site the guide's distribution, its sample
and :math:`\log q`, then for each model site its distribution and log density; the first
non-finite quantity names the term and the site. When every value is finite it checks the
gradient of each term separately, in the same order. Nothing here runs in the training
loop; the trainer calls it once, after training stopped, on the recorded step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pyro_vae.infer.decomposition import traces

__all__ = ["StepReport", "explain_step"]


@dataclass
class StepReport:
    """The outcome of :func:`explain_step`.

    ``term`` is ``"reconstruction"`` or ``"kl"`` (None if no term was found non-finite),
    ``site`` the Pyro site, ``stage`` ``"value"``, ``"gradient"``, ``"parameters"`` or
    ``"none"``, and ``detail`` a sentence saying what was non-finite.
    """

    loss_finite: bool
    grad_finite: bool
    term: str | None = None
    site: str | None = None
    stage: str = "none"
    detail: str = ""
    bad_params: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One or two sentences for an error message."""
        if self.stage == "parameters":
            return f"Recomputed: {self.detail}."
        if self.loss_finite and self.grad_finite and self.term is None:
            return (
                "Recomputed, the step was finite (on a GPU, non-deterministic kernels can "
                "make a recomputation differ)."
            )
        what = "the loss" if not self.loss_finite else "the gradient (the loss was finite)"
        if self.term is None:
            return f"Recomputed, {what} was non-finite; {self.detail}."
        name = "the reconstruction term" if self.term == "reconstruction" else "the KL term"
        return (
            f"Recomputed, {what} was non-finite; the first non-finite quantity is in {name} "
            f"at site {self.site!r}: {self.detail}."
        )


def _base(fn: Any) -> Any:
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def _bad_arguments(fn: Any) -> list[str]:
    """Names of the distribution's parameters (as constructed) that hold NaN or Inf."""
    d = _base(fn)
    names = []
    for name in getattr(d, "arg_constraints", {}):
        value = d.__dict__.get(name)  # only what was given or already computed
        if isinstance(value, torch.Tensor) and not bool(torch.isfinite(value).all()):
            names.append(name)
    return names


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _kind(t: torch.Tensor) -> str:
    return "NaN" if bool(torch.isnan(t).any()) else "infinite"


Term = tuple[str, str, str, "torch.Tensor | None"]  # (term, site, detail, value or None)


def _terms(model_trace: Any, guide_trace: Any) -> list[Term]:
    """(term, site, detail if non-finite, value) in the order the program computes them.

    A value of None marks a quantity already found non-finite (the guide's distribution).
    """
    out: list[Term] = []
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample":
            continue
        bad = _bad_arguments(site["fn"])
        if bad:
            src = "the encoder's output"
            out.append(("kl", name, f"q({name}|x) has non-finite {', '.join(bad)} ({src})", None))
            return out
        if not _finite(site["value"]):
            detail = f"the sample of {name} from q({name}|x) is {_kind(site['value'])}"
            out.append(("kl", name, detail, None))
            return out
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        bad = _bad_arguments(site["fn"])
        observed = bool(site["is_observed"])
        term = "reconstruction" if observed else "kl"
        dist_name = f"p({name}|z)" if observed else f"p({name})"
        log_p = site["fn"].log_prob(site["value"])
        if bad:
            src = "the decoder's output" if observed else "the prior's parameters"
            out.append((term, name, f"{dist_name} has non-finite {', '.join(bad)} ({src})", log_p))
            continue
        if observed:
            out.append((term, name, f"log {dist_name} is {_kind(log_p)}", log_p))
        else:
            log_q = guide_trace.nodes[name]["fn"].log_prob(guide_trace.nodes[name]["value"])
            kl = log_q - log_p
            detail = f"log q({name}|x) - log {dist_name} is {_kind(kl)}"
            if _finite(log_q) and not _finite(log_p):
                detail = f"log {dist_name} is {_kind(log_p)}"
            elif not _finite(log_q):
                detail = f"log q({name}|x) is {_kind(log_q)}"
            out.append((term, name, detail, kl))
    return out


def _grad_bad(
    value: torch.Tensor, params: dict[str, nn.Parameter], retain: bool = True
) -> list[str]:
    if not value.requires_grad:
        return []
    names = list(params)
    grads = torch.autograd.grad(
        value, [params[n] for n in names], retain_graph=retain, allow_unused=True
    )
    return [n for n, g in zip(names, grads, strict=True) if g is not None and not _finite(g)]


def explain_step(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: torch.Tensor,
    params: dict[str, nn.Parameter],
) -> StepReport:
    """Recompute one step on ``x`` and say which term and site went non-finite first.

    ``loss_fn(x)`` is the training objective on the batch; ``params`` the named parameters.
    The global torch RNG is reset between the objective and the traced ELBO terms, so both
    see the same draws when the objective samples the guide first (as Pyro's ELBOs do).
    """
    bad_now = [n for n, p in params.items() if not _finite(p.detach())]
    if bad_now:
        return StepReport(
            False,
            False,
            stage="parameters",
            detail=f"the parameters {bad_now[:5]} were already non-finite before the step",
            bad_params=bad_now,
        )
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    loss = loss_fn(x)
    loss_finite = _finite(loss.detach())
    bad_grads = _grad_bad(loss, params, retain=False) if loss_finite else []
    torch.set_rng_state(cpu_state)
    if cuda_state is not None:
        torch.cuda.set_rng_state_all(cuda_state)
    report = StepReport(loss_finite, not bad_grads, bad_params=bad_grads)
    model_trace, guide_trace = traces(model, guide, x)
    terms = _terms(model_trace, guide_trace)
    for term, site, detail, value in terms:
        if value is None or not _finite(value.detach()):
            report.term, report.site, report.stage = term, site, "value"
            report.detail = detail
            return report
    for term, site, _, value in terms:
        bad = _grad_bad(value.sum(), params) if value is not None else []
        if bad:
            report.term, report.site, report.stage = term, site, "gradient"
            report.detail = f"its gradient is non-finite in {bad[:5]}"
            return report
    report.detail = (
        "every ELBO term and its gradient were finite when recomputed, so the non-finite "
        "value came from the objective's own arithmetic or from a different random draw"
        + (f" (non-finite gradients in {bad_grads[:5]})" if bad_grads else "")
    )
    return report


# The names of the first layout (pyro_vae.diagnose), still importable (not documented twice).
Diagnosis = StepReport
diagnose_step = explain_step
