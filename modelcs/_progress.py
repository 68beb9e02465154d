"""One progress bar for long runs (shared helper; not public API).

Every long-running job of modelcs (the demo, the phase-transition sweep, spectra of large
operators, ...) reports progress through :func:`progress_bar`, which returns a
:class:`Progress`: a tqdm bar on standard error when that is a terminal and tqdm is
installed, a silent no-op otherwise.  Callers take one argument from the user::

    progress : bool or None
        ``None`` (default) shows the bar only when standard error is a terminal, ``True``
        always shows it (when tqdm is installed), ``False`` never does.

and use the bar the same way whether it is shown or not::

    with progress_bar(len(cells), desc="phase transition", unit="cell",
                      progress=progress) as bar:
        for cell in cells:
            ...
            bar.update()             # or bar.update(label="cell 3") to show a label
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

__all__ = ["Progress", "progress_bar", "wants_progress"]


def wants_progress(progress: bool | None) -> bool:
    """Whether a bar should be shown for the user's ``progress`` argument.

    ``None`` means "only when standard error is a terminal"; any other value is taken as a
    yes/no.  Anything else than ``None``, ``True`` or ``False`` is a ``TypeError``.
    """
    if progress is None:
        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty is not None and isatty())
    if not isinstance(progress, bool):
        raise TypeError(
            f"parameter 'progress' must be True, False or None; got {type(progress).__name__}"
        )
    return progress


class Progress:
    """A progress bar that may be switched off; same calls either way.

    Attributes
    ----------
    total : int
        Number of steps announced.
    enabled : bool
        Whether a bar is actually drawn.
    """

    def __init__(self, total: int, bar: Any = None) -> None:
        self.total = int(total)
        self._bar = bar
        self.enabled = bar is not None

    def update(self, n: int = 1, *, label: str | None = None) -> None:
        """Advance by ``n`` steps; ``label`` (optional) is shown after the counter."""
        if self._bar is None:
            return
        if label is not None:
            self._bar.set_postfix_str(label, refresh=False)
        self._bar.update(n)

    def close(self) -> None:
        """Remove the bar (idempotent)."""
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def progress_bar(
    total: int,
    *,
    desc: str,
    unit: str = "step",
    progress: bool | None = None,
    leave: bool = False,
) -> Progress:
    """A :class:`Progress` of ``total`` steps, drawn on stderr iff :func:`wants_progress`.

    Parameters
    ----------
    total : int
        Number of steps.
    desc : str
        Text shown before the bar (e.g. ``"modelcs demo"``).
    unit : str
        Name of one step (``"step"``, ``"cell"``, ...).
    progress : bool or None
        The user's choice; see :func:`wants_progress`.
    leave : bool
        Keep the finished bar on screen (``True``) or erase it on :meth:`Progress.close`.

    Returns
    -------
    Progress
        Drawn with tqdm when wanted and tqdm is importable, otherwise a silent no-op.

    Examples
    --------
    >>> with progress_bar(3, desc="demo", progress=False) as bar:
    ...     for i in range(3):
    ...         bar.update(label=f"item {i}")
    >>> bar.enabled, bar.total
    (False, 3)
    """
    if not wants_progress(progress):
        return Progress(total)
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is an optional dependency
        return Progress(total)
    return Progress(
        total, tqdm(total=int(total), desc=desc, unit=unit, file=sys.stderr, leave=leave)
    )
