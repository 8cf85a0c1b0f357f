"""Inspect the computation graph of an untrusted model before any of it runs.

A ``torch.export`` archive (``.pt2``) and a TorchScript file carry a graph of operators, and
some operators act outside the tensors: ``aten::from_file(path, shared=True)`` maps a file into
memory (a following ``fill_`` then writes to it), ``prim::Print`` writes to the console, random
operators make every query answer differently, and an unbounded ``while_loop`` never returns.
The audited party writes that graph, so every operator must come from an allow-list of pure
tensor computations:

* ATen operators named in :data:`PURE_ATEN` (arithmetic, linear algebra, convolutions, norms,
  pooling, shapes and views, reductions); their in-place forms (``add_``) only on tensors the
  graph itself made, never on an input, parameter, buffer or constant (or a view of one);
* ``operator.getitem`` and integer arithmetic on symbolic sizes;
* ``cond`` (runs one of two checked branches); loops only with a constant trip count at most
  :data:`MAX_TRIP_COUNT` (TorchScript ``for`` over a constant range); ``while_loop`` never;
* no operator outside ``aten``/``prim`` (custom namespaces could be anything), no random
  operator, no mutation of the model's own state between queries.

Everything else is refused with a :class:`ModelError` that names the operator.

A serialised program also carries Python text that torch evaluates while loading it: symbolic
sizes (``expr_str``, parsed with ``sympy.sympify``, i.e. ``eval``) and shape guards
(``guards_code``, compiled with ``exec`` when the module is built). A supplier can put any code
there, so every such string must parse into a small grammar (names of symbols and sympy
functions, numbers, arithmetic and comparisons; for guards also ``L['x'].size()[0]``) before
``torch.export.load`` sees the file. Operator targets are resolved by torch through ``getattr``
chains on the ``torch`` and ``operator`` modules (``torch.os.system`` resolves), so a target
must be a known ATen operator, ``cond`` or one of a few ``operator`` functions on sizes.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from collections.abc import Iterable, Iterator

from unlearn_audit.errors import ModelError
from unlearn_audit.program_text import check_program_text

MAX_TRIP_COUNT = 100_000

_POINTWISE = """
abs acos acosh add addcdiv addcmul asin asinh atan atan2 atanh bitwise_and bitwise_not bitwise_or
bitwise_xor ceil celu clamp clamp_max clamp_min clip copysign cos cosh deg2rad div elu eq erf erfc
erfinv exp exp2 expm1 fill float_power floor floor_divide fmax fmin fmod frac ge gelu glu gt
hardshrink hardsigmoid hardswish hardtanh heaviside hypot isfinite isinf isnan le leaky_relu lerp lgamma
log log10 log1p log2 log_sigmoid logaddexp logical_and logical_not logical_or logical_xor logit lt
masked_fill maximum minimum mish mul nan_to_num ne neg negative positive pow prelu _prelu_kernel
rad2deg reciprocal relu relu6 remainder round rrelu_with_noise_functional rsqrt rsub selu sgn sigmoid sign
signbit silu sin sinc sinh softplus softshrink sqrt square sub tan tanh threshold true_divide trunc where
xlogy
"""
_LINEAR = """
addbmm addmm addmv addr baddbmm bilinear bmm conv1d conv2d conv3d conv_transpose1d conv_transpose2d
conv_transpose3d convolution _convolution dot einsum embedding linear matmul mm mv outer
scaled_dot_product_attention _scaled_dot_product_flash_attention_for_cpu
_scaled_dot_product_efficient_attention _scaled_dot_product_attention_math tensordot
"""
_NORMS_POOLS = """
batch_norm _native_batch_norm_legit_no_training _native_batch_norm_legit native_batch_norm
_batch_norm_with_update_functional _batch_norm_no_update group_norm native_group_norm instance_norm
layer_norm native_layer_norm rms_norm _fused_rms_norm local_response_norm normalize
adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d _adaptive_avg_pool2d _adaptive_avg_pool3d
adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d avg_pool1d avg_pool2d avg_pool3d
max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices
max_pool3d_with_indices upsample_nearest1d upsample_nearest2d upsample_nearest3d upsample_bilinear2d
upsample_bicubic2d upsample_linear1d _upsample_nearest_exact2d _upsample_bilinear2d_aa pixel_shuffle
pixel_unshuffle pad constant_pad_nd reflection_pad1d reflection_pad2d reflection_pad3d
replication_pad1d replication_pad2d replication_pad3d dropout feature_dropout alpha_dropout
"""
_SHAPES = """
alias as_strided cat chunk clone concat concatenate contiguous detach diag diag_embed diagonal expand
expand_as flatten flip gather index index_add index_copy index_fill index_put index_select
lift_fresh_copy movedim narrow permute repeat repeat_interleave reshape roll scatter scatter_add
scatter_reduce select slice slice_scatter select_scatter split split_with_sizes squeeze stack t
take_along_dim tile transpose tril triu unbind unflatten unfold unsqueeze view view_as _unsafe_view
view_copy _to_copy to type_as _reshape_alias zeros_like ones_like full_like empty_like
new_zeros new_ones new_full new_empty arange full zeros ones empty scalar_tensor linspace eye
sym_size sym_numel sym_stride sym_storage_offset _assert_tensor_metadata _assert_scalar
_assert_async sym_constrain_range sym_constrain_range_for_size _functional_assert_async
"""
_REDUCTIONS = """
all amax amin aminmax any argmax argmin argsort count_nonzero cummax cummin cumprod cumsum
kthvalue _log_softmax log_softmax logsumexp max mean median min nanmean nansum norm
linalg_vector_norm linalg_norm prod _softmax softmax sort std std_mean sum topk var var_mean
"""

PURE_ATEN = frozenset(" ".join([_POINTWISE, _LINEAR, _NORMS_POOLS, _SHAPES, _REDUCTIONS]).split())
# Operators that create a tensor of a size given in the graph: bounded so that a literal
# size cannot exhaust memory.
FACTORIES = frozenset(
    "arange full zeros ones empty linspace eye new_zeros new_ones new_full new_empty".split()
)
MAX_FACTORY_ELEMENTS = 1 << 28
_PYTHON_OPS = {
    getattr(operator, name)
    for name in "getitem add sub mul floordiv truediv mod neg pos eq ne lt le gt ge and_ or_ not_".split()
}
_TS_STRUCTURAL = frozenset(
    """prim::Constant prim::ListConstruct prim::ListUnpack prim::TupleConstruct prim::TupleUnpack
    prim::TupleIndex prim::GetAttr prim::If prim::Loop prim::NumToTensor prim::device prim::dtype
    prim::shape prim::Uninitialized prim::unchecked_cast prim::RaiseException prim::isinstance
    prim::dim prim::max prim::min prim::layout prim::requires_grad prim::is_cuda prim::data
    prim::DictConstruct prim::dict prim::TupleSlice aten::__getitem__ aten::__is__ aten::__isnot__
    aten::__not__ aten::len aten::size aten::dim aten::Int aten::Float aten::Bool aten::ScalarImplicit
    aten::format aten::warn aten::__range_length aten::__derive_index aten::append aten::list
    aten::eq aten::ne aten::lt aten::le aten::gt aten::ge aten::add aten::sub aten::mul aten::floordiv
    aten::div aten::neg aten::__and__ aten::__or__ aten::floor aten::ceil aten::item aten::numel
    aten::tensor aten::is_floating_point aten::_set_item aten::__contains__
    """.split()
)


def _base_name(name: str) -> str:
    """``add_`` -> ``add``, ``__iand__`` stays; the overload packet name of an in-place form."""
    return name[:-1] if name.endswith("_") and not name.endswith("__") else name


def check_op_name(qualified: str, where: str = "model") -> str:
    """Refuse an operator not on the allow-list; return its base name.

    ``qualified`` is ``aten::name`` / ``aten.name.overload`` / ``torch.ops.aten.name.overload``.
    """
    text = qualified.removeprefix("torch.ops.")
    namespace, _, rest = text.replace("::", ".").partition(".")
    name = rest.split(".")[0]
    if namespace != "aten":
        raise ModelError(
            f"{where}: refused: the graph calls {qualified}, which is not a pure tensor operator"
        )
    base = _base_name(name)
    if base not in PURE_ATEN:
        raise ModelError(
            f"{where}: refused: the graph calls {qualified}, which is not on the allow-list of pure tensor "
            "operators (file, storage, print, random and custom operators are never run)"
        )
    return base


# --------------------------------------------------------------------------- torch.export


def _json_nodes(value: object) -> Iterator[dict]:
    """Every graph node in a serialised ``torch.export`` program, nested graphs included."""
    if isinstance(value, dict):
        if isinstance(value.get("target"), str) and "inputs" in value:
            yield value
        for inner in value.values():
            yield from _json_nodes(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _json_nodes(inner)


_PYTHON_OP_NAMES = frozenset(
    "getitem add sub mul floordiv truediv mod neg pos eq ne lt le gt ge and_ or_ not_ pow".split()
)
_TORCH_SYM_FUNCS = frozenset("sym_max sym_min sym_float sym_int sym_not sym_ite sym_sum sym_sqrt".split())


def _check_target(target: str, where: str) -> None:
    """A serialised node target: what torch will resolve and call."""
    parts = target.split(".")
    if target.startswith("torch.ops.higher_order."):
        if target.rsplit(".", 1)[-1] != "cond":
            raise ModelError(f"{where}: refused: the graph uses {target}, a loop that may never end")
    elif target.startswith("torch.ops."):
        check_op_name(target, where)
    elif len(parts) == 2 and parts[0] in ("_operator", "operator") and parts[1] in _PYTHON_OP_NAMES:
        return
    elif len(parts) == 2 and parts[0] == "torch" and parts[1] in _TORCH_SYM_FUNCS:
        return
    else:
        raise ModelError(f"{where}: refused: the graph calls {target!r}, which is not a tensor operator")


def check_export_json(raw: bytes, where: str) -> None:
    """Check the serialised program of a ``.pt2`` archive before ``torch.export.load`` reads it."""
    try:
        program = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{where}: the archive's program is not valid JSON ({exc})") from None
    for node in _json_nodes(program):
        _check_target(node["target"], where)
    check_program_text(program, where)
    for text in _json_strings(program, "expr_str"):
        check_expression(text, where)
    if isinstance(program, dict):
        for guard in program.get("guards_code") or []:
            check_expression(guard, where, guard=True)
        for name in program.get("range_constraints") or {}:
            check_expression(name, where)
    signature = program.get("graph_module", {}).get("signature", {}) if isinstance(program, dict) else {}
    for spec in signature.get("output_specs", []) or []:
        kind = next(iter(spec), "")
        if kind != "user_output":
            raise ModelError(
                f"{where}: refused: the program changes its own state when queried ({kind}); "
                "export the model in eval mode"
            )


def _json_strings(value: object, key: str) -> Iterator[str]:
    """Every value stored under ``key`` anywhere in a JSON document (non-strings as their text)."""
    if isinstance(value, dict):
        for k, inner in value.items():
            if k == key:
                yield inner if isinstance(inner, str) else json.dumps(inner)
            else:
                yield from _json_strings(inner, key)
    elif isinstance(value, list):
        for inner in value:
            yield from _json_strings(inner, key)


# Names sympy may see in a symbolic size: torch's sympy functions and sympy's own constructors.
SYMPY_NAMES = frozenset(
    """Symbol Integer Rational Float Add Mul Pow Max Min Abs Eq Ne Lt Le Gt Ge And Or Not true false
    oo zoo nan pi E sqrt floor ceiling StrictLessThan StrictGreaterThan LessThan GreaterThan Equality
    Unequality FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv
    IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt RoundToInt RoundDecimal
    ToFloat IntTrueDiv FloatTrueDiv Identity BitwiseFn_bitwise_and
    BitwiseFn_bitwise_or BitwiseFn_bitwise_xor OpaqueUnaryFn_sqrt OpaqueUnaryFn_exp
    OpaqueUnaryFn_log""".split()
) - {"Pow", "OpaqueUnaryFn_exp"}  # powers and exponentials could ask sympy for astronomically large numbers
MAX_LITERAL = 1 << 62
_SYMBOL = re.compile(r"[a-z]{1,8}[0-9]{1,9}")
_GUARD_METHODS = frozenset({"size", "stride", "dim", "numel", "storage_offset"})
_KEYWORDS = frozenset({"positive", "integer", "real", "nonnegative", "finite", "negative", "nonzero"})
_NODES = (
    ast.Expression, ast.Call, ast.Name, ast.Constant, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp,
    ast.keyword, ast.Load, ast.operator, ast.cmpop, ast.boolop, ast.unaryop,
)  # fmt: skip
MAX_EXPRESSION = 4000


def check_expression(text: str, where: str, *, guard: bool = False) -> None:
    """Refuse a symbolic-size or guard expression outside the small grammar torch writes.

    Allowed: sympy function names and symbol names (``s77``), numbers, arithmetic, comparisons,
    ``and``/``or``/``not``; for guards also ``L['x']`` subscripts and ``.size()``-like calls.
    No attribute other than those, no dunder, no string except a symbol or input name.
    """
    if not isinstance(text, str) or len(text) > MAX_EXPRESSION or any(c in text for c in '#"\\\n\r'):
        # torch pastes guards into generated source inside a string literal: no quote, comment or break
        raise ModelError(f"{where}: refused: an expression in the program that is not a plain size formula")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        raise ModelError(
            f"{where}: refused: the program holds an expression that is not valid: {text[:80]!r}"
        ) from None
    for node in ast.walk(tree):
        if not _allowed_node(node, guard):
            shown = ast.unparse(node)[:60] if isinstance(node, ast.expr) else type(node).__name__
            raise ModelError(
                f"{where}: refused: the program holds code where a size expression belongs ({shown!r})"
            )


def _allowed_node(node: ast.AST, guard: bool) -> bool:
    if isinstance(node, ast.Name):
        return node.id in SYMPY_NAMES or bool(_SYMBOL.fullmatch(node.id)) or (guard and node.id == "L")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow | ast.LShift | ast.RShift):
        return False
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, int | float) and not isinstance(value, bool) and not abs(value) <= MAX_LITERAL:
            return False
        return isinstance(value, bool | int | float) or (
            isinstance(value, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", value) is not None
        )
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name):
            return func.id in SYMPY_NAMES
        return guard and isinstance(func, ast.Attribute) and func.attr in _GUARD_METHODS
    if isinstance(node, ast.keyword):
        return node.arg in _KEYWORDS and isinstance(node.value, ast.Constant)
    if isinstance(node, ast.Attribute):
        return guard and node.attr in _GUARD_METHODS
    if isinstance(node, ast.Subscript):
        return guard and isinstance(node.slice, ast.Constant)
    return isinstance(node, _NODES)


# Views that alias their input without saying so in their schema.
_UNANNOTATED_VIEWS = frozenset({"_unsafe_view", "_reshape_alias", "view_copy", "alias", "lift_fresh_copy"})
# Operators that take a ``training`` flag: only ever with a constant False (then they are pure).
_TRAINING_FLAG = {
    "dropout": 2,
    "feature_dropout": 2,
    "alpha_dropout": 2,
    "batch_norm": 5,
    "native_batch_norm": 5,
}
_TRAINING_ONLY = frozenset(
    {"_native_batch_norm_legit", "_batch_norm_with_update_functional", "rrelu_with_noise_functional"}
)


def _root(node):
    """Follow views (``view``, ``slice``, ``_unsafe_view``, ...) back to the tensor they alias."""
    from torch._ops import OpOverload
    from torch.fx import Node

    while node.op == "call_function" and isinstance(node.target, OpOverload):
        arguments = node.target._schema.arguments
        first = node.args[0] if node.args else None
        view = bool(arguments) and arguments[0].alias_info is not None
        if not isinstance(first, Node) or not (view or node.target._opname in _UNANNOTATED_VIEWS):
            break
        node = first
    return node


def _written_args(node) -> list:
    """The arguments an operator writes into, from its schema (``Tensor(a!)``), by position or name."""
    schema = node.target._schema
    written = []
    for i, argument in enumerate(schema.arguments):
        if argument.alias_info is None or not argument.alias_info.is_write:
            continue
        value = node.args[i] if i < len(node.args) else node.kwargs.get(argument.name)
        written.extend(value if isinstance(value, list | tuple) else [value])
    return written


def _check_call(node, where: str) -> None:
    """One ATen call: allow-listed, writing only into tensors the graph made, never in training mode."""
    from torch.fx import Node

    qualified = node.target.name()  # aten::add_.Tensor
    base = check_op_name(qualified, where)
    for value in _written_args(node):
        if isinstance(value, Node) and _root(value).op in ("placeholder", "get_attr"):
            raise ModelError(f"{where}: refused: {qualified} writes into the model's inputs or weights")
    if base in _TRAINING_ONLY:
        raise ModelError(
            f"{where}: refused: {qualified} runs in training mode; export the model in eval mode"
        )
    if base in _TRAINING_FLAG:
        index = _TRAINING_FLAG[base]
        flag = (
            node.args[index]
            if index < len(node.args)
            else node.kwargs.get("train", node.kwargs.get("training"))
        )
        if flag is not False:
            raise ModelError(
                f"{where}: refused: {qualified} runs in training mode; export the model in eval mode"
            )
    if base in FACTORIES:
        _check_factory_size(node.args, qualified, where)


def check_graph_module(graph_module, where: str) -> None:
    """Check a loaded FX graph (``ExportedProgram.graph_module``) node by node, nested graphs too."""
    from torch._ops import HigherOrderOperator, OpOverload
    from torch.fx import GraphModule

    for node in graph_module.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        target = node.target
        if node.op != "call_function":
            raise ModelError(f"{where}: refused: graph node {node.name} is a {node.op}")
        if target in _PYTHON_OPS:
            continue
        if isinstance(target, HigherOrderOperator):
            if target.name() != "cond":
                raise ModelError(
                    f"{where}: refused: the graph uses {target.name()}, a loop that may never end"
                )
            continue
        if not isinstance(target, OpOverload):
            raise ModelError(f"{where}: refused: graph node {node.name} calls {target!r}")
        _check_call(node, where)
    for child in graph_module.children():
        if isinstance(child, GraphModule):
            check_graph_module(child, where)


def _check_factory_size(args: Iterable, qualified: str, where: str) -> None:
    for arg in args:
        if isinstance(arg, list | tuple) and arg and all(isinstance(v, int) for v in arg):
            count = 1
            for v in arg:
                count *= max(int(v), 0)
            if count > MAX_FACTORY_ELEMENTS:
                raise ModelError(f"{where}: refused: {qualified} allocates {count:,} elements")
            return


# --------------------------------------------------------------------------- TorchScript


def check_torchscript(module, where: str) -> None:
    """Check the inlined ``forward`` graph of a loaded TorchScript module."""
    try:
        graph = module.inlined_graph if hasattr(module, "inlined_graph") else module.graph
    except RuntimeError as exc:
        raise ModelError(f"{where}: cannot read the TorchScript graph ({exc})") from None
    _check_ts_block(graph, where)


def _check_ts_block(block, where: str) -> None:
    for node in block.nodes():
        kind = node.kind()
        if kind == "prim::Loop":
            _check_ts_loop(node, where)
        elif kind not in _TS_STRUCTURAL:
            check_op_name(kind, where)
        for inner in node.blocks():
            _check_ts_block(inner, where)


_SHAPE_SOURCES = frozenset("aten::size aten::dim aten::len aten::numel prim::Constant prim::shape".split())
_SHAPE_ARITHMETIC = frozenset(
    """aten::add aten::sub aten::mul aten::floordiv aten::__range_length aten::__getitem__ prim::min
    prim::max aten::Int aten::ScalarImplicit""".split()
)


def _shape_derived(value, depth: int = 0) -> bool:
    """Whether a TorchScript integer comes from tensor shapes and constants only (never from data).

    ``aten::Int`` counts only when applied to a shape-derived value, so ``int(x.sum())`` is not.
    """
    node = value.node()
    kind = node.kind()
    if depth > 50:
        return False
    if kind in _SHAPE_SOURCES:
        return True
    if kind in _SHAPE_ARITHMETIC:
        return all(_shape_derived(v, depth + 1) for v in node.inputs())
    return False


def _check_ts_loop(node, where: str) -> None:
    """A TorchScript loop runs only for a bounded count: a constant, or one taken from tensor shapes.

    A ``while`` loop has the constant trip count 2**63 - 1 and is refused; ``for i in range(n)``
    with ``n`` computed from tensor values is refused too.
    """
    trip = next(iter(node.inputs()))
    producer = trip.node()
    if producer.kind() == "prim::Constant":
        count = producer.output().toIValue()
        if count is not None and int(count) <= MAX_TRIP_COUNT:
            return
    elif _shape_derived(trip):
        return
    raise ModelError(
        f"{where}: refused: a TorchScript loop that may not end (a while loop, or a loop count computed "
        "from tensor values)"
    )
