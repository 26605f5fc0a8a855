"""The options of a run that adds styles to a trained net (``kstyle train --add-style IMAGE
--from RUN``; the trainer: :mod:`kstyle.multi_style`).

The new net is the base run's net with a row more per new style in every conditional instance
norm's tables; only those rows learn, so the convolutions and every old style stay bit for bit
the base's. No TensorFlow at import, as in :mod:`kstyle.config`.
"""

import dataclasses
import json
import os
import typing

from kstyle.config import RunOptions, StyleLossOptions, option
from kstyle.errors import KstyleError
from kstyle.files import file_sha256, file_stem, image_files_of, unique_names
from kstyle.presets import DEFAULT_ARCH
from kstyle.smoke import is_smoke_test, model_file_of, recorded_style_names

ADD_STYLE_TASK = "add-style"  # the kind of run AddStyleConfig describes


@dataclasses.dataclass
class AddedStyles:
    """The styles to add and the run to add them to."""

    add_style: list[str] | None = option(
        None,
        doc="add this style image (or a folder's images) to the network of --from, training "
        "only its own norm scales and offsets; give it several times for several",
        keep=True,
        many=True,
    )
    from_run: str | None = option(
        None,
        doc="with --add-style: the run directory of the trained network to add styles to "
        "(read only; the new network keeps its preset and padding)",
        keep=True,
    )


@dataclasses.dataclass
class AddStyleConfig(RunOptions, StyleLossOptions, AddedStyles):
    """An add-style run's options: the new styles and the base run (first), the style
    loss's, and every run's. ``arch`` and ``padding`` are taken from the base run's
    ``config.json``."""

    TASK: typing.ClassVar[str] = ADD_STYLE_TASK

    def __post_init__(self):
        if isinstance(self.add_style, str):
            self.add_style = [self.add_style]
        saved = self.base_config(required=False)
        if saved:
            self.arch = saved.get("arch", DEFAULT_ARCH)  # runs before --arch: the seed net
            self.padding = saved.get("padding", self.padding)

    def base_config(self, required: bool = True) -> dict:
        """The base run's ``config.json`` ({} where it is not there and not ``required``).

        Raises:
            KstyleError: (``required``) no ``--from``, or no readable ``config.json`` in it.
        """
        path = os.path.join(self.from_run or "", "config.json")
        try:
            with open(path) as file:
                saved = json.load(file)
            if not isinstance(saved, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as error:
            if required:
                where = self.from_run or "nothing"
                raise KstyleError(
                    f"--from {where}: not a kstyle run directory (its config.json: "
                    f"{getattr(error, 'strerror', None) or error})"
                ) from None
            return {}
        return saved

    def base_model(self) -> str:
        """The base run's model file."""
        return model_file_of(self.from_run)

    def old_style_names(self) -> list[str]:
        """The names of the base net's styles, as its file or run records them (a run of one
        style before names were recorded: its style file's name)."""
        names = recorded_style_names(self.from_run)
        if names is None:
            style = self.base_config().get("style")
            paths = [style] if isinstance(style, str) else style or []
            names = [file_stem(path) for path in paths] or ["style 0"]
        return names

    def style_files(self) -> list[str]:
        """The new style images, in order (:func:`kstyle.files.image_files_of`)."""
        return image_files_of(self.add_style)

    def style_names(self) -> list[str]:
        """Every style's name: the base net's, then the new ones'."""
        old = self.old_style_names()
        return old + unique_names(self.style_files(), taken=old)

    def resolved_output(self) -> str:
        """The run directory: ``output``, or ``runs/<base run>+<first new style>``."""
        if self.output:
            return self.output
        base = os.path.basename(os.path.normpath(self.from_run or "base"))
        first = file_stem(self.add_style[0]) if self.add_style else "style"
        return os.path.join("runs", f"{base}+{first}")

    def validate(self) -> None:
        """Raises KstyleError for option values that cannot work, a missing ``--add-style``
        or ``--from``, and an ``--output`` that is the base run."""
        super().validate()
        self.check_style_loss()
        if not self.add_style:
            raise KstyleError("--add-style needs at least one style image")
        if not self.from_run:
            raise KstyleError("--add-style needs --from: the run directory to add styles to")
        if os.path.realpath(self.from_run) == os.path.realpath(self.resolved_output()):
            raise KstyleError(
                f"--output {self.resolved_output()} is the base run --from {self.from_run}; "
                "the new network needs a run directory of its own"
            )

    def check_inputs(self) -> None:
        """Raises KstyleError when the base run or a new style image is missing or
        unreadable."""
        from kstyle.images import load_image

        self.base_config()
        if not os.path.isfile(self.base_model()):
            raise KstyleError(f"--from {self.from_run}: no model.keras in it")
        for path in self.style_files():
            load_image(path)

    def uses_loss_net(self) -> bool:
        """Whether the run builds the VGG-16 loss network (it always does)."""
        return True

    def recorded_inputs(self) -> dict:
        """The base model and its SHA-256, the new style images and every style's name; a
        resumed run must find the same base and images."""
        path = self.base_model()
        return {
            "base_model": os.path.abspath(path),
            "base_sha256": file_sha256(path),
            "style_files": self.style_files(),
            "style_names": self.style_names(),
        }

    def resolved_options(self) -> dict:
        """``style_size_used`` and the schedule of the new styles."""
        from kstyle.constants import STYLE_SCHEDULE_RULE

        return {
            "style_size_used": self.resolved_style_size(),
            "style_schedule": STYLE_SCHEDULE_RULE,
        }

    def model_marks(self) -> dict:
        """``style_names``: every style's, so that the model file names them."""
        return {"style_names": self.style_names()}

    def smoke_test_cause(self) -> str | None:
        """Why the new net is a smoke test: its base is one, or its loss network is
        untrained; None for a real run."""
        if is_smoke_test(self.from_run):
            return f"its base {self.base_model()} is a smoke test's model"
        return super().smoke_test_cause()
