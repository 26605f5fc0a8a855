"""A contact sheet of a net of several styles: one photo in every style and a few two-style
blends, each picture labelled (``kstyle sheet``)."""

import numpy as np
from PIL import Image, ImageDraw

from kstyle.images import picture_grid
from kstyle.inference import stylize_array
from kstyle.style_tables import style_count

LABEL_HEIGHT = 14  # px of white under each picture for its label
COLUMNS = 4


def sheet_entries(count: int, names, blends: int = 3) -> list[tuple[str, str]]:
    """``[(style, label)]``: every style (``"k"``, its name) and up to ``blends`` half-and-half
    blends of neighbouring styles (``"0:0.5,1:0.5"``, ``"name + name"``)."""
    names = list(names) if names and len(names) == count else [str(k) for k in range(count)]
    entries = [(str(k), f"{k}: {name}") for k, name in enumerate(names)]
    for k in range(min(blends, count - 1)):
        entries.append((f"{k}:0.5,{k + 1}:0.5", f"{names[k]} + {names[k + 1]}"))
    return entries


def labelled(picture: np.ndarray, label: str) -> np.ndarray:
    """``picture`` (H, W, 3) uint8 with a white band under it holding ``label`` (PIL's
    default font, cut to the picture's width)."""
    height, width = picture.shape[:2]
    canvas = Image.new("RGB", (width, height + LABEL_HEIGHT), "white")
    canvas.paste(Image.fromarray(picture), (0, 0))
    draw = ImageDraw.Draw(canvas)
    label = label.encode("latin-1", "replace").decode("latin-1")  # any font PIL may default to
    while label and draw.textlength(label) > width - 4:
        label = label[:-3] + ".." if len(label) > 3 else ""
    draw.text((2, height + 1), label, fill="black")
    return np.asarray(canvas)


def contact_sheet(model, image: np.ndarray, names=None, blends: int = 3, **options):
    """Every style of ``model`` (a net of N styles; one style: just that) and ``blends`` blends
    on ``image`` (H, W, 3), labelled, in rows of :data:`COLUMNS`, the photo itself first.

    ``names``: the styles' names (:func:`kstyle.smoke.recorded_style_names`; None: indices).
    ``options`` go to :func:`kstyle.inference.stylize_array` (tiling, colour, strength).
    Returns the sheet, (rows · (H + 14) + gaps, …, 3) uint8.
    """
    tiles = [labelled(np.asarray(image, np.uint8), "photo")]
    for style, label in sheet_entries(style_count(model), names, blends):
        tiles.append(labelled(stylize_array(model, image, style=style, **options), label))
    rows = [tiles[i : i + COLUMNS] for i in range(0, len(tiles), COLUMNS)]
    return picture_grid(rows)
