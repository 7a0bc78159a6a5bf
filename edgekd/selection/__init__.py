"""Student selection by measured latency: candidates, their timing on the target's runtime, a predictor for the
ones not timed, and the choice of the most capable candidate inside the budget (``search.select_by_latency``).

Why measured: at small sizes latency does not follow MACs (kernel launches, memory traffic, int8 kernels that are
slower than fp32 on some CPUs), so a student sized by MACs can miss a millisecond budget by a wide margin.
"""

from edgekd.selection.candidates import Candidate, enumerate_candidates
from edgekd.selection.search import Selection, select_by_latency

__all__ = ["Candidate", "Selection", "enumerate_candidates", "select_by_latency"]
