defmodule TinkexConformance.Case do
  @moduledoc """
  Runs one conformance case (PROTOCOL.md §3) through Tinkex 0.4.0 and returns its `result`
  message.

  Tinkex's training calls return `{:ok, Task}` at once; the Task runs a `GenServer.call` into the
  TrainingClient, which sends the request (and so takes its seq_id) and then polls the future.
  A step is submitted by making that call; it is resolved by awaiting the Task — at once, or at
  the `await` step naming it when the step says `defer: true`.
  """

  alias Tinkex.{SamplingClient, ServiceClient, TrainingClient}
  alias Tinkex.Types.{AdamParams, Datum, ModelInput, SamplingParams, TensorData}
  alias TinkexConformance.Losses

  defmodule Skip do
    @moduledoc "The case needs something this adapter does not offer (reported as `skipped`)."
    defexception [:message]
  end

  @case_header "X-Conformance-Case"
  @message_chars 500

  @doc "Whether TINKEX_ADAPTER_NEGATE_CUSTOM_WEIGHTS asks for the broken (negated) losses."
  def negate?, do: System.get_env("TINKEX_ADAPTER_NEGATE_CUSTOM_WEIGHTS", "") not in ["", "0"]

  @doc "The `result` message of a `run` message."
  @spec run(map()) :: map()
  def run(%{"case" => %{"name" => name} = spec} = message) do
    # Tinkex links its clients and Tasks to the caller: an exit of one of them must become this
    # case's error, not kill the case process.
    Process.flag(:trap_exit, true)

    try do
      %{"type" => "result", "case" => name, "status" => "ok", "steps" => run_case(spec, message)}
    rescue
      e in [Skip, Losses.Unknown] ->
        %{"type" => "result", "case" => name, "status" => "skipped", "reason" => e.message}

      e ->
        errored(name, Exception.format(:error, e, __STACKTRACE__))
    catch
      kind, reason -> errored(name, Exception.format(kind, reason, __STACKTRACE__))
    end
  end

  defp errored(name, text) do
    %{
      "type" => "result",
      "case" => name,
      "status" => "errored",
      "error" => String.slice(text, 0, 8000)
    }
  end

  defp run_case(spec, message) do
    config =
      Tinkex.Config.new(
        api_key: message["api_key"],
        base_url: message["server"]["http"],
        default_headers: %{@case_header => spec["name"]},
        telemetry_enabled?: false
      )

    service =
      case ServiceClient.start_link(config: config) do
        {:ok, pid} -> pid
        {:error, reason} -> raise "ServiceClient.start_link failed: #{inspect(reason)}"
      end

    try do
      model = spec["model"]

      training =
        case ServiceClient.create_lora_training_client(service, model["base_model"],
               rank: model["rank"],
               seed: model["seed"],
               call_timeout: :infinity
             ) do
          {:ok, pid} -> pid
          {:error, reason} -> raise "create_lora_training_client failed: #{inspect(reason)}"
        end

      datasets = Map.new(spec["data"], fn {name, data} -> {name, Enum.map(data, &datum/1)} end)
      steps(spec["steps"], %{training: training, datasets: datasets, paths: %{}})
    after
      stop(service)
    end
  end

  defp stop(service) do
    GenServer.stop(service, :normal, 10_000)
  catch
    :exit, _ -> :ok
  end

  # ----- data -----

  # target_tokens int64, every other key float32; 2-D lists are [T, K] tensors.
  defp datum(%{"model_input" => tokens, "loss_fn_inputs" => inputs}) do
    %Datum{
      model_input: ModelInput.from_ints(tokens),
      loss_fn_inputs:
        Map.new(inputs, fn {key, value} ->
          type = if key == "target_tokens", do: :s64, else: :f32
          {key, TensorData.from_nx(Nx.tensor(value, type: type))}
        end)
    }
  end

  # ----- steps -----

  defp steps(steps, state) do
    {results, deferred, _state} =
      Enum.reduce(steps, {%{}, [], state}, fn
        %{"op" => "await", "steps" => ids}, {results, deferred, state} ->
          {awaited, rest} = Enum.split_with(deferred, fn {id, _} -> id in ids end)

          results =
            Enum.reduce(awaited, results, fn {id, r}, acc -> Map.put(acc, id, outcome(r)) end)

          {results, rest, state}

        %{"id" => id} = step, {results, deferred, state} ->
          resolve = submit(step, state)

          if step["defer"] do
            {results, deferred ++ [{id, resolve}], state}
          else
            result = outcome(resolve)
            state = remember_path(step, result, state)
            {Map.put(results, id, result), deferred, state}
          end
      end)

    # Deferred and never awaited: resolved at the end, in submission order.
    Enum.reduce(deferred, results, fn {id, resolve}, acc -> Map.put(acc, id, outcome(resolve)) end)
  end

  # The step's result; an exception while waiting for it or reading it is the step's error.
  defp outcome(resolve) do
    resolve.()
  rescue
    e -> %{"error" => error(e)}
  end

  defp remember_path(%{"op" => "save_state", "id" => id}, %{"path" => path}, state),
    do: put_in(state.paths[id], path)

  defp remember_path(_step, _result, state), do: state

  # Makes the step's Tinkex call now; returns a function that waits for it and gives the result.
  defp submit(step, state) do
    submit_op(step, state)
  rescue
    e in [Skip, Losses.Unknown] -> reraise e, __STACKTRACE__
    e -> fn -> %{"error" => error(e)} end
  end

  defp submit_op(%{"op" => op} = step, state) when op in ["forward", "forward_backward"] do
    call =
      if op == "forward", do: &TrainingClient.forward/4, else: &TrainingClient.forward_backward/4

    opts = if step["loss_fn_config"], do: [loss_fn_config: step["loss_fn_config"]], else: []

    task_result(
      call.(state.training, state.datasets[step["data"]], step["loss_fn"], opts),
      &output/1
    )
  end

  defp submit_op(%{"op" => "forward_backward_custom"} = step, state) do
    loss = Losses.build(step["loss"])
    loss = if negate?(), do: Losses.negate(loss), else: loss

    call =
      TrainingClient.forward_backward_custom(state.training, state.datasets[step["data"]], loss)

    task_result(call, &output/1)
  end

  defp submit_op(%{"op" => "optim_step", "adam" => adam}, state) do
    case AdamParams.new(Enum.map(adam, fn {key, value} -> {String.to_atom(key), value} end)) do
      {:ok, params} ->
        task_result(TrainingClient.optim_step(state.training, params), fn _ -> %{} end)

      {:error, reason} ->
        fn -> %{"error" => error({:invalid_adam_params, reason})} end
    end
  end

  defp submit_op(%{"op" => "save_state", "name" => name}, state) do
    task_result(TrainingClient.save_state(state.training, name), fn saved ->
      %{"path" => Map.get(saved, :path) || Map.get(saved, "path")}
    end)
  end

  defp submit_op(%{"op" => "load_state", "from" => from}, state) do
    case Map.fetch(state.paths, from) do
      {:ok, path} -> task_result(TrainingClient.load_state(state.training, path), fn _ -> %{} end)
      :error -> raise ArgumentError, "load_state: step #{inspect(from)} saved no path"
    end
  end

  defp submit_op(%{"op" => "sample"} = step, state) do
    # The weights snapshot is taken now (it takes a training seq_id); sampling waits for it.
    saving = TrainingClient.save_weights_and_get_sampling_client(state.training)

    fn ->
      with {:ok, task} <- saving,
           {:ok, sampler} <- await(task),
           params = sampling_params(step["sampling_params"]),
           prompt = ModelInput.from_ints(step["prompt"]),
           {:ok, task} <-
             SamplingClient.sample(sampler, prompt, params, num_samples: step["num_samples"]),
           {:ok, response} <- await(task) do
        samples(response)
      else
        failure -> %{"error" => error(failure)}
      end
    end
  end

  defp submit_op(%{"op" => op}, _state), do: raise(Skip, "op #{inspect(op)} is not supported")

  defp sampling_params(params) do
    struct!(SamplingParams, Enum.map(params, fn {key, value} -> {String.to_atom(key), value} end))
  end

  defp task_result({:ok, %Task{} = task}, encode) do
    fn ->
      case await(task) do
        {:ok, value} -> encode.(value)
        failure -> %{"error" => error(failure)}
      end
    end
  end

  defp task_result(failure, _encode), do: fn -> %{"error" => error(failure)} end

  # A Task's reply; an exit of the Task (a crash inside Tinkex) is a failure too.
  defp await(task) do
    Task.await(task, :infinity)
  catch
    :exit, reason -> {:exit, reason}
  end

  # ----- values (reported as Tinkex returned them) -----

  defp output(%{loss_fn_outputs: outputs, metrics: metrics}) do
    %{
      "logprobs" => Enum.map(outputs, fn item -> tensor_value(item["logprobs"]) end),
      "metrics" => Map.new(metrics, fn {key, value} -> {to_string(key), metric(value)} end)
    }
  end

  # Tinkex hands back the wire's `{"data", "dtype", "shape"}` map: the flat data, nested by shape.
  defp tensor_value(%TensorData{} = td), do: td |> TensorData.to_nx() |> Nx.to_list()

  defp tensor_value(%{"data" => data, "shape" => shape}) when is_list(shape),
    do: nest(data, shape)

  defp tensor_value(%{"data" => data}), do: data
  defp tensor_value(other), do: other

  defp nest(data, [_]), do: data

  defp nest(data, [_ | inner]),
    do: data |> Enum.chunk_every(Enum.product(inner)) |> Enum.map(&nest(&1, inner))

  defp nest(data, []), do: data

  defp metric(value) when is_number(value), do: value

  defp metric(value) do
    %{"non_number" => type_name(value), "repr" => value |> inspect() |> String.slice(0, 80)}
  end

  defp type_name(%{__struct__: module}), do: inspect(module)
  defp type_name(value) when is_boolean(value), do: "boolean"
  defp type_name(value) when is_atom(value), do: "atom"
  defp type_name(value) when is_binary(value), do: "string"
  defp type_name(value) when is_list(value), do: "list"
  defp type_name(value) when is_map(value), do: "map"
  defp type_name(_value), do: "term"

  defp samples(%{sequences: sequences}) do
    %{
      "sequences" =>
        Enum.map(sequences, fn seq ->
          %{
            "tokens" => seq.tokens,
            "logprobs" => seq.logprobs,
            "stop_reason" => stop_reason(seq.stop_reason)
          }
        end)
    }
  end

  # Tinkex parses the wire's "length" / "stop" into atoms (StopReason.parse/1); anything else is nil.
  defp stop_reason(reason) when is_atom(reason) and reason != nil, do: Atom.to_string(reason)
  defp stop_reason(reason), do: reason

  # ----- errors -----

  # "server": the service refused it — an HTTP status, or a future the server failed
  # (Tinkex.Future's failed-future error carries the request id and the server's error map).
  # "client": Tinkex refused it itself (validation, a loss that raised, a crash, a timeout).
  defp error({:error, reason}), do: error(reason)
  defp error({:exit, reason}), do: describe("client", "exit", Exception.format_exit(reason))

  defp error(%Tinkex.Error{} = e) do
    failed_future? = match?(%{request_id: _, error: _}, e.data)
    kind = if is_integer(e.status) or failed_future?, do: "server", else: "client"
    describe(kind, "Tinkex.Error(#{e.type})", Tinkex.Error.format(e))
  end

  defp error(%{__exception__: true} = e),
    do: describe("client", inspect(e.__struct__), Exception.message(e))

  defp error({tag, reason}) when is_atom(tag),
    do: describe("client", to_string(tag), inspect(reason))

  defp error(other), do: describe("client", "term", inspect(other))

  defp describe(kind, type, message) do
    %{"kind" => kind, "type" => type, "message" => String.slice(message, 0, @message_chars)}
  end
end
