"""A run's ``history.csv`` (a row per step) and its loss curves (``losses.png``): written
atomically, read back when a run resumes."""

import csv

from kstyle.files import atomic_output


def plot_losses(rows, path: str, title: str = "", names=("content", "style", "loss")) -> None:
    """Losses ``names`` (``loss``: the total) against iteration, as a PNG (atomically). Drawn
    on a figure of its own (no pyplot), so the caller's matplotlib backend (a notebook's inline
    figures) is left as it is."""
    from matplotlib.figure import Figure

    steps = [row["step"] for row in rows]
    figure = Figure(figsize=(7, 4), dpi=100)
    axis = figure.subplots()
    for name in names:
        label = "total" if name == "loss" else name
        axis.plot(steps, [row[name] for row in rows], label=label, linewidth=1)
    axis.set_xlabel("iteration")
    axis.set_ylabel("loss")
    if rows and min(row["loss"] for row in rows) > 0:
        axis.set_yscale("log")
    axis.grid(True, alpha=0.3)
    axis.legend()
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    with atomic_output(path) as temporary:
        figure.savefig(temporary, format="png")


def read_history(path: str, last_step: int) -> list[dict]:
    """The rows of ``history.csv`` (columns: its header's) up to step ``last_step``, parsed."""
    rows = []
    with open(path, newline="") as file:
        for row in (reader := csv.DictReader(file)):
            try:
                parsed = {field: float(row[field]) for field in reader.fieldnames}
            except (KeyError, TypeError, ValueError):  # a line cut short by a kill
                continue
            for field in ("step", "epoch", "style_index"):  # counts, written as such
                if field in parsed:
                    parsed[field] = int(parsed[field])
            if parsed["step"] <= last_step:
                rows.append(parsed)
    return rows


def write_history_atomically(rows, path: str, fields) -> None:
    """Writes ``history.csv``: ``rows``' ``fields``, through a temporary file and a rename."""
    with atomic_output(path) as temporary, open(temporary, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(fields)
        for row in rows:
            writer.writerow([row[field] for field in fields])
