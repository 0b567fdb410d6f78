"""The dataset section (`spec.dataset`): one training set (trainUri) or several
mixed by weight (sources), their row formats and column names, and how the
rows are read (in memory, or streamed). Composed by `sections` like the rest."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from .base import ApiModel, Rule
from .uris import UriType

DatasetFormat = Literal["auto", "instruction", "chat", "completion", "text", "preference", "unpaired", "prompts"]


class ColumnMapping(ApiModel):
    """Which of your columns hold each field of the chosen format (defaults are the usual names)."""

    instruction: str | None = Field(None, max_length=256, description="instruction format: the task (default `instruction`).")
    input: str | None = Field(None, max_length=256, description="instruction format: optional context (default `input`).")
    output: str | None = Field(None, max_length=256, description="instruction format: the answer trained on (default `output`).")
    prompt: str | None = Field(None, max_length=256, description="completion format: the prompt (default `prompt`).")
    completion: str | None = Field(None, max_length=256, description="completion format: the completion trained on (default `completion`).")
    messages: str | None = Field(None, max_length=256, description="chat format: the list of {role, content} messages (default `messages`).")
    text: str | None = Field(None, max_length=256, description="text format: the raw text (default `text`).")
    chosen: str | None = Field(None, max_length=256, description="preference format: the better answer (default `chosen`).")
    rejected: str | None = Field(None, max_length=256, description="preference format: the worse answer (default `rejected`).")
    label: str | None = Field(None, max_length=256, description="unpaired format: true for a desirable completion, false for an undesirable one (default `label`).")
    answer: str | None = Field(None, max_length=256, description="prompts format: the reference answer rewards compare with (default `answer`).")


# Several sources mixed by weight: enough for a mix of a few corpora, small
# enough for the CRD's CEL cost budget and for status.dataset.sources.
MAX_SOURCES = 32
TRAIN_URI_OR_SOURCES = "set dataset.trainUri (one training set) or dataset.sources (several, mixed by weight), not both"
TRAIN_DATA_REQUIRED = "dataset needs training data: set dataset.trainUri, or dataset.sources to mix several by weight"


class DatasetSource(ApiModel):
    """One training set of a mix (dataset.sources): read, checked and normalised on its own, then mixed by weight."""

    uri: UriType("hf", "s3", "pvc", "file", description="This source's data: a JSONL/JSON/CSV/Parquet file or a saved `datasets` directory (the same kinds as trainUri).")
    weight: float = Field(1.0, gt=0, le=1_000_000, description="This source's share of the mixed training epoch, relative to the other sources' weights (0.5, 0.3, 0.2 and 5, 3, 2 mix alike); a source smaller than its share repeats rows.")
    format: DatasetFormat = Field("auto", description="This source's row format (as dataset.format), auto-detected among the objective's formats by default.")
    columns: ColumnMapping | None = Field(None, description="This source's column names, when they differ from its format's defaults.")


# dataset.streaming reads JSONL and Parquet files row by row: a trainUri that
# names one (any case), or a directory (a trailing slash, or a last segment
# without a suffix) whose files the trainer checks when it lists them.
STREAMABLE_URI = r"(?i)^(s3|pvc|file)://(.*\.(jsonl|parquet)|.*/|[^/]+|.*/[^/.]+)$"
STREAMING_NEEDS_JSONL_OR_PARQUET = Rule(
    "dataset.streaming reads .jsonl or .parquet files: trainUri must name one, or a directory of them (s3://, pvc:// or "
    "file://; not hf://, .json or .csv); turn streaming off for other data",
    lambda d: not d.streaming or d.train_uri is None or re.match(STREAMABLE_URI, d.train_uri) is not None,
    cel=f"!has(self.streaming) || !self.streaming || !has(self.trainUri) || self.trainUri.matches('{STREAMABLE_URI.replace(chr(92), chr(92) * 2)}')",
    field_path=".streaming",
)
STREAMING_WITHOUT_DEDUPE = Rule(
    "dataset.dedupe is not available with dataset.streaming: finding duplicates needs every row's hash in memory; "
    "remove them before training (kubetune validate --dataset lists them) or turn streaming off",
    lambda d: not (d.streaming and d.dedupe),
    cel="!has(self.streaming) || !self.streaming || !has(self.dedupe) || !self.dedupe",
    field_path=".dedupe",
)
STREAMING_ONE_SOURCE = Rule(
    "dataset.streaming reads one training set (trainUri), not dataset.sources: mixing by weight needs each source's rows "
    "counted and drawn in memory; set trainUri to a .jsonl or .parquet file (or a directory of them), or turn streaming off",
    lambda d: not (d.streaming and d.sources),
    cel="!has(self.streaming) || !self.streaming || !has(self.sources)",
    field_path=".streaming",
)


class DatasetSpec(ApiModel):
    """Training (and optionally evaluation) data."""

    rules = (
        Rule("set either evalUri or evalSplit, not both",
             lambda d: not (d.eval_uri and d.eval_split is not None),
             cel="!(has(self.evalUri) && has(self.evalSplit))"),
        Rule(TRAIN_URI_OR_SOURCES, lambda d: not (d.train_uri and d.sources),
             cel="!(has(self.trainUri) && has(self.sources))", field_path=".sources"),
        Rule(TRAIN_DATA_REQUIRED, lambda d: bool(d.train_uri or d.sources),
             cel="has(self.trainUri) || has(self.sources)", field_path=".trainUri"),
        STREAMING_NEEDS_JSONL_OR_PARQUET,
        STREAMING_WITHOUT_DEDUPE,
        STREAMING_ONE_SOURCE,
    )

    train_uri: UriType("hf", "s3", "pvc", "file", description="Training data: a JSONL/JSON/CSV/Parquet file or a saved `datasets` directory (or set sources to mix several).") | None = None
    sources: list[DatasetSource] | None = Field(
        None, min_length=1, max_length=MAX_SOURCES,
        description="Several training sets mixed by weight, instead of trainUri. Each is checked and normalised on its own (its own format and columns; formats must make one training shape: instruction, completion and chat mix, text mixes only with text); dedupe, evalSplit and evaluation.testSplit are applied to each source before mixing, so no held-out row reaches training through another source. The mixed epoch has as many rows as the sources' training rows together; each source gets round(share x that) of them, drawn without repeats while its rows last, then repeated whole before a seeded draw of the rest (training.seed). The report and status.dataset.sources give each source's rows read and rows consumed.")
    eval_uri: UriType("hf", "s3", "pvc", "file", description="Held-out evaluation data (same formats).") | None = None
    eval_split: float | None = Field(None, gt=0, lt=0.5, description="Fraction of the training data held out for evaluation (deterministic by seed) when no evalUri is given; with sources, of each source.")
    format: DatasetFormat = Field("auto", description="Row format: instruction (alpaca), chat (messages), completion (prompt/completion), text; preference (prompt/chosen/rejected, strings or message lists: objectives dpo, orpo); unpaired (prompt/completion/label: objective kto); prompts (prompt, optional answer: objective grpo); or auto-detect among the objective's formats. With sources: the format of evalUri and evaluation.testUri (each source has its own).")
    columns: ColumnMapping | None = Field(None, description="Column names, when yours differ from the format's defaults. With sources: those of evalUri and evaluation.testUri (each source has its own).")
    max_seq_length: int = Field(2048, ge=16, le=131072, description="Tokens per example; longer examples are truncated and counted in the report.")
    packing: bool = Field(False, description="Pack several examples per sequence (padding-free where supported) for throughput.")
    dedupe: bool = Field(False, description="Drop exact duplicate rows before training (with sources: within each source; not with streaming).")
    streaming: bool = Field(
        False, description="Read the training rows lazily, file by file, instead of loading them into memory, for data larger "
                           "than the pod's memory: .jsonl or .parquet files (or a directory of them), objective sft. Rows go to "
                           "validation (evalSplit) or test (evaluation.testSplit) by a stable hash of their content; the total "
                           "steps come from training.maxSteps, or else from one counting pass before training; a resumed run "
                           "continues at the committed step's row. Not with dedupe.")

    @property
    def training_sources(self) -> list[DatasetSource]:
        """The training sets as sources: trainUri is one source of weight 1 with the dataset's format and columns."""
        if self.sources:
            return list(self.sources)
        return [DatasetSource(uri=self.train_uri, weight=1.0, format=self.format, columns=self.columns)]

    @property
    def train_label(self) -> str:
        """The training data in words: trainUri, or the sources' URIs."""
        return self.train_uri or ", ".join(s.uri for s in self.sources or [])

    @property
    def has_eval(self) -> bool:
        return bool(self.eval_uri or self.eval_split)
