# Compose the sweep once, up front: a bad override fails here, before any job starts.
import sys

from specsweep.config.compose import ConfigError
from specsweep.report.notice import report_notice
from specsweep.workflow_plan import plan_sweep, specsweep_job

try:
    PLAN = plan_sweep(config.get("overrides", ""), config.get("sweep"))
except ConfigError as err:
    sys.exit(f"specsweep: config error: {err}")


wildcard_constraints:
    sweep=r"[A-Za-z0-9_.-]+",
    cell=r"[A-Za-z0-9_.-]+",
    key=r"[A-Za-z0-9_.-]+",
