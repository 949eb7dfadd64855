# Compose the sweep once, up front: a bad override fails here, before any job starts.
import sys
import time
from pathlib import Path

from specsweep.config.compose import ConfigError
from specsweep.records.status import check_sweep
from specsweep.report.notice import run_notice
from specsweep.images.container import reap_containers
from specsweep.serve.reaper import mark_run, reap_orphans, remove_stale_lock
from specsweep.cli.jobs import job_argv
from specsweep.cell_progress import begin as begin_progress
from specsweep.workflow_plan import changes_nothing, host_cpu_key, plan_for_run, run_cell_job, run_config, specsweep_job

HOST_CPU_KEY = host_cpu_key()
# Whether this run rebuilt the table (onsuccess): it did if the table is newer than this.
RUN_STARTED = time.time()

if workflow.is_main_process and not changes_nothing(sys.argv[1:]):
    # A run that was SIGKILLed may have left a server (or a job) and its lock behind: clear them before this run
    # starts its own. (Without force-use-threads Snakemake re-reads this file in a child process per `run:` job:
    # not there; a dry run or lint changes nothing.)
    reap_orphans(Path.cwd())
    reap_containers(Path.cwd())
    remove_stale_lock(Path.cwd())
    mark_run(Path.cwd())

try:
    PLAN = plan_for_run(*run_config(config), workflow.is_main_process, Path.cwd())
except ConfigError as err:
    sys.exit(f"specsweep: config error: {err}")


wildcard_constraints:
    sweep=r"[A-Za-z0-9_.-]+",
    cell=r"[A-Za-z0-9_.-]+",
    key=r"[A-Za-z0-9_.-]+",

# Every job runs the config the plan resolved for it (specsweep.config.jobs, written next to its log as
# <key>.job.json and passed as --job-config); stage jobs get only their stage's config, tracked as the `config`
# param, so a stage reruns when its own config changes and never because of another cell's drafter or k.
