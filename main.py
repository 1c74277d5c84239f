"""Cloud Functions source entry point: one bundle, one requirements.txt, every function.

Each Cloud Function is deployed from this file with its own `--entry-point`; the local stack
serves each with functions-framework `--target`. Keep this list equal to
`shared.topology.all_entry_points()` (a test checks it, and Terraform declares the same).
"""

from functions.approve import approve
from functions.bake_check import on_bake_check
from functions.build_succeeded import on_build_succeeded
from functions.cool_down_complete import on_cool_down_complete
from functions.dashboard import dashboard
from functions.dead_letter import on_dead_letter
from functions.notify import on_notify
from functions.promote import promote
from functions.rollback import rollback
from functions.start_rolling_replace import on_start_rolling_replace
from functions.watchdog import watchdog

__all__ = [
    "approve",
    "dashboard",
    "on_bake_check",
    "on_build_succeeded",
    "on_cool_down_complete",
    "on_dead_letter",
    "on_notify",
    "on_start_rolling_replace",
    "promote",
    "rollback",
    "watchdog",
]
