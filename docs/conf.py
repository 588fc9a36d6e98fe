"""Sphinx configuration for threadws's documentation.

Build it with warnings as errors, as the tests do (tests/test_docs.py)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the threadws next to these docs, not an installed one
sys.path.insert(0, str(HERE / "_ext"))

import threadws  # noqa: E402

project = "threadws"
author = "the threadws authors"
copyright = "2026, the threadws authors"
release = threadws.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the docstrings' "Args:", "Returns:", "Raises:" sections
    "myst_parser",
    "threadws_api",  # the API page's list of public names (docs/_ext/threadws_api.py)
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "deploy"]
myst_heading_anchors = 3  # links to a section of a page: [the thread budget](gunicorn.md#the-thread-budget)

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True  # show `1 << 20`, not 1048576
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"threadws {release}"
