"""Counting assertions shared by the client scripts: each check prints PASS or FAIL, and the
script ends with the `NAME: N passed, M failed` line that run.sh reads."""

import math
import traceback

passed = 0
failed = 0


def check(name, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
        print(f"PASS {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def crashed(name):
    """Counts an exception that ended a group of checks early, with its traceback."""
    global failed
    failed += 1
    print(f"FAIL {name} raised:")
    traceback.print_exc()


def summary(script):
    print(f"{script}: {passed} passed, {failed} failed")
    return 1 if failed else 0


def close(a, b, tolerance=1e-5):
    return len(a) == len(b) and all(abs(x - y) <= tolerance for x, y in zip(a, b))


def norm(values):
    return math.sqrt(sum(v * v for v in values))


# Documents for the self-retrieval checks of the integration scripts: each stored document,
# used as the query, must rank first.
DOCUMENTS = [
    "BGE M3 is an embedding model supporting dense, sparse and multi-vector retrieval.",
    "BM25 is a bag-of-words ranking function used by search engines.",
    "北京是中华人民共和国的首都。",
    "Le chat est assis sur le tapis, et il regarde par la fenêtre.",
    "Qdrant and Milvus store vectors for similarity search.",
    "The quick brown fox jumps over the lazy dog.",
]


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def best(query_vector, vectors):
    """The index of the vector with the highest dot product with the query."""
    return max(range(len(vectors)), key=lambda i: dot(query_vector, vectors[i]))
