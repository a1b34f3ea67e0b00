"""Root conftest: only loads the plugin that adds the `--tinker-*` options (they must be
registered before the command line is parsed, which a plugin named here guarantees)."""

pytest_plugins = ["tinker_ref.testing.pytest_plugin"]
