"""DAPO-Math-17k (English subset) -> ~/data/rstar2-agent/dapo-math-17k-en/train.parquet, the training set.

Source: open-r1/DAPO-Math-17k-Processed, config "en" (the English problems; choosing that config is the only
filter), split train. The problem is the `prompt` column (plain problem text, without DAPO's "Answer:"
instructions) and the answer is `reward_model.ground_truth` (`solution` if a file lacks `reward_model`).

    python3 data_preprocess/dapo_rstar2_agent_loop.py [--input FILE_OR_DIR ...] [--local_dir DIR]

With --input, pass the "en" subset: the script does not detect the language itself.
"""

from common import DatasetSpec
from common import main as run

SPEC = DatasetSpec(
    name="dapo-math-17k-en",
    hub_id="open-r1/DAPO-Math-17k-Processed",
    hub_configs=("en",),
    hub_split="train",
    question_field="prompt",
    answer_fields=("reward_model.ground_truth", "solution"),
    split="train",
    description="Convert DAPO-Math-17k (open-r1/DAPO-Math-17k-Processed, English subset) into the "
                "rStar2-Agent training parquet.",
)


def main(argv=None):
    return run(SPEC, argv)


if __name__ == "__main__":
    main()
