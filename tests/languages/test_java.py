"""Java: package and import extraction, resolution over Maven layouts and declared packages."""

from __future__ import annotations

from repoctx.languages.base import ImportRef, RepoIndex
from repoctx.languages.java import SPEC

SOURCE = b"""\
package com.acme.app;

import com.acme.util.Strings;
import com.acme.model.*;
import static com.acme.util.Numbers.parse;
import static com.acme.util.Numbers.*;
import com.acme.model.Order.Line;
import java.util.List;

public class Main {
    private final Strings strings = new Strings();

    public Main() {
        this.strings.init();
    }

    public List<Line> run(Helper helper) {
        return helper.lines();
    }
}
"""


def _index(files: dict[str, str]) -> RepoIndex:
    return RepoIndex(files, files.get)


def _resolve(index: RepoIndex, ref: ImportRef, importer: str | None) -> list[str]:
    return SPEC.resolve(ref, importer, index)


MAVEN = {
    "app/src/main/java/com/acme/app/Main.java": SOURCE.decode(),
    "app/src/main/java/com/acme/app/Helper.java": "package com.acme.app;\nclass Helper {}\n",
    "app/src/main/java/com/acme/app/Unused.java": "package com.acme.app;\nclass Unused {}\n",
    "util/src/main/java/com/acme/util/Strings.java": "package com.acme.util;\n",
    "util/src/main/java/com/acme/util/Numbers.java": "package com.acme.util;\n",
    "model/src/main/java/com/acme/model/Order.java": "package com.acme.model;\n",
    "model/src/main/java/com/acme/model/Customer.java": "package com.acme.model;\n",
    "model/src/test/java/com/acme/model/OrderTest.java": "package com.acme.model;\n",
    "legacy/Odd.java": "// moved\npackage com.acme.odd;\npublic class Odd {}\n",
}


def test_extract_every_import_form() -> None:
    refs = SPEC.extract(SOURCE)
    imports = [r for r in refs if r.kind != "package"]
    assert imports == [
        ImportRef("com.acme.util.Strings", (), "import"),
        ImportRef("com.acme.model", (), "wildcard"),
        ImportRef("com.acme.util.Numbers.parse", (), "static"),
        ImportRef("com.acme.util.Numbers", (), "wildcard"),
        ImportRef("com.acme.model.Order.Line", (), "import"),
        ImportRef("java.util.List", (), "import"),
    ]
    package = refs[0]
    assert package.kind == "package" and package.module == "com.acme.app"
    assert {"Helper", "Strings", "Main"} <= set(package.names)


def test_single_type_import_follows_the_maven_layout() -> None:
    index = _index(MAVEN)
    ref = ImportRef("com.acme.util.Strings")
    assert _resolve(index, ref, None) == ["util/src/main/java/com/acme/util/Strings.java"]


def test_wildcard_import_takes_every_file_of_the_package() -> None:
    index = _index(MAVEN)
    assert _resolve(index, ImportRef("com.acme.model", kind="wildcard"), "x/Y.java") == [
        "model/src/main/java/com/acme/model/Customer.java",
        "model/src/main/java/com/acme/model/Order.java",
        "model/src/test/java/com/acme/model/OrderTest.java",
    ]


def test_static_and_nested_imports_resolve_to_the_outer_class() -> None:
    index = _index(MAVEN)
    numbers = ["util/src/main/java/com/acme/util/Numbers.java"]
    assert _resolve(index, ImportRef("com.acme.util.Numbers.parse", kind="static"), None) == numbers
    assert _resolve(index, ImportRef("com.acme.util.Numbers", kind="wildcard"), None) == numbers
    order = ["model/src/main/java/com/acme/model/Order.java"]
    assert _resolve(index, ImportRef("com.acme.model.Order.Line"), None) == order


def test_file_outside_the_layout_is_found_by_its_declared_package() -> None:
    index = _index(MAVEN)
    assert _resolve(index, ImportRef("com.acme.odd.Odd"), None) == ["legacy/Odd.java"]
    wildcard = ImportRef("com.acme.odd", kind="wildcard")
    assert _resolve(index, wildcard, None) == ["legacy/Odd.java"]


def test_jdk_and_third_party_imports_resolve_to_nothing() -> None:
    index = _index(MAVEN)
    assert _resolve(index, ImportRef("java.util.List"), None) == []
    assert _resolve(index, ImportRef("org.junit", kind="wildcard"), None) == []
    assert _resolve(index, ImportRef("org.junit.Assert.assertEquals", kind="static"), None) == []


def test_same_package_types_used_by_name_need_no_import() -> None:
    index = _index(MAVEN)
    main = "app/src/main/java/com/acme/app/Main.java"
    package = SPEC.extract(SOURCE)[0]
    assert _resolve(index, package, main) == ["app/src/main/java/com/acme/app/Helper.java"]
    assert _resolve(index, package, None) == []


def test_maven_files_are_not_read_to_resolve_layout_imports() -> None:
    read: list[str] = []

    def read_text(path: str) -> str | None:
        read.append(path)
        return MAVEN.get(path)

    index = RepoIndex(MAVEN, read_text)
    assert SPEC.resolve(ImportRef("com.acme.util.Strings"), None, index)
    assert SPEC.resolve(ImportRef("com.acme.model", kind="wildcard"), None, index)
    assert read == ["legacy/Odd.java"]


def test_reduce_elides_method_and_constructor_bodies() -> None:
    reduced = SPEC.reduce(SOURCE)
    assert "public Main() { ... }" in reduced
    assert "public List<Line> run(Helper helper) { ... }" in reduced
    assert "this.strings.init()" not in reduced
    assert "private final Strings strings = new Strings();" in reduced
    assert "import static com.acme.util.Numbers.parse;" in reduced
