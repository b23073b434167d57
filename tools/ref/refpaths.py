"""Paths the reference-fixture scripts in tools/ref share: the fixture folder, the packaged
models (tools/models.tsv) and the model cache, found as tools/fetch-model.sh finds it."""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "..", "tests", "fixtures"))
MODELS = {"smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf", "qwen2.5-coder": "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"}


def cache_dir():
    return os.environ.get("SPOTLIGHT_MODELS") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "spotlight")
