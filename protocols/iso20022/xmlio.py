"""Read untrusted ISO 20022 XML safely, and write messages, both through xsdata.

Takes the bytes of one XML document and the message `Kind` expected;
gives the bound message (an xsdata dataclass), or raises `MessageError`
naming the file, the message id (once the parser has seen it), the
element path and the value at fault. Writing takes a bound message and
gives its bytes (UTF-8, indented, the message's namespace as default).

Hardening, in order:

1. a document larger than `MESSAGE_BYTES_MAX` is refused unread;
2. it must be UTF-8 (as ISO 20022 requires), so a DTD cannot hide in
   another encoding, and it may have no DTD at all: an ISO 20022 message
   has none, and a DTD is how XXE and entity-expansion (billion laughs)
   payloads come in. A document with one is refused before it is parsed;
   `defusedxml` (entities and external references forbidden) then reads
   it only to name the entity in the error;
3. xsdata binds it with `HardenedHandler`: lxml's iterparse with
   `resolve_entities=False`, `no_network=True`, `load_dtd=False`, no
   recovery and no huge trees (defence in depth behind 2);
4. the root must be the schema's `Document` in the message's own
   namespace; an unknown element, an attribute other than `Ccy` (and
   `xsi:schemaLocation` on the root, never loaded) or a value the binding
   cannot convert is an error (nothing is silently dropped).

No XML is written by hand: serialising is xsdata's.
"""

from __future__ import annotations

import io
import re
from typing import Any

import defusedxml
import defusedxml.ElementTree as safe_etree
from lxml import etree
from xsdata.exceptions import ConverterError, ParserError
from xsdata.formats.dataclass.context import XmlContext
from xsdata.formats.dataclass.parsers import XmlParser
from xsdata.formats.dataclass.parsers.config import ParserConfig
from xsdata.formats.dataclass.parsers.handlers.lxml import EVENTS, LxmlEventHandler
from xsdata.formats.dataclass.serializers import XmlSerializer
from xsdata.formats.dataclass.serializers.config import SerializerConfig
from xsdata.formats.dataclass.serializers.writers import LxmlEventWriter
from xsdata.models.enums import EventType

from .messages import Kind

MESSAGE_BYTES_MAX = 1 << 20  # a settlement instruction is a few KB; nothing legitimate comes near
ROOT = "Document"
XSI_SCHEMA_LOCATION = "{http://www.w3.org/2001/XMLSchema-instance}schemaLocation"  # allowed on the root; never loaded
_DECLARED = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")
_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00")
UTF8_BOM = b"\xef\xbb\xbf"
_ENTITY_REFERENCE = re.compile(rb"&(?!(?:amp|lt|gt|quot|apos);)([A-Za-z_:][-A-Za-z0-9._:]{0,60});")

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


class HardenedHandler(LxmlEventHandler):
    """xsdata's lxml event handler, on a parser that resolves no entity, loads no DTD and reaches no network.

    It also checks the root element and keeps the path of open elements
    and the message id (the first `TxId` under the message element), so
    an error can say where it happened.
    """

    def parse(self, source: Any, ns_map: dict[str | None, str]) -> Any:
        self.path: list[str] = []
        self.message_id: str | None = None
        expected = f"{{{self.clazz.Meta.namespace}}}{ROOT}"
        events = etree.iterparse(source, EVENTS, recover=False, remove_comments=True, remove_pis=True,
                                 load_dtd=False, resolve_entities=False, no_network=True, huge_tree=False,
                                 dtd_validation=False, attribute_defaults=False)
        return self.process_context(self._watched(events, expected), ns_map)

    def _watched(self, events, expected: str):
        path = self.path
        for event, element in events:
            if event == EventType.START:
                tag = element.tag
                if not isinstance(tag, str):  # an entity reference left unresolved, or the like
                    raise ParserError(f"unexpected node {element!r}")
                if not path and tag != expected:
                    raise _WrongRoot(tag, expected)
                path.append(tag.rpartition("}")[2])
                for name in element.attrib:
                    if name != "Ccy" and not (len(path) == 1 and name == XSI_SCHEMA_LOCATION):
                        raise ParserError(f"an attribute the schema does not have here: {name}")
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
        _refuse_dtd(data, file)
        handler: list[HardenedHandler] = []
        parser = self.parser

        class Bound(HardenedHandler):  # remember the handler so its path and id can be reported
            def __init__(self, clazz, parser):
                super().__init__(clazz=clazz, parser=parser)
                handler.append(self)

        parser.handler = Bound
        try:
            return parser.parse(io.BytesIO(data), self.kind.binding)
        except _WrongRoot as exc:
            namespace, _, local = exc.tag.rpartition("}")
            namespace = namespace.lstrip("{")
            if local != ROOT:
                reason = f"the root element must be {ROOT}, not {local}"
            else:
                reason = (f"wrong namespace: this is not a {self.kind.version} message "
                          f"(expected {self.kind.namespace})" if namespace else
                          f"no namespace: expected {self.kind.namespace}")
            raise MessageError(file, None, ROOT, namespace if local == ROOT else local, reason) from None
        except etree.XMLSyntaxError as exc:
            raise MessageError(file, _id(handler), _where(handler), None, f"not well-formed XML ({exc})") from None
        except (ParserError, ConverterError) as exc:
            raise MessageError(file, _id(handler), _where(handler), None, _explain(str(exc))) from None
        finally:
            parser.handler = HardenedHandler


