"""Read untrusted ISO 20022 XML safely, and write messages, both through xsdata.

Takes the bytes of one XML document and the message `Kind` expected;
gives the bound message (an xsdata dataclass), or raises `MessageError`
naming the file, the message id (once the parser has seen it), the
element path and the value at fault. Writing takes a bound message and
gives its bytes (UTF-8, indented, the message's namespace as default).

Hardening: xsdata's parser is given `HardenedHandler`, whose events come
from `defusedxml`'s iterparse with entity declarations and external
references forbidden, so an XXE payload or a billion-laughs bomb is
refused at its declaration, before anything is expanded or fetched. The
root must be the schema's `Document` in the message's own namespace; an
unknown element or a value the binding cannot convert is an error (no
silent drop); a document larger than `MESSAGE_BYTES_MAX` is refused
unread. No XML is written by hand: serialising is xsdata's.
"""

from __future__ import annotations

import io
import re
from typing import Any

import defusedxml
import defusedxml.ElementTree as safe_etree
from xml.etree.ElementTree import ParseError
from xsdata.exceptions import ConverterError, ParserError
from xsdata.formats.dataclass.context import XmlContext
from xsdata.formats.dataclass.parsers import XmlParser
from xsdata.formats.dataclass.parsers.config import ParserConfig
from xsdata.formats.dataclass.parsers.handlers.native import EVENTS, XmlEventHandler
from xsdata.formats.dataclass.serializers import XmlSerializer
from xsdata.formats.dataclass.serializers.config import SerializerConfig
from xsdata.models.enums import EventType

from .messages import Kind

MESSAGE_BYTES_MAX = 1 << 20  # a settlement instruction is a few KB; nothing legitimate comes near
ROOT = "Document"

CONTEXT = XmlContext()  # built once: the bindings' metadata is cached here
_CONFIG = ParserConfig(fail_on_unknown_properties=True, fail_on_unknown_attributes=True,
                       fail_on_converter_warnings=True, load_dtd=False, resolve_entities=False)


class MessageError(Exception):
    """A message that cannot be read or mapped: where it is, which message, which element, which value, why."""

    def __init__(self, file: str, message: str | None, path: str, value: Any, reason: str):
        self.file = file
        self.message = message
        self.path = path
        self.value = value
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        value = "" if self.value is None else f" = {_short(self.value)!r}"
        return f"{self.file}: message {self.message or '(id not read)'}: {self.path}{value}: {self.reason}"

    def __reduce__(self):
        return MessageError, (self.file, self.message, self.path, self.value, self.reason)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


class HardenedHandler(XmlEventHandler):
    """xsdata's native event handler, fed by defusedxml (no entities, no external references).

    It also checks the root element and keeps the path of open elements
    and the message id (the first `TxId` under the message element), so
    an error can say where it happened.
    """

    def parse(self, source: Any, ns_map: dict[str | None, str]) -> Any:
        self.path: list[str] = []
        self.message_id: str | None = None
        expected = f"{{{self.clazz.Meta.namespace}}}{ROOT}"
        events = safe_etree.iterparse(source, EVENTS, forbid_dtd=False, forbid_entities=True,
                                      forbid_external=True)
        return self.process_context(self._watched(events, expected), ns_map)

    def _watched(self, events, expected: str):
        path = self.path
        for event, element in events:
            if event == EventType.START:
                tag = element.tag
                if not path and tag != expected:
                    raise _WrongRoot(tag, expected)
                path.append(tag.rpartition("}")[2])
                yield event, element
            elif event == EventType.END:
                if len(path) == 3 and path[2] == "TxId" and self.message_id is None:
                    self.message_id = (element.text or "").strip() or None
                yield event, element
                path.pop()
            else:
                yield event, element


class _WrongRoot(Exception):
    def __init__(self, tag: str, expected: str):
        super().__init__(tag)
        self.tag = tag
        self.expected = expected


