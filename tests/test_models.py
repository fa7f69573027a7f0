"""Model names: `toy:` names are the toy world's local models, a missing local path is an error
naming the recipe key that holds it (unless the caller only reports on a model that may be
gone), anything else passes through."""

import pytest

from distill.errors import InputError
from distill.models import is_toy, resolve_model, toy_config, toy_version
from distill.publish.lineage import count_parameters
from distill.toy.models import model_key


def test_only_toy_names_are_toy_and_other_names_pass_through():
    assert is_toy("toy:teacher") and is_toy("toy:student")
    assert not is_toy("Qwen/Qwen3-8B") and not is_toy("./toy:student")
    assert resolve_model("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"


def test_a_missing_local_path_is_named_unless_unchecked(tmp_path):
    gone = str(tmp_path / "gone")
    with pytest.raises(InputError) as e:
        resolve_model(gone, key="train.student")
    assert str(e.value) == f"{gone}: train.student: model directory not found"
    with pytest.raises(InputError, match=r"^\./gone: model directory not found"):
        resolve_model("./gone", key=None)
    assert resolve_model(gone, check=False) == gone
    # A lineage naming a model that is gone still publishes, without a count.
    assert count_parameters(gone) is None


def test_a_toy_models_config_and_version():
    teacher, student = toy_config("toy:teacher"), toy_config("toy:student")
    assert teacher["model_type"] == "qwen3_moe" and student["model_type"] == "qwen3"
    assert toy_version("toy:teacher") == model_key("teacher") != toy_version("toy:student")
