"""Behaviour tests for NudgeN / NudgeM, and agreement with a straightforward implementation."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose

from nudge_rag import DEFAULT_GAMMAS, NotFittedError, NudgeM, NudgeN, QuerySet
from nudge_rag._solver import _limits, fit_solver


# --------------------------------------------------------------------------- data
def make_task(seed=0, n_docs=300, dim=16, n_train=240, n_val=60, noise=0.9):
    """Queries whose answers are 1-3 docs; a shared shift creates a gap worth tuning."""
    rng = np.random.default_rng(seed)
    docs = rng.standard_normal((n_docs, dim)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    shift = rng.standard_normal(dim).astype(np.float32)

    def queries(n):
        answers = [
            rng.choice(n_docs // 2, size=rng.integers(1, 4), replace=False).tolist()
            for _ in range(n)
        ]
        q = np.stack([docs[a].mean(axis=0) for a in answers]) + 0.6 * shift
        q += noise * rng.standard_normal(q.shape).astype(np.float32) / np.sqrt(dim)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        return QuerySet(q.astype(np.float32), answers)

    return docs, queries(n_train), queries(n_val)


def normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --------------------------------------------------------------------------- naive reference
def naive_nudge_n(docs, train, val, gammas=DEFAULT_GAMMAS, k=1):
    """Dense, loop-by-loop NUDGE-N from the paper's formulas (the reference's algorithm)."""
    v = normalize(docs.astype(np.float64))
    g = np.zeros_like(v)
    for q, ans in zip(train.embeddings, train.answer_lists()):
        for a in ans:
            g[a] += q
    labels = np.zeros((val.n_queries, len(docs)))
    for i, ans in enumerate(val.answer_lists()):
        labels[i, ans] = 1

    def solve(gamma):
        out = v.copy()
        if gamma == 0:
            return out
        for j in range(len(v)):
            c, cc = g[j] @ v[j], g[j] @ g[j]
            if cc - c * c <= 1e-12 or c < 0:
                continue
            if v[j] @ (g[j] / np.sqrt(cc)) >= 1 - gamma / 2:
                out[j] = g[j] / np.sqrt(cc)
                continue
            mu = c + np.sqrt(gamma / (4 - gamma) * (cc - c * c))
            out[j] = v[j] + gamma * (g[j] - mu * v[j]) / (2 * (mu - c))
        return out

    best, best_acc = 0.0, -1.0
    for gamma in gammas:
        scores = val.embeddings.astype(np.float64) @ solve(gamma).T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        acc = np.mean(np.take_along_axis(labels, top, 1).sum(1) / np.minimum(labels.sum(1), k))
        if acc > best_acc + 1e-12:
            best, best_acc = gamma, acc
    return best, solve(best), best_acc


def naive_nudge_m(docs, train, val):
    """Dense NUDGE-M with the interval sweep over every (query, answer, other doc) triple."""
    v = normalize(docs.astype(np.float64))
    g = np.zeros_like(v)
    for q, ans in zip(train.embeddings, train.answer_lists()):
        for a in ans:
            g[a] += q
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    u = np.divide(g, norms, out=np.zeros_like(g), where=norms > 0)
    lows, highs = [], []
    for q, ans in zip(val.embeddings.astype(np.float64), val.answer_lists()):
        s, gg = v @ q, -(u @ q)
        for x in ans:
            lo, hi, ok = 0.0, np.inf, True
            for y in range(len(v)):
                sd, gd = s[y] - s[x], gg[y] - gg[x]
                if gd > 0:
                    lo = max(lo, sd / (gd + 1e-8))
                elif gd < 0:
                    hi = min(hi, sd / (gd + 1e-8))
                elif sd > 0:
                    ok = False
            if ok and hi >= lo:
                lows.append(lo)
                highs.append(hi)
    events = sorted([(x, 0) for x in lows] + [(x, 1) for x in highs])
    best, best_count, count, i = 0.0, 0, 0, 0
    while i < len(events):
        value = events[i][0]
        while i < len(events) and events[i][0] == value:
            count += 1 if events[i][1] == 0 else -1
            i += 1
        if count > best_count:
            best, best_count = value, count
    return best, v + best * u


# --------------------------------------------------------------------------- shared behaviour
class SolverBehaviour:
    """Run against both variants (like implicit's RecommenderBaseTestMixin)."""

    cls: type

    def make(self, **kw):
        return self.cls(**kw)

    def test_fit_returns_self_and_sets_attributes(self):
        docs, train, val = make_task()
        solver = self.make()
        assert solver.fit(docs, train, val) is solver
        assert solver.embeddings_.shape == docs.shape
        assert solver.embeddings_.dtype == np.float32
        assert solver.changed_embeddings_.shape == (solver.changed_rows_.size, docs.shape[1])
        assert solver.gamma_ > 0, "the task is built so that tuning helps"
        assert 0 <= solver.val_score_ <= 1

    def test_unfitted_raises(self):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            _ = self.make().embeddings_

    def test_gamma_zero_is_identity(self):
        docs, train, val = make_task()
        solver = self.make(gamma=0.0).fit(docs, train, val)
        assert solver.changed_rows_.size == 0
        assert_allclose(solver.embeddings_, normalize(docs), atol=1e-6)

    def test_rows_without_training_queries_do_not_move(self):
        docs, train, val = make_task()
        solver = self.make().fit(docs, train, val)
        trained = np.unique(train.indices)
        untouched = np.setdiff1d(np.arange(len(docs)), trained)
        assert np.isin(solver.changed_rows_, trained).all()
        assert_allclose(solver.embeddings_[untouched], normalize(docs)[untouched], atol=1e-6)

    def test_changed_rows_are_exactly_the_rows_that_differ(self):
        docs, train, val = make_task()
        solver = self.make().fit(docs, train, val)
        moved = np.flatnonzero(np.abs(solver.embeddings_ - normalize(docs)).max(axis=1) > 1e-6)
        assert_allclose(np.sort(solver.changed_rows_), moved)

    def test_passive_rows_give_the_same_result_as_passing_everything(self):
        """Automatic handling of rows that answer nothing = the reference's manual split."""
        docs, train, val = make_task()
        full = self.make().fit(docs, train, val)
        answered = np.unique(np.concatenate([train.indices, val.indices]))
        rest = np.setdiff1d(np.arange(len(docs)), answered)
        remap = np.full(len(docs), -1)
        remap[answered] = np.arange(answered.size)
        sub_train = QuerySet(train.embeddings, (train.indptr, remap[train.indices]))
        sub_val = QuerySet(val.embeddings, (val.indptr, remap[val.indices]))
        split = fit_solver(
            self.make(), docs[answered], sub_train, sub_val, nontrain_embeddings=docs[rest]
        )
        assert split.gamma_ == pytest.approx(full.gamma_, rel=1e-6)
        assert_allclose(split.embeddings_, full.embeddings_[answered], atol=1e-5)

    def test_block_size_does_not_change_the_result(self):
        docs, train, val = make_task()
        a = self.make(batch_size=7).fit(docs, train, val)
        b = self.make(batch_size=100_000).fit(docs, train, val)
        assert a.gamma_ == b.gamma_
        assert_allclose(a.embeddings_, b.embeddings_, atol=1e-6)

    def test_memmap_input(self, tmp_path):
        docs, train, val = make_task()
        path = tmp_path / "docs.npy"
        np.save(path, docs)
        mm = np.load(path, mmap_mode="r")
        a = self.make().fit(mm, train, val)
        b = self.make().fit(docs, train, val)
        assert a.gamma_ == b.gamma_
        assert_allclose(a.embeddings_, b.embeddings_, atol=1e-6)

    def test_float64_inputs_are_accepted(self):
        docs, train, val = make_task()
        t64 = QuerySet(train.embeddings.astype(np.float64), (train.indptr, train.indices))
        a = self.make().fit(docs.astype(np.float64), t64, val)
        b = self.make().fit(docs, train, val)
        assert a.gamma_ == pytest.approx(b.gamma_, rel=1e-5)
        assert a.embeddings_.dtype == np.float32

    def test_cv_none_splits_training_queries_reproducibly(self):
        docs, train, _ = make_task()
        a = self.make(cv=None, random_state=3).fit(docs, train)
        b = self.make(cv=None, random_state=3).fit(docs, train)
        assert a.n_val_queries_ == round(0.1 * train.n_queries)
        assert a.n_train_queries_ == train.n_queries - a.n_val_queries_
        assert a.gamma_ == b.gamma_
        assert a.gamma_chosen_by_ == "val" and a.n_folds_ == 0 and a.cv_scores_ is None

    def test_val_none_cross_validates_and_fits_on_every_query(self):
        docs, train, _ = make_task()
        solver = self.make().fit(docs, train)
        assert solver.gamma_chosen_by_ == "cv"
        assert solver.n_folds_ == 10
        assert solver.n_train_queries_ == solver.n_val_queries_ == train.n_queries

    def test_how_gamma_was_chosen_is_reported(self):
        docs, train, val = make_task()
        assert self.make().fit(docs, train, val).gamma_chosen_by_ == "val"
        fixed = self.make(gamma=0.1).fit(docs, train)
        assert fixed.gamma_chosen_by_ == "fixed" and fixed.val_score_ is None

    def test_reference_dict_input(self):
        docs, train, val = make_task()
        as_dict = {"q_embs": train.embeddings, "q_ans_indx": train.answer_lists()}
        a = self.make().fit(docs, as_dict, (val.embeddings, val.answer_lists()))
        b = self.make().fit(docs, train, val)
        assert a.gamma_ == b.gamma_

    # ---------------------------------------------------------------- bad input
    def test_dimension_mismatch(self):
        docs, train, val = make_task()
        with pytest.raises(
            ValueError, match="train query embeddings have 16 dimensions, but the documents have 15"
        ):
            self.make().fit(docs[:, :15], train, val)

    def test_nan_in_documents(self):
        docs, train, val = make_task()
        docs[5, 3] = np.nan
        with pytest.raises(ValueError, match="row 5 holds NaN or inf"):
            self.make().fit(docs, train, val)

    def test_nan_in_passive_documents_is_reported_with_its_row(self):
        docs, train, val = make_task()
        docs[-1, 0] = np.inf  # the last rows answer nothing
        with pytest.raises(ValueError, match=f"row {len(docs) - 1} holds NaN or inf"):
            self.make().fit(docs, train, val)

    def test_nan_in_queries(self):
        docs, train, val = make_task()
        q = train.embeddings.copy()
        q[2, 0] = np.nan
        with pytest.raises(ValueError, match="query embeddings must be finite, but row 2"):
            self.make().fit(docs, QuerySet(q, train.answer_lists()), val)

    def test_wrong_ndim(self):
        _, train, val = make_task()
        with pytest.raises(ValueError, match="doc_embeddings must be 2-D .* got 1-D"):
            self.make().fit(np.ones(16, dtype=np.float32), train, val)

    def test_non_numeric(self):
        _, train, val = make_task()
        with pytest.raises(TypeError, match="doc_embeddings must be a numeric array"):
            self.make().fit(np.array([["a"] * 16]), train, val)

    def test_empty_train_set(self):
        docs, _, val = make_task()
        with pytest.raises(ValueError, match="query embeddings is empty"):
            self.make().fit(docs, QuerySet(np.zeros((0, 16), np.float32), []), val)

    def test_answer_out_of_range(self):
        docs, train, val = make_task()
        answers = train.answer_lists()
        answers[4] = [len(docs)]
        with pytest.raises(ValueError, match=rf"train answers\[4\] names document row {len(docs)}"):
            self.make().fit(docs, QuerySet(train.embeddings, answers), val)

    def test_negative_answer_index(self):
        """The reference silently moves the last document for index -1."""
        docs, train, val = make_task()
        answers = train.answer_lists()
        answers[0] = [-1]
        with pytest.raises(ValueError, match="negative indices are not allowed"):
            self.make().fit(docs, QuerySet(train.embeddings, answers), val)

    def test_queries_without_answers_are_dropped_with_a_warning(self, caplog):
        """The reference lets one answerless validation query disable NUDGE-N (NaN accuracy)."""
        docs, train, val = make_task()
        answers = val.answer_lists()
        answers[0] = []
        with caplog.at_level(logging.WARNING):
            solver = self.make().fit(docs, train, QuerySet(val.embeddings, answers))
        assert "dropped 1 query with no answers" in caplog.text
        assert solver.gamma_ > 0
        assert solver.n_val_queries_ == val.n_queries - 1

    def test_all_validation_queries_without_answers(self):
        docs, train, val = make_task()
        with pytest.raises(ValueError, match="val has no query with an answer"):
            self.make().fit(
                docs, train, QuerySet(val.embeddings, [[] for _ in range(val.n_queries)])
            )

    def test_duplicate_answers_are_merged(self, caplog):
        docs, train, val = make_task()
        answers = train.answer_lists()
        answers[1] = answers[1] + answers[1]
        with caplog.at_level(logging.WARNING):
            a = self.make().fit(docs, QuerySet(train.embeddings, answers), val)
        assert "merged" in caplog.text
        b = self.make().fit(docs, train, val)
        assert a.gamma_ == b.gamma_

    def test_zero_document_vector(self):
        docs, train, val = make_task()
        docs[train.indices[0]] = 0
        with pytest.raises(ValueError, match="is all zeros"):
            self.make().fit(docs, train, val)

    def test_gamma_as_list_is_refused(self):
        docs, train, val = make_task()
        with pytest.raises(TypeError, match="gamma must be a single number"):
            self.make(gamma=[0.1, 0.2]).fit(docs, train, val)

    def test_negative_gamma(self):
        docs, train, val = make_task()
        with pytest.raises(ValueError, match="gamma must be a finite number"):
            self.make(gamma=-0.1).fit(docs, train, val)


class TestNudgeN(SolverBehaviour):
    cls = NudgeN

    def test_output_rows_are_unit_norm(self):
        docs, train, val = make_task()
        solver = NudgeN().fit(docs * 3.0, train, val)
        assert_allclose(np.linalg.norm(solver.embeddings_, axis=1), 1.0, atol=1e-5)

    @pytest.mark.parametrize("gamma", [0.02, 0.1, 0.48, 1.0, 2.0])
    def test_each_moved_row_within_the_bound(self, gamma):
        docs, train, val = make_task()
        solver = NudgeN(gamma=gamma).fit(docs, train, val)
        step = np.linalg.norm(
            solver.changed_embeddings_ - normalize(docs)[solver.changed_rows_], axis=1
        )
        assert step.size > 0
        assert (step <= np.sqrt(gamma) + 1e-5).all()

    def test_chosen_gamma_scores_best_on_validation(self):
        docs, train, val = make_task()
        solver = NudgeN().fit(docs, train, val)
        scores = solver.gamma_scores_
        assert set(scores) == set(DEFAULT_GAMMAS)
        assert solver.val_score_ == max(scores.values())
        assert solver.gamma_ == min(g for g, s in scores.items() if s == solver.val_score_)
        # and that score is really the validation recall@1 of the output
        top = np.argmax(val.embeddings @ solver.embeddings_.T, axis=1)
        hits = [t in set(a) for t, a in zip(top, val.answer_lists())]
        assert solver.val_score_ == pytest.approx(np.mean(hits))

    @pytest.mark.parametrize("seed", [0, 1, 2, 3])
    @pytest.mark.parametrize("k", [1, 3])
    def test_agrees_with_straightforward_implementation(self, seed, k):
        docs, train, val = make_task(seed)
        gamma, expected, acc = naive_nudge_n(docs, train, val, k=k)
        solver = NudgeN(val_k=k).fit(docs, train, val)
        assert solver.gamma_ == pytest.approx(gamma)
        assert solver.val_score_ == pytest.approx(acc)
        assert_allclose(solver.embeddings_, expected, atol=2e-5)

    def test_custom_grid(self):
        docs, train, val = make_task()
        solver = NudgeN(gammas=[0.05, 0.3]).fit(docs, train, val)
        assert solver.gamma_ in (0.05, 0.3)

    def test_gamma_above_two_is_refused(self):
        docs, train, val = make_task()
        with pytest.raises(ValueError, match=r"in \[0, 2.0\]"):
            NudgeN(gamma=2.5).fit(docs, train, val)

    def test_query_equal_to_its_answer_gives_no_nan(self):
        """float32 cancellation in |g|^2 - (g.v)^2 made NaN rows in the reference."""
        docs, train, val = make_task()
        answers = [[j] for j in range(50)]
        train_eq = QuerySet(normalize(docs[:50]) * 1.0000001, answers)
        solver = NudgeN(gamma=0.3).fit(docs, train_eq, val)
        assert np.isfinite(solver.embeddings_).all()
        assert_allclose(np.linalg.norm(solver.embeddings_, axis=1), 1.0, atol=1e-5)


class TestNudgeM(SolverBehaviour):
    cls = NudgeM

    def test_each_moved_row_changes_by_exactly_gamma(self):
        docs, train, val = make_task()
        solver = NudgeM().fit(docs, train, val)
        step = np.linalg.norm(
            solver.changed_embeddings_ - normalize(docs)[solver.changed_rows_], axis=1
        )
        assert_allclose(step, solver.gamma_, rtol=1e-5)

    @pytest.mark.parametrize("seed", [0, 1, 2, 3])
    def test_agrees_with_straightforward_implementation(self, seed):
        docs, train, val = make_task(seed, n_docs=120, n_train=100, n_val=40)
        gamma, expected = naive_nudge_m(docs, train, val)
        solver = NudgeM().fit(docs, train, val)
        assert solver.gamma_ == pytest.approx(gamma, rel=1e-4)  # float32 slopes; gamma can be ~100
        assert_allclose(solver.embeddings_, expected, rtol=1e-4, atol=1e-5)

    def test_sweep_score_bounds_validation_hit_at_1_everywhere(self):
        """The sweep maximises the number of winning intervals covering gamma.

        Intervals are closed, and gamma is the left end of the best stretch (as in nudge-ft),
        where the winning answer ties with a competitor; so the sweep's count is an upper
        bound of the true hit@1 at every gamma, and the true hit@1 just right of the chosen
        gamma reaches it.
        """
        docs, train, val = make_task()
        solver = NudgeM().fit(docs, train, val)
        for gamma in np.linspace(0, 3 * solver.gamma_ + 0.1, 25):
            other = NudgeM(gamma=float(gamma)).fit(docs, train, val)
            assert other.val_score_ <= solver.val_score_ + 1e-12
        right = NudgeM(gamma=solver.gamma_ * (1 + 1e-4)).fit(docs, train, val)
        assert right.val_score_ >= solver.val_score_ - 1 / val.n_queries - 1e-12


def test_similarity_contract():
    assert NudgeN.similarity == "cosine"
    assert NudgeM.similarity == "dot"


def test_repr_and_params():
    assert repr(NudgeN(val_k=3)).startswith("NudgeN(gamma=None")
    assert NudgeM().get_params()["gamma"] is None


@pytest.mark.parametrize("cls", [NudgeN, NudgeM])
def test_early_stop_in_streaming_pass_changes_nothing(cls, monkeypatch):
    """Queries that cannot win stop being scored; the result must be identical."""
    docs, train, val = make_task(seed=4, n_docs=2000)
    monkeypatch.setattr(_limits, "EARLY_STOP_SCORES", 1 << 62)
    plain = cls().fit(docs, train, val)
    monkeypatch.setattr(_limits, "EARLY_STOP_SCORES", 0)
    monkeypatch.setattr(_limits, "BLOCK_ELEMENTS", 60 * 64)  # many small blocks
    monkeypatch.setattr(_limits, "STREAM_BLOCK", 60 * 64)
    early = cls().fit(docs, train, val)
    # other block shapes change BLAS rounding in the last float32 bits, nothing more
    assert early.gamma_ == pytest.approx(plain.gamma_, rel=1e-5)
    assert early.val_score_ == plain.val_score_
    assert_allclose(early.embeddings_, plain.embeddings_, atol=1e-5)


@pytest.mark.parametrize("cls", [NudgeN, NudgeM])
def test_show_progress_draws_a_bar_over_the_passive_documents(cls, capsys):
    pytest.importorskip("tqdm", reason="pip install 'nudge-rag[progress]'")
    docs, train, val = make_task()
    quiet = cls().fit(docs, train, val)
    assert "passive documents" not in capsys.readouterr().err
    loud = cls(show_progress=True).fit(docs, train, val)
    assert "nudge-rag: passive documents" in capsys.readouterr().err
    assert loud.gamma_ == quiet.gamma_


def test_show_progress_without_tqdm_logs_a_hint(monkeypatch, caplog):
    docs, train, val = make_task()
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with caplog.at_level(logging.WARNING):
        solver = NudgeN(show_progress=True).fit(docs, train, val)
    assert "pip install tqdm" in caplog.text
    assert solver.gamma_ == NudgeN().fit(docs, train, val).gamma_
