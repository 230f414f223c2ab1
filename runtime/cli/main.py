"""The ``tseg-rt`` command line: a thin front end; each command calls one library function.

One module per command group (``run``, ``info``, ``postprocess``, ``report``, ``eval``,
``demo``, ``export``/``build-engine``, ``train``, ``bench``, ``serve``, ``watch``, ``view``); this module only registers them. To add a
command: write ``runtime/cli/<name>.py`` (the module ``tseg.runtime.cli.<name>``) with a typer function (heavy imports inside it,
options shared with ``run`` from :mod:`tseg.runtime.cli.options`) and add one line below.

Heavy modules are imported inside the commands so that ``--help`` is fast and the runtime
commands never import PyTorch. TsegError becomes a one-line message and a non-zero exit status
(:data:`tseg.runtime.cli.common.EXIT_CODES`): 1 when some slides failed, 2 for errors that stop
the command before any slide runs, 130 after Ctrl-C, 143 after SIGTERM (``report`` of a cohort:
3 when slides were not run).
"""

from __future__ import annotations

import sys

import typer

from tseg.runtime.cli import bench, demo, evaluate, export, info, postprocess, report, run, serve, train, view, watch

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Pan-cancer tumour segmentation in H&E whole-slide images.")
app.add_typer(train.app, name="train")
app.command("run")(run.run)
app.command("report")(report.report)
app.command("demo")(demo.demo)
app.command("eval")(evaluate.evaluate)
app.command("info")(info.info)
app.command("postprocess")(postprocess.postprocess)
app.command("export")(export.export)
app.command("build-engine")(export.build_engine)
app.command("bench")(bench.bench)
app.command("serve")(serve.serve)
app.command("watch")(watch.watch)
app.command("view")(view.view)


def main() -> None:
    """Console-script entry point. SIGTERM (scancel, a time limit) stops a command as Ctrl-C
    does, with exit status 143 (:mod:`tseg.runtime.util.signals`)."""
    from tseg.runtime.util.signals import describe_signal, exit_status, terminate_as_interrupt

    try:
        with terminate_as_interrupt():
            app()
    except KeyboardInterrupt as stop:
        sys.stderr.write(describe_signal(stop) + "\n")
        sys.exit(exit_status(stop))


if __name__ == "__main__":
    main()
