defmodule TinkexConformance.MixProject do
  # The conformance adapter for Tinkex (conformance/PROTOCOL.md). Built by ./build, which
  # unpacks Tinkex and its dependencies into a cache and sets TINKEX_ADAPTER_HOME to it; all
  # build output (_build, the lock file) goes there, never into the repository.
  use Mix.Project

  defp home do
    System.get_env("TINKEX_ADAPTER_HOME") ||
      Mix.raise("TINKEX_ADAPTER_HOME is not set: build this adapter with ./build")
  end

  def project do
    [
      app: :tinkex_conformance,
      version: "0.1.0",
      elixir: "~> 1.18",
      build_path: Path.join(home(), "_build"),
      deps_path: Path.join(home(), "deps"),
      lockfile: Path.join(home(), "mix.lock"),
      start_permanent: false,
      deps: [{:tinkex, path: Path.join(home(), "src/tinkex")}]
    ]
  end

  def application, do: [extra_applications: [:logger]]
end
