"""The inputs of the reference cases, shared by generate.py (FlagEmbedding) and the tests
(bge_m3), so that both run the same texts."""

import os
import shutil

SHORT_TEXTS = [
    "What is BGE M3?",
    "Defination of BM25",
    "BGE M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction.",
    "北京是中华人民共和国的首都。",
    "Müller und Schäfer wohnen in München.",
    "a",
]
# Over 512 tokens of the fixtures' tokenizer (FlagEmbedding's default cut), under 8192.
LONG_TEXT = " ".join(["retrieval embedding 北京 学习 Straße château 2024 ?"] * 120)
EMPTY_TEXTS = ["", "What is BGE M3?", ""]
# Queries and passages of different lengths, scored in one compute_score call.
BATCHED_PAIRS = [
    ["What is BGE M3?", "BGE M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction."],
    ["Defination of BM25", "BM25 is a bag-of-words retrieval function that ranks a set of documents based on the query terms appearing in each document"],
    ["北京", "北京是中华人民共和国的首都。今天天气很好，我们去公园散步吧。"],
    ["a much longer query about machine learning and artificial intelligence and data", "short"],
    ["", "an empty query"],
    ["Müller", ""],
]
INSTRUCTION = "Represent this sentence for searching relevant passages"
TRUNCATE_DIM = 16

# FlagEmbedding's README for BGE-M3 (research/BGE_M3/README.md, "Usage"), its four blocks as
# written there. The tests swap the import line for bge_m3's; both sides swap the GPU the first
# block names (`devices=['cuda:0']`) for the CPU, as neither runs it without a GPU.
README_BLOCKS = {
    "dense": '''
from FlagEmbedding import BGEM3FlagModel

model = BGEM3FlagModel('BAAI/bge-m3',  
                       use_fp16=True,
                       devices=['cuda:0']) # Setting use_fp16 to True speeds up computation with a slight performance degradation

sentences_1 = ["What is BGE M3?", "Defination of BM25"]
sentences_2 = ["BGE M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction.", 
               "BM25 is a bag-of-words retrieval function that ranks a set of documents based on the query terms appearing in each document"]

embeddings_1 = model.encode(sentences_1, 
                            batch_size=12, 
                            max_length=8192, # If you don't need such a long length, you can set a smaller value to speed up the encoding process.
                            )['dense_vecs']
embeddings_2 = model.encode(sentences_2)['dense_vecs']
similarity = embeddings_1 @ embeddings_2.T
print(similarity)
# [[0.6265, 0.3477], [0.3499, 0.678 ]]
''',
    "sparse": '''
from FlagEmbedding import BGEM3FlagModel

model = BGEM3FlagModel('BAAI/bge-m3',  use_fp16=True) # Setting use_fp16 to True speeds up computation with a slight performance degradation

sentences_1 = ["What is BGE M3?", "Defination of BM25"]
sentences_2 = ["BGE M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction.", 
               "BM25 is a bag-of-words retrieval function that ranks a set of documents based on the query terms appearing in each document"]

output_1 = model.encode(sentences_1, return_dense=True, return_sparse=True, return_colbert_vecs=False)
output_2 = model.encode(sentences_2, return_dense=True, return_sparse=True, return_colbert_vecs=False)

# you can see the weight for each token:
print(model.convert_id_to_token(output_1['lexical_weights']))
# [{'What': 0.08356, 'is': 0.0814, 'B': 0.1296, 'GE': 0.252, 'M': 0.1702, '3': 0.2695, '?': 0.04092}, 
#  {'De': 0.05005, 'fin': 0.1368, 'ation': 0.04498, 'of': 0.0633, 'BM': 0.2515, '25': 0.3335}]


# compute the scores via lexical mathcing
lexical_scores = model.compute_lexical_matching_score(output_1['lexical_weights'][0], output_2['lexical_weights'][0])
print(lexical_scores)
# 0.19554901123046875

print(model.compute_lexical_matching_score(output_1['lexical_weights'][0], output_1['lexical_weights'][1]))
# 0.0
''',
    "colbert": '''
from FlagEmbedding import BGEM3FlagModel

model = BGEM3FlagModel('BAAI/bge-m3',  use_fp16=True) 

sentences_1 = ["What is BGE M3?", "Defination of BM25"]
sentences_2 = ["BGE M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction.", 
               "BM25 is a bag-of-words retrieval function that ranks a set of documents based on the query terms appearing in each document"]

output_1 = model.encode(sentences_1, return_dense=True, return_sparse=True, return_colbert_vecs=True)
output_2 = model.encode(sentences_2, return_dense=True, return_sparse=True, return_colbert_vecs=True)

print(model.colbert_score(output_1['colbert_vecs'][0], output_2['colbert_vecs'][0]))
print(model.colbert_score(output_1['colbert_vecs'][0], output_2['colbert_vecs'][1]))
# 0.7797
# 0.4620
''',
    "compute_score": '''
from FlagEmbedding import BGEM3FlagModel

model = BGEM3FlagModel('BAAI/bge-m3',  use_fp16=True) 

sentences_1 = ["What is BGE M3?", "Defination of BM25"]
sentences_2 = ["BGE M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction.", 
               "BM25 is a bag-of-words retrieval function that ranks a set of documents based on the query terms appearing in each document"]

sentence_pairs = [[i,j] for i in sentences_1 for j in sentences_2]

print(model.compute_score(sentence_pairs, 
                          max_passage_length=128, # a smaller max length leads to a lower latency
                          weights_for_different_modes=[0.4, 0.2, 0.4])) # weights_for_different_modes(w) is used to do weighted sum: w[0]*dense_score + w[1]*sparse_score + w[2]*colbert_score
''',
}

# A made-up commit of the Hub cache below.
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(cache, model_dir, repo="BAAI/bge-m3"):
    """Lays `model_dir` out in the Hugging Face cache `cache` as the snapshot of `repo` at
    `main`, the layout huggingface_hub (FlagEmbedding's loader) and bge_m3 both read."""
    repo_dir = os.path.join(cache, "models--" + repo.replace("/", "--"))
    snapshot = os.path.join(repo_dir, "snapshots", COMMIT)
    os.makedirs(snapshot)
    for name in os.listdir(model_dir):
        shutil.copy(os.path.join(model_dir, name), os.path.join(snapshot, name))
    os.makedirs(os.path.join(repo_dir, "refs"))
    with open(os.path.join(repo_dir, "refs", "main"), "w") as f:
        f.write(COMMIT)
