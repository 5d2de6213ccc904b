"""The reference-compatible layer (nudge_rag.compat) and the package surface."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from test_solver import make_task

import nudge_rag
from nudge_rag.compat import NUDGEM, NUDGEN


def as_dict(qs):
    return {"q_embs": qs.embeddings, "q_ans_indx": qs.answer_lists()}


@pytest.mark.parametrize("cls, solver", [(NUDGEN, nudge_rag.NudgeN), (NUDGEM, nudge_rag.NudgeM)])
def test_finetune_embeddings_matches_the_estimator(cls, solver):
    docs, train, val = make_task()
    model = cls()
    out = model.finetune_embeddings(docs, as_dict(train), as_dict(val))
    fitted = solver().fit(docs, train, val)
    assert_allclose(out, fitted.embeddings_)
    # The compat call writes moved rows straight into its output; the estimator's changed
    # rows and vectors are still there, the same as a plain fit's.
    assert model.solver_.changed_rows_.size > 0
    assert_array_equal(model.solver_.changed_rows_, fitted.changed_rows_)
    assert_allclose(model.solver_.changed_embeddings_, fitted.changed_embeddings_)
    assert_allclose(out[fitted.changed_rows_], fitted.changed_embeddings_)
    assert model.solver_.embeddings_ is out


def test_finetune_embeddings_leaves_rows_without_queries_normalised():
    docs, train, val = make_task()
    docs = docs * np.float32(3.0)
    model = NUDGEN()
    out = model.finetune_embeddings(docs, as_dict(train), as_dict(val))
    still = np.setdiff1d(np.arange(docs.shape[0]), model.solver_.changed_rows_)
    assert still.size > 0
    unit = docs[still] / np.linalg.norm(docs[still], axis=1, keepdims=True)
    assert_allclose(out[still], unit, rtol=1e-6, atol=1e-7)


def test_nontrain_embeddings_are_competitors_only():
    docs, train, val = make_task()
    extra = np.random.default_rng(5).standard_normal((50, docs.shape[1])).astype(np.float32)
    out = NUDGEN().finetune_embeddings(
        docs, as_dict(train), as_dict(val), nontrain_embeddings=extra
    )
    assert out.shape == docs.shape


def test_gamma_list_is_searched_for_nudge_n():
    docs, train, val = make_task()
    model = NUDGEN()
    model.finetune_embeddings(docs, as_dict(train), as_dict(val), gamma=[0.04, 0.2])
    assert model.solver_.gamma_ in (0.04, 0.2)


def test_mixed_float64_queries_and_float32_docs():
    """The reference crashes on float32 documents with float64 queries."""
    docs, train, val = make_task()
    t = as_dict(train)
    t["q_embs"] = t["q_embs"].astype(np.float64)
    out = NUDGEN().finetune_embeddings(docs, t, as_dict(val))
    assert out.dtype == np.float32


def test_import_loads_no_framework():
    code = (
        "import sys, nudge_rag, nudge_rag.compat, nudge_rag.cli\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'langchain_core', 'llama_index', 'tqdm')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
