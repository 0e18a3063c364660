"""The tables ``train`` and ``evaluate`` print: ELBO terms and figures, nats per data point."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["Row", "table", "term_rows"]

Row = tuple[str, float, str]  # name, value, what it is


def table(title: str, rows: Sequence[Row]) -> str:
    """``title`` and one aligned line per row: name, value (3 decimals), note."""
    lines = [title] + [f"  {name:<16}{value:>10.3f}   {note}" for name, value, note in rows]
    return "\n".join(lines)


def term_rows(elbo: float, reconstruction: float, kl: float, point_estimate: bool) -> list[Row]:
    """The ELBO's rows; for a point-mass (Delta) guide, what the same numbers mean there."""
    if point_estimate:  # log q = 0 at the point z*: no KL, no bound on log p(x)
        return [
            ("objective", elbo, "log p(x|z*) + log p(z*) at the guide's point z*"),
            ("reconstruction", reconstruction, "log p(x|z*)"),
            ("-log prior", kl, "-log p(z*) (a Delta guide: no KL, no bound on log p(x))"),
        ]
    return [
        ("ELBO", elbo, ""),
        ("reconstruction", reconstruction, "E_q[log p(x|z)]"),
        ("KL", kl, "KL(q(z|x) || p(z))"),
    ]
