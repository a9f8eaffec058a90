"""The report of a study: report.md, what a person reads (what to ship, the machine, the
findings that matter, the plots, the summary tables), and details.md, every per-case table in
the layout of P17.

It formats what the study measured and measures nothing. Every sentence in it is generated
from the numbers of the run, never written by hand. ``quantlab.lookups`` finds things in the
results (outside this package, because the plots, which the writer draws, read it too);
``sentences`` says them, ``tables`` tabulates them, ``writer`` writes the files.
"""

from quantlab.lookups import slower_or_faster
from quantlab.report.sentences import findings, recommendations, speed_lines, thread_findings
from quantlab.report.tables import (accuracy_table, best_table, not_counted_lines, not_run_lines,
                                    runtime_table, size_table, thread_scaling_table)
from quantlab.report.writer import details_markdown, markdown, write

__all__ = ["accuracy_table", "best_table", "details_markdown", "findings", "markdown",
           "not_counted_lines", "not_run_lines", "recommendations", "runtime_table",
           "size_table", "slower_or_faster", "speed_lines", "thread_findings",
           "thread_scaling_table", "write"]
