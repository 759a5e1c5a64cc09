"""What downstream evaluation costs, before anything runs: lm-eval requests per final model,
their tokens and forward FLOPs (requests × tokens per request × the model's forward FLOPs per
token, ≈ 2 × parameters).

A multiple-choice example is one request per choice (context + that choice, scored in one
forward pass); a few-shot prompt repeats about one example per shot. lm-eval's own tasks are
sized from a table of their evaluation splits (documented example counts, choices, and typical
tokens per request under a GPT-NeoX-style tokenizer): their data is not downloaded to count
them, so these are estimates. A task not in the table is counted as unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from regmix.evaluation.continuation import example_bytes
from regmix.observe.costs import BYTES_PER_SUBWORD_TOKEN, RunCost


@dataclass(frozen=True)
class TaskSize:
    examples: int
    """Examples in the split lm-eval scores (dataset cards)."""
    choices: int
    """Requests per example (1: a single loglikelihood, e.g. LAMBADA's last word)."""
    tokens: int
    """Typical tokens per request (context + continuation), an estimate."""


KNOWN_TASKS: dict[str, TaskSize] = {
    # RegMix's downstream benchmarks (Liu et al. 2025, section 4), lm-eval's task names.
    "social_iqa": TaskSize(1954, 3, 45),
    "hellaswag": TaskSize(10042, 4, 110),
    "piqa": TaskSize(1838, 2, 50),
    "openbookqa": TaskSize(500, 4, 30),
    "lambada_openai": TaskSize(5153, 1, 90),
    "sciq": TaskSize(1000, 4, 130),
    "arc_easy": TaskSize(2376, 4, 45),
    "copa": TaskSize(100, 2, 20),
    "race": TaskSize(1045, 4, 420),
    "logiqa": TaskSize(651, 4, 210),
    "qqp": TaskSize(40430, 2, 55),
    "winogrande": TaskSize(1267, 2, 35),
    "multirc": TaskSize(4848, 2, 330),
}
EVAL_PROCESS_SECONDS = 8.0
"""Start-up of one evaluation job on the demo machine (Python, torch, transformers, lm-eval and
`datasets` imports, loading the model and task): measured ~7-10 s on 2 shared cores."""


@dataclass(frozen=True)
class TaskCost:
    task: str
    requests: int | None
    tokens_per_request: int | None
    source: str

    @property
    def tokens(self) -> int | None:
        return None if self.requests is None else self.requests * self.tokens_per_request


@dataclass(frozen=True)
class EvaluationCost:
    """One final model's evaluation: per task, and in all (unknown tasks count as zero)."""

    tasks: list[TaskCost]
    forward_flops_per_token: float
    enabled: bool

    @property
    def tokens(self) -> int:
        return sum(t.tokens or 0 for t in self.tasks)

    @property
    def flops(self) -> float:
        """Forward FLOPs to evaluate one model."""
        return self.tokens * self.forward_flops_per_token

    def seconds(self, train_tokens_per_s: float) -> float:
        """One evaluation job: start-up plus its forward tokens at three times the training
        tokens/s (a forward pass is a third of a training step's work)."""
        return EVAL_PROCESS_SECONDS + self.tokens / (3 * train_tokens_per_s)

    @property
    def unknown(self) -> list[str]:
        return [t.task for t in self.tasks if t.requests is None]


def evaluation_cost(evaluation: Mapping, final: RunCost, byte_tokens: bool) -> EvaluationCost:
    """The cost of the `evaluation` section's tasks on one final model."""
    shots = evaluation.get("num_fewshot") or 0
    limit = evaluation.get("limit")
    max_tokens = final.train.seq_len  # lm-eval truncates a request to the model's length
    tasks = []
    continuation = evaluation.get("continuation", {})
    if continuation.get("examples", 0) > 0:
        size = sum(example_bytes(max_tokens))  # UTF-8 bytes: at most this many tokens
        per = size if byte_tokens else round(size / BYTES_PER_SUBWORD_TOKEN)
        size = TaskSize(continuation["examples"], continuation.get("choices", 4), per)
        tasks.append(_task_cost("continuation (target)", size, shots, limit, max_tokens, "made"))
    for name in evaluation.get("tasks", []):
        size = KNOWN_TASKS.get(name)
        if size is None:
            tasks.append(TaskCost(name, None, None, "unknown: not in regmix's table"))
        else:
            tasks.append(_task_cost(name, size, shots, limit, max_tokens, "documented split"))
    # a forward pass is a third of a training step's FLOPs per token (≈ 2 × parameters)
    return EvaluationCost(tasks, final.flops_per_token / 3, bool(evaluation.get("enabled")))


def _task_cost(
    name: str, size: TaskSize, shots: int, limit: int | None, max_tokens: int, source: str
) -> TaskCost:
    examples = min(size.examples, limit) if limit else size.examples
    per = min(max_tokens, size.tokens * (1 + shots))
    return TaskCost(name, examples * size.choices, per, source)
