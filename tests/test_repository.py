"""model_repository/ as served by scripts/run.sh (no server needed)."""
import os

from conftest import SOURCE_REPO, read_config
from serverctl.triton import list_models


def test_every_model_has_a_version_folder():
    # Triton refuses to load a model without one ("at least one version must be
    # available"); git keeps no empty folders, so it needs a tracked file (e.g. 1/.gitkeep).
    missing = [m for m in list_models(SOURCE_REPO)
               if not any(d.isdigit() and os.path.isdir(os.path.join(SOURCE_REPO, m, d))
                          for d in os.listdir(os.path.join(SOURCE_REPO, m)))]
    assert not missing, f"models without a version folder: {missing}"


def test_config_names_match_folders():
    for m in list_models(SOURCE_REPO):
        assert f'name: "{m}"' in read_config(os.path.join(SOURCE_REPO, m)), m
