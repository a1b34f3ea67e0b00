defmodule TinkexConformance do
  @moduledoc """
  Conformance adapter for Tinkex (the Elixir Tinker SDK): speaks conformance/PROTOCOL.md on
  stdin/stdout and runs each case through Tinkex's real API.

  * One `Tinkex.ServiceClient` (one session) per case, with `X-Conformance-Case: <case name>` on
    every request (`Tinkex.Config` `default_headers`).
  * Cases run concurrently, one process each (`max_parallel`, default 4); results go out in any
    order, one line each, through a single writer.
  * Protocol lines go to the file descriptor named by `TINKEX_ADAPTER_PROTOCOL_FD` (run-adapter
    points it at the real stdout and sends everything else the BEAM prints to stderr), or to
    stdout when it is unset.
  * Values are reported as Tinkex returned them (PROTOCOL.md §4); a step that failed reports
    `{"error": {"kind", "type", "message"}}`: `server` when the service refused it (an HTTP
    status or a failed future), `client` when Tinkex refused it itself.
  * `TINKEX_ADAPTER_NEGATE_CUSTOM_WEIGHTS=1` negates every catalogue loss: a deliberately broken
    adapter (its custom-loss backward weights have the wrong sign) for the suite's own tests.
  """

  alias TinkexConformance.{Case, Writer}

  @protocol 1

  @doc "Entry point (run-adapter: `elixir ... -e 'TinkexConformance.main()'`)."
  def main do
    configure_logger()
    {:ok, writer} = Writer.start_link(open_output())
    {:ok, _} = Application.ensure_all_started(:tinkex)

    case read_message() do
      %{"type" => "hello", "protocol" => @protocol} ->
        Writer.send(writer, hello())

      other ->
        error = "bad handshake: expected a hello for protocol #{@protocol}, got #{inspect(other)}"
        Writer.send(writer, Map.put(hello(), "error", error))
        System.halt(2)
    end

    {:ok, supervisor} = Task.Supervisor.start_link()
    serve(supervisor, writer)
    wait_for_cases(supervisor, 30_000)
    System.halt(0)
  end

  defp hello do
    %{
      "type" => "hello",
      "protocol" => @protocol,
      "adapter" => %{
        "name" => "tinkex" <> if(Case.negate?(), do: "-negated-custom-weights", else: ""),
        "sdk" => "tinkex",
        "sdk_version" => to_string(Application.spec(:tinkex, :vsn))
      },
      "max_parallel" => max_parallel()
    }
  end

  defp serve(supervisor, writer) do
    case read_message() do
      :eof ->
        :ok

      %{"type" => "shutdown"} ->
        :ok

      %{"type" => "run"} = message ->
        {:ok, _pid} =
          Task.Supervisor.start_child(supervisor, fn -> Writer.send(writer, Case.run(message)) end)

        serve(supervisor, writer)

      other ->
        IO.puts(:stderr, "tinkex adapter: ignoring an unknown message #{inspect(other)}")
        serve(supervisor, writer)
    end
  end

  defp wait_for_cases(supervisor, budget_ms) when budget_ms > 0 do
    if Task.Supervisor.children(supervisor) != [] do
      Process.sleep(100)
      wait_for_cases(supervisor, budget_ms - 100)
    end
  end

  defp wait_for_cases(_supervisor, _budget_ms), do: :ok

  defp read_message do
    case IO.read(:stdio, :line) do
      :eof -> :eof
      {:error, reason} -> raise "cannot read stdin: #{inspect(reason)}"
      line -> Jason.decode!(line)
    end
  end

  defp open_output do
    case System.get_env("TINKEX_ADAPTER_PROTOCOL_FD") do
      fd when fd in [nil, ""] -> :stdio
      # A port on the inherited descriptor itself (no reopening: the same file description).
      fd -> {:port, Port.open({:fd, 0, String.to_integer(fd)}, [:out, :binary])}
    end
  end

  defp max_parallel do
    case Integer.parse(System.get_env("TINKEX_ADAPTER_PARALLEL", "4")) do
      {n, ""} when n >= 1 -> n
      _ -> 4
    end
  end

  # Everything the BEAM logs goes to stderr at `TINKEX_ADAPTER_LOG_LEVEL` (default warning).
  defp configure_logger do
    level = System.get_env("TINKEX_ADAPTER_LOG_LEVEL", "warning") |> String.to_atom()
    :logger.remove_handler(:default)

    :logger.add_handler(:default, :logger_std_h, %{
      config: %{type: :standard_error},
      formatter: Logger.default_formatter()
    })

    Logger.configure(level: level)
  end
end

defmodule TinkexConformance.Writer do
  @moduledoc "Serialises protocol lines: one JSON object per line, one writer at a time."
  use Agent

  def start_link(device), do: Agent.start_link(fn -> device end)

  def send(writer, message) do
    line = Jason.encode!(message) <> "\n"
    Agent.get(writer, fn device -> write(device, line) end, :infinity)
  end

  defp write({:port, port}, data), do: true = Port.command(port, data)
  defp write(device, data), do: IO.binwrite(device, data)
end
