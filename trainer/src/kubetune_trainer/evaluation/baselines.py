"""Classical baselines for numeric tasks, fitted on the training rows and
scored on the same test rows as the models: what a fine-tuned model has to beat
to be worth serving.

- mean: always answer the training answers' mean;
- linear: ridge regression on the prompt text (TF-IDF of words and word pairs)
  plus the numbers the prompt contains;
- randomForest: a random forest on the same features (seeded).

Features are deliberately generic: the baselines know nothing about the task
that the prompt text does not show.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubetune_contract.answers import NUMBER

MAX_PROMPT_NUMBERS = 8  # numbers read from each prompt, in order (0 where fewer)


def _numbers(texts: Sequence[str]):
    import numpy as np

    rows = []
    for text in texts:
        found = [float(n) for n in NUMBER.findall(text)[:MAX_PROMPT_NUMBERS]]
        rows.append(found + [0.0] * (MAX_PROMPT_NUMBERS - len(found)))
    return np.array(rows)


def _features(vectorizer, texts: Sequence[str], fit: bool):
    from scipy.sparse import csr_matrix, hstack

    words = vectorizer.fit_transform(texts) if fit else vectorizer.transform(texts)
    return hstack([words, csr_matrix(_numbers(texts))]).tocsr()


def _regressor(name: str, seed: int):
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import Ridge

    if name == "linear":
        return Ridge(alpha=1.0)
    return RandomForestRegressor(n_estimators=200, random_state=seed, n_jobs=1)


def predict(names: Sequence[str], train_prompts: Sequence[str], train_values: Sequence[float], test_prompts: Sequence[str],
            *, seed: int) -> dict[str, list[float]]:
    """{baseline: a prediction per test prompt}."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    mean = sum(train_values) / len(train_values)
    out: dict[str, list[float]] = {}
    if "mean" in names:
        out["mean"] = [mean] * len(test_prompts)
    learned = [n for n in names if n != "mean"]
    if learned:
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1)
        x_train = _features(vectorizer, train_prompts, fit=True)
        x_test = _features(vectorizer, test_prompts, fit=False)
        for name in learned:
            model = _regressor(name, seed).fit(x_train, list(train_values))
            out[name] = [float(v) for v in model.predict(x_test)]
    return out
