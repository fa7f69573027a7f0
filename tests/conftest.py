"""Fixtures shared by the teacher and generate tests: an untrained tiny MoE teacher saved to
disk, and the project's server serving it on a free local port.

The Hub is out of reach on the machines that run these tests, so they run in offline mode:
a lookup of a Hub id (a config.json for the economics section, a benchmark not on hand) fails
at once instead of after connection timeouts. Tests that talk to the local Hub stand-in turn
it off for themselves."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")      # before huggingface_hub reads it

import pytest  # noqa: E402

from distill.serving.launcher import serve_local  # noqa: E402


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    from distill.toy.arch import build_teacher
    path = tmp_path_factory.mktemp("teacher")
    model, tok = build_teacher()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def server(teacher_dir):
    with serve_local(str(teacher_dir)) as (base_url, name):
        yield base_url, name
