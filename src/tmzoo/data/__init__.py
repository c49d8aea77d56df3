"""PyG transforms and batching for Transformer-M."""
