"""The bare install is the client: importing it must not import torch (or the server stack)."""
from __future__ import annotations

import subprocess
import sys


def test_import_magnet_client_pulls_no_model_or_server_stack():
    code = ("import sys, magnet.client\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'fastapi', 'prometheus_client', 'numpy')"
            " if m in sys.modules)\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import magnet.client imported: {out.stdout.strip()}"
