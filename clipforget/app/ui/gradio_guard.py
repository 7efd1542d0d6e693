"""Where Gradio's own layers would answer for the app (docs/security.md, "One origin" and "Gradio's own argument
checks"): :func:`own_cors_only` takes out Gradio's CORS middleware, which answers every ``localhost`` origin with
credentials, so the security middleware decides CORS alone; :func:`quiet_input_errors` turns Gradio's refusals of
an event's arguments, each printed with a full traceback, into one log line and a short ``gr.Error``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable

import gradio as gr
from gradio.route_utils import CustomCORSMiddleware

log = logging.getLogger("clipforget.app.gradio")

BAD_ARGUMENTS = "the server could not read this request's arguments (see the API page for their types)"


def own_cors_only():
    """A lifespan (``app_kwargs["lifespan"]``) that removes Gradio's CORS middleware."""

    @contextlib.asynccontextmanager
    async def lifespan(app) -> AsyncIterator[None]:
        kept = [m for m in app.user_middleware if m.cls is not CustomCORSMiddleware]
        if len(kept) != len(app.user_middleware):
            app.user_middleware = kept
            app.middleware_stack = None  # built again, without it, for the first request
        yield None

    return lifespan


def quiet_input_errors(demo: gr.Blocks) -> gr.Blocks:
    """Make Gradio's own argument errors one log line and a short message (see the module docstring): its
    preprocessing (``preprocess_data``) and the event data it builds before calling a handler (``call_function``;
    the handlers' own errors are quiet ``gr.Error`` s already). Postprocessing is left alone: an error there is the
    app's bug and keeps its traceback."""
    demo.preprocess_data = _quiet(demo.preprocess_data)  # type: ignore[method-assign]
    demo.call_function = _quiet(demo.call_function)  # type: ignore[method-assign]
    return demo


def _quiet(method: Callable) -> Callable:
    @functools.wraps(method)
    async def guarded(*args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except gr.Error as err:
            if not err.print_exception:  # the app's own message (Handlers.errors): shown as it is
                raise
            refused: Exception = err  # Gradio's check of a dropdown's choices: its message echoes the value
        except Exception as err:
            refused = err
        block_fn = args[0] if args else kwargs.get("block_fn")
        name = getattr(block_fn, "api_name", None) or getattr(block_fn, "name", None) or "?"
        log.warning("refused arguments of %s: %s: %s", name, type(refused).__name__,
                    " ".join(str(refused).split())[:300])
        raise gr.Error(BAD_ARGUMENTS, print_exception=False) from None

    return guarded
