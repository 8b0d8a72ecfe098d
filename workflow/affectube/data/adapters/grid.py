"""GRID (Cooke et al. 2006): 34 speakers x 1,000 six-word sentences, front-facing, 25 fps.

Layout: one directory per speaker, ``s1/bbaf2n.mpg`` (as unpacked from ``s1.mpg_vcd.zip``;
deeper trees such as ``s1/video/mpg_6000/bbaf2n.mpg`` work too). The speaker is the
last path component matching ``subject_regex`` (default: a directory ``s<N>``, also as a
suffix ``..._s<N>``); the ``sentence`` column keeps the 6-letter sentence code.

Word labels: the sentence code spells the six words (command, colour, preposition, letter,
digit, adverb; ``bgaf2n`` = "bin green at f two now"), written as six manifest columns
(:data:`WORDS`), so any of them can be the fine-tuning class (``finetune.label: colour``).
GRID has no emotion labels.

Event spans: with ``align`` (a directory of the official ``<code>.align`` files, e.g.
``grid_align/s1``; a file is looked up as ``align/<code>.align`` or
``align/<speaker>/<code>.align``) and ``event`` (one of :data:`WORDS`), each row gets
``event_start`` / ``event_end``: the seconds of that word in the video, read from its alignment
(units of 1/25,000 s, lines ``start end word``). Training clips are then sampled around the word
and test clips centred on it (``finetune.event``; :mod:`affectube.clips.sampling`). A video
without an alignment file, or whose alignment lacks the word, is listed as unusable.

Spec keys: ``subject_regex`` (regular expression with one group, searched in the path
relative to root), ``extensions``, ``align``, ``event``. A file with no speaker in its path is
listed as missing.
"""

from __future__ import annotations

import re
from pathlib import Path

from affectube.data.adapters.common import check_keys, frame, list_videos, rel, root_dir, unmatched
from affectube.data.manifest import safe_id
from affectube.errors import ConfigError, DataError

KEYS = ["subject_regex", "extensions", "align", "event"]
SPEAKER = r"(?:^|/|_)(s\d{1,2})/"
ALIGN_UNITS = 25000.0  # alignment times are in 1/25,000 s (1,000 per frame at 25 fps)

# position in the sentence code -> (column, letter -> word)
DIGITS = {"z": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
          "8": "eight", "9": "nine"}
VOCAB = [
    ("command", {"b": "bin", "l": "lay", "p": "place", "s": "set"}),
    ("colour", {"b": "blue", "g": "green", "r": "red", "w": "white"}),
    ("preposition", {"a": "at", "b": "by", "i": "in", "w": "with"}),
    ("letter", {c: c for c in "abcdefghijklmnopqrstuvxyz"}),  # GRID has no "w"
    ("digit", DIGITS),
    ("adverb", {"a": "again", "n": "now", "p": "please", "s": "soon"}),
]
WORDS = [name for name, _ in VOCAB]


def sentence_words(code: str) -> dict[str, str]:
    """The six words of a GRID sentence code (``bgaf2n`` -> command bin, colour green, ...)."""
    code = str(code).lower()
    if len(code) != 6:
        raise DataError(f"{code!r}: a GRID sentence code has 6 letters")
    out = {}
    for (name, vocab), letter in zip(VOCAB, code):
        if letter not in vocab:
            raise DataError(f"{code!r}: {letter!r} is not a GRID {name} (known: {', '.join(sorted(vocab))})")
        out[name] = vocab[letter]
    return out


def read_alignment(path: Path) -> list[tuple[float, float, str]]:
    """``(start_s, end_s, word)`` per line of an official ``.align`` file (``sil``/``sp`` included)."""
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            start, end = float(parts[0]) / ALIGN_UNITS, float(parts[1]) / ALIGN_UNITS
        except (IndexError, ValueError):
            raise DataError(f"{path}: line {i}: expected 'start end word', got {line!r}") from None
        if len(parts) < 3 or end < start:
            raise DataError(f"{path}: line {i}: expected 'start end word' with end >= start, got {line!r}")
        out.append((start, end, parts[2].lower()))
    return out


def word_span(alignment: list[tuple[float, float, str]], words: dict[str, str], event: str) -> tuple[float, float] | None:
    """Seconds of the sentence's ``event`` word: the k-th non-silence token of the alignment (k = the word's
    position), checked against the word itself (letters are spelled ``a``, digits ``two``, ...)."""
    tokens = [t for t in alignment if t[2] not in ("sil", "sp")]
    k = WORDS.index(event)
    if len(tokens) != len(WORDS) or tokens[k][2] != words[event]:
        return None
    return tokens[k][0], tokens[k][1]


def build(name: str, spec: dict):
    check_keys(spec, KEYS, "grid")
    root = root_dir(spec, "grid")
    try:
        pattern = re.compile(spec.get("subject_regex", SPEAKER))
    except re.error as exc:
        raise ConfigError(f"data.datasets.{name}.subject_regex: not a regular expression ({exc})") from None
    event = spec.get("event")
    if event is not None and event not in WORDS:
        raise ConfigError(f"data.datasets.{name}.event: {event!r} is not a GRID word ({', '.join(WORDS)})")
    align = Path(str(spec["align"])).expanduser() if spec.get("align") else None
    if align is not None and not align.is_dir():
        raise DataError(f"{align}: data.datasets.{name}.align is not a directory of .align files")
    if event is not None and align is None:
        raise ConfigError(f"data.datasets.{name}.event: needs data.datasets.{name}.align (the alignment directory)")
    rows, sources = [], []
    for path in list_videos(root, spec.get("extensions", [".mpg", ".mpeg", ".mp4", ".mov"])):
        r = f"{root.resolve().name}/{rel(path, root)}"  # the root's own name may hold the speaker (grid_s1/)
        found = pattern.findall(r)
        if not found:
            rows.append(unmatched(path, f"no speaker (s<N>) in the path (subject_regex {pattern.pattern!r})"))
            continue
        subject = found[-1] if isinstance(found[-1], str) else found[-1][0]
        code = path.stem[-6:]
        try:
            words = sentence_words(code)
        except DataError as exc:
            rows.append(unmatched(path, str(exc)))
            continue
        row = {"video_id": safe_id(f"{subject}_{path.stem}"), "path": str(path), "subject": subject, "sentence": code, **words}
        if event is not None:
            file = next((p for p in (align / f"{code}.align", align / subject / f"{code}.align") if p.is_file()), None)
            if file is None:
                rows.append(unmatched(path, f"no alignment {code}.align in {align}"))
                continue
            span = word_span(read_alignment(file), words, event)
            if span is None:
                rows.append(unmatched(path, f"{file}: the alignment does not hold the {event} word {words[event]!r} in position"))
                continue
            row["event_start"], row["event_end"] = span
            sources.append(str(file))
        rows.append(row)
    return frame(rows, sources)  # the alignment files read are inputs of the manifest rule
