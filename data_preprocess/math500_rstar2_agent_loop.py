"""MATH-500 -> ~/data/rstar2-agent/math500/test.parquet.

Source: HuggingFaceH4/MATH-500, default config, split test; columns `problem`, `answer` (LaTeX answers such as
`\\frac{14}{3}` are kept as written).

    python3 data_preprocess/math500_rstar2_agent_loop.py [--input FILE_OR_DIR ...] [--local_dir DIR]
"""

from common import DatasetSpec
from common import main as run

SPEC = DatasetSpec(
    name="math500",
    hub_id="HuggingFaceH4/MATH-500",
    hub_configs=(None,),
    hub_split="test",
    question_field="problem",
    answer_fields=("answer",),
    split="test",
    description="Convert MATH-500 (HuggingFaceH4/MATH-500) into an rStar2-Agent evaluation parquet.",
)


def main(argv=None):
    return run(SPEC, argv)


if __name__ == "__main__":
    main()