def _refuse_dtd(data: bytes, file: str) -> None:
    """Refuse a document that is not UTF-8 or has a DTD, naming the entity it declares if it does."""
    body = data[len(UTF8_BOM):] if data.startswith(UTF8_BOM) else data
    if body.startswith(_BOMS) or (body[:1] == b"\x00" or body[1:2] == b"\x00"):
        raise MessageError(file, None, ROOT, None, "not UTF-8: ISO 20022 messages are UTF-8")
    declared = _DECLARED.match(body)
    if declared and declared.group(1).lower().replace(b"_", b"-") not in (b"utf-8", b"utf8"):
        raise MessageError(file, None, ROOT, declared.group(1).decode("ascii"),
                           "declares an encoding other than UTF-8: ISO 20022 messages are UTF-8")
    if b"<!DOCTYPE" not in body:
        reference = _ENTITY_REFERENCE.search(body)
        if reference:
            name = reference.group(1).decode("utf-8", "replace")
            raise MessageError(file, None, ROOT, f"&{name};", "refers to an entity no ISO 20022 message declares "
                               "(only &amp; &lt; &gt; &quot; &apos; and character references are allowed)")
        return
    try:  # diagnose only: defusedxml stops at the first entity declaration, before anything is expanded
        for _ in safe_etree.iterparse(io.BytesIO(body), ("start",), forbid_dtd=False, forbid_entities=True,
                                      forbid_external=True):
            break
    except defusedxml.EntitiesForbidden as exc:
        if exc.sysid or exc.pubid:
            where = f"SYSTEM {exc.sysid!r}" if exc.sysid else f"PUBLIC {exc.pubid!r}"
            raise MessageError(file, None, "DOCTYPE", exc.name, f"declares external entity {exc.name!r} ({where}): "
                               "external entities are refused (XXE)") from None
        raise MessageError(file, None, "DOCTYPE", exc.name, f"declares entity {exc.name!r}: entity declarations "
                           "are refused (no entity expansion: billion laughs)") from None
    except defusedxml.DefusedXmlException as exc:
        raise MessageError(file, None, "DOCTYPE", None, f"refused ({exc})") from None
    except Exception:  # noqa: BLE001 - malformed as well: the DTD is reason enough
        pass
    raise MessageError(file, None, "DOCTYPE", None, "a DTD is refused: ISO 20022 messages carry none")


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
    if text.startswith("an attribute the schema"):
        return text
    if re.search(r"line \d+, column \d+", text) or text.startswith("no element found"):
        return f"not well-formed XML ({text})"
    return text.splitlines()[0]


def _type_name(name: str) -> str:
    """ReceiveDelivery1Code, not the binding's class name with its message suffix."""
    return re.sub(r"(Sese|Colr)\d{8}$", "", name)


class Writer:
    """Serialise bound messages of any kind with one serializer."""

    def __init__(self, pretty: bool = True):
        config = SerializerConfig(indent="  " if pretty else None, xml_declaration=True, encoding="UTF-8")
        self.serializer = XmlSerializer(context=CONTEXT, config=config, writer=LxmlEventWriter)

    def write(self, message: Any) -> bytes:
        namespace = type(message).Meta.namespace
        return self.serializer.render(message, ns_map={None: namespace}).encode("utf-8")
