"""pytest-gpuinfer: gate, load and check Hugging Face models by what this GPU can run."""
