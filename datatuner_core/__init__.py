"""datatuner: data-to-text generation with semantic-fidelity reranking (the DataTuner method)."""

__version__ = "0.1.0"
