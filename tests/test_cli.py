"""The `respaths` command as `python -m respaths` (what torchrun's -m runs)."""
import subprocess
import sys

import respaths


def test_python_dash_m_runs_the_command():
    r = subprocess.run([sys.executable, "-m", "respaths", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and respaths.__version__ in r.stdout + r.stderr, r
    r = subprocess.run([sys.executable, "-m", "respaths", "lesion", "--k", "x"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
