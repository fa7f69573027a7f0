"""Reads JSONL files (one JSON value a line; `.gz` read through gzip) and writes nothing: the
prompts stage's sources, the filter stage's input, `distill score`'s samples, benchmark data
files, and the run directory's own shards (`records.read_jsonl`) all read through here.

Lines are split at "\\n" only, as JSON Lines defines them: `str.splitlines` would also split at
U+2028 and U+0085, which JSON allows unescaped inside a string. A bad line is an InputError
naming the file and the line; only the project's own append-only shards forgive a torn last
line (`torn_tail`), which a user's file has no reason to have.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any, Iterator

import orjson

from distill.errors import InputError


_LONG_NUMBER = re.compile(rb"\d{19}")


def _loads(line: bytes) -> Any:
    """orjson (several times faster on long traces); what it refuses (NaN, lone surrogates, a
    BOM) goes to json.loads, whose verdict and error message stand. So does a line with a run
    of 19 or more digits: orjson reads an integer past 64 bits as a float (a code benchmark's
    test inputs have such integers), json.loads reads it exactly."""
    if _LONG_NUMBER.search(line):
        return json.loads(line)
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


def numbered_rows(path: str | Path, *, start: int = 0, first_line: int = 1,
                  torn_tail: bool = False) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line, from byte offset `start` (line
    `first_line` there). `torn_tail`: a bad last line without its newline (a crash mid-write)
    ends the file instead of being an error."""
    # Streamed line by line, in bytes: a generate shard of long traces can be many gigabytes,
    # and json.loads decodes each line itself (a UTF-8 BOM too).
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        if start:
            f.seek(start)
        for n, line in enumerate(f, first_line):
            if not line.strip():
                continue
            try:
                yield n, _loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                if torn_tail and not line.endswith(b"\n"):
                    return
                why = f"not valid JSON ({e.msg})" if isinstance(e, json.JSONDecodeError) \
                    else "not valid UTF-8"
                raise InputError(why, file=str(path), line=n) from None
