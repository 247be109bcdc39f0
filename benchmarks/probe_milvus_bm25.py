"""Why the Milvus backend serves bm25s's BM25 weights instead of using Milvus's own BM25 function.

Indexes a dataset's corpus into a Milvus Lite collection with Milvus's BM25 function over the *same tokens* bm25s
sees (the tokens joined by spaces, Milvus's standard tokenizer, the same k1 and b), and compares its test
nDCG@10 and top-10 lists with bm25s's. Usage: ``python benchmarks/probe_milvus_bm25.py --dataset scifact``.
"""

from __future__ import annotations

import json
import tempfile

import common
import numpy as np


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--dataset", default="scifact")
    args = parser.parse_args()

    from pymilvus import DataType, Function, FunctionType, MilvusClient

    from eval import open_dataset
    from eval.metrics import evaluate
    from retriever import rank
    from retriever.index.lexical import LexicalConfig, ensure_lexical_index, tokenize

    dataset = open_dataset(args.data_dir, args.dataset)
    docs = list(dataset.corpus())
    config = LexicalConfig()
    bm25 = ensure_lexical_index(dataset, args.cache_dir, config)
    split = dataset.split("test")
    qids = list(split.queries)
    texts = [split.queries[q] for q in qids]
    with tempfile.TemporaryDirectory() as tmp:
        client = MilvusClient(f"{tmp}/probe.db")
        schema = client.create_schema(auto_id=False)
        schema.add_field("row", DataType.INT64, is_primary=True)
        schema.add_field("text", DataType.VARCHAR, max_length=65535, enable_analyzer=True,
                         analyzer_params={"tokenizer": "standard"})
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["text"],
                                     output_field_names=["sparse"]))
        client.create_collection("probe", schema=schema)
        tokens = tokenize([d.content() for d in docs], config)
        for start in range(0, len(docs), 1000):
            client.insert("probe", [{"row": i, "text": " ".join(tokens[i])}
                                    for i in range(start, min(start + 1000, len(docs)))])
        params = client.prepare_index_params()
        params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                         params={"bm25_k1": config.k1, "bm25_b": config.b})
        client.create_index("probe", params, sync=False)
        client.load_collection("probe")
        hits = client.search("probe", data=[" ".join(t) or "-" for t in tokenize(texts, config)],
                             anns_field="sparse", limit=11, search_params={"metric_type": "BM25"})
    scores = np.zeros((len(qids), 11), dtype=np.float32)
    rows = np.full((len(qids), 11), -1, dtype=np.int64)
    for i, result in enumerate(hits):
        for j, hit in enumerate(result):
            scores[i, j], rows[i, j] = abs(hit["distance"]), hit["row"]  # Milvus Lite reports BM25 negated
    doc_ids = [d.id for d in docs]
    milvus = rank(qids, scores, rows, doc_ids, 10)
    ours = rank(qids, *bm25.search(texts, 11), doc_ids, 10)
    same = sum(list(milvus[q]) == list(ours[q]) for q in qids)
    print(json.dumps({"dataset": args.dataset, "ndcg@10_bm25s": evaluate(split.qrels, ours).ndcg_at_10,
                      "ndcg@10_milvus_bm25_function": evaluate(split.qrels, milvus).ndcg_at_10,
                      "same_top10": same, "queries": len(qids)}))


if __name__ == "__main__":
    main()