class Reader:
    """Parse documents of one message kind (one parser and context, reused)."""

    def __init__(self, kind: Kind):
        self.kind = kind
        self.parser = XmlParser(config=_CONFIG, context=CONTEXT, handler=HardenedHandler)

    def read(self, data: bytes, file: str) -> Any:
        """Bind one document; raise `MessageError` saying what is wrong and where."""
        if len(data) > MESSAGE_BYTES_MAX:
            raise MessageError(file, None, ROOT, None,
                               f"the document has {len(data):,} bytes, more than the {MESSAGE_BYTES_MAX:,} allowed")
        handler: list[HardenedHandler] = []
        parser = self.parser

        class Bound(HardenedHandler):  # remember the handler so its path and id can be reported
            def __init__(self, clazz, parser):
                super().__init__(clazz=clazz, parser=parser)
                handler.append(self)

        parser.handler = Bound
        try:
            return parser.parse(io.BytesIO(data), self.kind.binding)
        except defusedxml.EntitiesForbidden as exc:
            where = "external entity" if (exc.sysid or exc.pubid) else "entity"
            what = f" (SYSTEM {exc.sysid!r})" if exc.sysid else (f" (PUBLIC {exc.pubid!r})" if exc.pubid else "")
            why = ("external entities are refused (XXE)" if exc.sysid or exc.pubid
                   else "entity declarations are refused (no entity expansion: billion laughs)")
            raise MessageError(file, None, "DOCTYPE", exc.name, f"declares {where} {exc.name!r}{what}: {why}") from None
        except defusedxml.ExternalReferenceForbidden as exc:
            raise MessageError(file, None, "DOCTYPE", exc.sysid, "external references are refused (XXE)") from None
        except defusedxml.DTDForbidden as exc:  # pragma: no cover - DTDs without entities are inert and allowed
            raise MessageError(file, None, "DOCTYPE", exc.name, "a DTD is refused") from None
        except _WrongRoot as exc:
            namespace, _, local = exc.tag.rpartition("}")
            namespace = namespace.lstrip("{")
            if local != ROOT:
                reason = f"the root element must be {ROOT}, not {local}"
            else:
                reason = (f"wrong namespace: this is not a {self.kind.version} message "
                          f"(expected {self.kind.namespace})" if namespace else
                          f"no namespace: expected {self.kind.namespace}")
            raise MessageError(file, None, ROOT, namespace or local, reason) from None
        except ParseError as exc:
            raise MessageError(file, _id(handler), _where(handler), None, f"not well-formed XML ({exc})") from None
        except (ParserError, ConverterError) as exc:
            raise MessageError(file, _id(handler), _where(handler), None, _explain(str(exc))) from None
        finally:
            parser.handler = HardenedHandler


def _id(handler: list[HardenedHandler]) -> str | None:
    return handler[0].message_id if handler and hasattr(handler[0], "message_id") else None


def _where(handler: list[HardenedHandler]) -> str:
    return "/".join(handler[0].path) if handler and getattr(handler[0], "path", None) else ROOT


def _explain(text: str) -> str:
    """xsdata's wording, with the binding's class names left out."""
    if text.startswith("Unknown property"):
        return f"an element the schema does not have here: {text.rpartition('}')[2]}"
    invalid = re.search(r"`([^`]*)` is not a valid `([A-Za-z0-9]+)`", text)
    if invalid:
        return f"{invalid.group(1)!r} is not a valid {_type_name(invalid.group(2))}"
    if "Failed to convert value" in text:
        return f"a value of the wrong type ({text.splitlines()[-1].strip()})"
    if re.search(r"line \d+, column \d+", text):
        return f"not well-formed XML ({text})"
    return text.splitlines()[0]


def _type_name(name: str) -> str:
    """ReceiveDelivery1Code, not the binding's class name with its message suffix."""
    return re.sub(r"(Sese|Colr)\d{8}$", "", name)


class Writer:
    """Serialise bound messages of any kind with one serializer."""

    def __init__(self, pretty: bool = True):
        config = SerializerConfig(indent="  " if pretty else None, xml_declaration=True, encoding="UTF-8")
        self.serializer = XmlSerializer(context=CONTEXT, config=config)

    def write(self, message: Any) -> bytes:
        namespace = type(message).Meta.namespace
        return self.serializer.render(message, ns_map={None: namespace}).encode("utf-8")
