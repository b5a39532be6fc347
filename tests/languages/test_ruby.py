"""Ruby: require, require_relative, load, autoload and the File.expand_path idioms."""

from __future__ import annotations

from repoctx.languages.base import ImportRef, RepoIndex
from repoctx.languages.ruby import SPEC

SOURCE = b"""\
require "json"
require "acme/version"
require_relative "support/helpers"
require_relative "../config/settings.rb"
require File.expand_path("../boot", __FILE__)
require File.join(__dir__, "tasks", "db")
require "optional" if ENV["FULL"]
require "#{root}/dynamic"
load "tasks/release.rake"
Bundler.require(:default)

module Acme
  autoload :Client, "acme/client"

  class Runner
    def run(args)
      parsed = parse(args)
      parsed.size
    end

    def self.call; end

    def label = "runner"
  end
end
"""

FILES = {
    "lib/acme.rb": SOURCE.decode(),
    "lib/acme/version.rb": "",
    "lib/acme/client.rb": "",
    "lib/support/helpers.rb": "",
    "config/settings.rb": "",
    "lib/boot.rb": "",
    "lib/tasks/db.rb": "",
    "tasks/release.rake": "",
    "gems/json/lib/json.rb": "",
    "spec/spec_helper.rb": "",
    "spec/acme_spec.rb": "",
}


def _index() -> RepoIndex:
    return RepoIndex(FILES, FILES.get)


def test_extract_every_form() -> None:
    assert SPEC.extract(SOURCE) == [
        ImportRef("json", (), "require"),
        ImportRef("acme/version", (), "require"),
        ImportRef("support/helpers", (), "require_relative"),
        ImportRef("../config/settings.rb", (), "require_relative"),
        ImportRef("boot", (), "require_relative"),
        ImportRef("tasks/db", (), "require_relative"),
        ImportRef("optional", (), "require"),
        ImportRef("tasks/release.rake", (), "load"),
        ImportRef("acme/client", (), "autoload"),
    ]


def test_require_relative_is_relative_to_the_file_and_needs_an_importer() -> None:
    index = _index()
    helpers = ImportRef("support/helpers", kind="require_relative")
    assert SPEC.resolve(helpers, "lib/acme.rb", index) == ["lib/support/helpers.rb"]
    settings = ImportRef("../config/settings.rb", kind="require_relative")
    assert SPEC.resolve(settings, "lib/acme.rb", index) == ["config/settings.rb"]
    assert SPEC.resolve(helpers, None, index) == []


def test_require_searches_lib_folders_and_spec() -> None:
    index = _index()
    version = ImportRef("acme/version", kind="require")
    assert SPEC.resolve(version, "lib/acme.rb", index) == ["lib/acme/version.rb"]
    assert SPEC.resolve(version, None, index) == ["lib/acme/version.rb"]
    helper = ImportRef("spec_helper", kind="require")
    assert SPEC.resolve(helper, "spec/acme_spec.rb", index) == ["spec/spec_helper.rb"]
    client = ImportRef("acme/client", kind="autoload")
    assert SPEC.resolve(client, "lib/acme.rb", index) == ["lib/acme/client.rb"]


def test_require_finds_a_vendored_gem_lib_but_never_arbitrary_folders() -> None:
    index = _index()
    assert SPEC.resolve(ImportRef("json", kind="require"), None, index) == ["gems/json/lib/json.rb"]
    assert SPEC.resolve(ImportRef("release", kind="require"), None, index) == []
    assert SPEC.resolve(ImportRef("settings", kind="require"), None, index) == []


def test_gems_and_stdlib_resolve_to_nothing() -> None:
    index = _index()
    for name in ("rails", "set", "net/http"):
        assert SPEC.resolve(ImportRef(name, kind="require"), "lib/acme.rb", index) == []


def test_load_takes_a_path_from_the_root() -> None:
    ref = ImportRef("tasks/release.rake", kind="load")
    assert SPEC.resolve(ref, "Rakefile", _index()) == ["tasks/release.rake"]


def test_reduce_elides_def_bodies_with_a_ruby_placeholder() -> None:
    reduced = SPEC.reduce(SOURCE)
    assert "    def run(args)\n      # ...\n    end" in reduced
    assert "parse(args)" not in reduced
    assert "def self.call; end" in reduced
    assert 'def label = "runner"' in reduced
    assert 'autoload :Client, "acme/client"' in reduced
