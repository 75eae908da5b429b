"""Parties: which BIC or LEI names which participant of the ledger.

Takes a parties CSV file (header `participant,bic,lei`; each row names a
participant and its BIC, its LEI, or both) or a trade file's participant
ids; gives `Parties`, the two-way map between participant ids and their
BICs and LEIs, checked: a BIC matches ISO 9362's shape, an LEI ISO 17442's
shape and its ISO 7064 MOD 97-10 check digits, and no BIC or LEI names two
participants. `generated(ids)` makes a deterministic BIC and LEI for each
participant that has none:

- BIC: the first four letters or digits of the id (padded with X), the
  country code `ZZ`, which ISO 3166 leaves unassigned, so a generated BIC
  is never a real institution's, then five characters of SHA-256 of the id
  (location and branch). On a clash the next digest (id + "#1", ...) is used.
- LEI: the prefix `ZZZZ00` (no LOU is `ZZZZ`), twelve characters of
  SHA-256 of the id, and the two check digits.

The same ids always give the same codes, whatever else the file holds.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

BIC = re.compile(r"[A-Z0-9]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?")
LEI = re.compile(r"[A-Z0-9]{18}[0-9]{2}")
ALPHANUMERIC = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
GENERATED_COUNTRY = "ZZ"
GENERATED_LEI_PREFIX = "ZZZZ00"
HEADER = ("participant", "bic", "lei")


class PartiesError(ValueError):
    """A parties file that cannot be used: its file, line, column and value."""


def lei_check_digits(first18: str) -> str:
    """The two ISO 7064 MOD 97-10 check digits of an LEI's first 18 characters."""
    number = int("".join(str(ALPHANUMERIC.index(c)) for c in first18 + "00"))
    return f"{98 - number % 97:02d}"


def lei_valid(lei: str) -> bool:
    return bool(LEI.fullmatch(lei)) and lei_check_digits(lei[:18]) == lei[18:]


def _chars(digest: bytes, n: int) -> str:
    value = int.from_bytes(digest, "big")
    out = []
    for _ in range(n):
        value, index = divmod(value, 36)
        out.append(ALPHANUMERIC[index])
    return "".join(out)


def generated_bic(participant: str, attempt: int = 0) -> str:
    seed = participant if not attempt else f"{participant}#{attempt}"
    digest = hashlib.sha256(seed.encode()).digest()
    head = re.sub(r"[^A-Z0-9]", "", participant.upper())[:4].ljust(4, "X")
    return f"{head}{GENERATED_COUNTRY}{_chars(digest, 5)}"


def generated_lei(participant: str, attempt: int = 0) -> str:
    seed = participant if not attempt else f"{participant}#{attempt}"
    first18 = GENERATED_LEI_PREFIX + _chars(hashlib.sha256(b"lei:" + seed.encode()).digest(), 12)
    return first18 + lei_check_digits(first18)


@dataclass
class Parties:
    """Participant id <-> BIC and LEI (either may be missing for a participant, not both)."""

    bic: dict[str, str] = field(default_factory=dict)  # participant -> BIC
    lei: dict[str, str] = field(default_factory=dict)  # participant -> LEI
    by_bic: dict[str, str] = field(default_factory=dict)
    by_lei: dict[str, str] = field(default_factory=dict)

    def add(self, participant: str, bic: str = "", lei: str = "") -> str | None:
        """Add one participant; return why it cannot be added, or None."""
        if not participant:
            return "no participant id"
        if participant in self.bic or participant in self.lei:
            return f"participant {participant!r} is listed twice"
        if not bic and not lei:
            return f"participant {participant!r} has neither a BIC nor an LEI"
        if bic and not BIC.fullmatch(bic):
            return f"bic {bic!r} is not a BIC (4 letters or digits, 2 letters, 2 letters or digits, an optional 3)"
        if lei and not lei_valid(lei):
            return f"lei {lei!r} is not an LEI (18 letters or digits, 2 check digits, ISO 17442)"
        if bic and bic in self.by_bic:
            return f"bic {bic} already names participant {self.by_bic[bic]!r}"
        if lei and lei in self.by_lei:
            return f"lei {lei} already names participant {self.by_lei[lei]!r}"
        if bic:
            self.bic[participant] = bic
            self.by_bic[bic] = participant
        if lei:
            self.lei[participant] = lei
            self.by_lei[lei] = participant
        return None

    def knows(self, participant: str) -> bool:
        return participant in self.bic or participant in self.lei

    def complete(self, participants: Iterable[str]) -> list[str]:
        """Give every participant without a BIC or LEI generated ones; return those it generated for."""
        made = []
        for participant in sorted(set(participants)):
            if self.knows(participant):
                continue
            attempt = 0
            while True:
                bic, lei = generated_bic(participant, attempt), generated_lei(participant, attempt)
                if bic not in self.by_bic and lei not in self.by_lei:
                    break
                attempt += 1
            self.add(participant, bic, lei)
            made.append(participant)
        return made

    def participants(self) -> list[str]:
        return sorted(set(self.bic) | set(self.lei))

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HEADER)
        for participant in self.participants():
            writer.writerow((participant, self.bic.get(participant, ""), self.lei.get(participant, "")))
        return out.getvalue()


def read(path: str) -> Parties:
    """Read a parties CSV file; raise `PartiesError` naming the file, line and value of the first fault."""
    parties = Parties()
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = None
            for row in reader:
                line = reader.line_num
                if not row or not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
                    continue
                cells = [cell.strip() for cell in row]
                if header is None:
                    header = [c.lower() for c in cells]
                    if "participant" not in header or not ({"bic", "lei"} & set(header)):
                        raise PartiesError(f"{path}: line {line}: the header must name 'participant' and 'bic', "
                                           f"'lei' or both, not {','.join(cells)!r}")
                    continue
                if len(cells) > len(header):
                    raise PartiesError(f"{path}: line {line}: {len(cells)} cells but the header has {len(header)}")
                values = dict(zip(header, cells))
                why = parties.add(values.get("participant", ""), values.get("bic", "").upper(),
                                  values.get("lei", "").upper())
                if why:
                    raise PartiesError(f"{path}: line {line}: {why}")
    except UnicodeDecodeError as exc:
        raise PartiesError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise PartiesError(f"{path}: unreadable CSV ({exc})") from None
    return parties
