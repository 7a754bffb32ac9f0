"""The ``zoo`` command line.

    zoo fit | validate | test | predict --model NAME [--data NAME] [--config FILE] [key=value ...]
    zoo predict --model NAME --ckpt RUN --audio IN.wav --out OUT.mp4 [--seed N] [--pose POSES.npy] [--device D]
    zoo models                       registered models, one line each
    zoo weights                      pretrained weight files: status and SHA256
    zoo config --model NAME [...]    print the composed config
    zoo data synth [key=value ...]   build the embedded synthetic corpus
    zoo bench [--models all|a,b] [--data NAME] [--budget small|full|FILE] [--seed N] [--out DIR] [key=value ...]
                                     the leaderboard (benchmarks/results/<data>/leaderboard.{csv,json,md,png})
    zoo bench perf [--quick] [--device auto|cpu|cuda] [--only a,b]   the performance suite

Bad input (unknown key/model/data, wrong type, missing file or checkpoint) prints one ``error:`` line and exits
with code 2; ``--debug`` shows the traceback instead. A run stopped by SIGTERM (a scheduler's preemption) says
where it is and how to continue it, and exits with 143 (128 + SIGTERM), as a terminated process does.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from zoo.errors import ZooError

RUN_COMMANDS = ("fit", "validate", "test", "predict")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="Train, run and compare talking-head methods.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in RUN_COMMANDS + ("config",):
        p = sub.add_parser(command, help=f"{command} a model" if command != "config" else "print the composed config")
        p.add_argument("--model", required=True, help="registered model name (`zoo models`), e.g. lsp or lsp.apc")
        p.add_argument("--data", default=None, help="data config name (configs/data/*.yaml), default synth")
        p.add_argument("--config", default=None, help="extra YAML merged after the config groups")
        if command == "fit":
            p.add_argument("--resume", default=None, metavar="PATH|auto", help="continue from a checkpoint")
            p.add_argument("--force", action="store_true", help="staged models: retrain finished stages too")
        if command in ("validate", "test", "predict"):
            p.add_argument("--ckpt", default=None, help="checkpoint or run directory (default: the latest run's best)")
        if command == "predict":
            p.add_argument("--audio", default=None, help="drive the model with this audio file instead of the "
                                                          "test split (with --out)")
            p.add_argument("--out", default=None, help="mp4 to write for --audio (with the audio muxed in)")
            p.add_argument("--seed", type=int, default=None, help="seed of sampled motion for --audio (default 0)")
            p.add_argument("--pose", default=None, help=".npy of head poses [T, 6], one per video frame, to use "
                           "instead of sampled ones (a shorter file holds its last pose)")
            p.add_argument("--device", default=None, help="where the model runs for --audio: auto (default: the GPU "
                           "when there is one), cpu, cuda or cuda:N")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        p.add_argument("overrides", nargs="*", metavar="key=value",
                       help="config overrides, e.g. trainer=cpu trainer.max_epochs=3 data.batch_size=4")
    p = sub.add_parser("bench", help="the leaderboard over registered methods (`zoo bench perf`: performance suite)")
    p.add_argument("--models", default="all", help="all, or a comma list of methods (gt and static always run)")
    p.add_argument("--data", default=None, help="data config name (configs/data/*.yaml), default synth")
    p.add_argument("--budget", default="small", help="configs/bench/<name>.yaml or a budget YAML path")
    p.add_argument("--seed", type=int, default=0, help="training and evaluation seed")
    p.add_argument("--out", default=None, help="output directory (default benchmarks/results/<data>)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    sub.add_parser("models", help="list registered models")
    p = sub.add_parser("weights", help="list the pretrained weight files, their status and hashes")
    p.add_argument("--dir", default=None, help="weights directory (default $ZOO_WEIGHTS_DIR or torch hub's)")
    p = sub.add_parser("data", help="data tools")
    p.add_argument("action", choices=["synth"], help="synth: build the embedded synthetic corpus")
    p.add_argument("--out", default=None, help="output directory (default: the cache used by data=synth)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="generator settings, e.g. seed=1 size=256")
    return parser


def _cmd_models() -> None:
    from zoo.registry import get_entry, list_models

    names = list_models()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {get_entry(name).help}")


def _cmd_config(args) -> None:
    from omegaconf import OmegaConf

    from zoo.harness import compose_run
    from zoo.pipeline import check_stages, is_staged
    from zoo.registry import get_entry

    cfg = compose_run(args.model, args.data, args.config, args.overrides)
    if is_staged(get_entry(args.model).model_class):   # as `zoo fit` checks them before the first stage trains
        check_stages(cfg, (args.data, args.config, tuple(args.overrides)))
    print(OmegaConf.to_yaml(cfg), end="")


def _cmd_data_synth(args) -> None:
    from omegaconf import OmegaConf

    from zoo.config import merge_overrides, to_dataclass
    from zoo.synth import SynthConfig, build_corpus, default_root

    cfg = merge_overrides(OmegaConf.structured(SynthConfig), args.overrides or [])
    synth_cfg = to_dataclass(cfg, SynthConfig)
    root = build_corpus(synth_cfg, args.out or default_root(synth_cfg), progress=True)
    print(f"corpus written to {root}")


SIGTERM_EXIT_CODE = 143


def _is_sigterm(stop: SystemExit) -> bool:
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    return isinstance(stop, SIGTERMException)


def _how_to_continue(run) -> str:
    """How to continue a run that was stopped."""
    from zoo.pipeline import is_staged
    from zoo.registry import get_entry

    if run.stage != "fit":
        return "run the command again"
    if is_staged(get_entry(run.cfg.run.model).model_class):
        return "the same command again resumes the interrupted stage from its checkpoints/last.ckpt"
    last = run.run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return "no checkpoints/last.ckpt yet: it stopped in its first epoch"
    return f"--resume auto with run.name={run.run_dir.name} continues from {last}"


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["bench", "perf"]:          # the suite parses its own options
        from zoo.bench import run_perf

        return run_perf(argv[2:])
    parser = _parser()
    # Overrides may come before or after options (`zoo fit --model x a=1 --resume auto b=2`).
    args, extra = parser.parse_known_args(argv)
    unknown = [item for item in extra if item.startswith("-") or "=" not in item]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra and not hasattr(args, "overrides"):
        print(f"error: `zoo {args.command}` takes no key=value overrides (got {' '.join(extra)})", file=sys.stderr)
        return 2
    if extra:
        args.overrides = list(args.overrides) + extra
    if args.command == "predict" and args.audio is None:
        given = [option for option in ("out", "seed", "pose", "device") if getattr(args, option) is not None]
        if given:
            print(f"error: --{given[0]} applies to `zoo predict --audio IN.wav` only; without --audio the model "
                  f"predicts the test split into its run directory", file=sys.stderr)
            return 2
    run = None   # the fit/validate/test/predict run, once prepared
    try:
        if args.command == "models":
            _cmd_models()
        elif args.command == "weights":
            from zoo.weights import format_weights_table

            print(format_weights_table(args.dir))
        elif args.command == "config":
            _cmd_config(args)
        elif args.command == "data":
            _cmd_data_synth(args)
        elif args.command == "bench":
            from zoo.bench import run_leaderboard

            run_leaderboard(args.models, args.data, args.budget, args.seed, args.out, args.overrides)
        elif args.command == "predict" and args.audio is not None:
            from zoo.predict import predict_audio_file

            predict_audio_file(args.model, args.ckpt, args.audio, args.out, args.seed or 0, args.pose,
                               args.overrides, args.device or "auto")
        else:
            from zoo.harness import execute, prepare

            name_preset = "ZOO_RUN_NAME" in os.environ
            run = prepare(args.command, args.model, args.data, args.config, args.overrides,
                          resume=getattr(args, "resume", None), ckpt=getattr(args, "ckpt", None),
                          force=getattr(args, "force", False))
            try:
                execute(run)
            finally:
                if not name_preset:  # the generated name is for this run's DDP ranks only
                    os.environ.pop("ZOO_RUN_NAME", None)
            print(f"run directory: {run.run_dir}")
    except ZooError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except SystemExit as stop:
        if not _is_sigterm(stop):
            raise
        # Lightning stops a fit or test on SIGTERM (any command's, `zoo bench`'s runs too) by raising a SystemExit
        # without a code (exit status 0): say where it stopped and exit as a terminated process does (128 + 15), so
        # that schedulers and scripts see it stopped
        where = (f"; run directory: {run.run_dir} ({_how_to_continue(run)})" if run is not None else
                 " (the same command again continues from what it finished)")
        print(f"error: terminated (SIGTERM){where}", file=sys.stderr)
        return SIGTERM_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main())
