"""``whistle routing``: the router's data and model: the desk's corrections, training,
and measurement on the frozen split.

- ``whistle routing corrections --export FILE`` writes every report the desk triaged
  or rerouted, one example per report (the desk's latest word), in the corpus format
  (``corpus/README.md``). Put the file in ``corpus/corrections/`` and retrain: the
  trainer folds those files in (``services.routing.corrections.load_corrections``).
  Reads Redis directly (``REDIS_URL``, ``WHISTLE_KEY_PREFIX``); needs no broker.
- ``whistle routing train`` reads ``corpus/train.jsonl`` and ``corpus/dev.jsonl`` (and, with
  ``--with-corrections``, the desk's exported corrections in ``corpus/corrections/``),
  chooses everything by cross-validation on them, writes a versioned artefact
  ``services/routing/model/router-<version>/`` and makes it current. A running
  routing service picks it up on its model reload (no restart, no message lost).
- ``whistle routing evaluate`` classifies the frozen test split with the current
  model and prints the figures, overall and per category; ``--record`` writes them
  to ``docs/routing-figures.json``, the figures ``docs/routing.md`` quotes and the
  quality regression test holds the model to. ``--compare`` trains and measures the
  candidate approaches (keywords, TF-IDF, embeddings, the cascade).
  Only aggregates of the test split are printed: never a report, never a single error.
- ``whistle routing calibrate --held-out FILE`` sets a model's urgency threshold on
  labelled reports it was not trained on (``services.routing.calibration``) and writes
  the result as a new artefact, current unless ``--no-publish``.
- ``whistle routing publish ARTEFACT`` makes an artefact written with ``--no-publish``
  current (after ``evaluate --model FOLDER`` said it is the one).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC
from pathlib import Path

import click

from shared import config as cfg

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "corpus" / "train.jsonl"
TEST = ROOT / "corpus" / "test.jsonl"
DEV = ROOT / "corpus" / "dev.jsonl"
FIGURES = ROOT / "docs" / "routing-figures.json"


@click.group()
def routing() -> None:
    """The router's data: corrections from the desk, training and evaluation."""


@routing.command("corrections")
@click.option("--export", "export", default=None, is_flag=False, flag_value="-",
              metavar="[FILE]",
              help="Write them in the corpus format to FILE (no FILE: standard output).")
@click.option("--all", "every", is_flag=True,
              help="Every decision, not just the latest per report (a review, not a corpus).")
def corrections(export: str | None, every: bool) -> None:
    """List the desk's corrections (triage decisions and reroutes), or export them."""
    from services.routing.corrections import latest_per_issue, to_corpus, write_jsonl
    from services.routing.corrections_store import RedisCorrections
    from shared.errors import Unavailable
    from shared.privacy import scrub_text
    from shared.store import connect
    from whistle.ops import cannot_reach

    config = cfg.config_from_env()
    redis_url = config[cfg.REDIS_URL]
    store = RedisCorrections(connect(redis_url), config[cfg.KEY_PREFIX])
    try:
        found = store.all()
    except Unavailable as exc:  # a backend out of reach: exit 1, as every command says it
        raise cannot_reach("Redis", redis_url, exc) from None
    chosen = (sorted(found, key=lambda c: (c.at, c.correction_id)) if every
              else latest_per_issue(found))
    if export is None:
        for c in chosen:
            was = c.previous_category or "(triage)"
            at = c.at.astimezone(UTC) if c.at.tzinfo else c.at  # recorded in UTC
            click.echo(f"{at:%Y-%m-%d %H:%M} UTC  {c.issue_id}  {c.source:<7}  {was} -> "
                       f"{c.category}{'  urgent' if c.urgent else ''}  by {c.by}"
                       # corrections kept before reasons were masked: phones at least
                       f"{f'  ({scrub_text(c.reason)})' if c.reason else ''}")
        click.echo(f"{len(chosen)} correction(s)" + ("" if every else " (latest per report)"))
        return
    examples = [to_corpus(c) for c in chosen]
    if export == "-":
        write_jsonl(examples, sys.stdout)
        return
    path = Path(export)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        count = write_jsonl(examples, out)
    click.echo(f"wrote {count} example(s) to {path}", err=True)


def _usage_error(command: str, message: str) -> None:
    """One line on stderr and exit 2: the input given cannot be used."""
    click.echo(f"whistle routing {command}: {message}", err=True)
    sys.exit(2)


