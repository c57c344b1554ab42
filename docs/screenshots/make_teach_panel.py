"""Make ``teach-panel.png``: the module's *Teach* section while a fine-tune runs, without Slicer.

The section is the module's own ``.ui`` file, loaded with PySide6 offscreen (Slicer's CTK and MRML
widgets stand in as plain Qt widgets of the same kind), and filled by the module's own Qt-free
decisions (``panel.teach_state``, ``added_case_text``). With ``--dataset`` the status line is
that of a real run: the Teach section's training job fine-tunes or trains on that nnU-Net
folder in a temporary user folder and is cancelled at ``--stop-at``, as the Cancel button does.

Run from the repository root::

    .venv/bin/python docs/screenshots/make_teach_panel.py --dataset DATASET_FOLDER
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent
REPO = OUT.parents[1]
UI_FILE = REPO / "SegResMambaSlicer" / "Resources" / "UI" / "SegResMambaSlicer.ui"
WIDTH = 560
TINY = ["--network", '{"widths": [8, 16, 32, 64]}']

RECORDED = "step 40 of 60 - loss 0.805 - Dice 0.02 (training cases) - about 12 s left"
"""The line a real run showed (used without ``--dataset``): the tiny network trained from scratch
on three BraTS 2013 cases at 6 mm, validated every 20 steps, on two CPU cores."""


def real_status(dataset: Path, steps: int, stop_at: int) -> str:
    """Train on ``dataset`` through the module's training job and return the status line the
    panel showed at step ``stop_at``, then cancel the run."""
    from segresmamba.datasets import load_dataset
    from SegResMambaSlicerLib.process import engine_environment, find_python
    from SegResMambaSlicerLib.training_job import TrainingJob

    with tempfile.TemporaryDirectory() as home:
        os.environ["SEGRESMAMBA_HOME"] = home
        name = load_dataset(dataset).name
        job = TrainingJob.new(
            dataset, name, find_python(), engine_environment(), device="cpu",
            extra=["--max-steps", str(steps), "--val-every", str(max(1, stop_at // 2)), *TINY],
        )  # fmt: skip
        job.start()
        try:
            while not job.progress or job.progress.step < stop_at:
                job.poll()
                if not job.running:
                    raise SystemExit("training ended early:\n" + "\n".join(job.log[-20:]))
                time.sleep(0.05)
            return job.progress.describe()
        finally:
            job.cancel()


def load_section():
    """The Teach section of the module's .ui, with stand-ins for Slicer's widgets."""
    from PySide6.QtCore import QFile, QIODevice
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QComboBox, QGroupBox, QWidget

    class ctkCollapsibleButton(QGroupBox):  # noqa: N801 - the .ui's class names
        pass

    class qMRMLNodeComboBox(QComboBox):  # noqa: N801
        pass

    class qMRMLWidget(QWidget):  # noqa: N801
        pass

    loader = QUiLoader()
    for widget_class in (ctkCollapsibleButton, qMRMLNodeComboBox, qMRMLWidget):
        loader.registerCustomWidget(widget_class)
    ui_file = QFile(str(UI_FILE))
    if not ui_file.open(QIODevice.ReadOnly):
        raise SystemExit(f"cannot read {UI_FILE}")
    panel = loader.load(ui_file)
    ui_file.close()
    return panel, panel.findChild(QGroupBox, "teachCollapsibleButton")


class Version:  # what segresmamba.weights.ModelVersion tells the panel
    def __init__(self, version: int, cases: int, steps: int, dice: float, date: str) -> None:
        self.version, self.cases, self.steps, self.dice, self.date = (
            version, cases, steps, dice, date,
        )  # fmt: skip


class Added:  # what segresmamba.datasets.AddedCase tells the panel
    case_id, label_names, ignore_written, ignored_slices, cases, replaced = (
        "BRATS13_003", ("necrosis", "edema", "enhancing tumour"), True, 71, 3, False,
    )  # fmt: skip


def fill(section, status: str) -> None:
    """The section as it looks while version 2 of "mytumour" is fine-tuned on three cases."""
    from PySide6.QtWidgets import QCheckBox, QComboBox, QLabel, QLineEdit, QProgressBar, QPushButton

    from SegResMambaSlicerLib.panel import added_case_text, teach_state
    from SegResMambaSlicerLib.tasks import TrainingSet

    folder = Path("~/.cache/segresmamba/datasets/mytumour")
    versions = [  # the first two models of seed 0 in docs/benchmarks.md's teach-loop run
        Version(1, 2, 300, 0.447, "2026-12-07T18:52:49+00:00"),
        Version(2, 3, 300, 0.509, "2026-12-07T18:57:24+00:00"),
    ]
    state = teach_state(
        "mytumour", TrainingSet(folder, "mytumour", 3), versions, "", job="training"
    )

    def child(kind, name):
        return section.findChild(kind, name)

    section.setTitle("Teach")
    child(QLineEdit, "trainingSetEdit").setPlaceholderText(str(folder))
    child(QLabel, "teachCasesLabel").setText(state.cases_text)
    child(QComboBox, "teachSegmentationSelector").addItem("t1c SegResMamba mytumour (corrected)")
    child(QCheckBox, "partialLabelsCheckBox").setChecked(True)
    child(QPushButton, "addCaseButton").setEnabled(state.add_enabled)
    child(QLabel, "addCaseResultLabel").setText(added_case_text(Added()))
    versions_box = child(QComboBox, "modelVersionSelector")
    for text, _ in state.version_items:
        versions_box.addItem(text)
    versions_box.setEnabled(state.version_enabled)
    train = child(QPushButton, "trainButton")
    train.setText(state.train_text)
    child(QPushButton, "resumeButton").setEnabled(state.resume_enabled)
    fraction = 0.0
    if status.startswith("step "):
        step, total = status.split(" - ")[0].split()[1::2]
        fraction = int(step) / int(total)
    child(QProgressBar, "teachProgressBar").setValue(int(1000 * fraction))
    child(QLabel, "teachStatusLabel").setText(status)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, help="nnU-Net folder: take the status of a real run")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--stop-at", type=int, default=40)
    p.add_argument("--out", type=Path, default=OUT / "teach-panel.png")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO / "SegResMambaSlicer"))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("QT_LOGGING_RULES", "qt.core.qobject.connect=false")  # MRML signals
    status = real_status(args.dataset, args.steps, args.stop_at) if args.dataset else RECORDED
    print(status)
    from PySide6.QtWidgets import QApplication, QVBoxLayout, QWidget

    app = QApplication.instance() or QApplication([])
    panel, section = load_section()
    fill(section, status)
    frame = QWidget()
    layout = QVBoxLayout(frame)
    section.setParent(frame)
    layout.addWidget(section)
    frame.setFixedWidth(WIDTH)
    frame.adjustSize()
    frame.show()
    app.processEvents()
    if not frame.grab().save(str(args.out)):
        raise SystemExit(f"cannot write {args.out}")
    print(f"wrote {args.out}")
    panel.deleteLater()
    return 0


if __name__ == "__main__":
    sys.exit(main())
