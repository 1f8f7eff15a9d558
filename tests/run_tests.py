"""Run the whole test suite; what `make test` calls.

pytest exits with 5 when it collected nothing: for this project that means the suite is broken
(a bad path or an import error swallowed), so it is reported and counted as a failure.
"""

import subprocess
import sys

code = subprocess.call([sys.executable, "-m", "pytest", *sys.argv[1:]])
if code == 5:
    print("make test: pytest collected no tests; that is a broken suite, not a pass")
    code = 1
sys.exit(code)
