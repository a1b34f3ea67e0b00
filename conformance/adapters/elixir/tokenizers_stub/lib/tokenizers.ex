defmodule Tokenizers.Tokenizer do
  @moduledoc "Stand-in for `Tokenizers.Tokenizer` (see mix.exs): no tokenizer can be loaded."

  @type t :: %__MODULE__{}
  defstruct []

  @reason "tokenizers is not available in this offline build (the conformance adapter uses token ids)"

  def from_pretrained(_identifier, _opts \\ []), do: {:error, @reason}
  def from_file(_path, _opts \\ []), do: {:error, @reason}
  def encode(_tokenizer, _input, _opts \\ []), do: {:error, @reason}
  def decode(_tokenizer, _ids, _opts \\ []), do: {:error, @reason}
end

defmodule Tokenizers.Encoding do
  @moduledoc "Stand-in for `Tokenizers.Encoding` (see mix.exs)."

  @type t :: %__MODULE__{ids: [integer()]}
  defstruct ids: []

  def get_ids(%__MODULE__{ids: ids}), do: ids
end
