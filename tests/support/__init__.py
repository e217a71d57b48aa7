"""What tests share: helpers that test modules import, so that no test module imports another.
ROOT is the repository's root, where main.py runs from."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
