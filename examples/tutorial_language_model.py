"""LITcoder tutorial: language-model features (one layer of a causal LM), run by scalenc.

Only the import lines differ from the LITcoder tutorial; the model name is a local folder
(SCALENC_LM), the assembly SCALENC_ASSEMBLY: nothing is downloaded.
"""
import logging
import os

from scalenc import AbstractTrainer, Downsampler, FeatureExtractorFactory, NestedCVModel, load_assembly

logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(levelname)s - %(message)s")
logger = logging.getLogger(__name__)

# 1) Load prepackaged assembly
assembly_path = os.environ.get("SCALENC_ASSEMBLY", "assembly_lebel_uts03.pkl")
assembly = load_assembly(assembly_path)

model_name = os.environ.get("SCALENC_LM", "gpt2-small")
layer_idx = int(os.environ.get("SCALENC_LM_LAYER", "9"))
config = {
    "model_name": model_name,
    "layer_idx": layer_idx,
    "last_token": True,
    "lookback": 256,
    "context_type": "fullcontext",
}

# 2) Configure components
extractor = FeatureExtractorFactory.create_extractor(
    modality="language_model",
    model_name=model_name,
    config=config,
    cache_dir="cache",
)

downsampler = Downsampler()
model = NestedCVModel(model_name="ridge_regression")

fir_delays = [1, 2, 3, 4]
trimming_config = {
    "train_features_start": 10, "train_features_end": -5,
    "train_targets_start": 0, "train_targets_end": None,
    "test_features_start": 50, "test_features_end": -5,
    "test_targets_start": 40, "test_targets_end": None,
}

downsample_config = {"window": 3, "cutoff_mult": 1.0}

# 3) Train
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
    downsample_config=downsample_config,
    layer_idx=layer_idx,
    lookback=256,
)

metrics = trainer.train()

logger.info("\n=== Final Results ===")
logger.info(f"Median correlation: {metrics.get('median_score', float('nan')):.4f}")
if "n_significant" in metrics:
    logger.info(f"Significant voxels: {metrics['n_significant']}")
