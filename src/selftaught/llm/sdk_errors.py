"""One mapping of the HTTP SDKs' errors (openai, anthropic: same generator, same class names) to ours.

Transient failures (429, 5xx, timeouts, dropped connections) become TransientBackendError, which
the retry policy retries (429 and 529 as RateLimited, which also lowers the backend's concurrency);
the rest become one-line BackendErrors that never include a key.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

from selftaught.errors import BackendError, ModelOutage
from selftaught.llm.retry import PUSHBACK_STATUSES, RateLimited, TimedOut, TransientBackendError, retry_after_seconds
from selftaught.text import encodable

Result = TypeVar("Result")


#: Answers that may mean no request will get through, and whether they can mean nothing else. A 401 is
#: about the key alone; a 403 or 404 may also be about one request (a provider's moderation answers 403),
#: so the run's circuit breaker makes sure with a request of its own before it stops the run.
OUTAGE_STATUSES = {
    401: ("the server refused the API key", True),
    403: ("the server refuses this key, or this request", False),
    404: ("no such model or endpoint on this server", False),
}


def short(text: str) -> str:
    """A server's text for an error message: one line, bounded, encodable (servers put anything in them)."""
    return encodable(" ".join(text.split())[:300])


def call_sdk(sdk: ModuleType, base_error: type[Exception], spec: str, call: Callable[[], Result]) -> Result:
    try:
        return call()
    except (sdk.RateLimitError, sdk.InternalServerError) as error:
        pushback = RateLimited if error.status_code in PUSHBACK_STATUSES else TransientBackendError
        raise pushback(
            f"{spec}: HTTP {error.status_code}: {short(str(error.message))}",
            retry_after_seconds(error.response.headers),
        ) from None
    except sdk.APITimeoutError:
        raise TimedOut(f"{spec}: the server did not answer in time") from None
    except sdk.APIStatusError as error:
        message = f"{spec}: HTTP {error.status_code}: {short(str(error.message))}"
        if error.status_code in PUSHBACK_STATUSES:  # Anthropic's 529 "overloaded" among them
            raise RateLimited(message, retry_after_seconds(error.response.headers)) from None
        if error.status_code >= 500:
            raise TransientBackendError(message) from None
        if error.status_code in OUTAGE_STATUSES:
            meaning, certain = OUTAGE_STATUSES[error.status_code]
            raise ModelOutage(f"{message} ({meaning})", certain) from None
        raise BackendError(message) from None
    except sdk.APIConnectionError as error:
        raise TransientBackendError(f"{spec}: cannot reach the server: {short(str(error))}") from None
    except base_error as error:
        raise BackendError(f"{spec}: {type(error).__name__}: {short(str(error))}") from None
    except (ValueError, UnicodeDecodeError) as error:  # a body that is not the JSON it claims to be
        raise BackendError(f"{spec}: malformed response: {short(str(error))}") from None
    except BackendError:
        raise
    except Exception as error:  # whatever else a server's answer brings about (JSON nested past the recursion limit)
        raise BackendError(f"{spec}: malformed response: {type(error).__name__}: {short(str(error))}") from None