def _rules_file() -> Path:
    return Path(cfg.get(os.environ, cfg.RULES_FILE) or ROOT / "services" / "routing" / "rules.yaml")


def _rules(command: str):
    """The configured rules (their categories are the corpus's taxonomy)."""
    from services.routing.rules import RulesError, load_rules

    try:
        return load_rules(_rules_file())
    except (RulesError, OSError) as exc:
        _usage_error(command, f"cannot load the rules: {str(exc).splitlines()[0]}")


def _save(command: str, router, models_dir: str | None) -> tuple[Path, Path]:
    """``learned.save`` into ``models_dir`` (default the bundled models' folder): the
    artefact's folder and the models' folder. One of that version already there stops
    the command."""
    from services.routing.learned import MODELS_DIR, save

    target = Path(models_dir) if models_dir else MODELS_DIR
    try:
        return save(router, target), target
    except FileExistsError as exc:
        _usage_error(command, f"{exc} (train or calibrate again in a second)")


def _publish(router, folder: Path, target: Path) -> None:
    """Make the artefact ``folder`` the current one of ``target`` and say so: that running
    routing takes it on a reload, or, when routing reads another model
    (``WHISTLE_ROUTING_MODEL``, read when it started), that it will not and what to set."""
    from services.routing.learned import publish as make_current

    current = make_current(folder, target).resolve()
    configured = (cfg.get(os.environ, cfg.ROUTING_MODEL) or "").strip()
    if configured == "keywords":
        reads = "the keyword rules"
    elif (Path(configured) if configured else _bundled()).resolve() != current:
        reads = configured or f"the bundled model, {_bundled()}"
    else:
        click.echo(f"current model: {router.version} (running routing picks it up on "
                   "`whistle routing reload`)")
        return
    click.echo(f"current model of {target}: {router.version}")
    click.echo(f"note: routing reads {reads} ({cfg.ROUTING_MODEL}), not {current}: "
               f"`whistle routing reload` will not load this one; set "
               f"{cfg.ROUTING_MODEL}={current} and restart routing", err=True)


def _read_corpus(command: str, path: str | Path, categories: list[str]) -> list[dict]:
    """A corpus file's examples; a malformed line stops the command, named."""
    from services.routing.corrections import CorpusError, read_corpus

    try:
        return read_corpus(path, categories)
    except CorpusError as exc:
        _usage_error(command, str(exc))


@routing.command("train")
@click.option("--train", "train_file", type=click.Path(exists=True, dir_okay=False),
              default=str(TRAIN), show_default=True, help="The training split.")
@click.option("--with-dev/--without-dev", "with_dev", default=True, show_default=True,
              help="Train on corpus/dev.jsonl too (300 reports written like the test split).")
