"""model_repository/ as served by scripts/run.sh (no server needed)."""
import os
import re

from conftest import SOURCE_REPO, config_parameters, read_config
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


def _queue_policy(text: str) -> dict | None:
    """The fields of dynamic_batching's default_queue_policy, None when there is none."""
    m = re.search(r"default_queue_policy\s*\{([^}]*)\}", text)
    if m is None:
        return None
    return dict(re.findall(r"(\w+):\s*(\S+)", m.group(1)))


def test_every_model_that_queues_has_a_bounded_rejecting_queue():
    # Overload must be a fast error, not an unbounded queue: every non-ensemble model batches
    # dynamically, and its queue has a size limit and a timeout that REJECTs. Ensembles have
    # no queue of their own (their steps queue in the models above).
    problems = []
    for m in list_models(SOURCE_REPO):
        text = read_config(os.path.join(SOURCE_REPO, m))
        if 'platform: "ensemble"' in text:
            assert "dynamic_batching" not in text, f"{m}: an ensemble has no queue to configure"
            continue
        policy = _queue_policy(text)
        if "dynamic_batching" not in text or policy is None:
            problems.append(f"{m}: no dynamic_batching default_queue_policy")
            continue
        if int(policy.get("max_queue_size", "0")) <= 0:
            problems.append(f"{m}: max_queue_size must be > 0 (0 is unbounded): {policy}")
        if int(policy.get("default_timeout_microseconds", "0")) <= 0:
            problems.append(f"{m}: default_timeout_microseconds must be > 0: {policy}")
        if policy.get("timeout_action") != "REJECT":
            problems.append(f"{m}: timeout_action must be REJECT (DELAY keeps the request queued): {policy}")
    assert not problems, "\n".join(problems)


def test_in_process_encoders_honour_the_caller_timeout():
    # Triton applies a request's own timeout only with allow_timeout_override and only when it
    # is below the queue's default_timeout_microseconds: then an encoder request that box_embed
    # or face_align stopped waiting for (encoder_timeout_ms) leaves the encoder's queue too.
    for m in list_models(SOURCE_REPO):
        params = config_parameters(read_config(os.path.join(SOURCE_REPO, m)))
        if "encoder_model" not in params:
            continue
        timeout_us = int(params["encoder_timeout_ms"]) * 1000
        policy = _queue_policy(read_config(os.path.join(SOURCE_REPO, params["encoder_model"])))
        assert policy is not None and policy.get("allow_timeout_override") == "true", (m, policy)
        assert int(policy["default_timeout_microseconds"]) > timeout_us, (m, policy, timeout_us)
