"""AIME 2025 (I and II) -> ~/data/rstar2-agent/aime2025/test.parquet.

Source: opencompass/AIME2025, configs AIME2025-I then AIME2025-II, split test, concatenated in that order
(extra_info.index counts over the concatenation); columns `question`, `answer`.

    python3 data_preprocess/aime2025_rstar2_agent_loop.py [--input FILE_OR_DIR ...] [--local_dir DIR]

With --input, give the two parts in order (or a directory whose files sort I before II).
"""

from common import DatasetSpec
from common import main as run

SPEC = DatasetSpec(
    name="aime2025",
    hub_id="opencompass/AIME2025",
    hub_configs=("AIME2025-I", "AIME2025-II"),
    hub_split="test",
    question_field="question",
    answer_fields=("answer",),
    split="test",
    description="Convert AIME 2025 I+II (opencompass/AIME2025) into an rStar2-Agent evaluation parquet.",
)


def main(argv=None):
    return run(SPEC, argv)


if __name__ == "__main__":
    main()
