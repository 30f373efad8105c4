"""Errors of :mod:`hostseal.doctor`."""

from __future__ import annotations

from hostseal.errors import HostsealError


class KnowledgeBaseInvalid(HostsealError):
    """A knowledge-base file is not valid: unknown key, bad regular expression, missing text.

    ``problems`` lists every problem found, each as ``"FILE: key: what"``, so one run shows
    them all.
    """

    def __init__(self, problems: list[str]) -> None:
        shown = "\n  - ".join(problems)
        super().__init__(
            f"The doctor's knowledge base is not valid ({len(problems)} "
            f"problem{'' if len(problems) == 1 else 's'}):\n  - {shown}",
            "Fix the files named (see docs/doctor.md for the format), or reinstall hostseal "
            "if they were not edited on purpose.",
            {"problems": problems},
        )
        self.problems = problems
