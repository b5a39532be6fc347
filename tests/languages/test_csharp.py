"""C#: using directives against namespaces declared across files."""

from __future__ import annotations

from repoctx.languages.base import ImportRef, RepoIndex
from repoctx.languages.csharp import SPEC

SOURCE = b"""\
global using System.Linq;
using System;
using Acme.Models;
using static Acme.Util.Guard;
using Json = Acme.Serialization.JsonCodec;
using Shapes = Acme.Geometry;

namespace Acme.App;

public sealed class OrderService
{
    private readonly Repository _repository = new();

    public OrderService()
    {
        Console.WriteLine("ready");
    }

    public int Count
    {
        get { return _repository.Count; }
    }

    public Order Find(int id)
    {
        NotNull(id);
        return _repository.Get(id);
    }

    public int Twice(int x) => x * 2;
}
"""

FILES = {
    "src/App/OrderService.cs": SOURCE.decode(),
    "src/App/Repository.cs": "namespace Acme.App\n{\n    public class Repository { }\n}\n",
    "src/Models/Order.cs": "namespace Acme.Models;\npublic record Order(int Id);\n",
    "src/Models/Customer.cs": "namespace Acme.Models\n{\n    public class Customer { }\n}\n",
    "src/Models/Internal/Audit.cs": "namespace Acme.Models.Internal;\nclass Audit { }\n",
    "src/Util/Guard.cs": "namespace Acme.Util;\npublic static partial class Guard { }\n",
    "src/Util/Guard.Checks.cs": "namespace Acme.Util;\npublic static partial class Guard { }\n",
    "src/Util/Other.cs": "namespace Acme.Util;\npublic class Other { }\n",
    "src/Serialization/Codecs.cs": "namespace Acme\n{\n    namespace Serialization\n    {\n"
    "        public class JsonCodec { }\n    }\n    public struct Version { }\n}\n",
    "src/Geometry/Point.cs": "namespace Acme.Geometry { public struct Point { } }\n",
    "src/Shared/Globals.cs": "public enum Level { Low }\n",
}


def _index() -> RepoIndex:
    return RepoIndex(FILES, FILES.get)


def test_extract_every_using_form_and_the_namespace() -> None:
    refs = SPEC.extract(SOURCE)
    assert refs[:6] == [
        ImportRef("System.Linq", (), "using"),
        ImportRef("System", (), "using"),
        ImportRef("Acme.Models", (), "using"),
        ImportRef("Acme.Util.Guard", (), "using_static"),
        ImportRef("Acme.Serialization.JsonCodec", (), "using_alias"),
        ImportRef("Acme.Geometry", (), "using_alias"),
    ]
    namespace = refs[6]
    assert namespace.kind == "namespace" and namespace.module == "Acme.App"
    assert "Repository" in namespace.names and len(refs) == 7


def test_usings_inside_nested_namespace_blocks_carry_their_scope() -> None:
    source = b"namespace Outer { namespace Inner { using Models; class A { } } }\n"
    refs = SPEC.extract(source)
    assert refs[0] == ImportRef("Models", ("Outer.Inner",), "using")
    assert [r.module for r in refs[1:]] == ["Outer.Inner"]


def test_using_namespace_takes_every_file_of_it_but_not_sub_namespaces() -> None:
    found = SPEC.resolve(
        ImportRef("Acme.Models", kind="using"), "src/App/OrderService.cs", _index()
    )
    assert found == ["src/Models/Customer.cs", "src/Models/Order.cs"]


def test_using_static_takes_the_files_declaring_the_type() -> None:
    found = SPEC.resolve(ImportRef("Acme.Util.Guard", kind="using_static"), None, _index())
    assert found == ["src/Util/Guard.Checks.cs", "src/Util/Guard.cs"]


def test_aliases_to_types_and_namespaces() -> None:
    index = _index()
    codec = ImportRef("Acme.Serialization.JsonCodec", kind="using_alias")
    assert SPEC.resolve(codec, None, index) == ["src/Serialization/Codecs.cs"]
    shapes = ImportRef("Acme.Geometry", kind="using_alias")
    assert SPEC.resolve(shapes, None, index) == ["src/Geometry/Point.cs"]


def test_using_relative_to_the_enclosing_namespace() -> None:
    ref = ImportRef("Models", ("Acme.App",), "using")
    assert SPEC.resolve(ref, "src/App/X.cs", _index()) == [
        "src/Models/Customer.cs",
        "src/Models/Order.cs",
    ]


def test_same_and_enclosing_namespace_types_need_no_using() -> None:
    index = _index()
    names = ("Console", "Level", "Repository", "Version")
    ref = ImportRef("Acme.App", names, "namespace")
    assert SPEC.resolve(ref, "src/App/OrderService.cs", index) == [
        "src/App/Repository.cs",
        "src/Serialization/Codecs.cs",
        "src/Shared/Globals.cs",
    ]
    assert SPEC.resolve(ref, None, index) == []


def test_framework_namespaces_resolve_to_nothing() -> None:
    index = _index()
    assert SPEC.resolve(ImportRef("System", kind="using"), None, index) == []
    assert SPEC.resolve(ImportRef("System.Math", kind="using_static"), None, index) == []


def test_reduce_elides_methods_constructors_and_accessors() -> None:
    reduced = SPEC.reduce(SOURCE)
    assert "public Order Find(int id)\n    { ... }" in reduced
    assert "public OrderService()\n    { ... }" in reduced
    assert "get { return _repository.Count; }" in reduced  # one line: kept
    assert "NotNull(id);" not in reduced
    assert "public int Twice(int x) => x * 2;" in reduced
    assert "private readonly Repository _repository = new();" in reduced
