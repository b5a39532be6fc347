"""PHP: use forms resolved through composer PSR-4 maps, and require/include paths."""

from __future__ import annotations

import json

from repoctx.languages.base import ImportRef, RepoIndex
from repoctx.languages.php import SPEC

SOURCE = b"""\
<?php
declare(strict_types=1);

namespace App\\Http;

use App\\Models\\User;
use App\\Models\\{Order, Invoice as Bill, Billing\\Plan};
use function App\\Support\\format_money;
use const App\\Support\\CURRENCY;
use Tests\\Fixtures\\Factory, Psr\\Log\\LoggerInterface;
use Symfony\\Component\\HttpFoundation\\Request;

require_once __DIR__ . '/../bootstrap.php';
require 'helpers.php';
include dirname(__DIR__) . "/legacy/init.php";
$config = require 'config/app.php';

final class Controller
{
    public function show(Request $request): User
    {
        return User::find($request->get('id'));
    }
}

function render(array $data): string
{
    return json_encode($data);
}
"""

COMPOSER = {
    "autoload": {
        "psr-4": {"App\\": "src/", "App\\Models\\": ["src/Domain/Models/", "src/Models/"]},
        "files": ["src/Support/functions.php"],
    },
    "autoload-dev": {"psr-4": {"Tests\\": "tests/"}},
}
PACKAGE_COMPOSER = {"autoload": {"psr-4": {"Acme\\Pkg\\": "lib"}}}

FILES = {
    "composer.json": json.dumps(COMPOSER),
    "src/Http/Controller.php": SOURCE.decode(),
    "src/Http/Middleware.php": "<?php\nnamespace App\\Http;\nclass Middleware {}\n",
    "src/Models/User.php": "<?php\nnamespace App\\Models;\nclass User {}\n",
    "src/Models/Order.php": "",
    "src/Domain/Models/Invoice.php": "",
    "src/Models/Invoice.php": "",
    "src/Models/Billing/Plan.php": "",
    "src/Support/functions.php": "<?php\nnamespace App\\Support;\n\n"
    "const CURRENCY = 'EUR';\n\nfunction format_money(int $cents): string { return ''; }\n",
    "tests/Fixtures/Factory.php": "",
    "src/bootstrap.php": "",
    "src/Http/helpers.php": "",
    "src/legacy/init.php": "",
    "config/app.php": "",
    "packages/pkg/composer.json": json.dumps(PACKAGE_COMPOSER),
    "packages/pkg/lib/Client.php": "",
    "plugins/Acme/Widgets/Slider.php": "",
}


def _index() -> RepoIndex:
    return RepoIndex(FILES, FILES.get)


def test_extract_every_use_and_require_form() -> None:
    refs = SPEC.extract(SOURCE)
    assert refs[0].kind == "namespace" and refs[0].module == "App\\Http"
    assert "Middleware" not in refs[0].names and "User" in refs[0].names
    assert refs[1:] == [
        ImportRef("App\\Models\\User", (), "use"),
        ImportRef("App\\Models\\Order", (), "use"),
        ImportRef("App\\Models\\Invoice", (), "use"),
        ImportRef("App\\Models\\Billing\\Plan", (), "use"),
        ImportRef("App\\Support\\format_money", (), "use_function"),
        ImportRef("App\\Support\\CURRENCY", (), "use_const"),
        ImportRef("Tests\\Fixtures\\Factory", (), "use"),
        ImportRef("Psr\\Log\\LoggerInterface", (), "use"),
        ImportRef("Symfony\\Component\\HttpFoundation\\Request", (), "use"),
        ImportRef("../bootstrap.php", (), "require_dir"),
        ImportRef("helpers.php", (), "require"),
        ImportRef("../legacy/init.php", (), "require_dir"),
        ImportRef("config/app.php", (), "require"),
    ]


def test_grouped_functions_and_constants_in_groups() -> None:
    refs = SPEC.extract(b"<?php\nuse App\\{function f, const K, Model};\nuse function A\\{g, h};\n")
    assert refs == [
        ImportRef("App\\f", (), "use_function"),
        ImportRef("App\\K", (), "use_const"),
        ImportRef("App\\Model", (), "use"),
        ImportRef("A\\g", (), "use_function"),
        ImportRef("A\\h", (), "use_function"),
    ]


def _use(name: str, importer: str | None = "src/Http/Controller.php") -> list[str]:
    return SPEC.resolve(ImportRef(name, kind="use"), importer, _index())


def test_psr4_longest_prefix_first_then_each_folder_in_order() -> None:
    assert _use("App\\Models\\Invoice") == ["src/Domain/Models/Invoice.php"]
    assert _use("App\\Models\\User") == ["src/Models/User.php"]
    assert _use("App\\Models\\Billing\\Plan") == ["src/Models/Billing/Plan.php"]
    assert _use("App\\Http\\Middleware", None) == ["src/Http/Middleware.php"]


def test_autoload_dev_and_nested_composer_files() -> None:
    assert _use("Tests\\Fixtures\\Factory") == ["tests/Fixtures/Factory.php"]
    assert _use("Acme\\Pkg\\Client") == ["packages/pkg/lib/Client.php"]


def test_without_a_composer_mapping_the_path_must_end_in_the_full_name() -> None:
    assert _use("Acme\\Widgets\\Slider") == ["plugins/Acme/Widgets/Slider.php"]
    assert _use("Widgets\\Other\\Slider") == []


def test_vendor_namespaces_resolve_to_nothing() -> None:
    assert _use("Symfony\\Component\\HttpFoundation\\Request") == []
    assert _use("Psr\\Log\\LoggerInterface") == []


def test_functions_and_constants_resolve_to_declaring_files() -> None:
    index = _index()
    function = ImportRef("App\\Support\\format_money", kind="use_function")
    assert SPEC.resolve(function, None, index) == ["src/Support/functions.php"]
    constant = ImportRef("App\\Support\\CURRENCY", kind="use_const")
    assert SPEC.resolve(constant, None, index) == ["src/Support/functions.php"]
    missing = ImportRef("App\\Support\\absent", kind="use_function")
    assert SPEC.resolve(missing, None, index) == []


def test_same_namespace_classes_need_no_use() -> None:
    ref = ImportRef("App\\Http", ("Middleware", "Request", "User"), "namespace")
    assert SPEC.resolve(ref, "src/Http/Controller.php", _index()) == ["src/Http/Middleware.php"]
    assert SPEC.resolve(ref, None, _index()) == []


def test_require_paths_relative_to_the_file_then_the_root() -> None:
    index = _index()
    importer = "src/Http/Controller.php"
    refs = [r for r in SPEC.extract(SOURCE) if r.kind.startswith("require")]
    found = [SPEC.resolve(r, importer, index) for r in refs]
    assert found == [
        ["src/bootstrap.php"],
        ["src/Http/helpers.php"],
        ["src/legacy/init.php"],
        ["config/app.php"],
    ]
    assert [SPEC.resolve(r, None, index) for r in refs] == [[], [], [], []]


def test_reduce_elides_function_and_method_bodies() -> None:
    reduced = SPEC.reduce(SOURCE)
    assert "public function show(Request $request): User\n    { ... }" in reduced
    assert "function render(array $data): string\n{ ... }" in reduced
    assert "User::find" not in reduced and "json_encode" not in reduced
    assert "use App\\Models\\{Order, Invoice as Bill, Billing\\Plan};" in reduced
