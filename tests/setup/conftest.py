"""The setup scripts run from lingua_modified/ (`python setup/download_prepare_hf_data.py ...`): make its packages
importable here too."""

import sys
from pathlib import Path

LINGUA_ROOT = Path(__file__).resolve().parents[2] / "lingua_modified"
if str(LINGUA_ROOT) not in sys.path:
    sys.path.insert(0, str(LINGUA_ROOT))
