"""The offline provider ``local``: a simulated account on disk (``account``), the provider that
answers like a hosted video API on top of it (``provider``), and the renderer of its real MP4s
(``render``)."""

from .account import default_root, read_submissions, submission_counts, task_id_for
from .provider import LocalProvider

__all__ = ["LocalProvider", "default_root", "read_submissions", "submission_counts", "task_id_for"]
