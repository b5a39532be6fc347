"""Scala: selectors, renames, hiding, wildcards (``_``, ``*``, ``given``), several imports per
clause, chained package clauses and relative imports."""

from __future__ import annotations

from repoctx.languages.base import ImportRef, RepoIndex
from repoctx.languages.scala import SPEC

SOURCE = b"""\
package com.acme
package app

import com.acme.model.{Order, Customer => Client, Secret => _}
import com.acme.util._
import com.acme.codec.*
import com.acme.codec.given
import com.acme.model.Order.Line, scala.util.Try
import com.acme.model.Invoice as Bill
import util.Strings
import scala.concurrent.{ExecutionContext, Future}

object Main {
  import Helpers._

  def run(order: Order): Int = {
    val total = order.lines.size
    total * 2
  }

  def name: String
}
"""

FILES = {
    "app/src/main/scala/com/acme/app/Main.scala": SOURCE.decode(),
    "app/src/main/scala/com/acme/app/Helpers.scala": "package com.acme.app\nobject Helpers\n",
    "model/src/main/scala/com/acme/model/Order.scala": "package com.acme.model\n"
    "case class Order(lines: List[Line])\n",
    "model/src/main/scala/com/acme/model/Customer.scala": "package com.acme.model\n"
    "case class Customer()\n",
    "model/src/main/scala/com/acme/model/Secret.scala": "package com.acme.model\n",
    "model/src/main/scala/com/acme/model/Invoice.scala": "package com.acme.model\n",
    "util/src/main/scala/Strings.scala": "package com.acme\npackage util\n\nobject Strings\n",
    "util/src/main/scala/Misc.scala": "package com.acme.util\n\ndef helper(x: Int): Int = x\n",
    "codec/src/main/scala/com/acme/codec/Codecs.scala": "package com.acme.codec\n"
    "given intCodec: Codec[Int] = ???\n",
}


def _index() -> RepoIndex:
    return RepoIndex(FILES, FILES.get)


def test_extract_every_import_form() -> None:
    refs = SPEC.extract(SOURCE)
    assert refs[0].kind == "package" and refs[0].module == "com.acme.app"
    assert refs[1:] == [
        ImportRef("com.acme.model", ("Order", "Customer"), "select"),
        ImportRef("com.acme.util", (), "wildcard"),
        ImportRef("com.acme.codec", (), "wildcard"),
        ImportRef("com.acme.codec", (), "wildcard"),
        ImportRef("com.acme.model.Order.Line", (), "import"),
        ImportRef("scala.util.Try", (), "import"),
        ImportRef("com.acme.model.Invoice", (), "import"),
        ImportRef("util.Strings", (), "import"),
        ImportRef("scala.concurrent", ("ExecutionContext", "Future"), "select"),
        ImportRef("Helpers", (), "wildcard"),
    ]


def test_selectors_resolve_each_selected_name_but_not_hidden_ones() -> None:
    found = SPEC.resolve(
        ImportRef("com.acme.model", ("Order", "Customer"), "select"), None, _index()
    )
    assert found == [
        "model/src/main/scala/com/acme/model/Customer.scala",
        "model/src/main/scala/com/acme/model/Order.scala",
    ]


def test_wildcards_take_the_declared_package() -> None:
    index = _index()
    util = SPEC.resolve(ImportRef("com.acme.util", kind="wildcard"), None, index)
    assert util == ["util/src/main/scala/Misc.scala", "util/src/main/scala/Strings.scala"]
    codec = SPEC.resolve(ImportRef("com.acme.codec", kind="wildcard"), None, index)
    assert codec == ["codec/src/main/scala/com/acme/codec/Codecs.scala"]


def test_nested_member_and_renamed_imports() -> None:
    index = _index()
    line = SPEC.resolve(ImportRef("com.acme.model.Order.Line"), None, index)
    assert line == ["model/src/main/scala/com/acme/model/Order.scala"]
    bill = SPEC.resolve(ImportRef("com.acme.model.Invoice"), None, index)
    assert bill == ["model/src/main/scala/com/acme/model/Invoice.scala"]


def test_relative_imports_resolve_inside_enclosing_packages_only_with_an_importer() -> None:
    index = _index()
    main = "app/src/main/scala/com/acme/app/Main.scala"
    ref = ImportRef("util.Strings")
    assert SPEC.resolve(ref, main, index) == ["util/src/main/scala/Strings.scala"]
    assert SPEC.resolve(ref, None, index) == []
    helpers = SPEC.resolve(ImportRef("Helpers", kind="wildcard"), main, index)
    assert helpers == ["app/src/main/scala/com/acme/app/Helpers.scala"]


def test_standard_library_imports_resolve_to_nothing() -> None:
    index = _index()
    main = "app/src/main/scala/com/acme/app/Main.scala"
    ref = ImportRef("scala.concurrent", ("ExecutionContext", "Future"), "select")
    assert SPEC.resolve(ref, main, index) == []
    assert SPEC.resolve(ImportRef("scala.util.Try"), main, index) == []


def test_reduce_elides_def_bodies() -> None:
    reduced = SPEC.reduce(SOURCE)
    assert "def run(order: Order): Int = { ... }" in reduced
    assert "order.lines.size" not in reduced
    assert "def name: String" in reduced
    assert "import com.acme.model.{Order, Customer => Client, Secret => _}" in reduced
