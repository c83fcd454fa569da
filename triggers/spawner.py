"""A fork server for local runs: `python -m triggers.spawner`, started once per LocalLauncher.

Starting a run used to mean starting a Python interpreter for its supervisor
(`triggers.local_runner`): ~60-80 ms of CPU on a 2-core machine (interpreter, site, the
runner's imports) before the first step could start. This process pays that once: it imports
the runner, then reads run directories from stdin, one per line, and forks a supervisor for
each (about a millisecond), answering the child's pid on stdout (`<pid>\\n`, or `error ...`).

Each child is what `python -m triggers.local_runner RUN_DIR` would have been: its own session
(it survives the worker and this process, and `cancel` can signal its group), cwd the run
directory, stdin /dev/null, stdout and stderr appended to runner.log, default signal handlers.
This process exits when its stdin closes (the launcher, or the worker, went away); running
children are unaffected. It reaps nothing and leaves no zombies (SIGCHLD is ignored here, and
set back to the default in each child before it runs, so the runner can wait for its steps).
Stdlib only, like the runner.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback

from triggers import local_runner


def _child(run_dir: str, ready: int) -> None:
    code = 1
    try:
        os.setsid()
        os.close(ready)             # now `kill_group(pid)` reaches it: the parent may answer
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        log = os.open(os.path.join(run_dir, local_runner.RUNNER_LOG),
                      os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, 1024)
        os.chdir(run_dir)
        code = local_runner.main([run_dir])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child must end here, whatever happened
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(inp: int = 0, out: int = 1) -> int:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # children are reaped by the kernel
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # a terminal's Ctrl-C is for the worker
    reader = os.fdopen(inp, "r", buffering=1)
    for line in reader:
        run_dir = line.rstrip("\n")
        if not run_dir:
            continue
        try:
            wait_end, ready = os.pipe()
            pid = os.fork()
        except OSError as exc:
            os.write(out, f"error {exc}\n".encode())
            continue
        if pid == 0:
            os.close(wait_end)
            _child(run_dir, ready)  # replaces fds 0-2 and closes the rest; never returns
        os.close(ready)
        os.read(wait_end, 1)        # EOF once the child has its own session (or died)
        os.close(wait_end)
        os.write(out, f"{pid}\n".encode())
    return 0


if __name__ == "__main__":
    sys.exit(serve())
