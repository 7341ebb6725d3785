"""Print the README's table of the lab's answers, one row per question.

    python tools/readme_answers.py REPORT_DIR [FOREST_PNG]

Each row comes from the full-preset result shipped with droplab where there is
one (the full preset's number), else from REPORT_DIR/results (e.g. a default
run of ``droplab report``); the rows are those of the page's summary
(``droplab.lab.report.render.answers_markdown``). tests/test_readme.py checks
the README's rows of the shipped results against the same function. With
FOREST_PNG, also writes the page's forest plot of the shipped results there.
"""

from __future__ import annotations

import sys
from pathlib import Path

from droplab.lab.registry import experiment_names
from droplab.lab.report.render import answers_markdown, shipped_results
from droplab.lab.results import load_result, result_path


def main(report: Path, forest: Path | None = None) -> None:
    shipped = shipped_results()
    records = [
        shipped[name]
        if name in shipped
        else load_result(result_path(report / "results", name), name)
        for name in experiment_names()
    ]
    print("| question | answer | number (95 % interval) | run |")
    print("| --- | --- | --- | --- |")
    print("\n".join(answers_markdown(records)))
    if forest is not None:
        import base64

        from droplab.lab.report.render import figure_png
        from droplab.lab.report.summary import forest_figure, forest_rows

        rows = forest_rows({name: record["result"] for name, record in shipped.items()})
        forest.write_bytes(base64.b64decode(figure_png(forest_figure(rows))))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
