"""`rlvr bench step | rollout | agent | learner | sync | verifiers`: benchmarks that print measured ratios."""

from __future__ import annotations

from rlvr.cli.common import fail


def cmd_bench(args) -> int:
    if args.what == "verifiers":
        from rlvr.cli.verify import bench_verifiers
        from rlvr.verifiers import VerifierConfig

        return bench_verifiers(VerifierConfig(workers=args.workers), quick=args.quick, judges=args.judges,
                               requests=args.requests)
    if args.what == "learner":
        from rlvr.learners.bench import main as bench_learner

        return bench_learner(args)
    if args.what == "sync":
        from rlvr.weights.bench import bench_weight_sync, format_result

        if args.lora:
            from rlvr.weights.bench import bench_sync_lora, format_lora

            print(format_lora(bench_sync_lora(args.lora, args.bucket_mb, args.backend, args.dtype)))
            return 0
        print(format_result(bench_weight_sync(int(args.gb * 1e9), args.bucket_mb, args.backend, dtype=args.dtype)))
        return 0
    if args.what == "rollout":
        from rlvr.config import RecipeError
        from rlvr.loop.bench import bench_rollout, format_rollout

        try:
            print(format_rollout(bench_rollout(args.recipe, steps=args.steps, overrides=args.set or [], sync_gb=args.gb)))
        except RecipeError as e:
            return fail(str(e))
        return 0
    if args.what == "agent":
        from rlvr.config import RecipeError
        from rlvr.loop.bench import bench_agent, format_agent

        try:
            print(format_agent(bench_agent(args.recipe, trajectories=args.trajectories, overrides=args.set or [],
                                            vs_single_turn=args.vs_single_turn, styles=args.style)))
        except RecipeError as e:
            return fail(str(e))
        return 0
    if args.what == "step":
        from rlvr.loop.bench_step import bench_step, format_step

        try:
            print(format_step(bench_step(args.recipe, args.vs or [], steps=args.steps, overrides=args.set or [])))
        except (RuntimeError, ValueError) as e:
            return fail(str(e))
        return 0
    raise AssertionError(args.what)  # argparse admits only the six above


def add_parsers(sub) -> None:
    b = sub.add_parser("bench", help="benchmarks that print measured ratios")
    bsub = b.add_subparsers(dest="what", required=True, metavar="{step,rollout,agent,learner,sync,verifiers}")
    bst = bsub.add_parser("step", help="a recipe's step time (generation, learner, sync) as written and with each --vs variant")
    bst.add_argument("recipe", help="recipe YAML file")
    bst.add_argument("--vs", action="append", metavar="KEY=VALUE[,KEY=VALUE]",
                     help="a variant: these overrides on top of the recipe (repeatable; each is one more short run)")
    bst.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field in every variant (repeatable)")
    bst.add_argument("--steps", type=int, default=4, help="RL steps per variant; the first is left out (default 4)")
    bv = bsub.add_parser("verifiers", help="checks per second of each built-in verifier, through the worker pool")
    bv.add_argument("--quick", action="store_true", help="a quarter of the work")
    bv.add_argument("--workers", type=int, default=2, help="verifier worker processes (default 2)")
    bv.add_argument("--judges", metavar="YAML", help="benchmark the judges and reward models declared here instead "
                    "(requests/s, latency; e.g. docs/judges_cpu.yaml)")
    bv.add_argument("--requests", type=int, default=64, help="with --judges: requests per judge / reward model (default 64)")
    br = bsub.add_parser("rollout", help="in-loop vs raw AsyncLLM tokens/s, long-tail pipeline speed-up, async step ratio, weight-sync GB/s")
    br.add_argument("--recipe", help="recipe to measure (default: recipes/toy_addition_cpu.yaml)")
    br.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe field (repeatable)")
    br.add_argument("--steps", type=int, default=8, help="RL steps per measurement (default 8)")
    br.add_argument("--gb", type=float, default=1.0, help="weight-sync tensors adding up to this many GB (default 1)")
    ba = bsub.add_parser("agent", help="concurrent agent trajectories through the OpenAI-compatible endpoint: trajectories/s, added latency")
    ba.add_argument("--recipe", help="recipe whose engines serve the agent (default: recipes/toy_addition_cpu.yaml)")
    ba.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe field (repeatable)")
    ba.add_argument("--trajectories", type=int, default=256, help="trajectories at once (default 256)")
    ba.add_argument("--vs-single-turn", action="store_true",
                    help="samples/s of single-turn vs each agent style (handed client, own AsyncOpenAI, sync def), one call each")
    ba.add_argument("--style", action="append", choices=["handed", "own_client", "own_shared", "sync"],
                    help="with --vs-single-turn: only these agent styles (repeatable; default all three)")
    bs = bsub.add_parser("sync", help="learner -> rollout weight transfer GB/s between two local processes")
    bs.add_argument("--gb", type=float, default=1.0, help="model-shaped tensors adding up to this many GB (default 1)")
    bs.add_argument("--bucket-mb", type=int, default=256, help="weight-sync bucket size in MiB (default 256)")
    bs.add_argument("--backend", choices=["gloo", "nccl", "cuda_ipc"], default="gloo", help="transport (default gloo)")
    bs.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16", help="tensor dtype (default bfloat16)")
    bs.add_argument("--lora", type=int, nargs="?", const=16, metavar="RANK",
                    help="SmolLM2-135M shape: one full-weight sync vs one LoRA-adapter sync of this rank (default 16)")
    from rlvr.learners.bench import add_arguments as bench_learner_arguments

    bench_learner_arguments(bsub.add_parser("learner", help="learner tokens/s and, on a GPU, MFU (no Ray, no vLLM)"))
    b.set_defaults(fn=cmd_bench)
