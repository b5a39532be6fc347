"""Which of a set of files a question is about: the files it names first, then the rest by
lexical relevance.

A question names a file (case aside) by its path or the end of it (``repoctx/pack/fit.py``,
``pack/fit.py``, ``pack/fit``), its file name (``fit.py``, ``Makefile``) or its module
(``repoctx.pack.fit``, ``pack.fit``; a package by its folder's module). The other files are
ranked by BM25 over identifier terms: identifiers are split at underscores and case changes
(``buildPack`` and ``build_pack`` give build, pack and the whole identifier), lowercased, stop
words and numbers left out. A term of a file's path counts ``PATH_WEIGHT`` times. A term that
more than half of the files have (of ``COMMON_FROM`` files or more: the project's own name, a
folder every path has) says nothing about which file is meant and does not count; a file whose
score is under ``MIN_SHARE`` of the best one is not relevant. The words that name files are no
terms: the folders in a path say nothing about the other files there. The same question about
the same files always gives the same order: ties go to the earlier file.

A file's term counts are cached by its blob id (``TERMS_NAMESPACE``), so its text is read once
per content; a ``TermIndex`` keeps them for every question about the same files.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeGuard

from repoctx.cache import ContentCache
from repoctx.scan.snapshot import SourceFile

TERMS_NAMESPACE = "terms:v1"  # blob id -> the text of _encoded
TERM_CHARS = 512 * 1024  # of a file's text, what its terms are taken from
PATH_WEIGHT = 3
MIN_SHARE = 0.2
COMMON_FROM = 4
K1 = 1.2
B = 0.75

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PART = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
_WORD_EDGES = "`'\"()[]{}<>,;:!?*"
_PACKAGE_FILES = ("__init__", "index", "mod")  # a package's module is its folder's
_STOP_WORDS = """
    a about above after again all also am an and any are as at be been before being below
    between both but by can could did do does doing done down during each explain few for from
    further had has have having he her here hers him his how i if in into is it its itself just
    me more most my no nor not now of off on once only or other our ours out over own please
    same she should show so some such tell than that the their theirs them then there these they
    this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours"""
STOP_WORDS = frozenset(_STOP_WORDS.split())


def split_identifier(identifier: str) -> list[str]:
    """``parseHTTPResponse`` -> parse, http, response, parsehttpresponse; ``build_pack`` ->
    build, pack, build_pack; a lowercase word is itself."""
    lowered = identifier.lower()
    if lowered == identifier and "_" not in identifier:
        return [identifier]
    parts = [part.lower() for part in _PART.findall(identifier)]
    whole = lowered.strip("_")
    return [*parts, whole] if len(parts) > 1 else parts


def text_terms(text: str) -> dict[str, int]:
    """How often each term occurs in ``text`` (its first ``TERM_CHARS`` characters)."""
    terms: dict[str, int] = {}
    found = terms.get
    for identifier, count in Counter(_IDENTIFIER.findall(text[:TERM_CHARS])).items():
        for term in split_identifier(identifier):
            terms[term] = found(term, 0) + count
    return {term: count for term, count in terms.items() if _kept(term)}


def _kept(term: str) -> bool:
    return len(term) > 1 and not term.isdigit() and term not in STOP_WORDS


def question_terms(question: str) -> list[str]:
    """The terms of ``question``, each once, in order."""
    terms = (t for i in _IDENTIFIER.findall(question) for t in split_identifier(i))
    return list(dict.fromkeys(t for t in terms if _kept(t)))


def _as_path(word: str) -> str:
    """A word of a question as a path, lowercased: quotes, brackets and a sentence's
    punctuation taken off, ``a/b.py:12`` without its line."""
    word = word.strip(_WORD_EDGES).replace("\\", "/").rstrip(".").strip(_WORD_EDGES)
    return re.sub(r":\d+(?::\d+)?$", "", word).removeprefix("./").strip("/").lower()


def _names(path: str) -> set[str]:
    """How a question can name the file at ``path`` (lowercased): the ends of its path, with
    and without its extension; its module (dotted) and that of its package; its file name."""
    path = path.lower()
    folder, _, name = path.rpartition("/")
    stems = [_without_suffix(path)]
    if _stem(name) in _PACKAGE_FILES and folder:
        stems.append(folder)
    names = {name}
    for full in [path, *stems]:
        parts = full.split("/")
        for start in range(len(parts)):
            tail = parts[start:]
            if full == path or len(tail) > 1:  # one bare word is not a name
                names.add("/".join(tail))
            if full != path and len(tail) > 1:
                names.add(".".join(tail))
    return names


def _stem(name: str) -> str:
    """``fit.py`` -> ``fit``; ``.coveragerc`` and ``Makefile`` stay whole."""
    return name.rpartition(".")[0] if "." in name[1:] else name


def _last_names(path: str) -> set[str]:
    """What a name of the file at ``path`` ends with, lowercased: its file name, its stem, and
    its package's folder name."""
    folder, _, name = path.lower().rpartition("/")
    found = {name, _stem(name)}
    if _stem(name) in _PACKAGE_FILES and folder:
        found.add(folder.rpartition("/")[2])
    return found


