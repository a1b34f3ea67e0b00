defmodule TinkexConformance.Losses do
  @moduledoc """
  The conformance loss catalogue (conformance/README.md, "Loss catalogue") in Nx, for
  `Tinkex.TrainingClient.forward_backward_custom/4`.

  A loss is `fn data, logprobs -> {loss, metrics} end`: `data` is the list of `Tinkex.Types.Datum`
  structs, `logprobs` one f32 tensor per datum shaped like its `target_tokens` ([T] or [T, K]).
  Notation per datum i, position t: ℓ = logprobs, w = the datum's `weights` (ones when absent).
  Sums run left to right in datum order, in float32, like the torch catalogue
  (conformance/adapters/python/catalogue.py).

  Tinkex calls the loss twice: once on concrete tensors (the metrics it reports come from this
  call) and once under `Nx.Defn.grad/2`, where the logprobs are `Nx.Defn.Expr` tensors and
  `Nx.to_number/1` raises. Metrics therefore stay tensors (Tinkex turns a tensor metric into a
  number itself); only `weighted_margin`'s int metric needs concrete values and is computed on
  the first call only.
  """

  alias Tinkex.Types.TensorData

  defmodule Unknown do
    @moduledoc "The case names a loss this adapter does not implement (the case is skipped)."
    defexception [:message]
  end

  @type loss :: (list(), [Nx.Tensor.t()] -> {Nx.Tensor.t(), map()})

  @doc ~S|`%{"name" => "dpo_pair", "params" => %{"beta" => 0.1}}` -> the loss function.|
  @spec build(map()) :: loss()
  def build(%{"name" => name} = spec) do
    params = Map.get(spec, "params") || %{}

    case name do
      "sum_nll" -> sum_nll()
      "mean_nll" -> mean_nll()
      "dpo_pair" -> dpo_pair(Map.fetch!(params, "beta"), Map.get(params, "reference_margins"))
      "target_distribution_kl" -> target_distribution_kl()
      "weighted_margin" -> weighted_margin(Map.fetch!(params, "margin"))
      "elementwise_nll" -> elementwise_nll()
      other -> raise Unknown, message: "loss #{inspect(other)} is not in this adapter's catalogue"
    end
  end

  @doc "C = -Σ_i Σ_t w·ℓ"
  def sum_nll do
    fn data, logprobs ->
      value = Nx.negate(total(weighted_sums(data, logprobs)))
      {value, %{"custom/sum_nll:sum" => value}}
    end
  end

  @doc "C = -(Σ_i Σ_t w·ℓ) / (Σ_i Σ_t w)"
  def mean_nll do
    fn data, logprobs ->
      weight = data |> zip!(logprobs) |> Enum.map(fn {d, lp} -> tsum(weights(d, lp)) end)
      value = Nx.divide(Nx.negate(total(weighted_sums(data, logprobs))), total(weight))
      {value, %{"custom/mean_nll:sum" => value}}
    end
  end

  @doc """
  Datums (2j, 2j+1) = (chosen, rejected); s_i = Σ_t w·ℓ;
  C = Σ_j softplus(-(β·((s_2j - s_2j+1) - m_j))).
  """
  def dpo_pair(beta, reference_margins \\ nil) do
    fn data, logprobs ->
      if rem(length(data), 2) != 0 do
        raise ArgumentError, "dpo_pair needs (chosen, rejected) pairs, got #{length(data)} datums"
      end

      scores = weighted_sums(data, logprobs)
      pairs = div(length(data), 2)
      margins = reference_margins || List.duplicate(0.0, pairs)

      terms =
        scores
        |> Enum.chunk_every(2)
        |> Enum.zip(margins)
        |> Enum.map(fn {[chosen, rejected], margin} ->
          delta = Nx.subtract(Nx.subtract(chosen, rejected), f32(margin))
          softplus(Nx.negate(Nx.multiply(f32(beta), delta)))
        end)

      value = total(terms)
      {value, %{"custom/dpo_pair:sum" => value}}
    end
  end

  @doc """
  [T, K] targets only; p = w (a distribution per row, zero rows ignored);
  C = Σ_i Σ_{t,k: p>0} p·(log p - ℓ).
  """
  def target_distribution_kl do
    fn data, logprobs ->
      terms =
        data
        |> zip!(logprobs)
        |> Enum.map(fn {datum, lp} ->
          if Nx.rank(lp) != 2 do
            raise ArgumentError,
                  "target_distribution_kl needs [T,K] targets, got shape #{inspect(Nx.shape(lp))}"
          end

          p = weights(datum, lp)
          positive = Nx.greater(p, 0)
          # 0·log 0 = 0: only cells with p > 0 contribute (and carry gradient -p).
          log_p = Nx.log(Nx.select(positive, p, Nx.broadcast(f32(1.0), Nx.shape(p))))
          cells = Nx.multiply(p, Nx.subtract(log_p, lp))
          tsum(Nx.select(positive, cells, Nx.broadcast(f32(0.0), Nx.shape(lp))))
        end)

      value = total(terms)
      {value, %{"custom/target_distribution_kl:sum" => value}}
    end
  end

  @doc """
  C = Σ_i Σ_t w·softplus(m - ℓ). Metrics raw on purpose (the metric-stringification case): C as
  a 0-d tensor, #(ℓ < m) as an int, m as a float.
  """
  def weighted_margin(margin) do
    fn data, logprobs ->
      terms =
        data
        |> zip!(logprobs)
        |> Enum.map(fn {d, lp} ->
          tsum(Nx.multiply(weights(d, lp), softplus(Nx.subtract(f32(margin), lp))))
        end)

      value = total(terms)

      below =
        if Enum.any?(logprobs, &traced?/1) do
          # Under Nx.Defn.grad: Tinkex discards these metrics; a tensor stands in for the int.
          Nx.tensor(0)
        else
          logprobs
          |> Enum.map(&(&1 |> Nx.less(margin) |> Nx.sum() |> Nx.to_number()))
          |> Enum.sum()
        end

      {value,
       %{
         "custom/weighted_margin:sum" => value,
         "custom/below_margin:sum" => below,
         "custom/margin:mean" => margin * 1.0
       }}
    end
  end

  @doc "The vector (-w·ℓ) of every token: NOT a scalar, so the SDK must refuse it."
  def elementwise_nll do
    fn data, logprobs ->
      parts =
        data
        |> zip!(logprobs)
        |> Enum.map(fn {d, lp} -> Nx.flatten(Nx.negate(Nx.multiply(weights(d, lp), lp))) end)

      {Nx.concatenate(parts), %{}}
    end
  end

  @doc """
  The broken variant (TINKEX_ADAPTER_NEGATE_CUSTOM_WEIGHTS=1): the loss negated, so every
  gradient, and with it every backward weight the SDK sends, has the wrong sign.
  """
  @spec negate(loss()) :: loss()
  def negate(loss) do
    fn data, logprobs ->
      {value, metrics} = loss.(data, logprobs)
      {Nx.negate(value), metrics}
    end
  end

  # ----- helpers -----

  # The datum's weights as f32 shaped like its logprobs (ones when absent).
  defp weights(datum, lp) do
    case datum.loss_fn_inputs["weights"] || datum.loss_fn_inputs[:weights] do
      nil ->
        Nx.broadcast(f32(1.0), Nx.shape(lp))

      %TensorData{} = td ->
        td |> TensorData.to_nx() |> Nx.as_type(:f32) |> Nx.reshape(Nx.shape(lp))

      %Nx.Tensor{} = t ->
        t |> Nx.as_type(:f32) |> Nx.reshape(Nx.shape(lp))

      list when is_list(list) ->
        list |> Nx.tensor(type: :f32) |> Nx.reshape(Nx.shape(lp))
    end
  end

  defp weighted_sums(data, logprobs) do
    data |> zip!(logprobs) |> Enum.map(fn {d, lp} -> tsum(Nx.multiply(weights(d, lp), lp)) end)
  end

  # A tensor's sum. Its rounding need not match torch's to the bit: the suite compares values
  # across SDKs and machines with stated tolerances (conformance/state.py).
  defp tsum(tensor), do: Nx.sum(tensor)

  # Left to right: the order fixes the float32 rounding.
  defp total([first | rest]),
    do: Enum.reduce(rest, first, fn value, acc -> Nx.add(acc, value) end)

  # softplus(x) = log(1 + e^x), as torch computes it: x itself above 20 (no overflow there).
  defp softplus(x), do: Nx.select(Nx.greater(x, 20), x, Nx.log1p(Nx.exp(Nx.min(x, 20))))

  defp f32(number), do: Nx.tensor(number, type: :f32)

  defp traced?(%Nx.Tensor{data: %Nx.Defn.Expr{}}), do: true
  defp traced?(_), do: false

  defp zip!(data, logprobs) do
    if length(data) != length(logprobs) do
      raise ArgumentError, "#{length(data)} datums but #{length(logprobs)} logprob tensors"
    end

    Enum.zip(data, logprobs)
  end
end
