"""Measures of an unlearned model: metrics, neighbourhood views, membership inference, representations."""
