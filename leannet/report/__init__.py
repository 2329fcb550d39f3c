"""Tables and plots shared by every area: aggregate run directories over seeds."""

from leannet.report.plots import plot_curves
from leannet.report.table import aggregate, find_runs, markdown_table, mean_std, report

__all__ = ["aggregate", "find_runs", "markdown_table", "mean_std", "plot_curves", "report"]
