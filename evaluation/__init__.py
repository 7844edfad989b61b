"""Speed and acceptance evaluation on MT-bench, HumanEval and GSM8K (docs/METHOD.md section 7).

benchmarks: question sets and prompts; run: answers with timings (``python -m evaluation.run``);
report: tables and plots from answer files (``python -m evaluation.report``).
"""