@click.option("--add", "added", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Another labelled file to train on as well (repeatable).")
@click.option("--with-corrections", is_flag=True,
              help="Fold in the desk's corrections (corpus/corrections/*.jsonl).")
@click.option("--corrections-dir", type=click.Path(file_okay=False), default=None,
              help="Where the exported corrections are (default corpus/corrections).")
@click.option("--embeddings/--no-embeddings", default=True, show_default=True,
              help="Add the embedding stage of the cascade for reports TF-IDF is unsure of.")
@click.option("--urgency-cascade", is_flag=True,
              help="Also try urgency's second look on the embedding (kept if it wins out of "
                   "fold; off by default, see docs/routing.md).")
@click.option("--urgency-per-category/--urgency-shared", default=True, show_default=True,
              help="Urgency weighs each term per category too (see docs/routing.md).")
@click.option("--models-dir", type=click.Path(file_okay=False), default=None,
              help="Where artefacts go (default services/routing/model).")
@click.option("--publish/--no-publish", default=True, show_default=True,
              help="Make the new artefact current (what routing loads).")
def train(train_file: str, with_dev: bool, added: tuple[str, ...], with_corrections: bool,
          corrections_dir: str | None,
          embeddings: bool, urgency_cascade: bool, urgency_per_category: bool,
          models_dir: str | None, publish: bool) -> None:
    """Train the router and write a versioned model artefact."""
    from services.routing.corrections import CorpusError, load_corrections
    from services.routing.training import train_router

    categories = _rules("train").category_names()
    examples = _read_corpus("train", train_file, categories)
    sources = [f"{Path(train_file).name} ({len(examples)})"]
    for path in ((DEV,) if with_dev else ()) + added:
        more = _read_corpus("train", path, categories)
        examples += more
        sources.append(f"{Path(path).name} ({len(more)})")
    if with_corrections:
        try:
            corrections = load_corrections(corrections_dir, categories)
        except (CorpusError, FileNotFoundError) as exc:
            _usage_error("train", str(exc))
        if not corrections:
            click.echo(f"whistle routing train: 0 corrections in "
                       f"{corrections_dir or 'corpus/corrections'}", err=True)
        examples += corrections
        sources.append(f"corrections ({len(corrections)})")
    click.echo(f"training on {len(examples)} examples: {', '.join(sources)}")
    router = train_router(examples, embeddings=embeddings, sources=sources, log=click.echo,
                          urgency_cascade=urgency_cascade,
                          urgency_per_category=urgency_per_category)
    folder, target = _save("train", router, models_dir)
    cv = router.manifest["cross_validation"]
    click.echo(f"wrote {folder}")
    click.echo(f"cross-validation: category {cv['category_accuracy']:.1%}"
               + (f", cascade {cv['cascade_accuracy']:.1%} ({cv['cascade_share']:.0%} escalated)"
                  if "cascade_accuracy" in cv and router.embedding is not None else "")
               + f", urgent recall {cv['urgent_recall']:.1%}, false urgent "
               f"{cv['false_urgent_rate']:.1%}, triaged {cv['triage_share']:.0%}")
    if publish:
        _publish(router, folder, target)


@routing.command("calibrate")
@click.option("--held-out", "held_out", type=click.Path(exists=True, dir_okay=False),
              required=True,
              help="Labelled reports the model was not trained on (corpus format), e.g. "
                   "corpus/holdout.jsonl or a district's held-out corrections.")
@click.option("--model", "model_path", default=None,
              help="The artefact to calibrate (default $WHISTLE_ROUTING_MODEL, else the "
                   "bundled one).")
@click.option("--recall", type=float, default=None,
              help="Urgent recall the threshold must keep on the held-out reports "
                   "[default: training's, 0.985].")
@click.option("--false-urgent", "false_urgent", type=float, default=None,
              help="Instead: the lowest threshold that flags at most this share of the "
                   "held-out reports that are not urgent (e.g. 0.07).")
@click.option("--models-dir", type=click.Path(file_okay=False), default=None,
              help="Where the new artefact goes (default beside the model calibrated: "
                   "the models folder it is in).")
@click.option("--publish/--no-publish", default=True, show_default=True,
              help="Make the new artefact current (what routing loads).")
def calibrate(held_out: str, model_path: str | None, recall: float | None,
              false_urgent: float | None, models_dir: str | None, publish: bool) -> None:
    """Set a model's urgency threshold on held-out reports: a new artefact."""
    from services.routing.calibration import CalibrationError
    from services.routing.calibration import calibrate as run_calibration
    from services.routing.classifier import BUNDLED_MODEL, ModelLoadError, load_classifier
    from services.routing.learned import LearnedClassifier, resolve
    from services.routing.training import URGENT_RECALL

    if recall is not None and false_urgent is not None:
        _usage_error("calibrate", "give --recall or --false-urgent, not both")
    examples = _read_corpus("calibrate", held_out, _rules("calibrate").category_names())
    model_path = model_path or cfg.get(os.environ, cfg.ROUTING_MODEL) or None
    try:
        classifier = load_classifier(model_path)
    except ModelLoadError as exc:
        _usage_error("calibrate", str(exc))
    if not isinstance(classifier, LearnedClassifier):
        _usage_error("calibrate", "the keyword rules have no urgency threshold; name a model")
    try:
        result = run_calibration(classifier, examples, Path(held_out).name,
                                 URGENT_RECALL if recall is None else recall,
                                 false_urgent=false_urgent)
    except CalibrationError as exc:
        _usage_error("calibrate", str(exc))
    if models_dir is None:  # beside the model calibrated: a district's models folder, whose
        # current its routing reads, not the bundled one's (nor replacing the bundled model)
        models_dir = str(resolve(model_path or BUNDLED_MODEL).resolve().parent)
    folder, target = _save("calibrate", result.router, models_dir)
    click.echo(f"calibrated {classifier.model_version} on {len(examples)} held-out reports "
               f"({result.after['urgent_reports']} urgent)")
    for name, figures in (("before", result.before), ("after", result.after)):
        click.echo(f"  {name}: threshold {figures['threshold']:.4f}, urgent recall "
                   f"{figures['urgent_recall']:.1%}, false urgent "
                   f"{figures['false_urgent_rate']:.1%}")
    click.echo(f"wrote {folder}")
    if publish:
        _publish(result.router, folder, target)


@routing.command("publish")
@click.argument("artefact", type=click.Path(exists=True, file_okay=False))
def publish(artefact: str) -> None:
    """Make ARTEFACT (a folder `train` or `calibrate` wrote, e.g. with --no-publish) the
    current model of its models folder: what routing loads on `whistle routing reload`
    when WHISTLE_ROUTING_MODEL names that folder's `current`. An artefact that does not
    load is refused, and the current one stays."""
    from services.routing.learned import read_router

    folder = Path(artefact).resolve()  # "." inside it: its own name, its parent's current
    try:
        router = read_router(folder, with_encoder=False)  # the encoder is the package's
    except (OSError, KeyError, ValueError) as exc:
        _usage_error("publish", f"{folder} is not a model artefact that loads "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                                "nothing was published")
    _publish(router, folder, folder.parent)


def _bundled() -> Path:
    from services.routing.classifier import BUNDLED_MODEL

    return BUNDLED_MODEL


@routing.command("reload")
@click.option("--rules", "rules", is_flag=True,
              help="Reload the rules file (RULES_FILE).")
@click.option("--model", "model", is_flag=True,
              help="Reload the model artefact (WHISTLE_ROUTING_MODEL; the default when "
                   "neither is given). With --rules: the rules, then the model.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=60.0,
              show_default=True, help="Seconds to wait for routing's answer.")
def reload(rules: bool, model: bool, timeout: float) -> None:
    """Tell running routing to load its model (or rules) again: the process that takes
    the call at once, every other routing process within 2 s. A file that does not load
    is refused with the reason, and the old one stays in force."""
    from nameko.exceptions import RemoteError, RpcTimeout
    from nameko.standalone.rpc import ClusterRpcProxy

    from shared.errors import WhistleError
    from whistle.ops import short_reason, where

    amqp_uri = cfg.config_from_env()[cfg.AMQP_URI]
    whats = [what for what, asked in (("rules", rules), ("model", model or not rules)) if asked]
    told = True
    try:
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=timeout) as rpc:
            for what in whats:
                try:
                    answer = (rpc.routing.reload_rules() if what == "rules"
                              else rpc.routing.reload_model())
                except (WhistleError, RemoteError) as exc:  # refused the file, said why
                    skipped = " (the model was not reloaded)" if what == "rules" and model \
                        else ""
                    click.echo(f"whistle routing reload: {exc}{skipped}", err=True)
                    sys.exit(1)
                held = answer["model_version"] if what == "model" else (
                    f"{answer['rules']} rules from {answer['source']}")
                click.echo(f"routing reloaded its {what}: {held}")
                told = told and answer["other_processes_told"]
    except RpcTimeout:  # the broker took the call; no routing process answered it
        click.echo(f"whistle routing reload: routing did not answer within {timeout:g} s "
                   f"on {where(amqp_uri)}: is it running?", err=True)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - the broker or routing is not there: say so
        click.echo(f"whistle routing reload: could not reach routing at {where(amqp_uri)} "
                   f"({short_reason(exc)})", err=True)
        sys.exit(2)
    click.echo("every other routing process follows within 2 s" if told
               else "the other routing processes were NOT told (Redis unreachable): reload "
                    "again, or restart them")


