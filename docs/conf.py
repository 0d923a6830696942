"""Sphinx configuration: the API reference, with README.rst as its front page.

Build it from the repository root with::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

autodoc documents what each module exposes (its ``__all__``, else its own public
names), so the pages name modules, never the files the package is split into.
"""

import os
import sys

# Document this tree, installed or not.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import netchat  # noqa: E402

project = "netchat"
author = "netchat developers"
copyright = "netchat developers, GPL-2.0-or-later"
release = netchat.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc"]

exclude_patterns = ["_build"]
default_role = None

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "signature"
autoclass_content = "both"

html_theme = "alabaster"
html_title = "netchat %s" % release
html_show_sourcelink = False

# The package page documents what ``import netchat`` gives; the page of the module
# a name comes from does not document it again (one target per object, so that
# cross-references are never ambiguous).
PACKAGE_PAGE = "api/netchat"


def _documented_once(app, what, name, obj, skip, options):
    if (what == "module" and app.env.docname != PACKAGE_PAGE
            and name in netchat.__all__ and getattr(netchat, name, None) is obj):
        return True
    return None


def _no_object_base(app, name, obj, options, bases):
    bases[:] = [base for base in bases if base is not object]


def setup(app):
    app.connect("autodoc-skip-member", _documented_once)
    app.connect("autodoc-process-bases", _no_object_base)
