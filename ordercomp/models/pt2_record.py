"""The strings of a .pt2 program record (models/model.json) and its weight records, each checked
by where it sits before torch parses any of them.

torch's deserializer hands three kinds of string to a parser that runs Python: symbolic sizes
(`expr_str`, and the keys of `range_constraints`) to sympy.sympify, an eval; guards
(`guards_code`) to exec, when the program's module is built; pytree specs (`in_spec`, `out_spec`)
to a JSON reader that imports any module they name. Each must match a closed grammar of what
torch.export writes. Other strings: names are identifiers, free text (stack traces, operators'
string arguments) is allowed only where torch stores it unparsed, and a string anywhere else,
including fields a later torch may add, must be a plain token (letters, digits, `_.+:#-`), which
cannot spell a call.
"""
from __future__ import annotations

import ast
import json
import re

MAX_DEPTH = 64                   # nesting of JSON records; a genuine export's program record has 9 levels
MAX_EXPRESSION_CHARS = 2000
MAX_TERM_DEPTH = 100             # of an expression's syntax tree; torch's are a few levels deep
MAX_TEXT_CHARS = 1 << 16
MAX_LITERAL = 1 << 62            # integers in sizes and guards; anything larger overflows torch's int64 anyway
MAX_FLOAT_BITS = 1024

SYMBOL = re.compile(r"(s|u|zf|zuf)[0-9]{1,9}")  # torch's size, unbacked and float symbols (torch.utils._sympy.symbol)
IDENTIFIER = re.compile(r"([A-Za-z_][A-Za-z0-9_]{0,299})?")  # empty: the unnamed arguments of higher-order operators
TOKEN = re.compile(r"[A-Za-z0-9_.+:#-]{0,1000}")
FLOAT_TEXT = re.compile(r"-?[0-9]{1,30}(\.[0-9]{0,30})?(e-?[0-9]{1,3})?")
EXPRESSION_CHARACTERS = re.compile(r"[A-Za-z0-9_ ()+\-*/%,.'=]*")
GUARD_CHARACTERS = re.compile(r"[A-Za-z0-9_ ()\[\]+\-*/%<>=!,.']*")

# What torch writes into a size expression (sympy.srepr): sympy's arithmetic and relations and the
# size functions torch's deserializer names (GraphModuleDeserializer.sympy_functions), without
# those whose value grows exponentially with their arguments (Pow, PowByNatural, FloatPow, LShift).
SIZE_FUNCTIONS = frozenset({
    "Add", "Mul", "Max", "Min", "Abs", "Eq", "Ne", "StrictLessThan", "LessThan", "StrictGreaterThan", "GreaterThan",
    "And", "Or", "Not", "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "RShift", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
})
SIZE_CONSTANTS = frozenset({"true", "false"})
ASSUMPTIONS = frozenset({"integer", "positive", "nonnegative", "negative", "nonpositive", "real", "finite", "zero", "nonzero"})
ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod, ast.Div)
COMPARISONS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
TREE_TYPES = frozenset({None, "builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict"})
UNPARSED_METADATA = frozenset({"stack_trace", "nn_module_stack", "torch_fn", "source_fn_stack"})
JSON_METADATA = frozenset({"custom", "from_node"})
NAME_FIELDS = frozenset({"name", "as_name", "forward_arg_names"})
UNREADABLE = object()


