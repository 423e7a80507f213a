"""LITcoder tutorial: static word embeddings on the LeBel assembly, run by scalenc.

Only the import lines differ from the LITcoder tutorial (and model/data names are local
paths, read from SCALENC_* environment variables so the tests can point them at the
synthetic dataset): the tutorial's own code runs unchanged.
"""
import logging
import os

from scalenc import AbstractTrainer, Downsampler, FeatureExtractorFactory, NestedCVModel, load_assembly

logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(levelname)s - %(message)s")
logger = logging.getLogger(__name__)

# 1) Load prepackaged assembly
assembly_path = os.environ.get("SCALENC_ASSEMBLY", "assembly_lebel_uts03.pkl")
assembly = load_assembly(assembly_path)

# 2) Configure components (static word2vec embeddings)
config = {
    "vector_path": os.environ.get("SCALENC_VECTORS", "GoogleNews-vectors-negative300.bin"),
    "binary": True,
    "lowercase": False,
    "oov_handling": "copy_prev",
}
extractor = FeatureExtractorFactory.create_extractor(
    modality="embeddings",
    model_name="word2vec",
    config=config,
    cache_dir="cache",
)

downsampler = Downsampler()
model = NestedCVModel(model_name="ridge_regression")

# FIR, downsampling, and trimming match our LeBel defaults
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
    wandb_project_name="lebel-embeddings",
    dataset_type="lebel",
    results_dir="results",
    downsample_config=downsample_config,
)

metrics = trainer.train()

logger.info("\n=== Final Results ===")
logger.info(f"Median correlation: {metrics.get('median_score', float('nan')):.4f}")
if "n_significant" in metrics:
    logger.info(f"Significant voxels: {metrics['n_significant']}")
