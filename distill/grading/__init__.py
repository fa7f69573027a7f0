"""Grading, shared by the filter stage and evaluation: answer extraction (`extract`), the
verifiers (`verify`: math-verify in warm killable workers, code run against its tests), the
bubblewrap sandbox pool that runs code (`sandbox`, `sandbox_server`, `code`, `harness`), the
warm killable worker processes both pools are made of (`pool`), the benchmark registry
(`benchmarks`: evals/*.py), and the check of prompts against the benchmarks (`decontaminate`,
which the prompts stage runs too).

May import: the contract (config, records, models), distill.errors, distill.toy."""
