"""AIME 2024 -> ~/data/rstar2-agent/aime2024/test.parquet, the validation set of the training run.

Source: HuggingFaceH4/aime_2024, default config, split train (its only split); columns `problem`, `answer`.

    python3 data_preprocess/aime2024_rstar2_agent_loop.py [--input FILE_OR_DIR ...] [--local_dir DIR]
"""

from common import DatasetSpec
from common import main as run

SPEC = DatasetSpec(
    name="aime2024",
    hub_id="HuggingFaceH4/aime_2024",
    hub_configs=(None,),
    hub_split="train",
    question_field="problem",
    answer_fields=("answer",),
    split="test",
    description="Convert AIME 2024 (HuggingFaceH4/aime_2024) into an rStar2-Agent evaluation parquet.",
)


def main(argv=None):
    return run(SPEC, argv)


if __name__ == "__main__":
    main()
