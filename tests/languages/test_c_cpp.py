"""C and C++: include extraction (also under #if and extern "C") and header lookup."""

from __future__ import annotations

from repoctx.languages.base import ImportRef, RepoIndex
from repoctx.languages.c import SPEC as C
from repoctx.languages.cpp import SPEC as CPP

C_SOURCE = b"""\
#include "parser.h"
#include "../common/log.h"
#include <stdio.h>
#include <mylib/api.h>

#ifndef NO_EXTRAS
#  ifdef __linux__
#    include "platform/linux.h"
#  endif
#endif

static int parse(const char *text) {
    return log_line(text);
}
"""

CPP_SOURCE = b"""\
#pragma once
#include "widget.hpp"
#include <vector>

extern "C" {
#include "clib.h"
}

namespace ui {

class Button : public Widget {
public:
    void click() {
        pressed_ = true;
    }
    int size() const;
private:
    bool pressed_ = false;
};

int Button::size() const {
    return 1;
}

template <typename T>
T twice(T value) {
    return value * 2;
}

}  // namespace ui
"""

FILES = {
    "src/parser/parser.c": C_SOURCE.decode(),
    "src/parser/parser.h": "",
    "src/common/log.h": "",
    "src/config.h": "",
    "include/mylib/api.h": "",
    "lib/platform/linux.h": "",
    "third_party/zlib/zlib.h": "",
    "ui/button.cpp": CPP_SOURCE.decode(),
    "ui/widget.hpp": "",
    "core/clib.h": "",
    "core/deep/nested/util.c": "",
}


def _index() -> RepoIndex:
    return RepoIndex(FILES, FILES.get)


def test_extract_quoted_and_angle_includes_at_any_preprocessor_depth() -> None:
    assert C.extract(C_SOURCE) == [
        ImportRef("parser.h", (), "include_local"),
        ImportRef("../common/log.h", (), "include_local"),
        ImportRef("stdio.h", (), "include_system"),
        ImportRef("mylib/api.h", (), "include_system"),
        ImportRef("platform/linux.h", (), "include_local"),
    ]
    assert CPP.extract(CPP_SOURCE) == [
        ImportRef("widget.hpp", (), "include_local"),
        ImportRef("vector", (), "include_system"),
        ImportRef("clib.h", (), "include_local"),
    ]


def test_quoted_include_next_to_the_file_then_relative_paths() -> None:
    index = _index()
    importer = "src/parser/parser.c"
    assert C.resolve(ImportRef("parser.h", kind="include_local"), importer, index) == [
        "src/parser/parser.h"
    ]
    log = ImportRef("../common/log.h", kind="include_local")
    assert C.resolve(log, importer, index) == ["src/common/log.h"]


def test_quoted_include_from_a_subdirectory_searches_ancestors() -> None:
    ref = ImportRef("config.h", kind="include_local")
    assert C.resolve(ref, "src/parser/parser.c", _index()) == ["src/config.h"]


def test_quoted_include_through_an_include_folder_up_the_tree() -> None:
    ref = ImportRef("mylib/api.h", kind="include_local")
    assert C.resolve(ref, "src/parser/parser.c", _index()) == ["include/mylib/api.h"]


def test_cpp_header_parsed_as_c_still_yields_its_includes() -> None:
    header = b'#pragma once\n#include "base.hpp"\nclass Node : public Base {\n  int x;\n};\n'
    assert C.extract(header) == [ImportRef("base.hpp", (), "include_local")]


def test_quoted_include_through_a_matching_folder_suffix() -> None:
    ref = ImportRef("platform/linux.h", kind="include_local")
    assert C.resolve(ref, "src/parser/parser.c", _index()) == ["lib/platform/linux.h"]


def test_nearest_header_wins_when_names_repeat() -> None:
    files = {"a/x/util.h": "", "b/util.h": "", "a/x/y/main.c": "", "a/z/util.h": ""}
    index = RepoIndex(files, files.get)
    ref = ImportRef("util.h", kind="include_local")
    assert C.resolve(ref, "a/x/y/main.c", index) == ["a/x/util.h"]
    assert C.resolve(ref, "a/q/main.c", index) == ["a/x/util.h"]  # shares "a/", then shallow


def test_angle_includes_resolve_only_under_include_folders() -> None:
    index = _index()
    importer = "src/parser/parser.c"
    api = ImportRef("mylib/api.h", kind="include_system")
    assert C.resolve(api, importer, index) == ["include/mylib/api.h"]
    assert C.resolve(ImportRef("stdio.h", kind="include_system"), importer, index) == []
    assert C.resolve(ImportRef("zlib.h", kind="include_system"), importer, index) == []
    assert C.resolve(ImportRef("config.h", kind="include_system"), importer, index) == []


def test_c_and_cpp_headers_resolve_to_each_other() -> None:
    index = _index()
    widget = ImportRef("widget.hpp", kind="include_local")
    assert CPP.resolve(widget, "ui/button.cpp", index) == ["ui/widget.hpp"]
    clib = ImportRef("clib.h", kind="include_local")
    assert CPP.resolve(clib, "ui/button.cpp", index) == ["core/clib.h"]
    assert C.resolve(widget, "core/deep/nested/util.c", index) == ["ui/widget.hpp"]


def test_without_importer_relative_includes_resolve_to_nothing() -> None:
    index = _index()
    assert C.resolve(ImportRef("../common/log.h", kind="include_local"), None, index) == []
    assert C.resolve(ImportRef("parser.h", kind="include_local"), None, index) == []
    local_api = ImportRef("mylib/api.h", kind="include_local")
    assert C.resolve(local_api, None, index) == ["include/mylib/api.h"]
    api = ImportRef("mylib/api.h", kind="include_system")
    assert C.resolve(api, None, index) == ["include/mylib/api.h"]


def test_reduce_elides_function_bodies() -> None:
    reduced = C.reduce(C_SOURCE)
    assert "static int parse(const char *text) { ... }" in reduced
    assert "log_line" not in reduced
    cpp = CPP.reduce(CPP_SOURCE)
    assert "void click() { ... }" in cpp
    assert "int Button::size() const { ... }" in cpp
    assert "T twice(T value) { ... }" in cpp
    assert "int size() const;" in cpp and "bool pressed_ = false;" in cpp
    assert "pressed_ = true;" not in cpp
