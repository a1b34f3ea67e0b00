[inputs: ["mix.exs", "{lib,support,tokenizers_stub}/**/*.{ex,exs}", "tokenizers_stub/mix.exs"]]
