# LITcoder's "Static Embeddings Tutorial" (seeds/000), run by scalenc. Changed: `encoding.` ->
# `scalenc.` in the imports; the paths the tutorial has you replace (and the assembly) read
# environment variables whose defaults are the tutorial's values.
import os

from scalenc.assembly.assembly_loader import load_assembly

# Load the pre-packaged LeBel assembly
assembly = load_assembly(os.environ.get("SCALENC_ASSEMBLY", "assembly_lebel_uts03.pkl"))

from scalenc.features.factory import FeatureExtractorFactory

# You need to provide the path to your embedding file
vector_path = os.environ.get("SCALENC_VECTORS", "/path/to/your/embeddings.bin.gz")  # Replace with your path

extractor = FeatureExtractorFactory.create_extractor(
    modality="embeddings",
    model_name="word2vec",  # Can be "word2vec", "glove", or any identifier
    config={
        "vector_path": vector_path,
        "binary": True,  # Set to True for .bin files, False for .txt files
        "lowercase": False,  # Set to True if your embeddings expect lowercase tokens
        "oov_handling": "copy_prev",  # How to handle out-of-vocabulary words
        "use_tqdm": True,  # Show progress bar
    },
    cache_dir="cache",
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

# No additional downsampling configuration needed
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
    wandb_project_name="lebel-embeddings",
    dataset_type="lebel",
    results_dir="results",
    downsample_config=downsample_config,
)

metrics = trainer.train()
print(f"Median correlation: {metrics.get('median_score', float('nan')):.4f}")
