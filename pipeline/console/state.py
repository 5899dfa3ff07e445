"""What every request of the console shares: the alert folders, the verdicts, the operators and the
gallery; held in the Flask application's `extensions`."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, session

from retail_reid.pipeline.console.alerts import AlertFolder
from retail_reid.pipeline.console.gallery_access import GalleryAccess
from retail_reid.pipeline.console.reference_decisions import ReferenceDecisions
from retail_reid.pipeline.console.sessions import SessionStore
from retail_reid.pipeline.console.settings import ConsoleSettings
from retail_reid.pipeline.console.throttle import SignInThrottle
from retail_reid.pipeline.console.users import OperatorsFile
from retail_reid.pipeline.console.verdicts import VerdictStore

EXTENSION = "reid_console"
SESSION_OPERATOR = "operator"
SESSION_TOKEN = "token"  # the server-side session's (`SessionStore`)


@dataclass(frozen=True)
class ConsoleState:
    settings: ConsoleSettings
    folders: dict[str, AlertFolder]
    verdicts: VerdictStore
    operators: OperatorsFile
    sessions: SessionStore
    gallery: GalleryAccess
    throttle: SignInThrottle
    decisions: ReferenceDecisions  # on lane references


def state() -> ConsoleState:
    return current_app.extensions[EXTENSION]


def operator() -> str:
    """The signed-in operator (every view but sign-in runs only with one)."""
    return session[SESSION_OPERATOR]
