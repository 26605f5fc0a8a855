"""``kstyle serve``: serves a web page (``kstyle export --format web``) on 127.0.0.1 with the
cross-origin isolation headers that multi-threaded wasm needs; builds it first from runs."""

import argparse
import contextlib
import functools
import os
import signal
import sys
import tempfile
import threading

from kstyle.cli.common import OneLineErrorParser, add_option, run_command, start_command
from kstyle.cli.console import add_verbosity, program_name, setup_logging
from kstyle.constants import DEFAULT_SERVE_PORT
from kstyle.errors import KstyleError
from kstyle.files import check_writable
from kstyle.web_site import is_site, site_server, site_smoke_notes


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``kstyle serve``; ``prog`` names the command in its usage."""
    parser = OneLineErrorParser(
        prog=prog or program_name("kstyle-serve"),
        description="Serve a kstyle web page on 127.0.0.1 (with COOP/COEP headers, so the "
        "page runs multi-threaded) and print its URL. Given runs or model files, the page is "
        "built first, as 'kstyle export --format web' does.",
    )
    add = functools.partial(add_option, parser)
    add(
        "source",
        nargs="+",
        doc="a site folder written by 'kstyle export --format web', or runs, model.keras "
        "files or a folder of runs",
    )
    add("--port", type=int, default=DEFAULT_SERVE_PORT, doc="port on 127.0.0.1 (0: any free port)")
    add(
        "--output",
        doc="where to build the page from runs (not with a site folder)",
        default_text="a temporary folder, deleted on exit",
    )
    add_verbosity(parser)
    return parser


def _interrupt(signum, frame):
    """SIGTERM's handler while serving: stop as Ctrl-C does."""
    raise KeyboardInterrupt


def main_with_args(argv=None, prog=None, from_shell=None) -> int:
    """Builds (if needed) and serves as ``argv`` says, until interrupted."""
    from_shell = argv is None if from_shell is None else from_shell
    args = build_parser(prog).parse_args(argv)
    if not 0 <= args.port <= 65535:  # before TensorFlow is imported, as every check that can be
        raise KstyleError(f"--port must be between 0 and 65535, got {args.port}")
    if args.output:
        check_writable(args.output)  # the site is written beside it, then renamed
    built = not (len(args.source) == 1 and is_site(args.source[0]))
    # A built site is only served: no TensorFlow (its import alone takes seconds).
    logger = (
        start_command(args, None, from_shell)
        if built
        else setup_logging(quiet=args.quiet, verbose=args.verbose)
    )
    from kstyle.smoke import smoke_notes

    for note in smoke_notes(args.source) if built else site_smoke_notes(args.source[0]):
        logger.info(f"note: {note}")
    if not built and args.output:
        raise KstyleError(f"{args.source[0]} is already a site; drop --output (nothing to build)")
    # SIGTERM (kill, a service manager) stops the server as Ctrl-C does, so the temporary
    # site below is removed either way.
    main_thread = threading.current_thread() is threading.main_thread()  # signals: main only
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        with contextlib.ExitStack() as stack:
            site = args.source[0]
            if built and args.output:  # held while it is built and served
                from kstyle.lock import output_lock

                stack.enter_context(output_lock(args.output))
            if built:
                site = args.output or os.path.join(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="kstyle-site-")),
                    "site",
                )
            server = site_server(site, args.port, log=logger.debug)  # the port first: fail fast
            stack.callback(server.server_close)
            if built:
                from kstyle.export.web import build_site, live_hint

                hint = live_hint(build_site(args.source, site, printer=logger.info))
                if hint:
                    logger.info(f"note: {hint}")
            host, port = server.server_address[:2]
            print(f"serving {site} at http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


def main(argv=None, prog=None, from_shell=None) -> int:
    """Console entry point; returns the exit status."""
    return run_command(main_with_args, argv, prog=prog, from_shell=from_shell)


if __name__ == "__main__":
    sys.exit(main())
