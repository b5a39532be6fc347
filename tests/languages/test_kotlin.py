"""Kotlin: imports with aliases, wildcards and top-level functions; files holding several
declarations; packages that do not follow folders."""

from __future__ import annotations

from repoctx.languages.base import ImportRef, RepoIndex
from repoctx.languages.kotlin import SPEC

SOURCE = b"""\
@file:JvmName("MainKt")
package com.acme.app

import com.acme.model.Order as PurchaseOrder
import com.acme.util.slugify
import com.acme.model.*
import com.acme.util.Formats.Companion.DEFAULT
import kotlinx.coroutines.launch

class Main(private val repo: Repository) {
    constructor() : this(Repository()) {
        println("secondary")
    }

    init {
        println("init")
    }

    fun run(order: PurchaseOrder): String {
        return slugify(order.name)
    }

    fun twice(x: Int) =
        x * 2
}

fun main() {
    Main().run(PurchaseOrder("x"))
}
"""

FILES = {
    "app/src/main/kotlin/com/acme/app/Main.kt": SOURCE.decode(),
    "app/src/main/kotlin/com/acme/app/Repository.kt": "package com.acme.app\nclass Repository\n",
    "model/src/main/kotlin/com/acme/model/Order.kt": "package com.acme.model\n"
    "data class Order(val name: String)\n",
    "model/src/main/kotlin/com/acme/model/Models.kt": "package com.acme.model\n"
    "data class Customer(val id: Int)\nsealed interface Event\n",
    # Kotlin style: the common package prefix is not spelled out in folders.
    "util/src/main/kotlin/Text.kt": "package com.acme.util\n\n"
    "private const val DASH = '-'\n\n"
    "fun slugify(text: String): String = text.lowercase()\n\n"
    "internal inline fun <T> List<T>.second(): T = this[1]\n",
    "util/src/main/kotlin/Formats.kt": "package com.acme.util\n\n"
    "class Formats {\n    companion object { val DEFAULT = 1 }\n}\n",
}


def _index() -> RepoIndex:
    return RepoIndex(FILES, FILES.get)


def test_extract_every_import_form() -> None:
    refs = SPEC.extract(SOURCE)
    assert refs[0].kind == "package" and refs[0].module == "com.acme.app"
    assert "Repository" in refs[0].names
    assert refs[1:] == [
        ImportRef("com.acme.model.Order", (), "import"),
        ImportRef("com.acme.util.slugify", (), "import"),
        ImportRef("com.acme.model", (), "wildcard"),
        ImportRef("com.acme.util.Formats.Companion.DEFAULT", (), "import"),
        ImportRef("kotlinx.coroutines.launch", (), "import"),
    ]


def test_aliased_class_import_resolves_by_layout() -> None:
    found = SPEC.resolve(ImportRef("com.acme.model.Order"), None, _index())
    assert found == ["model/src/main/kotlin/com/acme/model/Order.kt"]


def test_class_declared_in_a_file_of_another_name() -> None:
    index = _index()
    models = ["model/src/main/kotlin/com/acme/model/Models.kt"]
    assert SPEC.resolve(ImportRef("com.acme.model.Customer"), None, index) == models
    assert SPEC.resolve(ImportRef("com.acme.model.Event"), None, index) == models


def test_top_level_functions_resolve_to_the_declaring_files() -> None:
    index = _index()
    text = ["util/src/main/kotlin/Text.kt"]
    assert SPEC.resolve(ImportRef("com.acme.util.slugify"), None, index) == text
    assert SPEC.resolve(ImportRef("com.acme.util.second"), None, index) == text


def test_companion_member_resolves_to_the_class_file() -> None:
    ref = ImportRef("com.acme.util.Formats.Companion.DEFAULT")
    assert SPEC.resolve(ref, None, _index()) == ["util/src/main/kotlin/Formats.kt"]


def test_wildcard_takes_the_whole_package() -> None:
    found = SPEC.resolve(ImportRef("com.acme.model", kind="wildcard"), None, _index())
    assert found == [
        "model/src/main/kotlin/com/acme/model/Models.kt",
        "model/src/main/kotlin/com/acme/model/Order.kt",
    ]


def test_library_imports_resolve_to_nothing() -> None:
    index = _index()
    assert SPEC.resolve(ImportRef("kotlinx.coroutines.launch"), None, index) == []
    assert SPEC.resolve(ImportRef("kotlin.collections", kind="wildcard"), None, index) == []


def test_same_package_class_by_name() -> None:
    main = "app/src/main/kotlin/com/acme/app/Main.kt"
    package = SPEC.extract(SOURCE)[0]
    assert SPEC.resolve(package, main, _index()) == [
        "app/src/main/kotlin/com/acme/app/Repository.kt"
    ]
    assert SPEC.resolve(package, None, _index()) == []


def test_reduce_elides_function_constructor_and_init_bodies() -> None:
    reduced = SPEC.reduce(SOURCE)
    assert "fun run(order: PurchaseOrder): String { ... }" in reduced
    assert "constructor() : this(Repository()) { ... }" in reduced
    assert "init { ... }" in reduced
    assert "fun main() { ... }" in reduced
    assert "slugify(order.name)" not in reduced and 'println("init")' not in reduced
    assert "import com.acme.model.Order as PurchaseOrder" in reduced
