"""`python -m mock_server.tokenizers`: regenerate the shipped tokenizer directories."""

from mock_server.tokenizers import build

for path in build():
    print(path)
