"""Runnable K-FAC examples (MLP, convnet, deep autoencoder, distributed)."""
