"""pgvector through LangChain's ``PGVector`` (langchain-postgres), PostgreSQL from ``pgserver``.

Configurations: no index (exact; the CLI needs ``--distance``), and the ANN indexes users
build: HNSW (``vector_cosine_ops``, default ``m``/``ef_construction``, default
``hnsw.ef_search`` = 40) and IVFFlat (``lists`` = rows / 1000 as pgvector advises, default
``ivfflat.probes`` = 1). The backend vacuums the table after a fit and after a restore, so
the index stops serving dead row versions. ``fill`` makes a collection in a given database
(the fault and stateful suites'), and ``open`` opens one from its URL and name as a new
process does (the fault suite's child). ``llama-index`` (LlamaIndex's ``PGVectorStore``, no
index: exact, filled by a ``VectorStoreIndex``) is made for the LlamaIndex nfcorpus test, not
run by the contract.
"""

from __future__ import annotations

import urllib.parse
import uuid

import pytest

from .contract import StoreContract
from .harness import Made, StoreKind, llama_index_over


def new_database(pg_url: str) -> str:
    """A new database with pgvector on the session's server (ids are unique per table)."""
    import psycopg

    name = f"contract_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urllib.parse.urlsplit(pg_url)._replace(path=f"/{name}").geturl()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return url


class PgVectorKind(StoreKind):
    name = "pgvector"
    all_kill_points = True  # its own state in the database: every point
    configs = ("exact", "hnsw", "ivfflat")
    approximate = frozenset({"hnsw", "ivfflat"})
    module_needed = "langchain_postgres"
    extra = "postgres"
    restore_atol = 0.0

    def make(self, tmp_path, docs, config, request) -> Made:
        url = new_database(request.getfixturevalue("pg_url"))
        if config == "llama-index":  # the LlamaIndex nfcorpus test's (not run by the contract)
            return self._llama_index(url, docs)
        return self.fill(url, docs, config)

    @staticmethod
    def _llama_index(url: str, docs) -> Made:
        """A ``PGVectorStore`` (table ``data_contract``, metadata as ``jsonb``, no
        ``hnsw_kwargs``: a sequential scan, exact; it ranks by cosine) filled by a
        ``VectorStoreIndex`` (:attr:`Made.index`) in the store's batches. The command line
        names the table; with no index to read it from, it needs ``--distance``."""
        pytest.importorskip(
            "llama_index.vector_stores.postgres", reason="pip install 'nudge-rag[postgres]'"
        )
        from llama_index.vector_stores.postgres import PGVectorStore

        sqlalchemy_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
        store = PGVectorStore.from_params(
            connection_string=sqlalchemy_url,
            async_connection_string=sqlalchemy_url,
            table_name="contract",
            embed_dim=docs.vectors.shape[1],
            use_jsonb=True,
        )
        index = llama_index_over(store, docs)

        def close() -> None:  # the sync engine; asyncio.run's loops took their connections
            if store._engine is not None:
                store._engine.dispose()

        return Made(
            store,
            "llama-index",
            url,
            "data_contract",
            close,
            cli_args=("--distance", "cosine"),
            index=index,
        )

    def fill(self, url: str, docs, config: str, collection: str = "contract") -> Made:
        """A LangChain ``PGVector`` collection holding ``docs`` in the database at ``url``
        (which has the ``vector`` extension), in configuration ``config``: the wrapper
        :meth:`open` makes, filled through its ``add_embeddings``."""
        import psycopg

        made = self.open(url, collection, docs.embeddings())
        store = made.store
        for s in range(0, len(docs.ids), 1000):
            store.add_embeddings(
                docs.texts[s : s + 1000],
                docs.vectors[s : s + 1000].tolist(),
                docs.metadatas[s : s + 1000],
                ids=docs.ids[s : s + 1000],
            )
        with psycopg.connect(url, autocommit=True) as conn:
            if config != "exact":  # an ANN index needs a vector(n) column
                dim = docs.vectors.shape[1]
                conn.execute(
                    f"ALTER TABLE langchain_pg_embedding ALTER COLUMN embedding TYPE vector({dim})"
                )
            if config == "hnsw":
                conn.execute(
                    "CREATE INDEX ON langchain_pg_embedding "
                    "USING hnsw (embedding vector_cosine_ops)"
                )
            elif config == "ivfflat":
                lists = max(1, len(docs.ids) // 1000)
                conn.execute(
                    "CREATE INDEX ON langchain_pg_embedding USING ivfflat "
                    f"(embedding vector_cosine_ops) WITH (lists = {lists})"
                )
            conn.execute("ANALYZE langchain_pg_embedding")  # as autovacuum would, soon after
        if config == "exact":  # no index to read the distance from
            made.cli_args = ("--distance", "cosine")
        return made

    def open(self, uri, collection, embeddings=None, framework="langchain") -> Made:
        """LangChain's ``PGVector`` of ``collection`` (made if missing, as the wrapper does) in
        the database at ``uri`` (``postgresql://...``), cosine, metadata as ``jsonb``; its
        close disposes of the wrapper's engine.

        Raises:
            NotImplementedError: ``framework`` is not ``"langchain"``.
        """
        if framework != "langchain":
            return super().open(uri, collection, embeddings, framework)
        from langchain_postgres import PGVector
        from langchain_postgres.vectorstores import DistanceStrategy

        store = PGVector(
            embeddings=embeddings,
            collection_name=collection,
            connection=uri.replace("postgresql://", "postgresql+psycopg://", 1),
            distance_strategy=DistanceStrategy.COSINE,
            # no embedding_length: langchain-postgres keeps the first one it is given in a
            # process-wide class; fill's ANN configurations set the column's dimension
            use_jsonb=True,
            create_extension=False,
        )

        def close() -> None:
            store._engine.dispose()

        return Made(store, "langchain", uri, collection, close, upserts=True)

    def settle(self, made: Made) -> None:
        """Wait until the server has seen a killed writer go: its advisory lock is freed."""
        import time

        import psycopg

        held = (
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
        )
        deadline = time.monotonic() + 15
        with psycopg.connect(made.uri, autocommit=True) as conn:
            while conn.execute(held).fetchone()[0]:
                assert time.monotonic() < deadline, "the killed writer's lock was not freed"
                time.sleep(0.02)

    def ann_slack(self, config: str) -> float:
        # IVFFlat's lists are k-means centroids of the vectors it was built on; tuned vectors
        # move, and one probe then misses a little more (nfcorpus: 1.1 points)
        return 0.015 if config == "ivfflat" else 0.01


class TestPgVector(StoreContract):
    KIND = PgVectorKind
