"""Reports from the runs ledger: notebooks executed headless into self-contained HTML.

`data` turns the ledger into pandas frames and tables, `plots` draws them, `output` shows and saves
them; the notebooks in notebooks/ call those, and `report()` runs a notebook on a runs folder.
"""

from edgevit.report.build import NOTEBOOKS, report

__all__ = ["NOTEBOOKS", "report"]
