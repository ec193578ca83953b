//! Triton backend for the preprocess stage.