def record_refusal(record) -> str | None:
    """What in a parsed JSON record (nested at most MAX_DEPTH levels: see `depth`) torch must not read, or None."""
    stack = [(record, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                refusal = _key_refusal(path, key)
                if refusal:
                    return refusal
                stack.append((item, path + (key,)))
        elif isinstance(value, list):
            stack.extend((item, path + ("[]",)) for item in value)
        elif isinstance(value, str):
            refusal = _string_refusal(tuple(key for key in path if key != "[]"), value)
            if refusal:
                return refusal
    return None


def _key_refusal(path: tuple, key: str) -> str | None:
    if path and path[-1] == "range_constraints":
        return expression_refusal(key)
    return None if TOKEN.fullmatch(key) else f"an unexpected key {_shown(key)}"


def _string_refusal(path: tuple, text: str) -> str | None:
    """A string checked by the field it sits in (the keys leading to it)."""
    field = path[-1] if path else ""
    if field == "expr_str":
        return expression_refusal(text)
    if field == "guards_code":
        return guard_refusal(text)
    if field in ("in_spec", "out_spec"):
        return treespec_refusal(text)
    if len(path) > 1 and path[-2] == "metadata" and field in UNPARSED_METADATA | JSON_METADATA:
        return _text_refusal(text) or (json_refusal(text) if field in JSON_METADATA else None)
    if path[-4:] in (("nodes", "inputs", "arg", "as_string"), ("nodes", "inputs", "arg", "as_strings")):
        return _text_refusal(text)  # an operator's string argument, e.g. rounding_mode='floor'
    if field in NAME_FIELDS:
        return None if IDENTIFIER.fullmatch(text) else f"a name that is not an identifier ({_shown(text)})"
    return None if TOKEN.fullmatch(text) else f"an unexpected string {_shown(text)} in {'.'.join(path[-3:])}"


def _text_refusal(text: str) -> str | None:
    return None if len(text) <= MAX_TEXT_CHARS else f"a text field of {len(text):,} characters"


def expression_refusal(text: str) -> str | None:
    """Why sympify must not see `text`, or None when it is a size expression as torch writes one."""
    tree = _parsed(text, EXPRESSION_CHARACTERS)
    if tree is None or not _is_size_term(tree.body):
        return f"a symbolic size torch would evaluate as Python ({_shown(text)})"
    return None


def guard_refusal(text: str) -> str | None:
    """Why exec must not see this guard, or None when it only compares input sizes with integers."""
    tree = _parsed(text, GUARD_CHARACTERS)
    if tree is None or not _is_guard_term(tree.body):
        return f"a guard torch would run as Python ({_shown(text)})"
    return None


def _parsed(text: str, characters: re.Pattern) -> ast.Expression | None:
    if len(text) > MAX_EXPRESSION_CHARS or not characters.fullmatch(text):
        return None
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    # the grammar checks below recurse: bound the nesting they meet (1+1+...+1 nests one level per term)
    return tree if _nesting(tree, ast.iter_child_nodes, MAX_TERM_DEPTH) <= MAX_TERM_DEPTH else None


def _is_size_term(node: ast.AST) -> bool:
    match node:
        case ast.Constant(value=int(value)):
            return abs(value) <= MAX_LITERAL
        case ast.Name(id=name):
            return bool(SYMBOL.fullmatch(name)) or name in SIZE_CONSTANTS
        case ast.UnaryOp(op=ast.USub() | ast.UAdd() | ast.Not(), operand=operand):
            return _is_size_term(operand)
        case ast.BinOp(op=op, left=left, right=right):
            return isinstance(op, ARITHMETIC) and _is_size_term(left) and _is_size_term(right)
        case ast.Call(func=ast.Name(id="Symbol"), args=[ast.Constant(value=str(name))], keywords=keywords):
            return bool(SYMBOL.fullmatch(name)) and all(_is_assumption(keyword) for keyword in keywords)
        case ast.Call(func=ast.Name(id="Integer"), args=[ast.Constant(value=int(value))], keywords=[]):
            return abs(value) <= MAX_LITERAL
        case ast.Call(func=ast.Name(id="Float"), args=[ast.Constant(value=str(text))], keywords=keywords):
            return bool(FLOAT_TEXT.fullmatch(text)) and all(k.arg == "precision" and _is_precision(k.value) for k in keywords)
        case ast.Call(func=ast.Name(id="Rational"), args=[numerator, denominator], keywords=[]):
            return _is_small_int(numerator) and _is_small_int(denominator)
        case ast.Call(func=ast.Name(id=name), args=args, keywords=[]):
            return name in SIZE_FUNCTIONS and all(_is_size_term(arg) for arg in args)
    return False


def _is_assumption(keyword: ast.keyword) -> bool:
    return keyword.arg in ASSUMPTIONS and isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, bool)


def _is_precision(node: ast.AST) -> bool:
    """Bits of a sympy Float: torch writes 53; mpmath would spend memory and time on billions."""
    return isinstance(node, ast.Constant) and type(node.value) is int and 1 <= node.value <= MAX_FLOAT_BITS


def _is_small_int(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int and abs(node.value) <= MAX_LITERAL


def _is_guard_term(node: ast.AST) -> bool:
    """Guards as torch prints them: `L['x'].size()[0] <= 1024`, `(L['x'].size()[0] // 2) != 1`, and/or/not of those."""
    match node:
        case ast.BoolOp(values=values):
            return all(_is_guard_term(value) for value in values)
        case ast.UnaryOp(op=ast.USub() | ast.UAdd() | ast.Not(), operand=operand):
            return _is_guard_term(operand)
        case ast.BinOp(op=op, left=left, right=right):
            return isinstance(op, ARITHMETIC) and _is_guard_term(left) and _is_guard_term(right)
        case ast.Compare(left=left, ops=ops, comparators=comparators):
            return all(isinstance(op, COMPARISONS) for op in ops) and all(map(_is_guard_term, [left, *comparators]))
        case ast.Constant(value=int(value)):
            return abs(value) <= MAX_LITERAL
        case ast.Call(func=ast.Name(id="max" | "min"), args=args, keywords=[]):
            return all(_is_guard_term(arg) for arg in args)
        case ast.Subscript(value=ast.Call(func=ast.Attribute(value=source, attr="size" | "stride"), args=[], keywords=[]),
                           slice=index):
            return _is_input(source) and _is_small_int(index)
        case ast.Call(func=ast.Attribute(value=source, attr="storage_offset"), args=[], keywords=[]):
            return _is_input(source)
    return _is_input(node)


def _is_input(node: ast.AST) -> bool:
    """An input of the program as torch names it in guards: L['x'], L['args'][0], L['inputs']['image']."""
    match node:
        case ast.Subscript(value=ast.Name(id="L"), slice=ast.Constant(value=str(name))):
            return bool(IDENTIFIER.fullmatch(name))
        case ast.Subscript(value=inner, slice=ast.Constant(value=key)) if type(key) in (int, str):
            return _is_input(inner) and (type(key) is int or bool(IDENTIFIER.fullmatch(key)))
    return False


def treespec_refusal(text: str) -> str | None:
    """Why torch's pytree reader must not see this spec (it imports modules a spec names), or None."""
    spec = json_value(text)
    if not (isinstance(spec, list) and len(spec) == 2 and spec[0] == 1):
        return f"an input or output spec torch cannot read safely ({_shown(text)})"
    nodes = [spec[1]]
    while nodes:
        node = nodes.pop()
        if not isinstance(node, dict) or set(node) != {"type", "context", "children_spec"} or not isinstance(node["children_spec"], list):
            return f"an input or output spec torch cannot read safely ({_shown(text)})"
        if node["type"] not in TREE_TYPES:
            return f"an input or output of type {_shown(str(node['type']))} (only tuples, lists and dicts are read)"
        if node["context"] is not None and not _is_plain_context(node["context"]):
            return f"an input or output spec whose context is more than plain keys ({_shown(str(node['context']))})"
        nodes.extend(node["children_spec"])
    return None


def _is_plain_context(context) -> bool:
    """null or a list of dict keys: no JSON object, which torch's reader would resolve as an enum by importing its module."""
    value = json_value(context)
    return value is None or (isinstance(value, list) and all(item is None or isinstance(item, (str, int, float, bool)) for item in value))


def json_refusal(text: str) -> str | None:
    return f"a JSON text torch cannot read safely ({_shown(text)})" if json_value(text) is UNREADABLE else None


def json_value(text):
    """A JSON text's value if it parses within MAX_DEPTH levels, else UNREADABLE."""
    if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
        return UNREADABLE
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return UNREADABLE
    return value if depth(value) <= MAX_DEPTH else UNREADABLE


def depth(value) -> int:
    """How deeply a parsed JSON value nests (counted up to one level past MAX_DEPTH)."""
    return _nesting(value, lambda item: item.values() if isinstance(item, dict) else item if isinstance(item, list) else (),
                   MAX_DEPTH)


def _nesting(root, children, limit: int) -> int:
    """How deeply `root` nests, following `children`, counted up to one level past `limit`, without recursion."""
    deepest, stack = 0, [(root, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level <= limit:
            stack.extend((child, level + 1) for child in children(item))
    return deepest


def _shown(text: str) -> str:
    return repr(text[:60] + ("..." if len(text) > 60 else ""))
