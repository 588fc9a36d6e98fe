"""The ``threadws-api`` directive: autodoc entries for every name in ``threadws.__all__``.

Names are grouped by the module that defines them, under a heading taken from
the first line of that module's docstring, so a name added to ``__all__``
appears in the reference without editing the docs.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import re
import sys
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


def _heading(module_name: str) -> str:
    doc = inspect.getdoc(sys.modules[module_name]) or module_name
    line = doc.strip().splitlines()[0].rstrip(".")
    return line


def _entry(package: str, name: str, obj: Any) -> list[str]:
    target = f"{package}.{name}"
    if inspect.isclass(obj):
        lines = [f".. autoclass:: {target}", "   :members:"]
        if issubclass(obj, enum.Enum):
            lines.append("   :undoc-members:")
        if issubclass(obj, BaseException) or issubclass(obj, enum.Enum):
            lines.append("   :show-inheritance:")
        return lines
    if callable(obj):
        return [f".. autofunction:: {target}"]
    return [f".. autodata:: {target}"]


class ThreadwsApi(SphinxDirective):
    """``.. threadws-api:: threadws``: the package's public names, grouped by defining module.

    The ``:order:`` option lists modules whose groups come first, in that
    order; the groups of other modules follow in the order of ``__all__``.
    """

    required_arguments = 1
    option_spec = {"order": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        package = self.arguments[0]
        module = importlib.import_module(package)
        groups: dict[str, list[str]] = {}
        for name in module.__all__:
            obj = getattr(module, name)
            groups.setdefault(getattr(obj, "__module__", package), []).append(name)
        first = self.options.get("order", "").split()
        ordered = sorted(groups.items(), key=lambda item: first.index(item[0]) if item[0] in first else len(first))
        lines: list[str] = []
        for defining, names in ordered:
            title = _heading(defining)
            lines += [title, "-" * len(title), ""]
            for name in names:
                lines += _entry(package, name, getattr(module, name))
                lines.append("")
        self.env.note_dependency(inspect.getfile(module))
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source=f"<{package}.__all__>"), container)
        return list(container.children)


#: The classes in threadws/settings.py whose defaults signatures refer to.
_DEFAULT_HOLDERS = ("Settings", "ServerLimits")


def _settings_defaults() -> dict[str, str]:
    """``{"Settings.read_limit": "1 << 20", ...}``: the defaults as written in threadws/settings.py."""
    import ast

    import threadws.settings

    source = inspect.getsource(threadws.settings)
    tree = ast.parse(source)
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in _DEFAULT_HOLDERS:
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None:
                    found[f"{node.name}.{item.target.id}"] = ast.get_source_segment(source, item.value) or ""
    return found


def _show_setting_defaults(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, signature: str | None, annotation: str | None
) -> tuple[str, str | None] | None:
    # dial(), Upgrader() and serve() take their defaults from Settings and
    # ServerLimits (written once); the reader wants the value, as written there.
    if not signature:
        return None
    own_class = name.rpartition(".")[2]
    if what == "class" and own_class in _DEFAULT_HOLDERS:
        # The holders' own signatures: `read_limit: int = 1 << 20`, not 1048576.
        for reference, value in _settings_defaults().items():
            holder, _, field = reference.partition(".")
            if holder == own_class:
                pattern = rf"\b({field}: [^=,()]+ = )[^,()]+"
                signature = re.sub(pattern, lambda match, value=value: match.group(1) + value, signature)
        return signature, annotation
    if not any(f"{holder}." in signature for holder in _DEFAULT_HOLDERS):
        return None
    for reference, value in _settings_defaults().items():
        signature = signature.replace(f"= {reference}", f"= {value}")
    return signature, annotation


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("threadws-api", ThreadwsApi)
    app.connect("autodoc-process-signature", _show_setting_defaults)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
