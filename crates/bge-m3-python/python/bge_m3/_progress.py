"""The progress bar of long calls, as FlagEmbedding shows one: tqdm's when tqdm is installed
(it is not a dependency), else a line on stderr rewritten in place."""

import sys
import time


class _Line:
    """`desc: done/total` on stderr, at most ten times a second, and once at the end."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.done = total, desc, 0
        self.shown = 0.0
        self.start = time.monotonic()
        self._show()

    def update(self, n: int):
        self.done += n
        if self.done >= self.total or time.monotonic() - self.shown >= 0.1:
            self._show()

    def _show(self):
        self.shown = time.monotonic()
        rate = self.done / max(self.shown - self.start, 1e-9)
        sys.stderr.write(f"\r{self.desc}: {self.done}/{self.total} ({rate:.1f}/s)")
        sys.stderr.flush()

    def close(self):
        sys.stderr.write("\n")
        sys.stderr.flush()


def progress_bar(total: int, desc: str):
    """A bar with `update(n)` and `close()`."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _Line(total, desc)
    return tqdm(total=total, desc=desc)