def _encoded(terms: dict[str, int]) -> str:
    """Term counts as the cache keeps them: the total on the first line, then ``term count``
    lines; a term's count is found in the text (much faster to load than a JSON object)."""
    lines = "".join(f"{term} {count}\n" for term, count in terms.items())
    return f"{sum(terms.values())}\n{lines}"


def _count(encoded: str, term: str) -> int:
    start = encoded.find(f"\n{term} ")
    if start < 0:
        return 0
    start += len(term) + 2
    return int(encoded[start : encoded.index("\n", start)])


def _total(encoded: str) -> int:
    return int(encoded[: encoded.index("\n")])


@dataclass(frozen=True)
class Ranked:
    """A file of the index, whether the question names it, and its lexical score."""

    file: SourceFile
    named: bool
    score: float


class TermIndex:
    """The term counts of ``files`` (read from the cache, or taken from their text and cached
    by blob id); ``rank(question)`` orders them for a question."""

    def __init__(self, files: Sequence[SourceFile], cache: ContentCache | None = None) -> None:
        self.files = list(files)
        self.terms = _cached_terms(self.files, cache)
        self.path_terms = [_path_terms(f.path) for f in self.files]
        self.lengths = [_total(terms) for terms in self.terms]
        self.average = max(1.0, sum(self.lengths) / max(1, len(self.files)))
        self.by_last: dict[str, list[int]] = {}
        for index, file in enumerate(self.files):
            for last in _last_names(file.path):
                self.by_last.setdefault(last, []).append(index)

    def named(self, question: str) -> set[int]:
        """Indexes of the files ``question`` names."""
        return {index for word in question.split() for index in self._named_by(word)}

    def _named_by(self, word: str) -> set[int]:
        word = _as_path(word)
        last = word.rpartition("/")[2]
        candidates = self.by_last.get(last, [])
        if "/" not in word and "." in last:  # a module: pack.fit
            candidates = candidates + self.by_last.get(last.rpartition(".")[2], [])
        return {index for index in candidates if word in _names(self.files[index].key)}

    def scores(self, question: str) -> list[float]:
        """BM25 of each file for the terms of ``question``."""
        scores = [0.0] * len(self.files)
        for term in question_terms(question):
            counts = [
                _count(terms, term) + PATH_WEIGHT * path.get(term, 0)
                for terms, path in zip(self.terms, self.path_terms, strict=True)
            ]
            found = sum(1 for count in counts if count)
            if not found or (len(counts) >= COMMON_FROM and found * 2 > len(counts)):
                continue
            idf = math.log(1 + (len(self.files) - found + 0.5) / (found + 0.5))
            for index, count in enumerate(counts):
                if count:
                    norm = K1 * (1 - B + B * self.lengths[index] / self.average)
                    scores[index] += idf * count * (K1 + 1) / (count + norm)
        return scores

    def rank(self, question: str) -> list[Ranked]:
        """The files ``question`` names, then those relevant to it; each group by score, ties
        in the order of ``files``. The words that name files do not count as terms: the
        folders in a path say nothing about the other files there."""
        named: set[int] = set()
        words: list[str] = []
        for word in question.split():
            naming = self._named_by(word)
            named |= naming
            if not naming:
                words.append(word)
        scores = self.scores(" ".join(words))
        floor = MIN_SHARE * max(scores, default=0.0)
        wanted = [i for i, score in enumerate(scores) if i in named or (score and score >= floor)]
        wanted.sort(key=lambda i: (i not in named, -scores[i], i))
        return [Ranked(self.files[i], i in named, scores[i]) for i in wanted]


def _path_terms(path: str) -> dict[str, int]:
    terms: dict[str, int] = {}
    for part in _without_suffix(path).split("/"):
        for term in _part_terms(part):
            terms[term] = terms.get(term, 0) + 1
    return terms


@functools.lru_cache(maxsize=65536)
def _part_terms(part: str) -> tuple[str, ...]:
    """The terms of one folder or file name (most repeat from file to file)."""
    terms = (t for i in _IDENTIFIER.findall(part) for t in split_identifier(i))
    return tuple(t for t in terms if _kept(t))


def _without_suffix(path: str) -> str:
    folder, slash, name = path.rpartition("/")
    return folder + slash + _stem(name)


def _cached_terms(files: Sequence[SourceFile], cache: ContentCache | None) -> list[str]:
    blobs = list(dict.fromkeys(f.blob_id for f in files))
    stored = cache.get_many(TERMS_NAMESPACE, blobs) if cache is not None else {}
    known = {blob: terms for blob, terms in stored.items() if _is_encoded(terms)}
    fresh: dict[str, str] = {}
    for file in files:
        if file.blob_id not in known and file.blob_id not in fresh:
            fresh[file.blob_id] = _encoded(text_terms(file.text))
    if cache is not None and fresh:
        cache.put_many(TERMS_NAMESPACE, fresh)
    return [known.get(f.blob_id) or fresh[f.blob_id] for f in files]


def _is_encoded(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and value[:1].isdigit() and value.endswith("\n")
