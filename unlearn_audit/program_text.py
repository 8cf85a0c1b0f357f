"""The text of a serialised ``torch.export`` program, checked before torch reads any of it.

torch turns strings of the archive into Python: input and argument names become the parameter
list of a generated ``def forward`` (exec'd while loading), parameter and buffer names become
``getattr(self, "<name>")`` in generated code, tree specs are decoded with a hook that imports
any module an ``__enum__`` entry names, an ``as_operator`` argument is resolved by a ``getattr``
chain from ``torch``, and a string input becomes part of a guard that is exec'd. So, outside
node metadata (free text that no code path evaluates), every string and key of the program must
be a plain token (letters, digits and ``_ . @ : + -``), every name a Python identifier, user
inputs tensors, tree specs plain tuples, lists and dicts, and no ``as_operator`` may appear.

Raw weight payloads must hold exactly the bytes their declared shape needs, on the CPU: torch
fills a short payload with zeros of the declared size, so a tiny file could ask for gigabytes.
"""

from __future__ import annotations

import json
import math
import re

from unlearn_audit.errors import ModelError

_TOKEN = re.compile(r"[A-Za-z0-9_.@:+\-]{0,200}")
_IDENTIFIER = re.compile(r"([A-Za-z_][A-Za-z0-9_]{0,200})?")  # empty: a higher-order op argument
_NAME_KEYS = frozenset({"name", "as_name"})
# Checked elsewhere (graphguard) or free text that nothing evaluates.
_SKIPPED_KEYS = frozenset({"metadata", "expr_str", "guards_code", "target", "in_spec", "out_spec"})
_TREESPEC_TYPES = frozenset(
    {
        None,
        "builtins.tuple",
        "builtins.list",
        "builtins.dict",
        "collections.OrderedDict",
        "torch.fx.immutable_collections.immutable_list",
        "torch.fx.immutable_collections.immutable_dict",
    }
)


def check_program_text(program: object, where: str) -> None:
    """Refuse a serialised program whose strings could become code (see the module docstring)."""
    _walk(program, where, key="")
    if not isinstance(program, dict):
        raise ModelError(f"{where}: the archive's program is not a JSON object")
    module = program.get("graph_module") or {}
    for entry in (module.get("graph") or {}).get("inputs") or []:
        if not isinstance(entry, dict) or set(entry) - {"as_tensor", "as_sym_int"}:
            raise ModelError(
                f"{where}: refused: the program takes an input that is not a tensor ({entry!r:.80})"
            )
    for call in module.get("module_call_graph") or []:
        signature = (call or {}).get("signature") or {}
        for key in ("in_spec", "out_spec"):
            if signature.get(key) is not None:
                check_treespec(signature[key], where)
        for name in signature.get("forward_arg_names") or []:
            _identifier(name, where)


def _walk(value: object, where: str, key: str) -> None:
    if isinstance(value, dict):
        for k, inner in value.items():
            if k == "as_operator":
                raise ModelError(
                    f"{where}: refused: the program passes an operator as a value ({inner!r:.60})"
                )
            if k in _SKIPPED_KEYS:
                continue
            _token(k, where)
            _walk(inner, where, k)
    elif isinstance(value, list):
        for inner in value:
            _walk(inner, where, key)
    elif isinstance(value, str):
        if key in _NAME_KEYS:
            _identifier(value, where)
        else:
            _token(value, where)


def _token(text: str, where: str) -> None:
    if not isinstance(text, str) or not _TOKEN.fullmatch(text):
        raise ModelError(f"{where}: refused: the program holds text where a name belongs ({text!r:.60})")


def _identifier(text: object, where: str) -> None:
    if not isinstance(text, str) or not _IDENTIFIER.fullmatch(text):
        raise ModelError(f"{where}: refused: {text!r:.60} is not a plain name")


def check_treespec(text: object, where: str) -> None:
    """A serialised pytree spec: only tuples, lists and dicts with plain keys, nothing to import."""
    if not isinstance(text, str) or "__enum__" in text or len(text) > 100_000:
        raise ModelError(f"{where}: refused: the program's input/output structure is not plain")
    try:
        _protocol, spec = json.loads(text)
    except (ValueError, TypeError):
        raise ModelError(f"{where}: refused: the program's input/output structure is not readable") from None
    _check_spec_node(spec, where, depth=0)


def _check_spec_node(node: object, where: str, depth: int) -> None:
    if not isinstance(node, dict) or depth > 32 or node.get("type") not in _TREESPEC_TYPES:
        shown = node.get("type") if isinstance(node, dict) else node
        raise ModelError(f"{where}: refused: the program's input/output structure uses {shown!r:.60}")
    context = node.get("context")
    if context is not None:
        try:
            decoded = json.loads(context) if isinstance(context, str) else context
        except ValueError:
            raise ModelError(f"{where}: refused: unreadable structure context {context!r:.60}") from None
        if decoded is not None and not (
            isinstance(decoded, list) and all(isinstance(k, str) for k in decoded)
        ):
            raise ModelError(f"{where}: refused: structure context {context!r:.60} is not a list of names")
        for key in decoded or []:
            _token(key, where)
    for child in node.get("children_spec") or []:
        _check_spec_node(child, where, depth + 1)


# torch.export's serialised ScalarType codes -> bytes per element (unknown codes count 8).
_ITEMSIZE = {
    1: 1,
    2: 1,
    3: 2,
    4: 4,
    5: 8,
    6: 2,
    7: 4,
    8: 8,
    9: 4,
    10: 8,
    11: 16,
    12: 1,
    13: 2,
    28: 2,
    34: 4,
    35: 8,
}
_ITEMSIZE |= dict.fromkeys(range(29, 34), 1)


def check_weights_config(config: dict, member_sizes: dict[str, int], folder: str, where: str) -> int:
    """Declared bytes of the raw payloads a weights/constants config names; refuses short payloads
    and payloads for another device. ``member_sizes`` maps archive keys (casefolded) to sizes."""
    total = 0
    for fqn, meta in config.items():
        tensor = (meta or {}).get("tensor_meta") or {}
        device = (tensor.get("device") or {}).get("type", "cpu")
        if device != "cpu":
            raise ModelError(f"{where}: refused: weight {fqn!r:.60} is stored for device {device!r:.20}")
        sizes = [s.get("as_int") for s in tensor.get("sizes") or [] if isinstance(s, dict)]
        if not all(isinstance(s, int) and s >= 0 for s in sizes):
            raise ModelError(f"{where}: refused: weight {fqn!r:.60} has no plain shape")
        declared = math.prod(sizes) * _ITEMSIZE.get(tensor.get("dtype"), 8)
        total += declared
        if meta.get("use_pickle") is False:
            held = member_sizes.get(f"{folder}/{str(meta.get('path_name', '')).casefold()}")
            if held is None or held < declared:
                raise ModelError(
                    f"{where}: refused: weight {fqn!r:.60} declares {declared:,} bytes but its payload holds "
                    f"{held or 0:,}"
                )
    return total
