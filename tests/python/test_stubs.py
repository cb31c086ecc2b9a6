"""test_stubs.py: the type stubs (coextra/__init__.pyi) name exactly the module's public API, with matching members;
the version is the one of meson.build."""
import ast
import inspect
import os
import re
import unittest

import coextra


def stub_tree():
    path = os.path.join(os.path.dirname(coextra.__file__), "__init__.pyi")
    with open(path) as f:
        return ast.parse(f.read(), path)


def stub_names(tree):
    names = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
    return {k: v for k, v in names.items() if not k.startswith("_") or k == "__version__"}


class StubTests(unittest.TestCase):
    def setUp(self):
        self.tree = stub_tree()
        self.names = stub_names(self.tree)

    def test_py_typed_marker_installed(self):
        self.assertTrue(os.path.exists(os.path.join(os.path.dirname(coextra.__file__), "py.typed")))

    def test_stub_names_equal_module_all(self):
        self.assertEqual(set(self.names), set(coextra.__all__))
        for name in coextra.__all__:
            self.assertTrue(hasattr(coextra, name), name)

    def test_class_members_match(self):
        for cls_name in ("Slot", "Hook"):
            node = self.names[cls_name]
            stubbed = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
            stubbed |= {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)}
            stubbed.discard("__init__")
            real = {n for n in dir(getattr(coextra, cls_name)) if not n.startswith("_")}
            real |= {n for n in ("__enter__", "__exit__", "__getitem__", "__setitem__", "__delitem__",
                                 "__contains__", "__len__", "__iter__") if hasattr(getattr(coextra, cls_name), n)}
            self.assertEqual(stubbed, real, cls_name)

    def test_namedtuple_fields_match(self):
        for cls_name in ("SlotInfo", "HookInfo", "Status"):
            node = self.names[cls_name]
            fields = tuple(n.target.id for n in node.body if isinstance(n, ast.AnnAssign))
            self.assertEqual(fields, getattr(coextra, cls_name)._fields, cls_name)

    def test_function_parameters_match(self):
        for fn_name in ("slots", "hooks", "status", "get_include"):
            node = self.names[fn_name]
            stub_params = [a.arg for a in node.args.args + node.args.kwonlyargs]
            real_params = list(inspect.signature(getattr(coextra, fn_name)).parameters)
            self.assertEqual(stub_params, real_params, fn_name)
        add_hook = self.names["add_hook"]
        self.assertEqual([a.arg for a in add_hook.args.args], ["name"])
        self.assertEqual([a.arg for a in add_hook.args.kwonlyargs], ["on_enter", "on_exit", "priority", "only"])
        # add_hook is a C function: check the keywords it really accepts
        with self.assertRaises(TypeError):
            coextra.add_hook("stub-check", bogus=1)
        h = coextra.add_hook("stub-check", on_enter=None, on_exit=None, priority=coextra.PRIORITY_DEFAULT, only=None)
        h.remove()


ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir)


class VersionTests(unittest.TestCase):
    """meson.build's project(version:) is the one place that holds the version: COEXTRA_VERSION
    (lib/coextra_version.h, configure_file) and the wheel's (pyproject.toml, dynamic) come from it."""

    def read(self, name):
        with open(os.path.join(ROOT, name)) as f:
            return f.read()

    def test_module_version_is_meson_project_version(self):
        m = re.search(r"^project\('coextra',.*?version\s*:\s*'([^']+)'", self.read("meson.build"), re.S | re.M)
        self.assertIsNotNone(m)
        self.assertEqual(coextra.__version__, m.group(1))

    def test_pyproject_takes_the_version_from_meson(self):
        text = self.read("pyproject.toml")
        self.assertRegex(text, r'(?m)^dynamic = \["version"\]')
        self.assertNotRegex(text, r"(?m)^version\s*=")


if __name__ == "__main__":
    unittest.main()
