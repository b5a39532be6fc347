"""Swift: imports resolved to SwiftPM targets; same-module types found by name."""

from __future__ import annotations

from repoctx.languages.base import ImportRef, RepoIndex
from repoctx.languages.swift import SPEC

SOURCE = b"""\
import Foundation
@testable import Core
import struct Networking.Request
@_exported import Models

final class AppController {
    let store: Store

    init(store: Store) {
        self.store = store
    }

    func load() -> Int {
        return store.count
    }

    var isEmpty: Bool {
        return store.count == 0
    }
}
"""

MANIFEST = """\
// swift-tools-version:5.9
import PackageDescription

let package = Package(
    name: "Acme",
    targets: [
        .target(name: "Core", dependencies: []),
        .target(
            name: "Networking",
            dependencies: ["Core"],
            path: "Modules/Net"
        ),
        .executableTarget(name: "App", dependencies: ["Core", "Networking"]),
        .testTarget(name: "CoreTests", dependencies: ["Core"]),
    ]
)
"""

FILES = {
    "Package.swift": MANIFEST,
    "Sources/App/AppController.swift": SOURCE.decode(),
    "Sources/App/Store.swift": "final class Store {\n    var count = 0\n}\n",
    "Sources/App/Unrelated.swift": "struct Unrelated {}\n",
    "Sources/Core/Core.swift": "public struct Core {}\n",
    "Sources/Core/Sub/Cache.swift": "public actor Cache {}\n",
    "Modules/Net/Request.swift": "public struct Request {}\n",
    "Tests/CoreTests/CoreTests.swift": "@testable import Core\n",
    "Packages/Models/Sources/Models/User.swift": "public struct User {}\n",
}


def _index() -> RepoIndex:
    return RepoIndex(FILES, FILES.get)


def test_extract_every_import_form() -> None:
    refs = SPEC.extract(SOURCE)
    assert refs[:4] == [
        ImportRef("Foundation", (), "import"),
        ImportRef("Core", (), "import"),
        ImportRef("Networking", ("Request",), "import"),
        ImportRef("Models", (), "import"),
    ]
    assert refs[4].kind == "module" and "Store" in refs[4].names


def test_import_resolves_to_every_file_of_the_target() -> None:
    index = _index()
    importer = "Sources/App/AppController.swift"
    core = SPEC.resolve(ImportRef("Core"), importer, index)
    assert core == ["Sources/Core/Core.swift", "Sources/Core/Sub/Cache.swift"]
    assert SPEC.resolve(ImportRef("Core"), "Tests/CoreTests/CoreTests.swift", index) == core


def test_target_with_an_explicit_path_and_declaration_imports() -> None:
    ref = ImportRef("Networking", ("Request",))
    assert SPEC.resolve(ref, None, _index()) == ["Modules/Net/Request.swift"]


def test_sources_folder_of_a_nested_package_without_reading_its_manifest() -> None:
    found = SPEC.resolve(ImportRef("Models"), None, _index())
    assert found == ["Packages/Models/Sources/Models/User.swift"]


def test_system_modules_resolve_to_nothing() -> None:
    index = _index()
    for module in ("Foundation", "UIKit", "XCTest"):
        assert SPEC.resolve(ImportRef(module), "Sources/App/AppController.swift", index) == []


def test_same_module_types_used_by_name() -> None:
    index = _index()
    ref = SPEC.extract(SOURCE)[4]
    importer = "Sources/App/AppController.swift"
    assert SPEC.resolve(ref, importer, index) == ["Sources/App/Store.swift"]
    assert SPEC.resolve(ref, None, index) == []


def test_reduce_elides_function_initializer_and_computed_property_bodies() -> None:
    reduced = SPEC.reduce(SOURCE)
    assert "init(store: Store) { ... }" in reduced
    assert "func load() -> Int { ... }" in reduced
    assert "var isEmpty: Bool { ... }" in reduced
    assert "store.count == 0" not in reduced
    assert "let store: Store" in reduced
