"""`scenario list|check|run|compare` and `bench`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from cli.common import check_output_files, config_from, number_in, print_json
from halab.atomic import write_atomic
from halab.lab.config import MAX_RATE, MIN_RATE, PROFILES


def register(sub) -> None:
    p = sub.add_parser("scenario", help="run scripted scenarios with hypotheses and reports",
                       description="Scripted scenarios: steps that break the lab, hypotheses checked over "
                       "the whole run, reports as JSON, Markdown and HTML.")
    ssub = p.add_subparsers(dest="scenario_command", metavar="ACTION", required=True)
    q = ssub.add_parser("list", help="the built-in scenarios")
    q.set_defaults(func=_list)
    q = ssub.add_parser("check", help="validate scenario files (and, with a lab definition, its nodes)")
    q.add_argument("files", nargs="+", metavar="FILE", help="scenario file or built-in name")
    q.set_defaults(func=_check)
    q = ssub.add_parser("run", help="run a scenario unattended; exit 0 only when every hypothesis held")
    q.add_argument("file", metavar="FILE", help="scenario file or built-in name")
    q.add_argument("--report", metavar="DIR", help="write JSON, Markdown, HTML and the timeline here")
    q.add_argument("--rate", type=number_in(MIN_RATE, MAX_RATE), metavar="OPS",
                   help="traffic rate for every `traffic: {rate}` step (operations/s; e.g. lower under TCG)")
    q.add_argument("--reset", nargs="?", const="ready", metavar="CHECKPOINT",
                   help="reset the lab to a checkpoint (default: ready) first, so runs are repeatable")
    q.set_defaults(func=_run)
    q = ssub.add_parser("compare", help="run a scenario under several HAProxy presets, side by side")
    q.add_argument("file", metavar="FILE")
    q.add_argument("--presets", default="fast,kolla", help="comma-separated, the first is the baseline "
                   "(default: fast,kolla)")
    q.add_argument("--report", metavar="DIR")
    q.add_argument("--rate", type=number_in(MIN_RATE, MAX_RATE), metavar="OPS",
                   help="traffic rate for every `traffic: {rate}` step")
    q.add_argument("--reset", nargs="?", const="ready", metavar="CHECKPOINT",
                   help="reset the lab to a checkpoint (default: ready) before each preset's run")
    q.set_defaults(func=_compare)
    p = sub.add_parser("bench", help="benchmark up, failover (api-2, db-1, mq-1; both presets), down",
                       description="Brings the lab up, measures kill api-2, kill db-1 and kill mq-1 under "
                       "traffic with the fast and then the kolla preset, brings it down; prints JSON. "
                       "Takes a long time (about half an hour under TCG).")
    p.add_argument("--json", metavar="FILE", help="also write the JSON here")
    p.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    p.add_argument("--no-warm", action="store_true", help="skip checkpoint save / reset / stop / start")
    p.add_argument("--no-failover", action="store_true", help="skip the failover measurements "
                   "(cold up, warm labs and down only: minutes instead of half an hour)")
    p.add_argument("--timeline", metavar="FILE", help="also write the run's timeline (JSON Lines) here")
    p.add_argument("--profile", choices=PROFILES, help="benchmark the lab file's lab as this profile "
                   "(`--profile ha --no-failover`: the ha cold up by wave, warm labs, down)")
    p.set_defaults(func=_bench)


def _say(msg: str) -> None:
    print(f"scenario: {msg}", flush=True)


def _list(_args: argparse.Namespace) -> int:
    from halab.chaos.scenario import builtin_scenarios, load_scenario
    from halab.errors import ConfigError

    for path in builtin_scenarios():
        try:
            sc = load_scenario(path)
        except ConfigError as exc:
            print(f"{path.stem:<18} INVALID: {exc.errors[0]}")
            continue
        prof = ",".join(sc.profiles) or "any"
        print(f"{sc.name:<18} [{prof}] {sc.description.split('. ')[0].rstrip('.')}.")
        print(f"{'':<18} {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from halab.chaos.scenario import load_scenario
    from halab.errors import ConfigError, UsageError

    cfg = config_from(args) if getattr(args, "config", None) else None
    bad = 0
    for f in args.files:
        try:
            sc = load_scenario(f)
            if cfg is not None and (not sc.profiles or cfg.profile in sc.profiles):
                sc.check_lab(cfg)
        except ConfigError as exc:
            bad += 1
            for line in exc.errors:
                print(f"error: {line}", file=sys.stderr)
            continue
        except UsageError as exc:
            bad += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        n = len(sc.all_hypotheses())
        print(f"{sc.source}: ok ({sc.name}: {len(sc.steps)} steps, {n} hypotheses, profile "
              f"{','.join(sc.profiles) or 'any'})")
    return 2 if bad else 0


def _print_result(result) -> None:
    for line in result.summary_lines():
        print(line)
    for m in result.measurements:
        det = f"{m['detection_s']:.2f} s" if m.get("detection_s") is not None else "not seen"
        exp = f"{m['expected_detection_s']:.2f} s" if m.get("expected_detection_s") is not None else "n/a"
        print(f"  measured {m['fault']} {m['node']} ({m['preset']}): detection {det} (expected {exp}), "
              f"failed reads/writes/pages {m['failed_reads']}/{m['failed_writes']}/{m['failed_pages']}, "
              f"error window {m['error_window_s']:.2f} s")


def _report(result, directory: str, live, stem: str | None = None) -> None:
    from halab.report.writer import write_report

    paths = write_report(result, directory, stem=stem)
    tl = Path(directory) / f"{stem or result.scenario}.timeline.jsonl"
    # One run of several on the engine's timeline (compare): only its own part.
    live.timeline.write_jsonl(tl, since=result.started_at - 1.0 if stem else None)
    if stem is None:
        print(f"report: {paths['html']} ({paths['markdown'].name}, {paths['json'].name}, {tl.name})")


def _reset_first(cfg, name: str) -> None:
    """--reset: every run starts from the same known-good cut, so runs are repeatable."""
    from halab.chaos.scenario import lab_resetter

    _say(f"reset to checkpoint {name}: {lab_resetter(cfg)(name)}")


def _run(args: argparse.Namespace) -> int:
    from halab.chaos.scenario import load_scenario
    from halab.live.engine import LabEngine

    cfg = config_from(args)
    sc = load_scenario(args.file)
    if args.rate is not None:
        sc = sc.with_rate(args.rate)
    sc.check_lab(cfg)
    if args.reset:
        _reset_first(cfg, args.reset)
    with LabEngine.open(cfg) as live:
        live.start_observing()
        result = live.run_scenario(sc, progress=_say)
        if args.report:
            _report(result, args.report, live)
    _print_result(result)
    return 0 if result.passed else 1


def _compare(args: argparse.Namespace) -> int:
    from halab.chaos.scenario import load_scenario
    from halab.errors import UsageError
    from halab.lab.config import HAPROXY_PRESETS
    from halab.live.engine import LabEngine
    from halab.live.matrix import run_matrix
    from halab.report.writer import comparison, write_compare

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    bad = [p for p in presets if p not in HAPROXY_PRESETS]
    if bad or len(presets) < 2 or len(set(presets)) != len(presets):
        raise UsageError(f"--presets takes two or more distinct presets of {', '.join(HAPROXY_PRESETS)} "
                         f"(got {args.presets!r})")
    cfg = config_from(args)
    base = load_scenario(args.file)
    if args.rate is not None:
        base = base.with_rate(args.rate)
    base.check_lab(cfg)

    with LabEngine.open(cfg) as live:
        live.start_observing()

        def before(preset: str) -> None:
            _say(f"--- preset {preset} ---")
            if args.reset:
                _say(f"reset to checkpoint {args.reset}: {live.reset_step(args.reset)}")

        def one(pcfg, _cell: str):
            preset = pcfg.haproxy.preset
            result = live.run_scenario(replace(base, preset=preset), progress=_say)
            if args.report:
                _report(result, args.report, live, stem=f"{base.name}-{preset}")
            _print_result(result)
            return result

        matrix = run_matrix(cfg, presets, [base.name], one, live.install_haproxy, before=before, say=_say,
                            keep_going=False)
    results = {p: row[base.name] for p, row in matrix.results.items()}
    for problem in matrix.problems:  # only putting the lab's own preset back can fail and go on
        print(f"problem: {problem}", file=sys.stderr)
    cmp = comparison(results)
    print(f"\n{base.name}: " + ", ".join(
        f"{p}: detection {row['detection_s'] if row['detection_s'] is not None else 'n/a'} s"
        for p, row in cmp["rows"].items()))
    for p in presets[1:]:
        ratio = cmp["rows"][p][f"detection_ratio_vs_{presets[0]}"]
        print(f"detection ratio {p}/{presets[0]}: {f'{ratio:g}x' if ratio is not None else 'n/a'}")
    if args.report:
        paths = write_compare(cmp, args.report)
        print(f"report: {paths['html']}")
    return 0 if all(r.passed for r in results.values()) and not matrix.problems else 1


def _bench(args: argparse.Namespace) -> int:
    from halab.live.bench import run_bench

    check_output_files(args, "json", "timeline")
    cfg = config_from(args)
    data = run_bench(cfg, progress=lambda m: print(f"bench: {m}", file=sys.stderr, flush=True),
                     keep=args.keep, timeline_path=args.timeline, warm=not args.no_warm,
                     failover=not args.no_failover)
    print_json(data)
    if args.json:
        write_atomic(args.json, json.dumps(data, indent=2, default=str) + "\n", 0o644)
    return 0 if not data.get("problems") else 1