@routing.command("evaluate")
@click.option("--split", type=click.Path(exists=True, dir_okay=False), default=str(TEST),
              show_default=True, help="The labelled split to measure on.")
@click.option("--model", "model_path", default=None,
              help="A model artefact (default $WHISTLE_ROUTING_MODEL, else the bundled one).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--record", is_flag=True, help=f"Write the figures to {FIGURES.relative_to(ROOT)}.")
@click.option("--compare", is_flag=True,
              help="Train and measure every candidate approach (takes a few minutes).")
def evaluate(split: str, model_path: str | None, as_json: bool, record: bool,
             compare: bool) -> None:
    """Measure the router on the frozen test split: overall and per category."""
    from services.routing.classifier import KeywordClassifier, ModelLoadError, load_classifier
    from services.routing.comparison import classify_all
    from services.routing.evaluation import per_category, score

    rules = _rules("evaluate")
    categories = rules.category_names()
    examples = _read_corpus("evaluate", split, categories)
    if compare:
        from services.routing.comparison import compare as run_comparison

        results = run_comparison(_read_corpus("evaluate", TRAIN, categories), examples, rules,
                                 _rules_file(), log=lambda line: click.echo(line, err=True))
        if as_json:
            click.echo(json.dumps(results, indent=2))
        else:
            _print_comparison(results)
        if record:
            _record({"comparison": results})
        return
    try:
        model = load_classifier(model_path or cfg.get(os.environ, cfg.ROUTING_MODEL) or None)
    except ModelLoadError as exc:
        click.echo(f"whistle routing evaluate: {exc}", err=True)
        sys.exit(2)
    classifier = model or KeywordClassifier(rules)
    guesses, cpu_ms = classify_all(classifier, [e["text"] for e in examples],
                                   rules.fallback.category)
    overall = score(examples, guesses, rules)
    categories = per_category(examples, guesses, rules)
    figures = {"split": Path(split).name, "model_version": classifier.model_version,
               "overall": overall.as_dict(), "cpu_ms_per_report": round(cpu_ms, 2),
               "per_category": {c: s.as_dict() for c, s in categories.items()}}
    if as_json:
        click.echo(json.dumps(figures, indent=2))
    else:
        _print(figures)
    if record:
        _record({"frozen_split": figures})


