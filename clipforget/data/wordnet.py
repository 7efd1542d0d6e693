"""WordNet 3.0's noun database, read in place: the synonyms, hyponyms and hypernyms of a name.

ImageNet's and Tiny-ImageNet's class ids are WordNet 3.0 noun offsets (``n02490219`` is the line at byte 2490219
of ``data.noun``), so the names a subgroup may also be found by ("pygmy marmoset" under "marmoset") come straight
from the database. It is found at ``$CLIPFORGET_WORDNET`` (a folder holding ``data.noun`` and ``index.noun``) or
where Debian's ``wordnet-base`` puts it (``/usr/share/wordnet``); without it :func:`load_wordnet` returns ``None``
and callers go on with the class names alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SEARCH_PATHS = ("/usr/share/wordnet", "/usr/local/share/wordnet", "/usr/share/wordnet-3.0/dict")


@dataclass(frozen=True)
class Synset:
    offset: int
    words: tuple[str, ...]  # lower case, spaces for underscores
    hypernyms: tuple[int, ...]
    hyponyms: tuple[int, ...]
    gloss: str


class WordNet:
    """Random access to the noun synsets of one WordNet 3.0 database folder (nothing is loaded up front)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._data = (self.folder / "data.noun").open("rb")
        self._index: dict[str, tuple[int, ...]] | None = None

    def synset(self, offset: int) -> Synset:
        self._data.seek(offset)
        return parse_data_line(self._data.readline().decode("utf-8", "replace"))

    def synsets(self, lemma: str) -> list[Synset]:
        """The noun senses of ``lemma`` (most frequent first)."""
        if self._index is None:
            self._index = read_index(self.folder / "index.noun")
        return [self.synset(o) for o in self._index.get(lemma.strip().lower().replace(" ", "_"), ())]

    def hyponyms(self, offset: int, depth: int = 2) -> list[Synset]:
        """Synsets below ``offset``, breadth first, ``depth`` levels down."""
        return self._walk(offset, depth, "hyponyms")

    def hypernyms(self, offset: int, depth: int = 1) -> list[Synset]:
        """Synsets above ``offset``, ``depth`` levels up."""
        return self._walk(offset, depth, "hypernyms")

    def _walk(self, offset: int, depth: int, relation: str) -> list[Synset]:
        found, frontier = [], [offset]
        for _ in range(depth):
            frontier = [h for o in frontier for h in getattr(self.synset(o), relation)]
            found += [self.synset(o) for o in frontier]
        return found


def parse_data_line(line: str) -> Synset:
    """One line of ``data.noun``: offset, lexfile, pos, word count (hex), words with lex ids, pointers, gloss."""
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    offset, count = int(fields[0]), int(fields[3], 16)
    words = tuple(fields[4 + 2 * i].replace("_", " ").lower() for i in range(count))
    i = 4 + 2 * count
    n_pointers = int(fields[i])
    hyper, hypo = [], []
    for j in range(n_pointers):
        symbol, target, pos = fields[i + 1 + 4 * j], int(fields[i + 2 + 4 * j]), fields[i + 3 + 4 * j]
        if pos != "n":
            continue
        if symbol in ("@", "@i"):
            hyper.append(target)
        elif symbol in ("~", "~i"):
            hypo.append(target)
    return Synset(offset, words, tuple(hyper), tuple(hypo), gloss.strip())


def read_index(path: Path) -> dict[str, tuple[int, ...]]:
    """``index.noun``: lemma -> its synset offsets (sense order)."""
    out: dict[str, tuple[int, ...]] = {}
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(" "):
                continue  # the licence header
            fields = line.split()
            n_senses, n_pointers = int(fields[2]), int(fields[3])
            out[fields[0]] = tuple(int(x) for x in fields[6 + n_pointers: 6 + n_pointers + n_senses])
    return out


@lru_cache(maxsize=1)
def load_wordnet() -> WordNet | None:
    """The WordNet database of this machine, or ``None`` when there is none."""
    for folder in [os.environ.get("CLIPFORGET_WORDNET", ""), *SEARCH_PATHS]:
        if folder and (Path(folder) / "data.noun").is_file() and (Path(folder) / "index.noun").is_file():
            return WordNet(folder)
    return None


def wnid_offset(wnid: str) -> int | None:
    """``n02490219`` -> 2490219 (ImageNet ids are WordNet 3.0 noun offsets)."""
    return int(wnid[1:]) if len(wnid) == 9 and wnid[0] == "n" and wnid[1:].isdigit() else None
