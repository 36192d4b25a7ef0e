"""`rlvr submit | status | logs | stop | jobs`: the same recipe as a Ray job on a cluster."""

from __future__ import annotations

import sys

from rlvr.cli.common import fail


def _jobs_errors(fn):
    def run(args) -> int:
        from rlvr.cluster.jobs import JobError

        try:
            return fn(args)
        except JobError as e:
            return fail(str(e))
    return run


def _print_err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _follow(job_id: str, address: str | None) -> int:
    from rlvr.cluster import jobs

    try:
        final = jobs.logs(job_id, address, follow=True)
    except KeyboardInterrupt:
        _print_err(f"rlvr: stopped following; job {job_id} keeps running "
                   f"(`rlvr logs {job_id} --follow` to resume, `rlvr stop {job_id}` to end it)")
        return 130
    _print_err(f"job {job_id} {final}")
    return 0 if final == "SUCCEEDED" else 1


@_jobs_errors
def cmd_submit(args) -> int:
    from rlvr.cluster import jobs
    from rlvr.config import RecipeError

    try:
        job_id = jobs.submit(args.recipe, args.address, overrides=args.set or [], pip=args.pip or [],
                             extra_modules=args.module or [], ship_rlvr=not args.no_ship_rlvr,
                             note=lambda line: _print_err(f"note: {line}"))
    except RecipeError as e:  # checked before the cluster is contacted: nothing was submitted
        return fail(str(e))
    print(job_id, flush=True)
    return 0 if args.no_wait else _follow(job_id, args.address)


@_jobs_errors
def cmd_status(args) -> int:
    from rlvr.cluster import jobs

    print(jobs.describe(jobs.status(args.job_id, args.address)))
    return 0


@_jobs_errors
def cmd_logs(args) -> int:
    from rlvr.cluster import jobs

    if args.follow:
        return _follow(args.job_id, args.address)
    jobs.logs(args.job_id, args.address)
    return 0


@_jobs_errors
def cmd_stop(args) -> int:
    from rlvr.cluster import jobs

    final = jobs.stop(args.job_id, args.address)
    print(f"{args.job_id} {final}")
    return 0 if final in jobs.TERMINAL else 1


@_jobs_errors
def cmd_jobs(args) -> int:
    from rlvr.cluster import jobs

    print(jobs.jobs_table(jobs.list_jobs(args.address)))
    return 0


def add_parsers(sub) -> None:
    addr = dict(metavar="URL", help="Ray dashboard URL of the cluster (default: $RAY_ADDRESS, else http://127.0.0.1:8265)")
    su = sub.add_parser("submit", help="run a recipe as a Ray job on a running cluster (see docs/cluster.md)")
    su.add_argument("recipe", help="recipe YAML file (checked here before anything is submitted)")
    su.add_argument("--address", **addr)
    su.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field (repeatable)")
    su.add_argument("--pip", action="append", metavar="PKG", help="pip requirement installed for the job (repeatable)")
    su.add_argument("--module", action="append", metavar="NAME_OR_PATH",
                    help="extra local module or package directory to ship (repeatable)")
    su.add_argument("--no-ship-rlvr", action="store_true", help="use the rlvr installed on the cluster instead of this one")
    su.add_argument("--no-wait", action="store_true", help="print the job id and return instead of following the logs")
    su.set_defaults(fn=cmd_submit)

    st = sub.add_parser("status", help="one line on a Ray job: status, start, duration, message")
    st.add_argument("job_id")
    st.add_argument("--address", **addr)
    st.set_defaults(fn=cmd_status)

    lg = sub.add_parser("logs", help="print a Ray job's logs")
    lg.add_argument("job_id")
    lg.add_argument("--address", **addr)
    lg.add_argument("--follow", "-f", action="store_true", help="stream until the job ends (exit 0 if it succeeded)")
    lg.set_defaults(fn=cmd_logs)

    sp = sub.add_parser("stop", help="stop a Ray job and wait (up to 30 s) until it has ended")
    sp.add_argument("job_id")
    sp.add_argument("--address", **addr)
    sp.set_defaults(fn=cmd_stop)

    js = sub.add_parser("jobs", help="list the cluster's Ray jobs")
    js.add_argument("--address", **addr)
    js.set_defaults(fn=cmd_jobs)
