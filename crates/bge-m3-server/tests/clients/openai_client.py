"""OpenAI's official Python SDK against a live bge-m3-server.

Usage: BASE_URL=http://127.0.0.1:PORT python openai_client.py
"""

import json
import os
import sys

import openai
from openai import OpenAI

from checks import DOCUMENTS, best, check, close, crashed, norm, summary

BASE_URL = os.environ["BASE_URL"].rstrip("/")
client = OpenAI(base_url=f"{BASE_URL}/v1", api_key="unused", timeout=60, max_retries=0)

TEXTS = ["Hello world", "What is BGE M3?", ""]

def sent_body(raw):
    return json.loads(raw.http_request.content)


def test_models():
    models = client.models.list()
    ids = [m.id for m in models.data]
    check("models.list has bge-m3", ids == ["bge-m3"], ids)
    model = models.data[0]
    check("models.list fields", model.object == "model" and model.owned_by and model.created > 0)
    check("models.retrieve", client.models.retrieve("bge-m3").id == "bge-m3")
    check("models.retrieve alias", client.models.retrieve("BAAI/bge-m3").id == "bge-m3")
    try:
        client.models.retrieve("text-embedding-3-small")
        check("models.retrieve unknown raises", False)
    except openai.NotFoundError as e:
        check("models.retrieve unknown raises NotFoundError", e.code == "model_not_found", e)
    return model.model_extra["embedding_dims"]


def test_default_base64(dim):
    raw = client.embeddings.with_raw_response.create(model="bge-m3", input=TEXTS)
    check("default request asks for base64", sent_body(raw).get("encoding_format") == "base64",
          sent_body(raw))
    response = raw.parse()
    check("default: one item per input", len(response.data) == len(TEXTS))
    check("default: indices", [d.index for d in response.data] == list(range(len(TEXTS))))
    for i, item in enumerate(response.data):
        check(f"default: data[{i}] decoded to {dim} floats",
              isinstance(item.embedding, list) and len(item.embedding) == dim
              and all(isinstance(v, float) for v in item.embedding))
        check(f"default: data[{i}] unit length", abs(norm(item.embedding) - 1.0) < 1e-4)
    check("default: model", response.model == "bge-m3")
    check("default: usage", response.usage.prompt_tokens == response.usage.total_tokens > 0)
    return response


def test_float(base64_response):
    response = client.embeddings.create(model="bge-m3", input=TEXTS, encoding_format="float")
    for i, (f, b) in enumerate(zip(response.data, base64_response.data)):
        check(f"float == base64 for data[{i}]", close(f.embedding, b.embedding))
    extra = response.data[1].model_extra
    check("float: dense beside embedding", close(extra["dense"], response.data[1].embedding))
    check("float: sparse beside embedding", isinstance(extra["sparse"], dict) and extra["sparse"])
    check("float: usage equal", response.usage.prompt_tokens == base64_response.usage.prompt_tokens)
    return response


def test_dimensions(float_response):
    response = client.embeddings.create(model="bge-m3", input="Hello world", dimensions=8)
    vector = response.data[0].embedding
    full = float_response.data[0].embedding[:8]
    expected = [v / norm(full) for v in full]
    check("dimensions: 8 values", len(vector) == 8)
    check("dimensions: truncated and renormalised", close(vector, expected))


def test_token_ids():
    # Refused by default (--allow-token-ids): foreign ids would be embedded silently.
    try:
        client.embeddings.create(model="bge-m3", input=[[5, 6, 7], [8]], encoding_format="float")
        check("token ids: refused by default", False)
    except openai.BadRequestError as e:
        check("token ids: refused by default, naming the setting",
              e.code == "token_ids_not_allowed" and e.param == "input"
              and "--allow-token-ids" in str(e), e)


def test_extras_under_the_default_base64():
    # --- README: OpenAI SDK ---
    client = OpenAI(base_url=f"{BASE_URL}/v1", api_key="unused")
    response = client.embeddings.create(model="bge-m3", input=DOCUMENTS,
                                        extra_body={"input_type": {"colbert": True}, "sparse_format": "indices"})
    dense = response.data[0].embedding                     # decoded from the SDK's default base64
    colbert = response.data[0].model_extra["colbert"]      # rows of floats, usable as they come
    sparse = response.data[0].model_extra["sparse"]        # {"indices": [...], "values": [...]}
    # --- end of the README's code ---
    # The SDK asks for base64 and decodes `embedding` alone: the extras come as numbers.
    extra = response.data[0].model_extra
    check("base64 default: dense as floats, equal to embedding",
          isinstance(extra["dense"], list) and close(extra["dense"], dense))
    check("base64 default: colbert rows as floats",
          all(isinstance(row, list) and all(isinstance(v, float) for v in row) for row in colbert))
    check("base64 default: sparse as Qdrant's indices and values",
          sorted(sparse) == ["indices", "values"] and len(sparse["indices"]) == len(sparse["values"]))
    stored = [item.embedding for item in response.data]
    for i, text in enumerate(DOCUMENTS):
        query = client.embeddings.create(model="bge-m3", input=text).data[0].embedding
        check(f"base64 default: document {i} finds itself first", best(query, stored) == i)


def test_extra_body():
    response = client.embeddings.create(
        model="bge-m3",
        input="What is BGE M3?",
        encoding_format="float",
        extra_body={"input_type": {"colbert": True}, "sparse_format": "indices"},
    )
    extra = response.data[0].model_extra
    check("extra_body: colbert rows", len(extra["colbert"]) == response.usage.prompt_tokens + 1)
    check("extra_body: indices", sorted(extra["sparse"]) == ["indices", "values"])


def test_errors():
    try:
        client.embeddings.create(model="text-embedding-3-small", input="a")
        check("unknown model raises", False)
    except openai.NotFoundError as e:
        check("unknown model: NotFoundError model_not_found", e.code == "model_not_found", e)
    try:
        client.embeddings.create(model="bge-m3", input=[])
        check("empty input raises", False)
    except openai.BadRequestError as e:
        check("empty input: BadRequestError on input", e.param == "input" and e.type, e)
    try:
        client.embeddings.create(model="bge-m3", input="a", dimensions=0)
        check("dimensions 0 raises", False)
    except openai.BadRequestError as e:
        check("dimensions 0: BadRequestError on dimensions", e.param == "dimensions", e)


def main():
    try:
        dim = test_models()
        base64_response = test_default_base64(dim)
        float_response = test_float(base64_response)
        test_dimensions(float_response)
        test_token_ids()
        test_extras_under_the_default_base64()
        test_extra_body()
        test_errors()
    except Exception:
        crashed("openai_client")
    return summary("openai_client")


if __name__ == "__main__":
    sys.exit(main())
