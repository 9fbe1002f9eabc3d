"""The dashboard's web application: its routes, each a page rendered from the store's reader, behind the guard."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from selftaught.cli.safe_output import one_line
from selftaught.dashboard import experiments, lineage, queries
from selftaught.dashboard.reader import NotFound, PageReader, RunsQuery, run_id_of
from selftaught.dashboard.rendering import HERE, Links, template_environment
from selftaught.dashboard.security import Access, ASGIApp, Guard
from selftaught.errors import StoreError

__all__ = ["HERE", "create_app", "template_environment"]

#: A page number as the pagers write it: ASCII digits only (`str.isdigit` takes '²' and other scripts' digits).
_PAGE = re.compile(r"[0-9]{1,9}")
_log = logging.getLogger(__name__)

#: What a page builds its context from: the store's reader and the request.
Builder = Callable[[PageReader, Request], dict[str, Any]]


def create_app(store: Path, access: Access) -> ASGIApp:
    """The dashboard over `store`, read-only: every request opens the store's reader, which never writes."""
    pages = _Pages(store, template_environment())
    routes = [
        Route("/", pages.page("runs.html", pages.runs, fragment="runs_live.html")),
        Route("/api/runs/version", pages.version(lambda reader, request: reader.runs_version())),
        Route("/compare", pages.page("compare.html", lambda reader, request: queries.compare_page(reader, request.query_params.getlist("run")))),
        Route("/transfer", pages.page("transfer.html", lambda reader, request: experiments.transfer_page(reader))),
        Route("/experiments", pages.page("experiments.html", lambda reader, request: experiments.unsandboxing_page(reader))),
        Route("/runs/{run_id}", pages.page("run.html", pages.run, fragment="run_live.html")),
        Route("/api/runs/{run_id}/version", pages.version(lambda reader, request: queries.live_version(reader, _run_id(request)))),
        Route("/runs/{run_id}/lineage", pages.page("lineage.html", pages.lineage, fragment="lineage_live.html")),
        Route("/runs/{run_id}/calls", pages.page("calls.html", pages.calls)),
        Route("/runs/{run_id}/calls/{number}", pages.page("call.html", pages.call)),
        Route("/runs/{run_id}/improvers/{program_hash}", pages.page("improver.html", pages.improver)),
        Route("/runs/{run_id}/programs/{program_hash}", pages.page("program.html", pages.program)),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]  # fmt: skip
    return Guard(Starlette(routes=routes), access)


def _run_id(request: Request) -> str:
    return run_id_of(str(request.path_params["run_id"]))


def _page_number(request: Request) -> int:
    value = request.query_params.get("page", "1")
    return int(value) if _PAGE.fullmatch(value) else 1


class _Pages:
    """The routes' endpoints: each opens the reader, builds its page's context and renders its template.

    Whatever the store holds, a page answers with one line of why it cannot be shown: 404 when what it is
    about is not in the store, 503 when the store cannot be read (missing, locked, damaged, outdated), and
    500 for a record no page foresaw; never a traceback.
    """

    def __init__(self, store: Path, environment: Environment) -> None:
        self.store = store
        self.environment = environment

    def page(self, template: str, build: Builder, fragment: str | None = None) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            chosen = fragment if fragment and request.query_params.get("fragment") == "1" else template
            try:
                reader = PageReader(self.store)
                with reader:
                    context = build(reader, request)
                return HTMLResponse(self._render(chosen, request, context))
            except NotFound as missing:
                return self._error(request, 404, str(missing))
            except StoreError as error:
                return self._error(request, 503, str(error))
            except Exception as error:  # a record no page foresaw: one line, never a traceback
                return self._error(request, 500, _unforeseen(request, error))

        return endpoint

    def version(self, build: Callable[[PageReader, Request], str]) -> Callable[[Request], Response]:
        """A live region's version: the page polls it, and fetches the region anew when it changes."""

        def endpoint(request: Request) -> Response:
            try:
                reader = PageReader(self.store)
                with reader:
                    return JSONResponse({"version": build(reader, request)})
            except NotFound as missing:
                status, message = 404, str(missing)
            except StoreError as error:
                status, message = 503, str(error)
            except Exception as error:  # as for a page
                status, message = 500, _unforeseen(request, error)
            return JSONResponse({"version": None, "error": one_line(message)}, status_code=status)

        return endpoint

    def _render(self, template: str, request: Request, context: dict[str, Any]) -> str:
        def with_query(**changes: Any) -> str:
            params = dict(request.query_params)
            for own in ("fragment", "token"):  # the token lives in its cookie once given; links never carry it
                params.pop(own, None)
            params.update({key: str(value) for key, value in changes.items()})
            return "?" + urlencode({key: value for key, value in params.items() if value != ""})

        base = str(request.scope.get("root_path", ""))
        return self.environment.get_template(template).render(
            **context,
            store=str(self.store),
            path=request.url.path.removeprefix(base) or "/",
            base=base,
            links=Links(base),
            with_query=with_query,
        )

    def _error(self, request: Request, status: int, message: str) -> Response:
        try:
            html = self._render("error.html", request, {"status": status, "message": message})
        except Exception:  # the error page itself cannot fail on what it shows, but say it plainly if it does
            return Response(f"{status}: {one_line(message)}\n", status_code=status, media_type="text/plain")
        return HTMLResponse(html, status_code=status)

    # --- what each page shows ---------------------------------------------------------------

    def runs(self, reader: PageReader, request: Request) -> dict[str, Any]:
        params = request.query_params
        query = RunsQuery(
            status=params.get("status", ""),
            command=params.get("command", ""),
            text=params.get("q", ""),
            sort=params.get("sort", "started_at"),
            descending=params.get("dir", "desc") != "asc",
            page=_page_number(request),
        )
        return queries.runs_page(reader, query)

    def run(self, reader: PageReader, request: Request) -> dict[str, Any]:
        return queries.run_page(reader, reader.page_run(_run_id(request)), self.store, _page_number(request))

    def lineage(self, reader: PageReader, request: Request) -> dict[str, Any]:
        run = reader.page_run(_run_id(request))
        context = lineage.lineage_page(reader, run, _page_number(request))
        return {**context, "version": queries.live_version(reader, run["id"])}

    def calls(self, reader: PageReader, request: Request) -> dict[str, Any]:
        return queries.calls_page(reader, reader.page_run(_run_id(request)), _page_number(request))

    def call(self, reader: PageReader, request: Request) -> dict[str, Any]:
        run, number = reader.page_run(_run_id(request)), str(request.path_params["number"])
        context = queries.call_page(reader, run, int(number)) if _PAGE.fullmatch(number) else None
        if context is None:
            raise NotFound(f"run {run['id']} made no call {number[:20]!r}")
        return context

    def improver(self, reader: PageReader, request: Request) -> dict[str, Any]:
        run = reader.page_run(_run_id(request))
        return lineage.improver_page(reader, run, str(request.path_params["program_hash"]), _page_number(request))

    def program(self, reader: PageReader, request: Request) -> dict[str, Any]:
        run, program_hash = reader.page_run(_run_id(request)), str(request.path_params["program_hash"])
        program = lineage.program(reader, program_hash)
        return {"run": run, "program": program, "lines": lineage.source_lines(program["source"], [])}


def _unforeseen(request: Request, error: Exception) -> str:
    """The line a page shows (and the server's log keeps) for an error no page foresaw."""
    message = (
        f"this page cannot be shown: a record of the store is not what it expects ({type(error).__name__}: {error})"
    )
    _log.warning("%s: %s", request.url.path, one_line(message[:500]))
    return message[:500]
