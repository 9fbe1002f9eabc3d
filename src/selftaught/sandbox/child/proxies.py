"""The `language_model` and `utility` objects handed to a generated improver, inside the sandbox.

They look like the paper's objects but hold nothing: every call goes to the host over the
channel, and the host keeps the budgets. Writing a budget attribute changes nothing but is
reported to the host as tampering; reads always show the host's numbers.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import protocol

#: A name of this module, so that rebinding it behind the module's guard is seen (watch.WATCHED_NAMES).
BUDGET_ATTRIBUTES = protocol.BUDGET_ATTRIBUTES


class LanguageModelError(Exception):
    """The host refused or failed a language-model call (budget exceeded, bad arguments, backend error)."""


class Channel:
    """Messages to and from the host; a lock keeps threads of a generated improver from interleaving."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = protocol.FrameReader(sock)
        # The audit hook does not use it: it reports in packets of its own, which need no lock.
        self.lock = threading.RLock()
        self._next_id = 0

    def receive(self, wait: bool = True) -> tuple[dict[str, Any], bytes]:
        """The host's next message and its binary tail; without `wait`, BlockingIOError when it is not there yet."""
        return self._reader.receive(wait)

    def call(self, method: str, params: dict[str, Any]) -> Any:
        with self.lock:
            self._next_id += 1
            protocol.send_message(
                self.sock, {"kind": protocol.CALL, "id": self._next_id, "method": method, "params": params}
            )
            reply, _ = self._reader.receive()
        if reply.get("kind") != protocol.REPLY or reply.get("id") != self._next_id:
            raise protocol.ProtocolError("unexpected reply from the host")
        if not reply.get("ok"):
            raise LanguageModelError(str(reply.get("error")))
        return reply.get("value")

    def send(self, message: dict[str, Any]) -> None:
        self.send_frames(protocol.frame(message))

    def send_frames(self, frames: bytes) -> None:
        """Sends messages already framed."""
        with self.lock:
            protocol.send_frames(self.sock, frames)

    def notify(self, name: str, detail: dict[str, Any]) -> None:
        self.send({"kind": protocol.EVENT, "name": name, "detail": detail})


class _Proxy:
    _target = ""

    def __init__(self, channel: Channel, state: dict[str, Any]) -> None:
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_state", dict(state))

    def __getattr__(self, name: str) -> Any:
        state = object.__getattribute__(self, "_state")
        if name in state:
            return state[name]
        raise AttributeError(f"{self._target} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in BUDGET_ATTRIBUTES or name in ("str", "_channel", "_state"):
            self._channel.notify(
                "budget_tampering",
                {"target": self._target, "attribute": name, "value": repr(value)[:200]},
            )
            return
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._channel.notify("budget_tampering", {"target": self._target, "attribute": name, "value": "<deleted>"})

    def _update(self, state: Any) -> None:
        if isinstance(state, dict):
            object.__getattribute__(self, "_state").update(state)


class LanguageModel(_Proxy):
    """`language_model` of the paper's API: batch_prompt, prompt, budget, max_responses_per_call."""

    _target = "language_model"

    def batch_prompt(self, expertise: str, messages: list[str], temperature: float = 0.7) -> list[str]:
        try:
            messages = list(messages)
        except TypeError:
            return []
        return self._request("batch_prompt", {"expertise": expertise, "messages": messages, "temperature": temperature})

    def prompt(self, expertise: str, message: str, n_responses: int = 1, temperature: float = 0.7) -> list[str]:
        return self._request(
            "prompt",
            {"expertise": expertise, "message": message, "n_responses": n_responses, "temperature": temperature},
        )

    def _request(self, method: str, params: dict[str, Any]) -> list[str]:
        reply = self._channel.call(f"language_model.{method}", protocol.encode_value(params))
        self._update(reply.get("state"))
        return list(reply["responses"])


class Utility(_Proxy):
    """`utility` of the paper's API: call it on a solution's source; str, budget and uses are read-only."""

    _target = "utility"

    def __call__(self, solution: Any, *args: Any, **kwargs: Any) -> float:
        # The paper's sandbox experiment passes `use_sandbox`; whatever it says, scoring stays sandboxed,
        # and a request to turn the sandbox off is reported to the host.
        # Given and false turns the paper's sandbox off, None included; not given leaves it on.
        given = "use_sandbox" in kwargs or bool(args)
        use_sandbox = kwargs["use_sandbox"] if "use_sandbox" in kwargs else (args[0] if args else True)
        reply = self._channel.call(
            "utility",
            {
                "solution": protocol.encode_value(solution),
                "extra_arguments": repr((args, kwargs))[:200],
                "sandbox_off_requested": given and not use_sandbox,
            },
        )
        self._update(reply.get("state"))
        return float(reply["score"])
