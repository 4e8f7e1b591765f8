"""Suggesting a class for a new case from the words of past, classified cases.

A multinomial naive Bayes model over word tokens: for each class, how often each token appeared
in the subject and text of the last ``TRAINING_CASES`` cases agents classified. Built-in seed
keywords in English and Korean are counted as if a few cases had used them, so that a fresh
install suggests something sensible and a site's own history soon outweighs them.

Korean is written without spaces between a stem and its endings ("오류가", "오류입니다"), so
Hangul runs are also cut into character bigrams: "오류가" gives "오류가", "오류" and "류가", and
matches the seed "오류" whatever ending follows.

The model is built once per process and rebuilt when older than ``REFRESH_SECONDS`` (or at once
after ``forget()``); suggestions need no query while it is fresh.
"""

import math
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass

from django.db.models.functions import Substr

from .models import Case

TRAINING_CASES = 2000
REFRESH_SECONDS = 600
# How many classified cases one seed keyword counts as.
SEED_WEIGHT = 3
# Characters of a case's text that are learnt from; the opening says what the case is about.
TEXT_CHARS = 2000

Kind = Case.Kind

SEEDS: dict[str, tuple[str, ...]] = {
    Kind.DEFECT: (
        *("error", "errors", "bug", "bugs", "crash", "crashes", "crashed", "broken", "fails"),
        *("failed", "failure", "exception", "wrong", "500", "freeze", "freezes", "stuck"),
        *("doesn't work", "not working", "stopped working", "cannot", "can't", "unable"),
        *("오류", "에러", "안 돼요", "안돼요", "안 됩니다", "안됩니다", "버그", "장애", "먹통"),
        *("실패", "멈춤", "멈춰", "깨짐", "작동하지", "동작하지", "튕겨", "튕김"),
    ),
    Kind.FEATURE_REQUEST: (
        *("feature", "features", "request", "suggestion", "suggest", "would", "wish", "please"),
        *("add", "support", "option", "allow", "ability", "improvement", "enhancement"),
        *("기능 추가", "기능", "추가", "요청", "개선", "제안", "지원해", "있으면", "좋겠"),
        *("원합니다", "희망", "옵션"),
    ),
    Kind.QUESTION: (
        *("how", "what", "where", "when", "which", "why", "question", "help", "guide"),
        *("documentation", "manual", "explain", "possible", "tutorial", "setup", "configure"),
        *("사용법", "어떻게", "방법", "문의", "질문", "궁금", "알려", "설정", "가능한가요"),
        *("하나요", "되나요", "인가요", "매뉴얼", "설명"),
    ),
    Kind.BILLING: (
        *("invoice", "invoices", "billing", "bill", "billed", "charge", "charged", "payment"),
        *("refund", "price", "pricing", "subscription", "receipt", "card", "tax", "paid"),
        *("청구", "환불", "결제", "요금", "청구서", "영수증", "세금계산서", "카드", "입금"),
        *("환급", "구독", "비용", "과금"),
    ),
    Kind.OTHER: (
        *("partnership", "partner", "job", "career", "press", "marketing", "unsubscribe"),
        *("제휴", "채용", "광고", "홍보", "협력", "입사"),
    ),
}

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[\uac00-\ud7a3]+")
_STOPWORDS = frozenset(
    (
        *("a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "i"),
        *("in", "is", "it", "its", "me", "my", "of", "on", "or", "our", "so", "that", "the"),
        *("this", "to", "was", "we", "with", "you", "your"),
    )
)


def tokens(text: str) -> list[str]:
    """Words (lower case, English stop words dropped) and, for Hangul, character bigrams."""
    found = []
    for word in _WORD.findall(text.casefold().replace("\u2019", "'")):
        if "\uac00" <= word[0] <= "\ud7a3":
            found.append(word)
            found.extend(word[i : i + 2] for i in range(len(word) - 1) if len(word) > 2)
        elif word not in _STOPWORDS and (len(word) > 1 or word.isdigit()):
            found.append(word)
    return found


@dataclass
class Model:
    """Token counts per class, and how many cases (real or seeded) each class has."""

    counts: dict[str, Counter]
    totals: dict[str, int]
    documents: dict[str, int]
    vocabulary: frozenset[str]

    @classmethod
    def learn(cls, examples: list[tuple[str, str]]) -> "Model":
        """A model from (kind, text) examples on top of the seed keywords."""
        counts: dict[str, Counter] = {kind: Counter() for kind in SEEDS}
        documents = dict.fromkeys(SEEDS, 0)
        for kind, keywords in SEEDS.items():
            for keyword in keywords:
                for token in tokens(keyword):
                    counts[kind][token] += SEED_WEIGHT
            documents[kind] += SEED_WEIGHT
        for kind, text in examples:
            if kind not in counts:
                continue
            counts[kind].update(tokens(text))
            documents[kind] += 1
        vocabulary = frozenset(token for counter in counts.values() for token in counter)
        totals = {kind: sum(counter.values()) for kind, counter in counts.items()}
        return cls(counts, totals, documents, vocabulary)

    def scores(self, text: str) -> dict[str, float]:
        """Log-probability of each class for ``text``; empty when no token is known."""
        known = [token for token in tokens(text) if token in self.vocabulary]
        if not known:
            return {}
        size = len(self.vocabulary)
        all_documents = sum(self.documents.values())
        scores = {}
        for kind, counter in self.counts.items():
            score = math.log(self.documents[kind] / all_documents)
            denominator = self.totals[kind] + size
            for token in known:
                score += math.log((counter[token] + 1) / denominator)
            scores[kind] = score
        return scores

    def suggest(self, text: str) -> str:
        scores = self.scores(text)
        if not scores:
            return ""
        return max(scores, key=lambda kind: (scores[kind], kind == Kind.QUESTION))


_lock = threading.Lock()
_model: Model | None = None
_built_at = 0.0


def model() -> Model:
    """The process's model, rebuilt from the database when it is stale."""
    global _model, _built_at
    with _lock:
        if _model is None or time.monotonic() - _built_at > REFRESH_SECONDS:
            _model = Model.learn(_examples())
            _built_at = time.monotonic()
        return _model


def forget() -> None:
    """Rebuild the model on the next suggestion (after a bulk reclassification, in tests)."""
    global _model
    with _lock:
        _model = None


def _examples() -> list[tuple[str, str]]:
    rows = (
        Case.objects.exclude(kind=Kind.UNCLASSIFIED)
        .order_by("-id")
        .annotate(opening=Substr("description", 1, TEXT_CHARS))
        .values_list("kind", "subject", "opening")[:TRAINING_CASES]
    )
    return [(kind, f"{subject}\n{opening}") for kind, subject, opening in rows]


def suggest_kind(subject: str, text: str) -> str:
    """A ``Case.Kind`` value, or "" when there is nothing to go on."""
    return model().suggest(f"{subject}\n{text[:TEXT_CHARS]}")
