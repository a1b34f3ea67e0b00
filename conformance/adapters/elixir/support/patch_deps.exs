# Rewrites a vendored package's mix.exs (in the build cache, never in the repository) so that its
# dependencies are the sibling folders of the cache's src/ tree instead of Hex packages:
#
#     elixir patch_deps.exs SRC/finch/mix.exs mint nimble_pool nimble_options telemetry mime
#
# replaces the `deps: deps()` entry of `project/0` with
# `deps: [{:mint, path: "../mint"}, ...]`. Dev/test-only and optional dependencies (ex_doc,
# credo, exla, decimal, ...) are simply not listed. Mix would otherwise insist on Hex for every
# dependency declared with a version requirement, even one the top level overrides with a path.
[mix_exs | deps] = System.argv()

source = File.read!(mix_exs)
needle = "deps: deps()"

case :binary.matches(source, needle) do
  [_] ->
    :ok

  matches ->
    IO.puts(:stderr, "#{mix_exs}: expected one `#{needle}`, found #{length(matches)}")
    System.halt(1)
end

list = Enum.map_join(deps, ", ", fn dep -> ~s({:#{dep}, path: "../#{dep}"}) end)
# `++ Enum.take(deps(), 0)` keeps the original deps/0 in use (no "unused function" warning).
replacement = "deps: [#{list}] ++ Enum.take(deps(), 0)"
File.write!(mix_exs, String.replace(source, needle, replacement))