def _record(update: dict) -> None:
    existing = json.loads(FIGURES.read_text(encoding="utf-8")) if FIGURES.exists() else {}
    existing.update(update)
    FIGURES.write_text(json.dumps(existing, indent=2, ensure_ascii=False) + "\n",
                       encoding="utf-8")
    click.echo(f"recorded in {FIGURES.relative_to(ROOT)}", err=True)


def _print_comparison(results: dict) -> None:
    """``--compare`` without ``--json``: one row per approach."""
    click.echo(f"  {'approach':<12}{'category':>9}{'agency':>8}{'macro-F1':>9}{'urgent':>8}"
               f"{'false':>7}{'sure of':>8}{'CPU ms':>8}{'model':>9}{'install':>9}")
    click.echo(f"  {'':<12}{'':>9}{'':>8}{'':>9}{'recall':>8}{'urgent':>7}{'':>8}"
               f"{'a report':>8}{'MB':>9}{'MB':>9}")
    for name, r in results.items():
        click.echo(f"  {name:<12}{r['category_accuracy']:>9.1%}{r['agency_accuracy']:>8.1%}"
                   f"{r['macro_f1']:>9.3f}{r['urgent_recall']:>8.1%}"
                   f"{r['false_urgent_rate']:>7.1%}{r['confident_share']:>8.1%}"
                   f"{r['cpu_ms_per_report']:>8.2f}{r['model_bytes'] / 1e6:>9.2f}"
                   f"{r['install_bytes'] / 1e6:>9.1f}")
    reports = next(iter(results.values()), {}).get("reports", 0)
    click.echo(f"  on {reports} reports of the frozen split; --json for every figure")


def _print(figures: dict) -> None:
    overall = figures["overall"]
    click.echo(f"{figures['split']}: {overall['reports']} reports, model "
               f"{figures['model_version']}, {figures['cpu_ms_per_report']} ms CPU a report")
    click.echo(f"  lead agency {overall['agency_accuracy']:.1%}   lead sector "
               f"{overall['sector_accuracy']:.1%}   category {overall['category_accuracy']:.1%}"
               f"   macro-F1 {overall['macro_f1']:.3f}")
    click.echo(f"  urgent recall {overall['urgent_recall']:.1%} of {overall['urgent_reports']}"
               f"   false urgent {overall['false_urgent_rate']:.1%} of the others"
               f"   urgent precision {overall['urgent_precision']:.1%}")
    click.echo(f"  sure of {overall['confident_share']:.1%} (routed without the desk; lead "
               f"agency right on {overall['confident_agency_accuracy']:.1%} of them), the "
               f"rest to triage")
    click.echo("")
    click.echo(f"  {'category':<22}{'reports':>8}{'category':>10}{'agency':>9}{'sector':>9}"
               f"{'urgent':>8}{'recall':>8}")
    for category, s in figures["per_category"].items():
        recall = f"{s['urgent_recall']:.0%}" if s["urgent_reports"] else "-"
        click.echo(f"  {category:<22}{s['reports']:>8}{s['category_accuracy']:>10.0%}"
                   f"{s['agency_accuracy']:>9.0%}{s['sector_accuracy']:>9.0%}"
                   f"{s['urgent_reports']:>8}{recall:>8}")
