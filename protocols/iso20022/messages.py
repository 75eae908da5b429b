"""The five ISO 20022 messages the bridge speaks, as xsdata bindings of their schemas.

Takes the `python-iso20022` package (optional extra `iso20022`); gives one
binding per message, rooted at its schema's `Document` element (the
package's own root classes are named after the message, not `Document`),
and the `Kind` of each: its name, version and namespace.

    sese.023.001.11  SecuritiesSettlementTransactionInstruction   (in: settlement instructions)
    sese.024.001.12  SecuritiesSettlementTransactionStatusAdvice  (out: matched, pending, failed)
    sese.025.001.11  SecuritiesSettlementTransactionConfirmation  (out: settled)
    colr.003.001.05  MarginCallRequest                            (out: a margin call)
    colr.004.001.05  MarginCallResponse                           (out: its outcome)

These are the versions `python-iso20022` 0.3 generates (the `.001.`
variants, not the ISO 15022-compatible `.002.` subsets).

The package's `sese` and `colr` packages import every message of their
area when imported (about 4 s of CPU); `_areas_without_init` registers
them as plain packages first, so only the five messages used here (and
the enumerations they name) are loaded.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from dataclasses import dataclass


def _areas_without_init(*areas: str) -> None:
    """Make `python_iso20022.<area>.<message>` importable without running `<area>/__init__.py`."""
    spec = importlib.util.find_spec("python_iso20022")
    if spec is None or spec.origin is None:
        return  # not installed: the import below says how to install it
    root = os.path.dirname(spec.origin)
    for area in areas:
        name = f"python_iso20022.{area}"
        folder = os.path.join(root, area)
        if name not in sys.modules and os.path.isdir(folder):
            module = types.ModuleType(name, f"python_iso20022's {area} messages (loaded one by one)")
            module.__path__ = [folder]
            module.__package__ = name
            sys.modules[name] = module


_areas_without_init("sese", "colr")

try:
    from python_iso20022.colr.colr_003_001_05 import models as colr003
    from python_iso20022.colr.colr_004_001_05 import models as colr004
    from python_iso20022.sese.sese_023_001_11 import models as sese023
    from python_iso20022.sese.sese_024_001_12 import models as sese024
    from python_iso20022.sese.sese_025_001_11 import models as sese025
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError("the ISO 20022 bridge needs the optional extra: pip install 'dvp-settlement[iso20022]'"
                      f" ({exc})") from None

NS_SESE023 = "urn:iso:std:iso:20022:tech:xsd:sese.023.001.11"
NS_SESE024 = "urn:iso:std:iso:20022:tech:xsd:sese.024.001.12"
NS_SESE025 = "urn:iso:std:iso:20022:tech:xsd:sese.025.001.11"
NS_COLR003 = "urn:iso:std:iso:20022:tech:xsd:colr.003.001.05"
NS_COLR004 = "urn:iso:std:iso:20022:tech:xsd:colr.004.001.05"


@dataclass
class Sese023(sese023.Sese02300111):
    class Meta:
        name = "Document"
        namespace = NS_SESE023


@dataclass
class Sese024(sese024.Sese02400112):
    class Meta:
        name = "Document"
        namespace = NS_SESE024


@dataclass
class Sese025(sese025.Sese02500111):
    class Meta:
        name = "Document"
        namespace = NS_SESE025


@dataclass
class Colr003(colr003.Colr00300105):
    class Meta:
        name = "Document"
        namespace = NS_COLR003


@dataclass
class Colr004(colr004.Colr00400105):
    class Meta:
        name = "Document"
        namespace = NS_COLR004


@dataclass(frozen=True)
class Kind:
    """One message type: its short name (the folder it is written to), its version and its binding."""

    name: str  # sese.023
    version: str  # sese.023.001.11
    namespace: str
    binding: type
    folder: str  # sese023


SESE023 = Kind("sese.023", "sese.023.001.11", NS_SESE023, Sese023, "sese023")
SESE024 = Kind("sese.024", "sese.024.001.12", NS_SESE024, Sese024, "sese024")
SESE025 = Kind("sese.025", "sese.025.001.11", NS_SESE025, Sese025, "sese025")
COLR003 = Kind("colr.003", "colr.003.001.05", NS_COLR003, Colr003, "colr003")
COLR004 = Kind("colr.004", "colr.004.001.05", NS_COLR004, Colr004, "colr004")
KINDS = {kind.name: kind for kind in (SESE023, SESE024, SESE025, COLR003, COLR004)}

__all__ = ["COLR003", "COLR004", "KINDS", "SESE023", "SESE024", "SESE025", "Colr003", "Colr004", "Kind",
           "Sese023", "Sese024", "Sese025"]
