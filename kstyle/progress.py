"""A terminal progress bar for long stylize jobs (video frames, tiles of large images)."""

import sys
import time


class ProgressBar:
    """A one-line progress bar on ``stream``: items done (frames, tiles), items per second, ETA."""

    def __init__(self, total=None, stream=None, label="frames"):
        self.total, self.done, self.label = total, 0, label
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.monotonic()

    @property
    def rate(self) -> float:
        """Items per second so far."""
        return self.done / max(time.monotonic() - self.start, 1e-9)

    def update(self, count: int) -> None:
        """Adds ``count`` finished items and redraws the line."""
        self.done += count
        rate = self.rate
        if self.total:
            width = 24
            filled = int(width * min(self.done, self.total) / self.total)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            line = (
                f"\r{self.label} {self.done}/{self.total} [{'=' * filled:<{width}}] "
                f"{rate:.2f} {self.label}/s, ETA {eta:.0f} s"
            )
        else:
            line = f"\r{self.label} {self.done}  {rate:.2f} {self.label}/s"
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        """Ends the line."""
        self.stream.write("\n")
        self.stream.flush()
