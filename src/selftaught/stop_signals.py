"""SIGTERM and SIGHUP end a run as Ctrl-C does, once `stop_on_signals` is called (the CLI calls it).

Python's default for both is to die at once: no `finally`, no finalizer, so the sandbox's fork
servers, bubblewrap processes, cgroups and folders stay behind and the run stays 'running' in the
store. With the handlers, the signal raises `StopSignal` (a KeyboardInterrupt) in the main thread,
and everything a Ctrl-C cleans up is cleaned up. Importing the library installs nothing: only a
program's main thread may decide what its signals do.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

#: The signals that ask a process to stop: `timeout`, `kill`, systemd and a closed terminal send them.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class StopSignal(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM or SIGHUP; handled wherever Ctrl-C is."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


def stop_signal(interruption: KeyboardInterrupt) -> signal.Signals:
    """The signal that raised `interruption`: SIGINT for a plain KeyboardInterrupt (Ctrl-C)."""
    return signal.Signals(interruption.signal_number if isinstance(interruption, StopSignal) else signal.SIGINT)


#: Called, on a thread of its own, as soon as a stop is asked for: before the main thread unwinds.
_on_stop: list[Callable[[], None]] = []


def stop_on_signals(on_stop: Callable[[], None] | None = None) -> None:
    """Makes SIGTERM and SIGHUP raise `StopSignal` in the main thread; call it from the main thread.

    With `on_stop`, Ctrl-C too first starts `on_stop` on another thread: the CLI ends every sandboxed
    child at once there, so that nothing the main thread then waits for (a worker thread's job, say)
    can keep it waiting. A signal the process was started ignoring stays ignored: under `nohup`,
    SIGHUP must not stop it.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("signal handlers can only be installed from the main thread")
    if on_stop is not None:
        _on_stop.append(on_stop)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _interrupt)
    for number in STOP_SIGNALS:
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, _raise_stop_signal)


def _start_stopping() -> None:
    # A thread, not here: a handler runs between two bytecodes of the main thread, which may hold a lock
    # the work needs.
    for callback in _on_stop:
        threading.Thread(target=callback, name="stopping", daemon=True).start()


def _interrupt(number: int, frame: FrameType | None) -> None:
    _start_stopping()
    raise KeyboardInterrupt


def _raise_stop_signal(number: int, frame: FrameType | None) -> None:
    # Only the first one raises: a second must not break into the cleanup the first one started
    # (SIGKILL still ends the process; its leftovers are removed by the next launcher).
    for other in STOP_SIGNALS:
        if signal.getsignal(other) is _raise_stop_signal:
            signal.signal(other, _ignore_while_stopping)
    _start_stopping()
    raise StopSignal(number)


def _ignore_while_stopping(number: int, frame: FrameType | None) -> None:
    """A handler, not SIG_IGN: processes started during the cleanup must not inherit an ignored signal."""
