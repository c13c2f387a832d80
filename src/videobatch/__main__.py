"""``python -m videobatch``: the command line (see ``videobatch.cli.main``).

Once the command has returned (results, checkpoint and reports written), the process ends without
Python's own teardown: that teardown destroys Arrow's native thread pool, which now and then aborts
the process ("terminate called without an active exception", SIGABRT; apache/arrow#34314, open)
after a run that went well, and a script would read exit code 134 instead of the command's own.
Threads still running are waited for first, and the logs and standard streams are flushed, as the
teardown would have done.
"""

import contextlib
import logging
import os
import sys
import threading

from .cli.main import main

code = main()
for thread in threading.enumerate():
    if thread is not threading.current_thread() and not thread.daemon:
        thread.join()
logging.shutdown()
for stream in (sys.stdout, sys.stderr):
    with contextlib.suppress(OSError, ValueError):  # closed by its reader (| head): already said
        stream.flush()
os._exit(code)
