"""Fixtures shared by the teacher and generate tests: an untrained tiny MoE teacher saved to
disk, and the project's server serving it on a free local port."""

import pytest

from distill.teacher.local import serve_local


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    from distill.toy.models import build_teacher
    path = tmp_path_factory.mktemp("teacher")
    model, tok = build_teacher()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def server(teacher_dir):
    with serve_local(str(teacher_dir)) as (base_url, name):
        yield base_url, name
