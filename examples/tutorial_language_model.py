# LITcoder's "Language Model Features Tutorial" (seeds/001, 004), run by scalenc. Changed:
# `encoding.` -> `scalenc.` in the imports; the assembly path reads an environment variable
# whose default is the tutorial's value. "gpt2-small" is resolved to the Hub model "gpt2"
# (transformer-lens's alias table) and loaded from the Hugging Face cache.
import os

from scalenc.assembly.assembly_loader import load_assembly

# Load the pre-packaged LeBel assembly
assembly = load_assembly(os.environ.get("SCALENC_ASSEMBLY", "assembly_lebel_uts03.pkl"))

from scalenc.features.factory import FeatureExtractorFactory

extractor = FeatureExtractorFactory.create_extractor(
    modality="language_model",
    model_name="gpt2-small",  # Can be changed to other models
    config={
        "model_name": "gpt2-small",
        "layer_idx": 9,  # Layer to extract features from
        "last_token": True,  # Use last token only
        "lookback": 256,  # Context lookback
        "context_type": "fullcontext",
    },
    cache_dir="cache_language_model",
)

from scalenc.downsample.downsampling import Downsampler
from scalenc.models.nested_cv import NestedCVModel

downsampler = Downsampler()
model = NestedCVModel(model_name="ridge_regression")

# FIR delays for hemodynamic response modeling
fir_delays = [1, 2, 3, 4]

# Trimming configuration for LeBel dataset
trimming_config = {
    "train_features_start": 10,
    "train_features_end": -5,
    "train_targets_start": 0,
    "train_targets_end": None,
    "test_features_start": 50,
    "test_features_end": -5,
    "test_targets_start": 40,
    "test_targets_end": None,
}

downsample_config = {}

from scalenc.trainer import AbstractTrainer

trainer = AbstractTrainer(
    assembly=assembly,
    feature_extractors=[extractor],
    downsampler=downsampler,
    model=model,
    fir_delays=fir_delays,
    trimming_config=trimming_config,
    use_train_test_split=True,
    logger_backend="wandb",
    wandb_project_name="lebel-language-model",
    dataset_type="lebel",
    results_dir="results",
    layer_idx=9,  # Pass layer_idx to trainer
    lookback=256,  # Pass lookback to trainer
)

metrics = trainer.train()
print(f"Median correlation: {metrics.get('median_score', float('nan')):.4f}")
