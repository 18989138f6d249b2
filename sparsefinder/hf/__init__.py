"""The Hugging Face integration: attention functions for transformers models and predictors attached to them."""
