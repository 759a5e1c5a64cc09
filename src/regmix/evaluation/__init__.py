"""Downstream evaluation of the final models with lm-eval-harness: which tasks a config names
and whether their data is at hand offline (`tasks`), a continuation task made from the target
domain's held-out documents (`continuation`), running lm-eval on an exported model (`harness`),
and the scores table with its paired comparisons (`downstream`)."""
