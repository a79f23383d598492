"""Every public name says what it is: users read these docstrings through help() and their IDE."""

from __future__ import annotations

import inspect

import auditcam


def _own_docstring(obj: object) -> str:
    """The docstring written for ``obj``, not the signature a dataclass makes up for itself."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    name = getattr(obj, "__name__", "")
    return "" if inspect.isclass(obj) and doc.startswith(f"{name}(") else doc


def _public_members(cls: type) -> dict[str, object]:
    """Methods and properties a class defines itself, without the private ones."""
    members = {}
    for attr, member in vars(cls).items():
        if attr.startswith("_"):
            continue
        if isinstance(member, property):
            members[attr] = member.fget
        elif isinstance(member, staticmethod | classmethod):
            members[attr] = member.__func__
        elif inspect.isfunction(member):
            members[attr] = member
    return members


def test_every_public_name_and_its_members_have_a_docstring():
    undocumented = []
    for name in auditcam.__all__:
        if name == "__version__":
            continue
        obj = getattr(auditcam, name)
        if not _own_docstring(obj):
            undocumented.append(name)
        if inspect.isclass(obj):
            undocumented += [f"{name}.{attr}" for attr, m in _public_members(obj).items() if not _own_docstring(m)]
    assert undocumented == []


def test_the_public_names_are_importable_and_listed_once():
    assert len(set(auditcam.__all__)) == len(auditcam.__all__)
    assert all(hasattr(auditcam, name) for name in auditcam.__all__)
    assert auditcam.__version__.count(".") == 2
