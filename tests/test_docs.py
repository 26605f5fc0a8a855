"""The documentation stays true: the generated option reference is current, relative links
resolve, the README opens with the quick start, and no page names an option that is gone."""

import glob
import importlib.util
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
QUICK_START = [
    "python3 -m venv .venv && . .venv/bin/activate && python -m pip install -e . "
    "&& python train.py --demo",
    'python3 -m venv .venv && . .venv/bin/activate && python -m pip install -e ".[dev]" '
    "&& python -m pytest -q -n 2 --dist loadfile",
]
README_MAX_LINES = 200
# Options of other programs that the docs show next to kstyle's.
OTHER_PROGRAMS_FLAGS = {
    "--check": "ruff format",
    "--logdir": "tensorboard",
    "--model_base_path": "TF Serving",
    "--durations": "pytest",
    "--dist": "pytest-xdist",
    "--resolution": "uv pip install",
    "--no-cache-dir": "pip install",
    "--ignore-scripts": "npm ci",
    **dict.fromkeys(
        [
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            "--use-file-for-fake-video-capture",
            "--enable-unsafe-webgpu",
        ],
        "chromium",
    ),
    **dict.fromkeys(
        ["--dir", "--tag_set", "--signature_def", "--inputs", "--outdir"], "saved_model_cli"
    ),
}
FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def _cli_reference():
    path = os.path.join(ROOT, "scripts", "cli_reference.py")
    spec = importlib.util.spec_from_file_location("cli_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pages():
    return [README, *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]


def _read(path):
    with open(path, encoding="utf-8") as file:
        return file.read()


def _prose(text):
    """``text`` without fenced code blocks and inline code spans (links there are not links)."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"(`+)(?!`).+?(?<!`)\1(?!`)", "", text, flags=re.DOTALL)


def _slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path):
    text = re.sub(r"^```.*?^```[^\n]*$", "", _read(path), flags=re.MULTILINE | re.DOTALL)
    anchors, seen = set(HTML_ANCHOR.findall(text)), {}
    for match in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.MULTILINE):
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_cli_reference_is_generated_from_the_parsers():
    expected = _cli_reference().render()
    path = os.path.join(ROOT, "docs", "cli.md")
    actual = _read(path) if os.path.exists(path) else ""
    assert actual == expected, (
        "docs/cli.md does not match the commands' parsers; "
        "run `python scripts/cli_reference.py --write` and commit the result"
    )


def test_relative_links_point_to_existing_files_and_anchors():
    broken = []
    for page in _pages():
        prose = _prose(_read(page))
        for target in LINK.findall(prose) + REFERENCE_LINK.findall(prose):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.IGNORECASE):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            resolved = (
                page if not path else os.path.normpath(os.path.join(os.path.dirname(page), path))
            )
            where = f"{os.path.relpath(page, ROOT)}: {target}"
            if not os.path.exists(resolved):
                broken.append(f"{where} (no such file)")
            elif anchor and resolved.endswith(".md") and anchor not in _anchors(resolved):
                broken.append(f"{where} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_opens_with_the_quick_start_and_stays_short():
    lines = _read(README).splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}); move detail to docs/"
    )
    fence = next(index for index, line in enumerate(lines) if line.startswith("```"))
    before = [line for line in lines[:fence] if line.strip()]
    assert len(before) <= 2 and not any(line.startswith("##") for line in before), (
        "the README must open with the quick-start commands (title and tagline first)"
    )
    end = next(index for index in range(fence + 1, len(lines)) if lines[index].startswith("```"))
    assert lines[fence + 1 : end] == QUICK_START


def test_docs_name_only_options_that_exist():
    module = _cli_reference()
    from kstyle.cli.main import build_parser

    known = set(OTHER_PROGRAMS_FLAGS) | module.option_strings(build_parser("kstyle"))
    for _, parser in module.parsers():
        known |= module.option_strings(parser)
    for folder in ("bench", "scripts"):  # the benchmarks' and tools' parsers
        for script in glob.glob(os.path.join(ROOT, folder, "*.py")):
            known |= set(re.findall(r"add(?:_argument)?\(\s*\"(--[\w-]+)\"", _read(script)))
    unknown = [
        f"{os.path.relpath(page, ROOT)}: {flag}"
        for page in _pages()
        for flag in sorted(set(FLAG.findall(_read(page))))
        if flag not in known
    ]
    assert not unknown, "options that no parser has:\n" + "\n".join(unknown)


def _help_commands() -> list[str]:
    """The subcommands that ``kstyle --help`` lists under "commands:", in its order."""
    from kstyle.cli.main import build_parser

    text = build_parser("kstyle").format_help()
    section = text.split("commands:\n", 1)[1]
    return re.findall(r"^  (\w+) ", section, flags=re.MULTILINE)


def test_readme_and_cli_reference_name_every_command_of_kstyle_help():
    commands = _help_commands()
    assert len(commands) >= 6 and "distill" in commands
    listed = re.search(r"`kstyle ((?:\w+\|)+\w+)`", _read(README)).group(1).split("|")
    assert listed == commands, "the README's command list differs from `kstyle --help`"
    documented = re.findall(r"^## kstyle (\w+)$", _read(os.path.join(ROOT, "docs", "cli.md")), re.M)
    assert sorted(documented) == sorted(commands)
    numbers = "one two three four five six seven eight nine ten".split()
    for page in _pages():
        for word in re.findall(r"\bthe (\w+) (?:kstyle )?commands\b", _prose(_read(page))):
            if word.lower() in numbers:  # "the three commands": a count that drifts
                assert numbers.index(word.lower()) + 1 == len(commands), (page, word)


def test_readme_states_the_steps_and_epochs_that_the_demo_records(tmp_path):
    """The quick start's "N steps (E epochs of S) at P×P" is what ``--demo`` runs: its options,
    its data set's steps per epoch, and the epochs its config.json records."""
    import inspect
    import json
    import types

    from kstyle.cli.train import DEMO_OPTIONS
    from kstyle.config import TrainConfig
    from kstyle.demo import make_content_images
    from kstyle.run_dir import write_run_config
    from kstyle.schedule import total_steps_of

    found = re.search(
        r"trains for (\d+) steps \((\d+) epochs of (\d+)\) at (\d+)×(\d+)", _read(README)
    )
    steps, epochs, per_epoch, height, width = map(int, found.groups())
    images = inspect.signature(make_content_images).parameters["count"].default
    config = TrainConfig(style="s.png", data="d", output=str(tmp_path), **DEMO_OPTIONS)
    assert (steps, height, width) == (config.steps, config.image_size, config.image_size)
    assert per_epoch == images // config.batch_size
    data = types.SimpleNamespace(description="demo", seed=0, steps_per_epoch=per_epoch)
    total = total_steps_of(per_epoch, config.epochs, config.steps)  # as kstyle.run computes it
    write_run_config(str(tmp_path), config, data, total, "default")
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert (recorded["epochs_used"], recorded["total_steps"]) == (epochs, steps)
