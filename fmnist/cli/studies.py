"""`fmnist ablate`, `fmnist transfer-study` and `fmnist audit`: studies that train many models
to answer one question each."""

from __future__ import annotations

from pathlib import Path

import typer

from fmnist.cli.options import run_argument, with_settings
from fmnist.cli.output import out
from fmnist.core.schema import DataSettings
from fmnist.core.spec import CLASS_NAMES
from fmnist.studies.ablate import STEPS, AblateSettings
from fmnist.studies.ablate import ablate as run_ablation
from fmnist.studies.audit import AuditResult, AuditSettings
from fmnist.studies.audit import audit as run_audit
from fmnist.studies.transfer_study import StudyPlan, run_study


@with_settings(AblateSettings)
def ablate(
    settings: AblateSettings,
    list_steps: bool = typer.Option(False, "--list", help="List the steps and exit."),
):
    """Add one improvement at a time to the notebook's recipe and measure each over seeds."""
    if list_steps:
        for i, s in enumerate(STEPS):
            out.print(f"{i:2d} {s.name:<16} {s.change}")
        return
    run_ablation(settings=settings, log=lambda m: out.print(m))
    folder = Path(settings.out)
    out.print(f"wrote {folder / 'ablation.md'}, {folder / 'ablation.png'} and {folder / 'ablation.json'}")


@with_settings(DataSettings, name="data")
@with_settings(StudyPlan, name="plan")
def transfer_study(
    out_dir: Path = typer.Option(
        Path("runs/transfer-study"), "--out", help="Folder for the data subsets, runs and table."
    ),
    *,
    plan: StudyPlan,
    data: DataSettings,
):
    """Pretrain on five classes, fine-tune on the other five with few labels, against training from scratch."""
    run_study(out_dir, plan, settings=data, log=lambda m: out.print(m))
    out.print(f"wrote {out_dir / 'transfer.md'} and {out_dir / 'transfer.json'}")


@with_settings(AuditSettings)
def audit(
    run: Path = run_argument("Run folder from `fmnist train` (its model gives the test set's probabilities)."),
    *,
    settings: AuditSettings,
):
    """Likely label errors in the training and test sets, by confident learning (cleanlab) on
    out-of-sample probabilities: K-fold cross-validation on the training set, the run's model on
    the test set. Writes label_audit.csv (ranked), label_audit_{train,test}.png and
    label_audit.html into the run folder; the fold runs go to RUN/audit/. Flagged images are
    suspects, not proven errors. Needs `pip install 'fmnist[audit]'`."""
    r = run_audit(run, settings, log=lambda m: print(m, flush=True))
    print_audit(r)


def print_audit(r: AuditResult) -> None:
    for split in ("train", "test"):
        n, size = len(r.suspects[split]), r.sizes[split]
        out.print(f"{split}: {n:,} of {size:,} images flagged as likely label errors ({n / size:.2%})")
        for s in r.suspects[split][:5]:
            out.print(
                f"  #{s.index}: given {s.given} ({CLASS_NAMES[s.given]}), "
                f"suggested {s.suggested} ({CLASS_NAMES[s.suggested]}) {s.probability:.0%}"
            )
    share = r.test_errors_flagged / r.test_errors if r.test_errors else 0.0
    out.print(
        f"{r.test_errors_flagged:,} of the model's {r.test_errors:,} test mistakes ({share:.0%}) fall on flagged test images"
    )
    out.print("wrote " + ", ".join(str(p) for p in r.written))
