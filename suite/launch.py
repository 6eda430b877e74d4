"""Running a harness as jobs, one per model, through submitit: a Slurm job array, or submitit's
local executor (the same jobs on this machine, which is how the tests run them).

Every job runs the harness's own command line for its one model, with `--resume` and `--part`,
so it writes its rows to its own part file beside `--out` (`throughput.part-job-ViT-B_16.csv`)
and never to a file that another node appends to: file locks cannot be trusted on NFS, and every
reader (the report, `--resume`, `python -m suite.merge`) takes a results file and its parts as
one table. A job that is preempted or runs out of time is requeued by submitit (the job is
`Checkpointable`) and, resuming, measures only what is missing.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.cli import UsageError, error_line, positive_int

LAUNCHERS = ("none", "local", "slurm")

#: The Slurm options: (flag, dest, type, help); all default to None so that "given" can be told apart.
SLURM_OPTIONS = (
    ("--slurm-partition", "slurm_partition", str, "Slurm partition of the jobs"),
    ("--slurm-time", "slurm_time", positive_int, "minutes each job may run (default 60)"),
    ("--slurm-gpus-per-job", "slurm_gpus_per_job", int, "GPUs per job (default 1; 0 for CPU jobs)"),
    ("--slurm-array-parallelism", "slurm_array_parallelism", positive_int,
     "jobs of the array running at once (default 8)"),
    ("--slurm-folder", "slurm_folder", Path, "folder for submitit's job files and logs (default: beside --out, "
                                             "in <out folder>/jobs)"),
)


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """--launcher, the Slurm options, --part and --no-wait, the same in every harness."""
    parser.add_argument("--launcher", choices=LAUNCHERS, default="none",
                        help="none: measure here; local: one job per model through submitit's local executor; "
                             "slurm: one job per model as a Slurm job array")
    for flag, dest, kind, text in SLURM_OPTIONS:
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=f"with --launcher slurm: {text}")
    parser.add_argument("--no-wait", action="store_true",
                        help="with a launcher: submit the jobs and return (results arrive as part files)")
    parser.add_argument("--part", default=None,
                        help="write rows to a part file beside --out (OUT.part-PART.csv) instead of --out itself; "
                             "for jobs on file systems whose locks cannot be trusted")


def check_launcher_arguments(args: argparse.Namespace) -> None:
    """One clear UsageError for a combination that cannot work."""
    given = [flag for flag, dest, *_ in SLURM_OPTIONS if getattr(args, dest) is not None]
    if given and args.launcher != "slurm":
        raise UsageError(f"{given[0]} is a Slurm option: it goes with --launcher slurm")
    if args.no_wait and args.launcher == "none":
        raise UsageError("--no-wait goes with --launcher local or slurm")
    if args.launcher == "slurm" and shutil.which("sbatch") is None:
        raise UsageError("--launcher slurm: sbatch is not on this machine's PATH (run it on a Slurm login node)")
    if args.launcher != "none" and args.part:
        raise UsageError("--part is for one job; a launcher gives each of its jobs a part of its own")


def job_tag(model: str) -> str:
    return f"job-{model}"


#: Options that belong to the launching process, not to a job: (option, takes a value).
_LAUNCH_ONLY = {"--launcher": True, "--no-wait": False, "--part": True, "--models": True, "--resume": False,
                **{flag: True for flag, *_ in SLURM_OPTIONS}}


def job_argv(argv: Sequence[str], model: str, extra_only: Sequence[str] = ()) -> list[str]:
    """The command line of one model's job: the launching command's own flags, without the
    launcher's, for this one model, resuming, into its own part file."""
    only = {**_LAUNCH_ONLY, **{flag: True for flag in extra_only}}
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in only:
            skip = only[name] and "=" not in arg
            continue
        kept.append(arg)
    return [*kept, "--models", model, "--resume", "--part", job_tag(model)]




@dataclass
class HarnessJob:
    """One model's job: the harness's `main(argv)`; requeued as it is after preemption or timeout."""

    module: str
    argv: list[str]
    model: str
    instruments: Any = None

    def __call__(self) -> int:
        main = importlib.import_module(self.module).main
        kwargs = {"instruments": self.instruments} if self.instruments is not None else {}
        code = main(self.argv, **kwargs)
        if code:
            raise RuntimeError(f"python -m {self.module} {' '.join(self.argv)} exited with code {code}")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Requeue this job unchanged: its --resume measures only what its part file lacks."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


def executor_for(args: argparse.Namespace, folder: Path) -> Any:
    """submitit's executor for --launcher local or slurm, with the job parameters set."""
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster=args.launcher)
    minutes = args.slurm_time or 60
    if args.launcher == "slurm":
        gpus = 1 if args.slurm_gpus_per_job is None else args.slurm_gpus_per_job
        executor.update_parameters(timeout_min=minutes, gpus_per_node=gpus, tasks_per_node=1, nodes=1,
                                   slurm_partition=args.slurm_partition,
                                   slurm_array_parallelism=args.slurm_array_parallelism or 8,
                                   name="suite")
    else:
        executor.update_parameters(timeout_min=minutes, name="suite")
    return executor


@dataclass
class Launched:
    """What a launch did: the jobs, and those that failed (model, first line of the reason)."""

    jobs: list[Any] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def launch(args: argparse.Namespace, module: str, argv: Sequence[str], models: Sequence[str], out: Path,
           instruments: Any = None, progress: bool = True, echo: Callable[[str], None] = print) -> Launched:
    """Submit one job per model and, unless --no-wait, wait for them with a progress bar."""
    from tqdm import tqdm

    folder = Path(args.slurm_folder) if getattr(args, "slurm_folder", None) else out.parent / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    executor = executor_for(args, folder)
    tasks = [HarnessJob(module, job_argv(argv, model), model, instruments) for model in models]
    with executor.batch():
        pending = [executor.submit(task) for task in tasks]
    launched = Launched(pending)
    ids = ", ".join(str(job.job_id) for job in pending[:3]) + (", ..." if len(pending) > 3 else "")
    echo(f"submitted {len(pending)} job(s) through submitit ({args.launcher}: {ids}); logs in {folder}")
    if args.no_wait:
        echo(f"rows arrive as part files beside {out}; the report and --resume read them with it "
             f"(python -m suite.merge {out} folds them in)")
        return launched
    bar = tqdm(total=len(pending), unit="job", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    waiting = dict(zip(models, pending))
    while waiting:
        for model, job in list(waiting.items()):
            if job.done():
                del waiting[model]
                bar.update(1)
                try:
                    job.result()
                except Exception as exc:  # noqa: BLE001 - a failed job is reported, the others go on
                    launched.failed.append((model, _reason(exc)))
        if waiting:
            time.sleep(0.5)
    bar.close()
    return launched


def _reason(exc: BaseException) -> str:
    """The first line of a job's failure that names an error (submitit wraps the job's traceback)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "Error" in line or "error" in line or "exited" in line]
    return (named[-1] if named else lines[-1] if lines else error_line(exc))[:300]


def report_launch(launched: Launched, models: Sequence[str], out: Path) -> int:
    """The end of a launch: a line per failed job, a count, and the exit code (1 if any failed)."""
    for model, reason in launched.failed:
        print(f"job failed: {model}: {reason}", file=sys.stderr)
    advice = "; rerun with --resume to finish what the failed ones left" if launched.failed else ""
    print(f"\n{len(models) - len(launched.failed)} of {len(models)} job(s) ended well; rows in {out} and its part "
          f"files{advice}")
    return 1 if launched.failed else 0
