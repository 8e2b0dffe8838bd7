"""``paychaos runbook`` and ``paychaos alerts``: runbooks from experiments and their journals,
and Prometheus alert rules from the SLO catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.markup import escape

from paychaos.cli.console import fail, say
from paychaos.experiments.loading import SpecError, load_experiment, load_experiments
from paychaos.experiments.spec import ChaosExperiment
from paychaos.probes.catalogue import CatalogueError, Slo, SloFile, load_catalogue
from paychaos.reporting.alerts import RUNBOOK_BASE, write_alert_rules
from paychaos.reporting.journals import JournalError, experiment_of, load_journal
from paychaos.runbooks.render import Rehearsal, write_runbooks

YAML_SUFFIXES = (".yaml", ".yml")


def runbook(
    targets: Annotated[
        list[Path],
        typer.Argument(help="Experiment files (*.yaml), folders of them, or run journals (*.json)", metavar="EXPERIMENT|JOURNAL", show_default=False),
    ],
    journal: Annotated[
        list[Path] | None,
        typer.Option("--journal", "-j", help="The journal of an experiment given as YAML: its evidence goes into that runbook (repeatable)"),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the runbooks and their index.md")] = Path("runbooks"),
) -> None:
    """Write one Markdown runbook per experiment, and the index of every runbook in the folder.

    A runbook joins the experiment's `spec.runbook` (what users see, mitigation, rollback,
    escalation) with what its last run observed: alerts, time to detect, recovery time, how the
    breaker behaved, each check's verdict. An experiment without a journal gets a runbook that
    says it was not rehearsed yet. A journal alone is enough (it carries its experiment); given
    with the experiment's YAML, the YAML's runbook text is used with the journal's evidence.
    """
    paths = _expand(targets)
    rehearsals = _pair(
        experiments=[_experiment(p) for p in paths if p.suffix in YAML_SUFFIXES],
        with_yaml=[_journal(p) for p in journal or []],
        alone=[_journal(p) for p in paths if p.suffix == ".json"],
    )
    try:
        written = write_runbooks(rehearsals, out, _slos_for_runbooks())
    except JournalError as exc:
        raise fail(escape(str(exc))) from None
    except OSError as exc:
        raise fail(escape(f"cannot write runbooks to {out}: {exc.strerror or exc}")) from None
    for path in written:
        say(escape(f"wrote {path}"))


def alerts(
    slo: Annotated[Path, typer.Option("--slo", help="The SLO catalogue")] = Path("probes/slo.yaml"),
    experiments: Annotated[Path, typer.Option("--experiments", help="Folder of experiments: they link alerts to runbooks and set severities")] = Path(
        "experiments"
    ),
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the rules file")] = Path("platform/alerts/paychaos-slo.rules.yaml"),
    runbook_url: Annotated[str, typer.Option("--runbook-url", help="Base URL of the runbooks folder, for each alert's runbook_url")] = RUNBOOK_BASE,
) -> None:
    """Write Prometheus alerting rules: one alert per SLO in the catalogue.

    Each alert fires when its SLO query, over 5 minutes, has been outside the objective for
    2 minutes. Its `runbook_url` points at the runbook of the experiment that rehearses it (the
    runbook index when several do), and its severity is the highest among those experiments.
    Check the result with `promtool check rules`.
    """
    slos = _slo_file(slo)
    files = sorted(p for p in experiments.glob("*") if p.suffix in YAML_SUFFIXES) if experiments.is_dir() else []
    if not files:
        raise fail(escape(f"{experiments}: no experiment files (*.yaml) in this folder"))
    try:
        catalogue = load_experiments(files)
    except SpecError as exc:
        raise fail(str(exc)) from None
    try:
        write_alert_rules(slos, catalogue, out, runbook_url)
    except OSError as exc:
        raise fail(escape(f"cannot write {out}: {exc.strerror or exc}")) from None
    say(escape(f"wrote {out}: {len(slos)} alerts"))


def _pair(experiments: list[ChaosExperiment], with_yaml: list[dict[str, Any]], alone: list[dict[str, Any]]) -> list[Rehearsal]:
    """Each experiment with its journal: a YAML takes the journal of the same name (given with
    --journal or as a target); a journal left over brings its own copy of the spec."""
    journals: dict[str, dict[str, Any]] = {}
    for data in [*with_yaml, *alone]:
        name = data["paychaos"].get("experiment")
        if name in journals:
            raise fail(escape(f"two journals of experiment {name!r}: give one per experiment"))
        journals[name] = data
    rehearsals: dict[str, Rehearsal] = {}
    for experiment in experiments:
        if experiment.name in rehearsals:
            raise fail(escape(f"experiment {experiment.name!r} is given twice"))
        rehearsals[experiment.name] = (experiment, journals.pop(experiment.name, None))
    for data in alone:
        name = data["paychaos"].get("experiment")
        if journals.pop(name, None) is not None:
            try:
                rehearsals[name] = (experiment_of(data), data)
            except JournalError as exc:
                raise fail(escape(f"journal of {name}: {exc}")) from None
    if journals:
        name = next(iter(journals))
        raise fail(escape(f"a --journal ran experiment {name!r}, which is not among the given experiment files: give its YAML too, or the journal alone"))
    return list(rehearsals.values())


def _expand(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
            if not found:
                raise fail(escape(f"{path}: no *.yaml files in this folder"))
            out.extend(found)
        elif path.suffix == ".json" or path.suffix in YAML_SUFFIXES:
            out.append(path)
        else:
            raise fail(escape(f"{path}: expected an experiment (*.yaml) or a run journal (*.json)"))
    return out


def _experiment(path: Path) -> ChaosExperiment:
    try:
        return load_experiment(path)
    except SpecError as exc:
        raise fail(str(exc)) from None


def _journal(path: Path) -> dict[str, Any]:
    try:
        return load_journal(path)
    except JournalError as exc:
        raise fail(escape(str(exc))) from None


def _slos_for_runbooks() -> dict[str, Slo] | None:
    try:
        return load_catalogue().slos
    except CatalogueError as exc:
        say(escape(f"alert objectives left out of the runbooks: {exc}"))
        return None


def _slo_file(path: Path) -> dict[str, Slo]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(escape(f"cannot read the SLO catalogue {path}: {exc.strerror or exc}")) from None
    try:
        return SloFile.model_validate(yaml.safe_load(text)).slos
    except yaml.YAMLError as exc:
        raise fail(escape(f"{path}: not valid YAML: {str(exc).splitlines()[0]}")) from None
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise fail(escape(f"{path}: {where}: {error['msg']}")) from None
